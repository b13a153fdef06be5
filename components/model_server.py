"""One model on one pool: vLLM with the vendor's pinned image, or the simulator on a dev cluster.

Everything vendor-specific comes from data: image, environment and extended-resource name from
:data:`fleet.catalog.VENDORS`, node labels and taints from :func:`fleet.catalog.pool_labels` /
:func:`fleet.catalog.pool_taints` and the cloud's spot taint, device groups and TPU topology from
:data:`components.inference_data.VENDOR_PODS`.

The pod carries the label the pool's InferencePool selects on (``llm-d.ai/inferenceServing``) plus
model, pool and vendor labels (fleet/layout.py), so one InferencePool serves every model on its
pool (seed 001 pattern 2) and monitoring can group metrics by them.

``serving: deployment`` (default) renders a Deployment; ``serving: kserve`` renders a KServe
``LLMInferenceService`` (seed 003) whose workload joins the same InferencePool, so routes and the
endpoint picker treat both alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import inference_data as data
from components import workload
from fleet import catalog, drain, layout, naming
from fleet.spec import ClusterSpec, ModelSpec, PoolSpec

HF_TOKEN_KEY = "token"


def server_name(model: ModelSpec, pool: PoolSpec) -> str:
    return naming.k8s_name(model.slug, pool.name)


def selector_labels(model: ModelSpec, pool: PoolSpec) -> dict[str, str]:
    return {layout.COMPONENT: layout.COMPONENT_MODEL_SERVER, layout.MODEL_LABEL: model.slug,
            layout.POOL_LABEL: pool.name}


def pod_labels(model: ModelSpec, pool: PoolSpec, simulated: bool) -> dict[str, str]:
    """The labels fleet/layout.py's conventions promise for model-server pods."""
    return {
        **layout.COMMON_LABELS,
        layout.APP: layout.APP_SIM if simulated else layout.APP_VLLM,
        **selector_labels(model, pool),
        layout.INFERENCE_SERVING: "true",
        layout.VENDOR_LABEL: pool.vendor,
    }


def _probe(p, port: str = "http") -> dict[str, Any]:
    return workload.http_probe(p["path"], port, period=p["periodSeconds"],
                               failures=p["failureThreshold"], timeout=p["timeoutSeconds"])


def accelerator_count(model: ModelSpec, pool: PoolSpec) -> int:
    return pool.accelerators if data.VENDOR_PODS[pool.vendor].whole_host else model.tensor_parallel


def tensor_parallel_on(model: ModelSpec, pool: PoolSpec) -> int:
    """The tensor-parallel size the server runs with on this pool: every chip it holds where the
    vendor's pods take the whole host (a TPU slice cannot be split, so a 2x2 server holds 4 chips and
    must shard over all 4 — at the model's tensor_parallel of 1 it would leave 3 idle), else the
    model's own."""
    return accelerator_count(model, pool)


def vllm_args(model: ModelSpec, pool: PoolSpec) -> list[str]:
    return [
        "--model", model.hf_id,
        "--served-model-name", model.name,
        "--host", "0.0.0.0",
        "--port", str(layout.VLLM_PORT),
        "--tensor-parallel-size", str(tensor_parallel_on(model, pool)),
        "--max-model-len", str(model.max_context),
        *data.DTYPE_ARGS[model.dtype],
        "--enable-prefix-caching",
        # The same share the model-fit preflight assumed (fleet/models.py).
        "--gpu-memory-utilization", f"{data.GPU_MEMORY_UTILIZATION:.2f}",
        "--download-dir", data.MODEL_CACHE_DIR,
    ]


