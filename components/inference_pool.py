"""One InferencePool per accelerator pool, with its endpoint picker (EPP).

The pool selects every model server on the accelerator pool (``llm-d.ai/inferenceServing: "true"``
and the pool label), so one pool and one picker serve several models (seed 001 pattern 2). The
picker runs the Gateway API Inference Extension's scheduler — prefix-cache, queue and KV-cache
scorers, weights as data in :mod:`components.inference_data` — with a ServiceAccount that can only
read pods, InferencePools, InferenceObjectives and InferenceModelRewrites in the inference namespace, and nothing else.
The failure mode is explicit (FailClose: see ``EPP_FAILURE_MODE``).

Caveat, as of GIE v1.5: the reference picker assumes one base model per pool (it filters by LoRA
adapter, not by base model; upstream issues #715 and #2018), whereas seed 001 reports it routing two
base models correctly. With one model per pool (every shipped stack) the question does not arise;
with several, verify the picker's choice against ``/v1/models`` on the live pool, or give each
model its own pool until upstream supports heterogeneous pools (the per-model routes choose pools,
not pods within one).

Ports (fleet/layout.py, seeds 001 and 003): ext-proc gRPC 9002, gRPC health 9003, metrics 9090.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components import inference_data as data
from components import workload
from fleet import drain, layout
from fleet.spec import PoolSpec


def epp_name(pool: str) -> str:
    return f"{pool}-epp"


def pool_selector(pool: str) -> dict[str, str]:
    return {layout.INFERENCE_SERVING: "true", layout.POOL_LABEL: pool}


def epp_args(pool: str) -> list[str]:
    return [
        "--pool-name", pool,
        "--pool-namespace", layout.NS_INFERENCE,
        "--pool-group", "inference.networking.k8s.io",
        "--grpc-port", str(layout.EPP_EXTPROC_PORT),
        "--grpc-health-port", str(layout.EPP_HEALTH_PORT),
        "--metrics-port", str(layout.EPP_METRICS_PORT),
        # The metrics port is reachable only from Prometheus (NetworkPolicy); token review would
        # need a cluster-wide tokenreviews/subjectaccessreviews grant the picker otherwise never uses.
        "--metrics-endpoint-auth=false",
        "--config-file", f"{data.EPP_CONFIG_DIR}/{data.EPP_CONFIG_FILE}",
        # No OTLP collector is deployed, and profiling handlers are attack surface nobody reads.
        "--tracing=false",
        "--enable-pprof=false",
        "--zap-encoder", "json",
        "--v", "2",
    ]


@dataclass
class InferencePoolArgs:
    pool: PoolSpec
    drain_s: int = drain.server_termination_grace_s(300.0)
    """Termination grace, as long as the model servers' (upstream: mirror the pool's longest)."""
    istio: bool = True
    """Whether Istio is the gateway (then a DestinationRule tells it the picker speaks TLS)."""


class InferencePool(pulumi.ComponentResource):
    def __init__(self, name: str, args: InferencePoolArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:inference:InferencePool", name, None, opts)
        pool = args.pool.name
        ns = layout.NS_INFERENCE
        epp = epp_name(pool)
        child = pulumi.ResourceOptions(parent=self)
        epp_selector = {layout.APP: layout.APP_EPP, layout.COMPONENT: layout.COMPONENT_EPP, layout.POOL_LABEL: pool}
        epp_labels = {**layout.COMMON_LABELS, **epp_selector}

        def meta(obj_name: str, labels: dict[str, str] = epp_labels) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(name=obj_name, namespace=ns, labels=labels)

        self.name = pool
        config_yaml = yaml.safe_dump(data.epp_config(), sort_keys=False)
        self.config_map = k8s.core.v1.ConfigMap(
            f"{name}-epp-config", metadata=meta(f"{epp}-config"),
            data={data.EPP_CONFIG_FILE: config_yaml}, opts=child)

        self.service_account = k8s.core.v1.ServiceAccount(f"{name}-epp-sa", metadata=meta(epp), opts=child)
        self.role = k8s.rbac.v1.Role(
            f"{name}-epp-role", metadata=meta(epp),
            rules=[{k: list(v) for k, v in rule.items()} for rule in data.EPP_RBAC_RULES], opts=child)
        self.role_binding = k8s.rbac.v1.RoleBinding(
            f"{name}-epp-rolebinding", metadata=meta(epp),
            subjects=[{"kind": "ServiceAccount", "name": epp, "namespace": ns}],
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": epp},
            opts=child)

        def grpc_probe(period: int, failures: int) -> dict:
            return workload.grpc_probe(layout.EPP_HEALTH_PORT, data.EPP_HEALTH_SERVICE,
                                       period=period, failures=failures, timeout=2)

        # A config change restarts the picker (it reads the file once at start).
        checksum = hashlib.sha256(config_yaml.encode()).hexdigest()
        skips = {
            "checkov.io/skip1": data.NETPOL_SKIP,
            "checkov.io/skip2": "CKV_K8S_38=the picker watches pods and its InferencePool through the "
                                "API server; its token grants read-only access in one namespace",
        }
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-epp",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=epp, namespace=ns, labels=epp_labels, annotations=skips),
            spec={
                "replicas": 1,
                # As upstream's chart (config/charts/epplib templates/_deployment.yaml, v1.5.0): one
                # active picker holds the prefix-cache state; a rolling update would run two pickers
                # with diverging caches side by side.
                "strategy": {"type": "Recreate"},
                "revisionHistoryLimit": 3,
                "selector": {"matchLabels": epp_selector},
                "template": {
                    "metadata": {"labels": epp_labels,
                                 "annotations": {"inference-fleet.io/config-checksum": checksum}},
                    "spec": {
                        "serviceAccountName": epp,
                        "enableServiceLinks": False,
                        # As long as the model servers' drain, so in-flight streams keep their picker.
                        "terminationGracePeriodSeconds": args.drain_s,
                        "securityContext": workload.pod_security(data.EPP_RUN_AS),
                        "containers": [{
                            "name": "epp",
                            "image": data.EPP_IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "args": epp_args(pool),
                            "ports": [
                                {"name": "grpc", "containerPort": layout.EPP_EXTPROC_PORT, "protocol": "TCP"},
                                {"name": "grpc-health", "containerPort": layout.EPP_HEALTH_PORT, "protocol": "TCP"},
                                {"name": "metrics", "containerPort": layout.EPP_METRICS_PORT, "protocol": "TCP"},
                            ],
                            "resources": {k: dict(v) for k, v in data.EPP_RESOURCES.items()},
                            "readinessProbe": grpc_probe(5, 3),
                            "livenessProbe": grpc_probe(10, 3),
                            "securityContext": workload.container_security(data.EPP_RUN_AS),
                            "volumeMounts": [{"name": "config", "mountPath": data.EPP_CONFIG_DIR, "readOnly": True}],
                        }],
                        "volumes": [{"name": "config", "configMap": {"name": f"{epp}-config"}}],
                    },
                },
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.role_binding, self.config_map]),
        )
        self.service = k8s.core.v1.Service(
            f"{name}-epp-service",
            metadata=meta(epp),
            spec={
                "type": "ClusterIP",
                "selector": epp_selector,
                "ports": [
                    # No appProtocol: `http2` would declare cleartext HTTP/2 (h2c), but the picker
                    # serves TLS (see the DestinationRule below); Istio reads gRPC from the port name.
                    {"name": "grpc", "port": layout.EPP_EXTPROC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                    {"name": "metrics", "port": layout.EPP_METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
                ],
            },
            opts=child,
        )
        # GAIE v1.5.0 pkg/epp/server/options.go: `--secure-serving` defaults to true, and without
        # `--cert-path` the picker serves its ext-proc gRPC with a self-signed certificate
        # (runserver.go). The gateway must originate TLS and cannot verify it: upstream's chart does
        # exactly this for Istio (config/charts/inferencepool templates/istio.yaml, v1.5.0:
        # DestinationRule tls.mode SIMPLE, insecureSkipVerify). networking.istio.io/v1 is served by
        # the Istio 1.28.5 base chart's CRD.
        self.destination_rule = None
        if args.istio:
            self.destination_rule = k8s.apiextensions.CustomResource(
                f"{name}-epp-destinationrule",
                api_version="networking.istio.io/v1",
                kind="DestinationRule",
                metadata=meta(epp),
                spec={"host": f"{epp}.{ns}.svc.cluster.local",
                      "trafficPolicy": {"tls": {"mode": "SIMPLE", "insecureSkipVerify": True}}},
                opts=child,
            )
        self.inference_pool = k8s.apiextensions.CustomResource(
            f"{name}-pool",
            api_version="inference.networking.k8s.io/v1",
            kind="InferencePool",
            metadata=meta(pool, {**layout.COMMON_LABELS, layout.POOL_LABEL: pool}),
            spec={
                "selector": {"matchLabels": pool_selector(pool)},
                "targetPorts": [{"number": layout.VLLM_PORT}],
                "endpointPickerRef": {
                    "kind": "Service",
                    "name": epp,
                    "port": {"number": layout.EPP_EXTPROC_PORT},
                    "failureMode": data.EPP_FAILURE_MODE,
                },
            },
            opts=child,
        )
        self.register_outputs({"name": self.name})
