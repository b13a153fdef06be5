"""Validate rendered Kubernetes objects offline: core kinds against Kubernetes 1.35's OpenAPI
(kubernetes-validate), custom resources against the upstream CRDs in ../shared/crds (and Istio's, from its pinned base
chart in ../shared/charts).

The CRD folder comes from ``FLEET_CRDS_DIR`` (default: ``../shared/crds`` beside the checkout).
A test that needs it **fails** when it is absent — a green run must not hide that no custom resource
was checked — unless ``FLEET_UPSTREAM_OFFLINE=1`` says this run goes without upstream data: then it
is reported as skipped, with the reason, in pytest's summary. Core kinds are validated either way.
``make upstream`` fetches the CRDs (and charts) at the pinned versions (tests/upstream.py).
"""

from __future__ import annotations

import functools
import os
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

import upstream
from fleetctl.plan import SECRET

K8S_VERSION = "1.35.0"  # fleet/catalog.KUBERNETES_DEFAULT
ROOT = Path(__file__).resolve().parent.parent
CRDS_DIR = Path(os.environ.get("FLEET_CRDS_DIR", ROOT.parent / "shared" / "crds"))


# Custom kinds whose CRDs ship inside a pinned chart rather than as a file in ../shared/crds:
# (chart archive in ../shared/charts, member holding the CRDs). Istio's DestinationRule comes from
# the base chart (manifests/charts/base, files/crd-all.gen.yaml at 1.28.5).
CHARTS_DIR = Path(os.environ.get("FLEET_CHARTS_DIR", CRDS_DIR.parent / "charts"))
CHART_CRDS = (("base-1.28.5.tgz", "base/files/crd-all.gen.yaml"),
              # ROCm gpu-operator v1.4.0's DeviceConfig (helm-charts-k8s/crds).
              ("gpu-operator-charts-v1.4.0.tgz", "gpu-operator-charts/crds/deviceconfig-crd.yaml"))


# Custom kinds the cluster itself serves, with no CRD file in ../shared/crds: AKS's managed Cilium
# (Azure CNI powered by Cilium, >= 1.18.6 on Kubernetes 1.34/1.35) registers cilium.io/v2
# CiliumNetworkPolicy. A CRD of that kind put in FLEET_CRDS_DIR takes over; until then the objects are
# checked against the parts of its schema they use, as upstream writes them
# (pkg/k8s/apis/cilium.io/client/crds/v2/ciliumnetworkpolicies.yaml): ``spec`` has exactly one of
# endpointSelector/nodeSelector and at least one of ingress/ingressDeny/egress/egressDeny; each rule
# names at most one L3 peer field (they are mutually exclusive); entities are the Entity enum
# (pkg/policy/api/entity.go); a PortProtocol's ``port`` is a string and ``protocol`` an enum.
_ENTITIES = ["all", "world", "cluster", "host", "init", "ingress", "unmanaged", "remote-node", "health", "none",
             "kube-apiserver"]