def vllm_pod_spec(model: ModelSpec, pool: PoolSpec, cluster: ClusterSpec,
                  hf_secret: str | None, drain_s: int) -> dict[str, Any]:
    vendor = catalog.VENDORS[pool.vendor]
    quirks = data.VENDOR_PODS[pool.vendor]
    n = accelerator_count(model, pool)
    share = n / pool.accelerators
    machine = pool.machine
    cpu = max(1, int(machine.vcpus * share * data.HOST_SHARE))
    memory = max(4, int(machine.memory_gib * share * data.HOST_SHARE))

    env = {
        "HOME": data.SCRATCH_DIR,
        "HF_HOME": data.MODEL_CACHE_DIR,
        "XDG_CACHE_HOME": f"{data.SCRATCH_DIR}/.cache",
        "VLLM_CACHE_ROOT": f"{data.SCRATCH_DIR}/.cache/vllm",
        "VLLM_NO_USAGE_STATS": "1",
        **dict(vendor.vllm_env),
    }
    if quirks.topology_env and pool.tpu_topology:
        env.update(data.tpu_env(pool.tpu_topology))
    env_list: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    if hf_secret is not None:
        env_list.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": hf_secret, "key": HF_TOKEN_KEY}}})

    tolerations = [{"key": t["key"], "operator": "Equal", "value": t["value"], "effect": t["effect"]}
                   for t in catalog.pool_taints(pool.vendor)]
    spot_taint = catalog.CLOUD_TRAITS[cluster.cloud].spot_taint
    if pool.spot and spot_taint is not None:
        key, value, effect = spot_taint
        tolerations.append({"key": key, "operator": "Equal", "value": value, "effect": effect})

    pod_security = workload.pod_security(data.RUN_AS, fs_group=True,
                                         supplemental_groups=quirks.supplemental_groups)

    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": drain_s,
        "nodeSelector": catalog.pool_labels(pool.vendor, pool.accelerator, pool.name),
        "tolerations": tolerations,
        "securityContext": pod_security,
        "containers": [{
            "name": "vllm",
            "image": vendor.vllm_image,
            "imagePullPolicy": "IfNotPresent",
            "command": list(data.VLLM_COMMAND),
            "args": vllm_args(model, pool),
            "ports": [{"name": "http", "containerPort": layout.VLLM_PORT, "protocol": "TCP"}],
            "env": env_list,
            "resources": {
                "requests": {vendor.resource_name: str(n), "cpu": str(cpu), "memory": f"{memory}Gi"},
                # Limits equal to requests: Guaranteed QoS, so a GPU pod is the last to be evicted
                # under node pressure and gets exclusive cores under the static CPU manager.
                "limits": {vendor.resource_name: str(n), "cpu": str(cpu), "memory": f"{memory}Gi"},
            },
            "startupProbe": _probe(data.STARTUP_PROBE),
            "readinessProbe": _probe(data.READINESS_PROBE),
            "livenessProbe": _probe(data.LIVENESS_PROBE),
            "lifecycle": {"preStop": {"sleep": {"seconds": drain.PRE_STOP_S}}},
            "securityContext": workload.container_security(data.RUN_AS),
            "volumeMounts": [
                {"name": "model-cache", "mountPath": data.MODEL_CACHE_DIR},
                {"name": "scratch", "mountPath": data.SCRATCH_DIR},
                {"name": "shm", "mountPath": "/dev/shm"},
            ],
        }],
        "volumes": [
            {"name": "model-cache",
             "emptyDir": {"sizeLimit": f"{data.model_cache_size_gib(model.params_b, model.dtype)}Gi"}},
            {"name": "scratch", "emptyDir": {"sizeLimit": "20Gi"}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": data.SHM_SIZE}},
        ],
    }


def sim_pod_spec(model: ModelSpec, pool: PoolSpec, image: Any,
                 pool_models: tuple[str, ...] = ()) -> dict[str, Any]:
    """Dev clusters: the router image's simulator with the vendor's latency profile; no
    accelerators, so no accelerator resources, node selector or tolerations.

    Each simulated server answers for every model of its pool (its own first): the router reaches a
    dev pool through one Service over all of the pool's servers, which must not 404 a model the
    pool serves (seed 001)."""
    profile = data.sim_profile(pool.vendor, pool.accelerator, pool.sim_profile)
    names = [model.name] + [m for m in pool_models if m != model.name]
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 10,
        "securityContext": workload.pod_security(data.SIM_RUN_AS),
        "containers": [{
            "name": "sim",
            "image": image,
            # kind has no registry: `make image` + `kind load` put the tag on the nodes.
            "imagePullPolicy": "IfNotPresent",
            "command": ["python", "-m", data.SIM_MODULE, "--port", str(layout.VLLM_PORT),
                        "--profile", profile, *[a for n in names for a in ("--model", n)]],
            "ports": [{"name": "http", "containerPort": layout.VLLM_PORT, "protocol": "TCP"}],
            "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
            "resources": {k: dict(v) for k, v in data.SIM_RESOURCES.items()},
            # The simulator starts in a second, but the pod contract (and the policy pack) is the
            # same as vLLM's: a startup probe gates readiness and liveness.
            "startupProbe": _probe(data.SIM_PROBE),
            "readinessProbe": _probe(data.SIM_PROBE),
            "livenessProbe": _probe(data.SIM_PROBE),
            "securityContext": workload.container_security(data.SIM_RUN_AS),
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        }],
        "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "32Mi"}}],
    }


