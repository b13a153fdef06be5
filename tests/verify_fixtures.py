"""Plan directories for the verifier's tests, and small editors for their manifests.

Each shipped stack is planned once per worker and written with ``write_plan`` (what ``fleet plan
--out`` writes); the charts whose pods the checks reason about are rendered into it with the real
Helm engine (tests/chart_render.py). A test copies the directory, edits objects the way a reviewer
would break a real topology, and runs the verifier on the copy.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import yaml

from chart_render import render_releases
from conftest import needs_charts, plan_of
from fleetctl.plan import write_plan
from fleetctl.verify import verify_dir

_BASE = Path(__import__("tempfile").mkdtemp(prefix="fleet-verify-plans-"))

# The charts whose pods the checks place, admit or connect (the rest only add objects to read).
CHARTS = {"nvidia-device-plugin", "gpu-operator-charts", "dcgm-exporter", "keda"}

# Without the chart cache these tests fail like every planning test, unless the run is declared
# offline (conftest.needs_charts: FLEET_UPSTREAM_OFFLINE=1, counted in the summary).

@functools.lru_cache(maxsize=None)
def _planned(stack: str, charts: bool) -> Path:
    out = _BASE / f"{stack}-{'charts' if charts else 'bare'}"
    plan = plan_of(stack)
    # `fleet plan` writes every release's objects itself now (fleetctl/charts.py); render here only
    # when the plan did not (FLEET_UPSTREAM_OFFLINE), and keep the bare copy bare.
    write_plan(plan if charts else dataclasses.replace(plan, releases=None), out)
    if charts and plan.releases is None:
        render_releases(out, only=CHARTS)
    return out


def plan_copy(stack: str, dest: Path, charts: bool = True) -> Path:
    """A fresh copy of the stack's plan directory (with the named charts rendered) under ``dest``."""
    target = dest / stack
    shutil.copytree(_planned(stack, charts), target)
    return target


def manifest(plan_dir: Path, cluster: str, kind: str, namespace: str, name: str) -> Path:
    hits = [p for p in (plan_dir / "manifests" / cluster).rglob(f"{kind}_*.yaml")
            if (d := yaml.safe_load(p.read_text())) and d["metadata"]["name"] == name
            and d["metadata"].get("namespace", "") in (namespace, "")]
    assert len(hits) == 1, f"expected one {kind} {namespace}/{name} in {cluster}, found {hits}"
    return hits[0]


def edit(plan_dir: Path, cluster: str, kind: str, namespace: str, name: str, change: Callable[[dict], Any]) -> None:
    path = manifest(plan_dir, cluster, kind, namespace, name)
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def add(plan_dir: Path, cluster: str, doc: dict) -> Path:
    m = doc["metadata"]
    path = plan_dir / "manifests" / cluster / f"{doc['kind']}_{m.get('namespace', '_cluster')}_{m['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def edit_plan(plan_dir: Path, name: str, change: Callable[[dict], Any]) -> None:
    """Edit the inputs of the plan.json resource called ``name``."""
    path = plan_dir / "plan.json"
    doc = json.loads(path.read_text())
    hits = [r for r in doc["resources"] if r["name"] == name]
    assert len(hits) == 1, name
    change(hits[0]["inputs"])
    path.write_text(json.dumps(doc, indent=2))


def findings_for(plan_dir: Path, check: str, obj: str | None = None) -> list:
    return [f for f in verify_dir(plan_dir) if f.check == check and (obj is None or f.object == obj)]


def template(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]
