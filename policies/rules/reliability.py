"""Reliability: model servers have startup and readiness probes; the router runs >= 2 replicas
with a PodDisruptionBudget and spread; Helm charts and CRD bundles are pinned; every served model
is reachable through a route.

Risk (seed 001): probes that kill a server still loading weights, a gateway that 404s a model it
serves, a chart that moved under a re-run.
"""

from __future__ import annotations

import re

from pulumi_policy import EnforcementLevel, ResourceValidationPolicy, StackValidationPolicy

from policies.rules._util import containers, labels_of, pod_spec

COMPONENT = "app.kubernetes.io/component"
EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
PINNED_URL = re.compile(r"/(v?\d+\.\d+\.\d+[^/]*)/")
MOVING_URL = re.compile(r"/(main|master|latest|HEAD)/")


def _probes(args, report):
    found = pod_spec(args.resource_type, args.props)
    if not found or labels_of(found[0]).get(COMPONENT) != "model-server":
        return
    for c in found[1].get("containers") or []:
        for probe in ("startupProbe", "readinessProbe"):
            if not c.get(probe):
                report(f"model server container {c.get('name')!r} has no {probe}")


def _router_ha(args, report):
    routers = [r for r in args.resources if r.resource_type == "kubernetes:apps/v1:Deployment"
               and labels_of(pod_spec(r.resource_type, r.props)[0]).get(COMPONENT) == "router"]
    pdbs = [r for r in args.resources if r.resource_type == "kubernetes:policy/v1:PodDisruptionBudget"]
    for r in routers:
        spec = r.props.get("spec") or {}
        meta, pod = pod_spec(r.resource_type, r.props)
        if int(spec.get("replicas") or 1) < 2:
            report("router runs fewer than 2 replicas", r.urn)
        if not pod.get("topologySpreadConstraints"):
            report("router pods have no topologySpreadConstraints", r.urn)
        labels = labels_of(meta)
        covered = any(((p.props.get("spec") or {}).get("selector") or {}).get("matchLabels")
                      and all(labels.get(k) == v for k, v in p.props["spec"]["selector"]["matchLabels"].items())
                      for p in pdbs)
        if not covered:
            report("router has no PodDisruptionBudget", r.urn)


def _helm_pinned(args, report):
    if args.resource_type in ("kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart"):
        version = str(args.props.get("version") or "")
        if not EXACT_VERSION.match(version):
            report(f"chart {args.props.get('chart')!r} is not pinned to an exact version (got {version!r})")
    elif args.resource_type in ("kubernetes:yaml/v2:ConfigFile", "kubernetes:yaml/v2:ConfigGroup"):
        files = args.props.get("file") or args.props.get("files") or []
        for f in [files] if isinstance(files, str) else files:
            if f.startswith("http") and (MOVING_URL.search(f) or not PINNED_URL.search(f)):
                report(f"manifest bundle {f!r} is not pinned to a release version")


def _models_routed(args, report):
    by_cluster = lambda r: r.provider.urn if r.provider else ""  # noqa: E731
    pools = [r for r in args.resources if r.resource_type.endswith(":InferencePool")]
    routed = {(by_cluster(r), b.get("name")) for r in args.resources
              if r.resource_type == "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"
              for rule in (r.props.get("spec") or {}).get("rules") or []
              for b in rule.get("backendRefs") or [] if b.get("kind") == "InferencePool"}
    for r in args.resources:
        found = pod_spec(r.resource_type, r.props)
        if not found or labels_of(found[0]).get(COMPONENT) != "model-server":
            continue
        labels = labels_of(found[0])
        selecting = [p for p in pools if by_cluster(p) == by_cluster(r) and all(
            labels.get(k) == v for k, v in (((p.props.get("spec") or {}).get("selector") or {})
                                            .get("matchLabels") or {}).items())]
        if not any((by_cluster(p), (p.props.get("metadata") or {}).get("name")) in routed for p in selecting):
            report(f"model server {(r.props.get('metadata') or {}).get('name')!r} is not reachable: no HTTPRoute "
                   "sends traffic to an InferencePool that selects it", r.urn)


POLICIES = [
    ResourceValidationPolicy(
        name="model-server-probes", description="Model servers have startup and readiness probes.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_probes,
        remediation_steps="Add a startupProbe generous enough for weight loading (seed 001: 90 x 30 s) and a "
                          "readinessProbe on /health."),
    StackValidationPolicy(
        name="router-highly-available", description="The router has >= 2 replicas, a PDB and topology spread.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_router_ha,
        remediation_steps="Set router.replicas >= 2; the Router component adds the PDB and spread constraints."),
    ResourceValidationPolicy(
        name="charts-and-crds-pinned", description="Helm charts and CRD bundles are pinned to exact versions.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_helm_pinned,
        remediation_steps="Pin chart versions and CRD bundle URLs in components/platform_versions.py."),
    StackValidationPolicy(
        name="served-models-routed", description="Every model server is reachable through an HTTPRoute.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_models_routed,
        remediation_steps="Route the model's pool: the inference layer generates a route per pool and per model."),
]