@dataclass
class ModelServerArgs:
    model: ModelSpec
    pool: PoolSpec
    cluster: ClusterSpec
    inference_pool: str
    """Name of the pool's InferencePool (a KServe workload joins it instead of creating its own)."""
    image: pulumi.Input[str]
    """Simulator image (dev clusters only)."""
    hf_secret: str | None
    """Name of the Secret holding the Hugging Face token, or None."""
    autoscaled: bool
    """KEDA owns the replica count (so Pulumi must not fight it)."""
    pool_models: tuple[str, ...] = ()
    """Names of every model on the pool (a simulated server answers for all of them)."""
    drain_s: int = drain.server_termination_grace_s(300.0)
    """Termination grace: the router's request timeout plus slack (fleet.drain)."""


class ModelServer(pulumi.ComponentResource):
    def __init__(self, name: str, args: ModelServerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:inference:ModelServer", name, None, opts)
        model, pool = args.model, args.pool
        simulated = args.cluster.cloud == "local"
        self.name = server_name(model, pool)
        self.kind = "LLMInferenceService" if model.serving == "kserve" else "Deployment"
        labels = pod_labels(model, pool, simulated)
        pod_spec = (sim_pod_spec(model, pool, args.image, args.pool_models) if simulated
                    else vllm_pod_spec(model, pool, args.cluster, args.hf_secret, args.drain_s))
        if self.kind == "LLMInferenceService":
            # KServe merges its defaults into the template container named `main`.
            pod_spec["containers"][0]["name"] = "main"
        meta = k8s.meta.v1.ObjectMetaArgs(name=self.name, namespace=layout.NS_INFERENCE, labels=labels)
        ignore = ["spec.replicas"] if args.autoscaled else []

        if self.kind == "Deployment":
            skips = {"checkov.io/skip1": data.NETPOL_SKIP}
            if simulated:
                skips.update({
                    "checkov.io/skip2": "CKV_K8S_43=kind has no registry to pin a digest in; the "
                                        "simulator image is `kind load`ed by its content-hash tag",
                    "checkov.io/skip3": "CKV_K8S_15=the image is loaded into kind, not pullable; "
                                        "IfNotPresent is the only policy that starts",
                })
            self.workload = k8s.apps.v1.Deployment(
                f"{name}-deployment",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=self.name, namespace=layout.NS_INFERENCE,
                                                    labels=labels, annotations=skips),
                spec={
                    # KEDA starts from the floor; without it a model must run (at least one replica).
                    "replicas": model.min_replicas if args.autoscaled else max(1, model.min_replicas),
                    "revisionHistoryLimit": 3,
                    "selector": {"matchLabels": selector_labels(model, pool)},
                    # Accelerator pools have no spare node for a surge pod (it would sit Pending and
                    # scale a node up just for the rollout): replace one server at a time instead;
                    # the cross-cloud router fails over meanwhile. Simulated servers surge freely.
                    "strategy": {"type": "RollingUpdate",
                                 "rollingUpdate": {"maxSurge": 1 if simulated else 0, "maxUnavailable": 1}},
                    "template": {"metadata": {"labels": labels}, "spec": pod_spec},
                },
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=ignore),
            )
            # A node drain (upgrade, spot reclaim notice) takes one server of a model at a time.
            self.disruption_budget = k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=self.name, namespace=layout.NS_INFERENCE, labels=labels),
                spec={"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(model, pool)}},
                opts=pulumi.ResourceOptions(parent=self),
            )
        else:
            llmisvc: dict[str, Any] = {
                "model": {"uri": f"hf://{model.hf_id}", "name": model.name},
                # A fixed count (the spec holds min_replicas == max_replicas for kserve): v0.19.0's
                # spec.scaling takes no KEDA triggers (fleet/spec.py says why).
                "replicas": max(1, model.min_replicas),
                "labels": labels,
                "template": pod_spec,
                # Join the pool's InferencePool and endpoint picker; the tier and per-pool
                # HTTPRoutes are ours, so KServe creates no route of its own.
                "router": {"scheduler": {"pool": {"ref": {"name": args.inference_pool}}}},
            }
            self.workload = k8s.apiextensions.CustomResource(
                f"{name}-llmisvc",
                api_version="serving.kserve.io/v1alpha2",
                kind="LLMInferenceService",
                metadata=meta,
                spec=llmisvc,
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({"name": self.name, "kind": self.kind})
