"""Facts the inference layer renders from: vLLM flags, probes, the endpoint picker's image and
scorers, autoscaling targets, and the per-vendor pod quirks — data, so the components have no
``if vendor == ...`` chains.

Vendor images, resource names and environment live in :data:`fleet.catalog.VENDORS`; this module
holds what only the inference layer reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from fleet import catalog, layout
from fleet.models import BYTES_PER_PARAM, GPU_MEMORY_UTILIZATION

# --- model servers (vLLM) -----------------------------------------------------------------------

RUN_AS = 10001
"""Non-root UID/GID for vLLM. The upstream images run as root by default but need no root: every
path vLLM writes (HF cache, torch/triton/vLLM compile caches, /tmp) is a mounted volume below.
Above 10000 so it cannot collide with a host account (checkov CKV_K8S_40)."""

VLLM_COMMAND = ("python3", "-m", "vllm.entrypoints.openai.api_server")
"""Explicit for every vendor: vllm/vllm-openai sets this as its entrypoint, but rocm/vllm's
entrypoint is a plain shell (arguments alone would not start a server)."""

MODEL_CACHE_DIR = "/model-cache"
SCRATCH_DIR = "/tmp"

# The vLLM dtype flag for each spec dtype. Quantized checkpoints (AWQ, GPTQ, int8/int4 W8A8/W4A16)
# carry their scheme in config.json and vLLM detects it; fp8 on a bf16 checkpoint is online
# quantization, which needs the flag.
DTYPE_ARGS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "fp32": ("--dtype", "float32"),
    "bf16": ("--dtype", "bfloat16"),
    "fp16": ("--dtype", "float16"),
    "fp8": ("--quantization", "fp8"),
    "int8": ("--dtype", "auto"),
    "awq": ("--quantization", "awq"),
    "gptq": ("--quantization", "gptq"),
    "int4": ("--dtype", "auto"),
})

# Seed 001: weights of a 7B model take 10-15 minutes to download and load; a startup probe that
# gives up sooner kills a healthy server in a loop. 90 x 30 s = 45 minutes before the first restart.
STARTUP_PROBE = MappingProxyType({"path": "/health", "periodSeconds": 30, "failureThreshold": 90,
                                  "timeoutSeconds": 5})
READINESS_PROBE = MappingProxyType({"path": "/health", "periodSeconds": 10, "failureThreshold": 3,
                                    "timeoutSeconds": 5})
LIVENESS_PROBE = MappingProxyType({"path": "/health", "periodSeconds": 30, "failureThreshold": 5,
                                   "timeoutSeconds": 10})

SHM_SIZE = "16Gi"
"""/dev/shm for NCCL/RCCL between tensor-parallel workers (Docker's 64 MiB default is far too small)."""

HOST_SHARE = 0.75
"""Share of a node's CPU and memory, pro rata to the accelerators a server takes, that it requests:
the rest is for the kubelet, daemonsets (device plugin, exporters) and page cache."""


def model_cache_size_gib(params_b: float, dtype: str) -> int:
    """emptyDir size limit for downloaded weights: the checkpoint plus a quarter and 5 GiB slack
    (seed 001 used 10 Gi for Gemma-2B and 15 Gi for Phi-3-mini)."""
    weights = params_b * 1e9 * BYTES_PER_PARAM[dtype] / 1024**3
    return int(math.ceil(weights * 1.25 + 5))


@dataclass(frozen=True)
class VendorPod:
    """What a model-server pod needs beyond the catalog's image/env/resource name."""

    whole_host: bool = False
    """Request every accelerator on the node, whatever tensor_parallel is (TPU slices cannot be split)."""
    supplemental_groups: tuple[int, ...] = ()
    """Groups that own the device nodes, for a non-root process."""
    topology_env: bool = False
    """Set TPU_CHIPS_PER_HOST_BOUNDS / TPU_HOST_BOUNDS from the pool's slice topology (seed 003)."""


VENDOR_PODS: Mapping[str, VendorPod] = MappingProxyType({
    "nvidia": VendorPod(),
    # ROCm's /dev/kfd and /dev/dri/* are group `video` (44) on Ubuntu-based AMD GPU nodes; a
    # non-root vLLM must be in it to open them. Hosts whose render nodes belong to a `render` group
    # (GID differs per distribution) need that GID added here too.
    "amd": VendorPod(supplemental_groups=(44,)),
    # Seed 003: "TPU resources are not fractional - must request full chip counts".
    "google": VendorPod(whole_host=True, topology_env=True),
})


def tpu_env(topology: str) -> dict[str, str]:
    """Seed 003: a single-host ``2x2`` slice is ``TPU_CHIPS_PER_HOST_BOUNDS=2,2,1`` on ``1,1,1`` hosts."""
    x, y = topology.split("x")
    return {"TPU_CHIPS_PER_HOST_BOUNDS": f"{x},{y},1", "TPU_HOST_BOUNDS": "1,1,1"}


# --- dev stack: the simulator instead of vLLM ----------------------------------------------------

SIM_MODULE = "fleet_router.sim"
SIM_RUN_AS = 10001  # the router image's non-root user (router/Dockerfile)
SIM_RESOURCES = MappingProxyType({"requests": {"cpu": "50m", "memory": "96Mi"},
                                  "limits": {"cpu": "500m", "memory": "256Mi"}})
SIM_PROBE = MappingProxyType({"path": "/health", "periodSeconds": 5, "failureThreshold": 12, "timeoutSeconds": 2})


def sim_profile(pool_vendor: str, accelerator: str, override: str | None = None) -> str:
    """``nvidia-h100``, ``amd-mi300x``, ``google-tpu-v6e``: the vendor prefix and the accelerator."""
    return override or f"{catalog.VENDORS[pool_vendor].sim_profile_prefix}-{accelerator}"


# --- endpoint picker (Gateway API Inference Extension) -------------------------------------------

# v1.5.0 serves inference.networking.k8s.io/v1 InferencePools. Digest as recorded by public
# deployments pinning this release; re-check with `crane digest` before a real rollout.
EPP_IMAGE = (
    "registry.k8s.io/gateway-api-inference-extension/epp:v1.5.0"
    "@sha256:86c679b057298e68c6e65ff5603e92066d432e77b11f1f81f0a06399694810bc"
)
EPP_RUN_AS = 65532  # distroless `nonroot`
EPP_CONFIG_FILE = "epp-config.yaml"
EPP_CONFIG_DIR = "/config"
EPP_RESOURCES = MappingProxyType({  # seed 003's scheduler sizing
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "500m", "memory": "512Mi"},
})
EPP_HEALTH_SERVICE = "inference-extension"