_SELECTOR = {"type": "object", "additionalProperties": False,
             "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                            "matchExpressions": {"type": "array", "items": {
                                "type": "object", "required": ["key", "operator"],
                                "properties": {"key": {"type": "string"},
                                               "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                                               "values": {"type": "array", "items": {"type": "string"}}}}}}}
_TO_PORTS = {"type": "array", "items": {"type": "object", "properties": {"ports": {"type": "array", "items": {
    "type": "object", "additionalProperties": False,
    "properties": {"port": {"type": "string", "pattern": r"^([0-9]{1,5}|[a-zA-Z0-9-]*[a-zA-Z][a-zA-Z0-9-]*)$"},
                   "endPort": {"type": "integer"},
                   "protocol": {"enum": ["TCP", "UDP", "SCTP", "ICMP", "ICMPV6", "VRRP", "IGMP", "ANY"]}}}}}}}


def _rule(side: str, peers: tuple[str, ...]) -> dict[str, Any]:
    props = {f"{side}{p}": {"type": "array", "items": _SELECTOR} for p in ("Endpoints", "Requires", "Nodes")}
    props.update({f"{side}Entities": {"type": "array", "items": {"enum": _ENTITIES}},
                  f"{side}CIDR": {"type": "array", "items": {"type": "string"}},
                  f"{side}CIDRSet": {"type": "array", "items": {"type": "object"}},
                  f"{side}Groups": {"type": "array"}, "toPorts": _TO_PORTS, "icmps": {"type": "array"},
                  "authentication": {"type": "object"}})
    if side == "to":
        props.update({"toServices": {"type": "array"}, "toFQDNs": {"type": "array"}})
    exclusive = [f"{side}{p}" for p in peers]
    return {"type": "object", "additionalProperties": False, "properties": props,
            "not": {"anyOf": [{"required": [a, b]} for i, a in enumerate(exclusive) for b in exclusive[i + 1:]]}}


_INGRESS = _rule("from", ("Endpoints", "CIDR", "CIDRSet", "Entities", "Groups"))
_EGRESS = _rule("to", ("Endpoints", "CIDR", "CIDRSet", "Entities", "Services", "Groups"))
_CNP_RULE = {"type": "object",
             "oneOf": [{"required": ["endpointSelector"]}, {"required": ["nodeSelector"]}],
             "anyOf": [{"required": [k]} for k in ("ingress", "ingressDeny", "egress", "egressDeny")],
             "properties": {"endpointSelector": _SELECTOR, "nodeSelector": _SELECTOR, "description": {"type": "string"},
                            "ingress": {"type": "array", "items": _INGRESS},
                            "ingressDeny": {"type": "array", "items": _INGRESS},
                            "egress": {"type": "array", "items": _EGRESS},
                            "egressDeny": {"type": "array", "items": _EGRESS},
                            "enableDefaultDeny": {"type": "object"}, "labels": {"type": "array"}},
             "additionalProperties": False}
CLUSTER_SERVED_SCHEMAS = {
    ("cilium.io/v2", "CiliumNetworkPolicy"): {
        "type": "object", "required": ["apiVersion", "kind", "metadata"],
        "anyOf": [{"required": ["spec"]}, {"required": ["specs"]}],
        "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                       "spec": _CNP_RULE, "specs": {"type": "array", "items": _CNP_RULE}}},
}


def _crd_documents():
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for path in sorted(CRDS_DIR.glob("*.yaml")):
        yield from yaml.load_all(path.read_text(), Loader=loader)
    for archive, member in CHART_CRDS:
        if (CHARTS_DIR / archive).is_file():
            with tarfile.open(CHARTS_DIR / archive) as tar:
                yield from yaml.load_all(tar.extractfile(member).read().decode(), Loader=loader)


def crds_available() -> bool:
    return CRDS_DIR.is_dir() and any(CRDS_DIR.glob("*.yaml"))


def require_crds() -> None:
    """Return when the upstream CRDs are here; otherwise fail — or skip, saying so, when the run
    declared itself offline with ``FLEET_UPSTREAM_OFFLINE=1``."""
    import pytest

    if crds_available():
        return
    where = f"upstream CRDs not found in {CRDS_DIR} (FLEET_CRDS_DIR)"
    if upstream.offline():
        pytest.skip(f"{where}; {upstream.OFFLINE_VAR}=1: custom resources not schema-checked in this run")
    pytest.fail(f"{where}: `make upstream` fetches them at the pinned versions (then FLEET_CRDS_DIR=build/upstream/crds), "
                f"or set {upstream.OFFLINE_VAR}=1 to run without them", pytrace=False)


@functools.lru_cache(maxsize=None)
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema, for every served version of every CRD we have."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    # The C loader: the KServe CRD alone is 2.7 MB, seconds per worker with the pure-Python one.
    for doc in _crd_documents():
        if not doc or doc.get("kind") != "CustomResourceDefinition":
            continue
        group = doc["spec"]["group"]
        kind = doc["spec"]["names"]["kind"]
        for v in doc["spec"]["versions"]:
            if v.get("served", True) and "schema" in v:
                out[(f"{group}/{v['name']}", kind)] = v["schema"]["openAPIV3Schema"]
    return out


def _strip_k8s_extensions(schema: Any) -> Any:
    # x-kubernetes-* keys are not JSON Schema; int-or-string needs an explicit type union.
    if isinstance(schema, dict):
        out = {k: _strip_k8s_extensions(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
        if schema.get("x-kubernetes-int-or-string"):
            out.pop("type", None)
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if schema.get("x-kubernetes-preserve-unknown-fields") and "type" not in out:
            pass
        return out
    if isinstance(schema, list):
        return [_strip_k8s_extensions(v) for v in schema]
    return schema


def validate_object(obj: dict[str, Any]) -> list[str]:
    """Problems with one object (empty when valid). Custom kinds need the CRD to be known."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    if key == ("v1", "Secret") and SECRET in (obj.get("stringData"), obj.get("data")):
        # The plan masks a secret's values as one placeholder string (Pulumi marks the whole map
        # secret); what is left to check is the rest of the object.
        obj = {k: v for k, v in obj.items() if v != SECRET}
    schemas = crd_schemas() if crds_available() else {}
    where = f"{key[1]} {obj.get('metadata', {}).get('namespace', '')}/{obj.get('metadata', {}).get('name', '?')}"
    if key not in schemas and key in CLUSTER_SERVED_SCHEMAS:
        schemas = CLUSTER_SERVED_SCHEMAS
    if key in schemas:
        validator = jsonschema.Draft7Validator(_strip_k8s_extensions(schemas[key]))
        return [f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
                for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{where}: {'.'.join(map(str, e.path))}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{where}: no schema for {key[0]} {key[1]} (neither Kubernetes {K8S_VERSION} nor a known CRD)"]
    return []
