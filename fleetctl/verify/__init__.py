"""``fleet verify``: prove offline that a planned topology would serve a request.

Reads a plan directory (``plan.json`` + ``manifests/``) and checks the whole, one module per family:
scheduling, admission, identity, routing, flows, trust, autoscaling. Each finding names the object
(``kind/namespace/name`` and its file), what is wrong and the fix. No cluster, no network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleetctl.verify import admission, autoscaling, flows, identity, routing, scheduling, trust
from fleetctl.verify.findings import CHECKS, Finding, summary_line, to_json
from fleetctl.verify.topology import Topology, VerifyInputError, load

FAMILIES = {
    "scheduling": scheduling.check,
    "admission": admission.check,
    "identity": identity.check,
    "routing": routing.check,
    "flows": flows.check,
    "trust": trust.check,
    "autoscaling": autoscaling.check,
}

__all__ = ["coverage_note", "CHECKS", "Finding", "Topology", "VerifyInputError", "load", "load_plan", "summary_line",
           "to_json", "verify", "verify_dir", "written_manifests"]


def verify(topo: Topology) -> list[Finding]:
    findings: list[Finding] = []
    for name in CHECKS:
        if name in FAMILIES:
            findings += FAMILIES[name](topo)
    return sorted(set(findings), key=lambda f: (CHECKS.index(f.check), f.cluster, f.object, f.problem))


def coverage_note(topo: Topology) -> str | None:
    """Which Helm releases the plan did not render (so their pods were not checked), if any."""
    missing = sorted(f"{c.name}/{r['name']}" for c in topo.clusters.values() for r in c.unrendered_releases())
    if not missing:
        return None
    return (f"note: {len(missing)} Helm release(s) have no rendered objects under manifests/, so the pods their "
            "charts create (device plugins, operators, webhooks) were not checked: " + ", ".join(missing[:6])
            + (" ..." if len(missing) > 6 else ""))


def verify_dir(plan_dir: str | Path) -> list[Finding]:
    return verify(load(plan_dir))


def written_manifests(plan: Any) -> dict[str, Any]:
    """Path under ``manifests/`` -> object, for every object ``fleetctl.plan.write_plan`` writes."""
    out = dict(plan.manifests)
    out.update((item["path"], item["object"]) for rr in plan.releases or () for item in rr.objects)
    return out


def load_plan(plan: Any, plan_dir: str | Path) -> Topology:
    """The topology of ``plan`` just written to ``plan_dir``: its objects as the plan holds them."""
    return load(plan_dir, written_manifests(plan))
