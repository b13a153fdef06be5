"""Render the inference layer of a fleet spec offline, for tests of cloud topologies.

A spec goes through :func:`fleetctl.plan.run_plan` with a temporary stack file — the whole program,
exactly as ``python -m fleet plan`` runs it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

from fleetctl.plan import Plan, run_plan

ROOT = Path(__file__).resolve().parent.parent

# Seed 000's topology: NVIDIA H100, AMD MI300X and TPU on three clouds; premium to NVIDIA 90/10,
# standard to AMD 80/20, both overflowing to TPU. A second TPU model is served through KServe.
MULTICLOUD_SPEC: dict[str, Any] = {
    "topology": "multicloud",
    "clusters": [
        {"name": "aws-east", "cloud": "aws", "region": "us-east-1", "gateway_hostname": "aws-east.gw.example.com"},
        {"name": "azure-east", "cloud": "azure", "region": "eastus", "gateway_hostname": "azure-east.gw.example.com"},
        {"name": "gcp-central", "cloud": "gcp", "region": "us-central1",
         "gateway_hostname": "gcp-central.gw.example.com"},
    ],
    "pools": [
        {"name": "nvidia-h100", "cluster": "aws-east", "accelerator": "h100", "max_nodes": 2},
        {"name": "amdmi300x", "cluster": "azure-east", "accelerator": "mi300x", "max_nodes": 2},
        {"name": "tpu-v6e", "cluster": "gcp-central", "accelerator": "tpu-v6e", "tpu_topology": "2x2",
         "max_nodes": 2},
    ],
    "models": [
        {"name": "llama-3.1-8b", "hf_id": "meta-llama/Llama-3.1-8B-Instruct", "params_b": 8.03,
         "max_context": 8192, "pools": ["nvidia-h100", "amdmi300x", "tpu-v6e"],
         "min_replicas": 0, "max_replicas": 4},
        {"name": "qwen2.5-3b", "hf_id": "Qwen/Qwen2.5-3B-Instruct", "params_b": 3.09, "max_context": 2048,
         "pools": ["tpu-v6e"], "tensor_parallel": 4, "serving": "kserve", "min_replicas": 1, "max_replicas": 1},
    ],
    "tiers": [
        {"name": "premium", "match": {"X-Priority": "high"},
         "backends": [{"pool": "nvidia-h100", "weight": 90}, {"pool": "amdmi300x", "weight": 10}],
         "overflow": ["tpu-v6e"], "ttft_slo_ms": 500},
        {"name": "standard", "match": {"X-Cost-Tier": "standard"},
         "backends": [{"pool": "amdmi300x", "weight": 80}, {"pool": "nvidia-h100", "weight": 20}],
         "overflow": ["tpu-v6e"], "ttft_slo_ms": 2000, "policy": "cost-aware"},
        {"name": "default",
         "backends": [{"pool": "nvidia-h100", "weight": 50}, {"pool": "amdmi300x", "weight": 50}],
         "overflow": ["tpu-v6e"]},
    ],
}


def write_stack(tmp: Path, stack: str, fleet: dict[str, Any], hf_token: bool = True) -> Path:
    config: dict[str, Any] = {"inference-fleet:fleet": fleet}
    if hf_token:
        # Ciphertext only the Pulumi CLI could decrypt: the plan masks it.
        config["inference-fleet:hfToken"] = {"secure": "v1:AAAAAAAAAAAAAAAA:offline-test"}
    path = tmp / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump({"config": config}, sort_keys=False))
    return path


def render(fleet: dict[str, Any], tmp: Path, stack: str = "test", hf_token: bool = True) -> Plan:
    """The whole program's plan of ``fleet``, as `fleet plan` would make it."""
    return run_plan(stack, config_file=write_stack(tmp, stack, fleet, hf_token))


@functools.lru_cache(maxsize=None)
def seed_plan() -> Plan:
    """:data:`MULTICLOUD_SPEC` rendered (the fixed seed-000 fleet the detailed tests read)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return render(MULTICLOUD_SPEC, Path(tmp), "seedmulticloud")


def multicloud_plan() -> Plan:
    """The shipped multicloud stack if there is one, else :func:`seed_plan`."""
    if (ROOT / "fleets" / "multicloud.yaml").exists():
        from conftest import plan_of

        return plan_of("multicloud")
    return seed_plan()


LAYER_TYPE = "fleet:inference:InferenceLayer"


def inference_objects(plan: Plan, kind: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """cluster name -> the Kubernetes objects its InferenceLayer declared (of ``kind``), sorted."""
    by_urn = {r["urn"]: r for r in plan.resources}
    out: dict[str, list[dict[str, Any]]] = {}
    for r in plan.resources:
        obj = r["inputs"]
        if not r["type"].startswith("kubernetes:") or "kind" not in obj or (kind and obj["kind"] != kind):
            continue
        up = by_urn.get(r["parent"])
        while up is not None and up["type"] != LAYER_TYPE:
            up = by_urn.get(up["parent"])
        if up is not None:
            out.setdefault(up["name"].removesuffix("-inference"), []).append(obj)
    return {c: sorted(objs, key=lambda o: (o["kind"], o["metadata"]["name"])) for c, objs in sorted(out.items())}
