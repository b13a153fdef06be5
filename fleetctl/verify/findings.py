"""A finding: one thing that stops the topology from serving, the object it is about, and the fix."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Iterable

CHECKS = ("scheduling", "admission", "identity", "routing", "flows", "trust", "autoscaling")


@dataclass(frozen=True, order=True)
class Finding:
    check: str
    cluster: str
    object: str
    """``kind/namespace/name`` (``-`` for cluster-scoped objects and cloud resources)."""
    file: str
    """Where the object is: a manifest path relative to the plan dir, or ``plan.json``."""
    problem: str
    fix: str

    def line(self) -> str:
        return f"{self.check}: {self.object} [{self.cluster}] ({self.file}): {self.problem}; fix: {self.fix}"


def to_json(findings: Iterable[Finding], stack: str) -> str:
    items = [asdict(f) for f in findings]
    return json.dumps({"stack": stack, "findings": items, "count": len(items)}, indent=2, sort_keys=True) + "\n"


def summary_line(findings: list[Finding]) -> str:
    if not findings:
        return "verify: 0 findings (scheduling, admission, identity, routing, flows, trust, autoscaling)"
    per = {c: sum(1 for f in findings if f.check == c) for c in CHECKS}
    return f"verify: {len(findings)} findings (" + ", ".join(f"{c} {n}" for c, n in per.items() if n) + ")"
