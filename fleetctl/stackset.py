"""A stack set planned offline as one: its cluster parts, then its router part reading their outputs.

``python -m fleet plan --stack multicloud`` (and ``verify``, ``diff``, which plans through it, and
``cost``, which prices the set's one spec) finds ``fleets/multicloud.yaml`` where a stack file would
be and plans the parts fleet/stackset.py defines, each the way ``pulumi preview -s <part>`` runs it:
every cluster part (``multicloud.aws-east``, ...), then the router part with each StackReference fed
the outputs the cluster parts' plans exported (:class:`fleetctl.plan.FleetMocks`). The result is one
:class:`~fleetctl.plan.Plan` holding every part's resources under their own stacks' URNs, so the
policy pack, ``fleet verify``, the cost report and the PR review judge the set as a whole — what the
single ``multicloud`` stack declared — while ``pulumi up`` deploys it part by part.

:func:`plan_set` is the whole orchestration; each part is :func:`fleetctl.plan.run_plan`.
"""

from __future__ import annotations

import time
from typing import Any

from pathlib import Path

from fleet.spec import SpecError, load_spec
from fleet.stackset import FLEETS_DIR, PART_KEY, SET_KEY, Part, StackSetError, parts_of, part_stack
from fleetctl import plan as fplan
from fleetctl.plan import OFFLINE_ORGANIZATION, ROOT, Plan, StackConfig, read_stack_config, run_plan


def part_files(cfg: StackConfig, parts: list[Part], root: Path = ROOT) -> dict[Part, str]:
    """Each part's stack name, checked against the stack files under ``root``: one per part, each
    saying it is that part of this set, and none besides."""
    set_name = cfg.set_name
    assert set_name is not None
    want = {part: part_stack(set_name, part) for part in parts}
    problems = []
    for part, stack in want.items():
        path = root / f"Pulumi.{stack}.yaml"
        if not path.exists():
            problems.append(f"part `{part}` has no stack file {path.name}")
            continue
        try:
            other = read_stack_config(stack, path)
            ok = other.set_name == set_name and other.part == part
        except SpecError:
            ok = False
        if not ok:
            problems.append(f"{path.name} must say {SET_KEY}: {set_name} and {PART_KEY}: {part}")
    for path in sorted(root.glob(f"Pulumi.{set_name}.*.yaml")):
        stack = path.name[len("Pulumi."):-len(".yaml")]
        if stack not in want.values():
            problems.append(f"{path.name} is no part of the set (its parts: {', '.join(want.values())})")
    if problems:
        raise StackSetError(cfg.source, "; ".join(problems))
    return want


def reference_name(project: str, stack: str, part_cfg: StackConfig) -> str:
    """The ``org/project/stack`` the router part's StackReference names (stacks/parts.py)."""
    org = part_cfg.values.get(f"{project}:organization") or OFFLINE_ORGANIZATION
    return f"{org}/{project}/{stack}"


def plan_set(cfg: StackConfig, *, as_engine: bool = False, charts: bool = True, only: str | None = None) -> Plan:
    """Plan the set ``cfg`` names (or whose part it is): the cluster parts, then the router part fed
    their exports; one Plan of them all, or with ``only`` that part's own plan (a router part is
    never planned without the cluster parts it reads)."""
    set_name = cfg.set_name
    assert set_name is not None
    if cfg.fleet_path is None or fplan.FLEET_FILES.get(set_name) == cfg.fleet_path:
        return _plan_set(cfg, as_engine=as_engine, charts=charts, only=only)
    # An edited copy of the set's fleet file: every part reads it instead of fleets/<set>.yaml.
    fplan.FLEET_FILES[set_name] = cfg.fleet_path
    try:
        return _plan_set(cfg, as_engine=as_engine, charts=charts, only=only)
    finally:
        del fplan.FLEET_FILES[set_name]


