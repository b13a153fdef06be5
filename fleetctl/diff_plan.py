"""``fleet diff``, part 1: plan both sides of a change.

The base is the tree at a git ref, extracted with ``git archive`` into a temporary directory so it is
planned by the code *at* that ref; the head is the working tree. Each side is planned by running that
tree's ``python -m fleet plan`` (and ``fleet cost``) in a subprocess, and its plan.json, policy.json
and verify.json are read back, with every object a Helm release rendered listed as a child of its
Release (:func:`chart_resources`). All of the diff's I/O is here; :mod:`fleetctl.diff_compare` is pure.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from fleetctl.cost import cost_of_stack

ROOT = Path(__file__).resolve().parent.parent


class DiffError(RuntimeError):
    """The diff cannot be produced (unknown ref, a side that does not plan)."""


@dataclass
class Side:
    label: str
    tree: Path
    plan: dict[str, Any] | None
    """plan.json, or None when the stack does not exist on this side."""
    policy: Any = None
    """policy.json beside the plan, when this tree evaluates the policy pack offline."""
    policy_available: bool = False
    cost: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    verify: dict[str, Any] | None = None
    """verify.json beside the plan (``fleet verify``'s findings), when this tree writes one."""


def _git(repo: Path, *args: str, binary: bool = False) -> Any:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)
    if proc.returncode != 0:
        raise DiffError(f"git {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout if binary else proc.stdout.decode().strip()


def _env() -> dict[str, str]:
    from fleetctl.charts import CHARTS_ENV, charts_dir

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONHASHSEED"] = "0"
    # Both sides render their charts from this checkout's chart cache: the base is extracted into a
    # temporary directory with no ../shared beside it.
    env[CHARTS_ENV] = str(charts_dir().resolve())
    return env


def extract(repo: Path, ref: str, dest: Path) -> str:
    """The tree of ``ref`` under ``dest``; returns the commit it resolved to."""
    try:
        sha = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except DiffError:
        sha = ""
    if not sha:
        raise DiffError(f"unknown git ref {ref!r} in {repo} (in CI, fetch the base branch: fetch-depth: 0)")
    data = _git(repo, "archive", "--format=tar", sha, binary=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return sha


def _plan_tree(tree: Path, stack: str, out: Path, label: str) -> Side:
    side = Side(label=label, tree=tree, plan=None)
    side.policy_available = any((tree / d / "policy_eval.py").exists() for d in ("fleetctl", "fleet"))  # new, old layout
    if not (tree / f"Pulumi.{stack}.yaml").exists() and not (tree / "fleets" / f"{stack}.yaml").exists():
        side.notes.append(f"stack `{stack}` does not exist at {label}")
        return side
    proc = subprocess.run(
        [sys.executable, "-m", "fleet", "plan", "--stack", stack, "--out", str(out)],
        cwd=tree, env=_env(), capture_output=True, text=True, check=False, timeout=900,
    )
    plan_file = out / "plan.json"
    if proc.returncode == 2 or not plan_file.exists():
        err = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise DiffError(f"the {stack} stack does not plan at {label} (exit {proc.returncode}): "
                        + "\n".join(err[-15:]))
    if proc.returncode != 0:
        side.notes.append(f"`fleet plan` exited {proc.returncode} at {label} (mandatory policy violations "
                          "or chart problems)")
    side.plan = json.loads(plan_file.read_text())
    side.plan["resources"] = side.plan["resources"] + chart_resources(side.plan, out / "manifests", side.notes,
                                                                      label)
    policy_file = out / "policy.json"
    if policy_file.exists():
        side.policy = json.loads(policy_file.read_text())
    verify_file = out / "verify.json"
    if verify_file.exists():
        side.verify = json.loads(verify_file.read_text())
    side.cost = _cost_of(tree, stack)
    return side


def chart_resources(plan: Mapping[str, Any], manifests: Path, notes: list[str] | None = None,
                    label: str = "") -> list[dict[str, Any]]:
    """Every object a Helm release renders (plan.json ``charts``, the object from its manifest file),
    as a resource under its Release: so a chart bump or a values change reads as the objects it
    adds, changes and removes, the way Pulumi names a helm.v4 Chart's children (``<chart>:<ns>/<name>``)."""
    charts = plan.get("charts")
    if not charts or charts.get("rendered") is None:
        if notes is not None:
            notes.append(f"Helm charts were not rendered at {label}: the objects they install are not compared"
                         if charts else f"the plan at {label} predates chart rendering: every chart object "
                         "reads as created")
        return []
    releases = {r["urn"]: r for r in plan.get("resources", [])}
    out = []
    for rel in charts["rendered"]:
        parent = releases.get(rel["urn"], {})
        scheme, project, qualified, rname = rel["urn"].split("::", 3)
        for o in rel["objects"]:
            api = str(o["apiVersion"])
            typ = f"kubernetes:{api if '/' in api else 'core/' + api}:{o['kind']}"
            name = f"{rname}:{o['namespace'] + '/' if o['namespace'] else ''}{o['name']}"
            obj = yaml.load((manifests / o["file"]).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            # chart_object: Helm installs and upgrades it (a patch in place), not the kubernetes provider.
            out.append({"urn": f"{scheme}::{project}::{qualified}${typ}::{name}", "type": typ, "name": name,
                        "custom": True, "chart_object": True, "parent": rel["urn"],
                        "provider": parent.get("provider", ""),
                        "dependencies": [], "property_dependencies": {}, "options": {}, "inputs": obj})
    return out


def _cost_of(tree: Path, stack: str) -> dict[str, Any] | None:
    """The tree's own cost report (its catalog's prices); this code's, when the tree predates it."""
    if (tree / "fleet" / "cost.py").exists():
        proc = subprocess.run([sys.executable, "-m", "fleet", "cost", "--stack", stack, "--json"],
                              cwd=tree, env=_env(), capture_output=True, text=True, check=False, timeout=300)
        if proc.returncode == 0:
            return json.loads(proc.stdout)
    try:
        return cost_of_stack(stack, str(tree / f"Pulumi.{stack}.yaml")).to_dict()
    except Exception:  # noqa: BLE001 - an old stack file the current spec cannot read: no cost
        return None