# Filters drop, scorers score in [0, 1], the picker takes the best weighted sum (STYLE.md). Prefix
# cache first — a hit skips prefill entirely — then queue depth and KV-cache pressure.
EPP_SCORERS: Mapping[str, int] = MappingProxyType({
    "prefix-cache-scorer": 3,
    "queue-scorer": 2,
    "kv-cache-utilization-scorer": 2,
})
EPP_PICKER = "max-score-picker"


def epp_config() -> dict:
    """The EndpointPickerConfig the EPP reads from its ConfigMap."""
    return {
        "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
        "kind": "EndpointPickerConfig",
        "plugins": [{"type": t} for t in EPP_SCORERS] + [{"type": EPP_PICKER}],
        "schedulingProfiles": [{
            "name": "default",
            "plugins": [{"pluginRef": t, "weight": w} for t, w in EPP_SCORERS.items()]
                       + [{"pluginRef": EPP_PICKER}],
        }],
    }


# What the EPP reads, and nothing else (tests/test_inference_epp.py holds it to this). GAIE v1.5.0
# (pkg/epp/server/controller_config.go, runserver.go): the picker discovers which x-k8s.io kinds the
# API server serves and watches InferenceObjectives and InferenceModelRewrites when their CRDs exist;
# the v1.5.0 bundle (config/crd) installs both, and the upstream chart's Role (config/charts/epplib
# templates/_rbac.yaml, "-non-sa") grants exactly these reads. A watch it may not list never syncs.
EPP_RBAC_RULES: tuple[Mapping, ...] = (
    MappingProxyType({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}),
    MappingProxyType({"apiGroups": ["inference.networking.k8s.io"], "resources": ["inferencepools"],
                      "verbs": ["get", "list", "watch"]}),
    MappingProxyType({"apiGroups": ["inference.networking.x-k8s.io"],
                      "resources": ["inferenceobjectives", "inferencemodelrewrites"],
                      "verbs": ["get", "list", "watch"]}),
)

# FailClose: one pool serves several models (seed 001 pattern 2). Without the picker the gateway
# would spread requests over every pod in the pool and a model would land on a server that does not
# have it (seed 001's 404s); an explicit 5xx lets the cross-cloud router fail over instead.
EPP_FAILURE_MODE = "FailClose"

NETPOL_SKIP = ("CKV2_K8S_6=the inference namespace's default-deny and per-flow NetworkPolicies "
               "(gateway -> servers and pickers, picker -> metrics) come from components/network_policies.py")

# --- gateway -------------------------------------------------------------------------------------

GATEWAY_TLS_SECRET = "inference-gateway-tls"
GATEWAY_CA_SECRET = "inference-gateway-ca"
# Istio names the Service of a deployed gateway `<gateway>-<class>`.
GATEWAY_SERVICE = f"{layout.GATEWAY_NAME}-istio"
CERT_DURATION = "2160h"  # 90 days
CERT_RENEW_BEFORE = "720h"  # 30 days

# --- routes --------------------------------------------------------------------------------------

POOL_PATH_PREFIX = "/pools"
"""Per-pool routes: ``/pools/<pool>/v1/...`` reaches exactly that pool (the cross-cloud router's target)."""

# --- autoscaling (KEDA) --------------------------------------------------------------------------

PROMETHEUS_URL = f"http://prometheus-operated.{layout.NS_MONITORING}.svc.cluster.local:9090"
"""prometheus-operator creates `prometheus-operated` for every Prometheus, whatever the chart calls it."""
QUEUE_METRIC = "vllm:num_requests_waiting"
QUEUE_TARGET_PER_REPLICA = 4
"""Waiting requests per replica before another replica is added (running batch excluded)."""
DEMAND_METRICS = ("inference_objective_request_total", "inference_objective_request_error_total")
"""The endpoint picker's per-model request counters, which together count every request it sees.

GAIE v1.5.0 pkg/epp/handlers/server.go: ``request_total`` is incremented only after the director
found an endpoint; with zero servers HandleRequest fails ("failed to find endpoint candidates",
ServiceUnavailable, requestcontrol/director.go) after it parsed the body's model, and the deferred
``RecordRequestErrCounter`` counts the request in ``request_error_total{model_name=...}``. So the
error counter is what moves when a model sits at zero; both are labelled ``model_name``."""
POLLING_INTERVAL_S = 15
COOLDOWN_S = 600
"""Accelerator nodes take minutes to come up: do not scale a model to zero after a short lull."""