def _plan_set(cfg: StackConfig, *, as_engine: bool, charts: bool, only: str | None) -> Plan:
    started = time.perf_counter()
    set_name = cfg.set_name
    assert set_name is not None
    set_cfg = cfg if cfg.is_set else read_stack_config(set_name)
    spec = load_spec(set_cfg.fleet_raw(), set_cfg.spec_source)
    stacks = part_files(set_cfg, parts_of(spec))
    plans: dict[str, Plan] = {}
    clusters = [(p, s) for p, s in stacks.items() if p.kind == "cluster"]
    routers = [(p, s) for p, s in stacks.items() if p.kind == "router"]
    # The router reads only outputs, which charts never change: its cluster parts are planned without
    # them when only the router's plan is asked for.
    cluster_charts = charts and only is None
    for _, stack in clusters:
        if only is None or routers and only == routers[0][1] or only == stack:
            plans[stack] = run_plan(stack, as_engine=as_engine, charts=cluster_charts or only == stack)
    for _, stack in routers:
        if only is None or only == stack:
            router_cfg = read_stack_config(stack)
            refs = {reference_name(cfg.project, s, router_cfg): plans[s].exports for _, s in clusters}
            plans[stack] = run_plan(stack, as_engine=as_engine, charts=charts, references=refs)
    if only is not None:
        return plans[only]
    return merge(set_name, cfg.project, spec, [(part, plans[stack]) for part, stack in stacks.items()],
                 time.perf_counter() - started)


def merge(set_name: str, project: str, spec: Any, parts: list[tuple[Part, Plan]], seconds: float) -> Plan:
    """One plan of every part: resources by URN (each under its own stack), manifests by cluster, the
    outputs by part stack, missing secrets with the stack each belongs to."""
    resources: dict[str, dict[str, Any]] = {}
    manifests: dict[str, dict[str, Any]] = {}
    clashes = []
    for _, p in parts:
        resources.update((r["urn"], r) for r in p.resources)
        for rel, obj in p.manifests.items():
            if rel in manifests:
                clashes.append(f"manifests/{rel} is declared by two parts of stack set {set_name!r}")
            manifests[rel] = obj
    plan = Plan(stack=set_name, project=project, spec=spec, resources=[resources[u] for u in sorted(resources)],
                outputs={p.stack: p.outputs for _, p in parts}, seconds=seconds,
                missing_secrets=[m for _, p in parts for m in p.missing_secrets],
                parts=[{"stack": p.stack, "part": str(part), "resources": len(p.resources)} for part, p in parts],
                part_plans={p.stack: p for _, p in parts})
    plan.manifests = manifests
    plan.invokes = sorted({(i["token"], i["provider"]): i for _, p in parts for i in p.invokes}.values(),
                          key=lambda i: (i["token"], i["provider"]))
    rendered = [p for _, p in parts if p.releases is not None]
    if rendered:
        from fleetctl import charts as fcharts

        plan.releases = [rr for p in rendered for rr in p.releases]
        plan.chart_problems = [f"release {rr.release} ({rr.cluster}): {v}" for rr in plan.releases
                               for v in rr.values_problems]
        plan.chart_problems += fcharts.owners(plan.resources, plan.manifests, plan.releases)
    plan.chart_problems += clashes
    return plan



def shipped_stacks(root=ROOT) -> list[str]:
    """What ``fleet plan --stack NAME`` plans by name: every stack file that is no part of a set, and
    every stack set (``fleets/<set>.yaml``), sorted."""
    import yaml

    out = [s.stem for s in (root / FLEETS_DIR).glob("*.yaml")]
    for path in root.glob("Pulumi.*.yaml"):
        config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
        if not any(k.endswith(f":{SET_KEY}") for k in config):
            out.append(path.name[len("Pulumi."):-len(".yaml")])
    return sorted(out)


def stack_clouds(stack: str) -> list[str]:
    """The clouds ``pulumi preview``/``up`` of ``stack`` signs in to: a stand-alone stack's clusters',
    a cluster part's own cluster's, a router part's router cluster's (the Kubernetes provider's
    kubeconfig runs that cloud's CLI for a token: ``aws eks get-token``, ``gke-gcloud-auth-plugin``)."""
    cfg = read_stack_config(stack)
    if cfg.is_set:
        raise StackSetError(cfg.source, f"{stack!r} is a stack set, not a stack: name one of its parts")
    spec = load_spec(cfg.fleet_raw(), cfg.spec_source)
    part = cfg.part
    if part is None:
        clusters = list(spec.clusters)
    elif part.kind == "cluster":
        clusters = [spec.cluster(part.cluster or "")]
    else:
        clusters = [spec.router_cluster()]
    return sorted({c.cloud for c in clusters} - {"local"})
