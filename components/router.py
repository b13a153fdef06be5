"""The cross-cloud router in the cluster that hosts it: config, keys, Deployment and its guard rails.

* **ConfigMap** ``fleet-router-config``: ``config.yaml`` generated from the topology by
  :func:`fleet.routerconfig.router_config` — the same pydantic model (``fleet_router.config``)
  the router validates it with, so the two cannot drift.
* **Secret** ``fleet-router-api-keys`` from the Pulumi secret ``routerApiKeys`` (comma-separated),
  stored as sha256 hashes: the router compares hashes, a leaked Secret leaks no key.
* **Secret** ``fleet-router-backend-keys`` (only when the Pulumi secret ``routerBackendKeys`` is set,
  a JSON object pool -> key): one file per served pool, the key its model servers require (vLLM
  ``--api-key``; empty: none), mounted read-only; the config names each pool's file.
* **Deployment**: image by digest from :class:`~components.router_image.RouterImage`; a checksum of
  the config on the pod template, so a config change (and only that) rolls the pods; hardened pod
  (non-root, read-only root filesystem, no capabilities, seccomp RuntimeDefault, no service-account
  token), requests and limits, startup/readiness/liveness probes, spread over zones and nodes.
* **RouterStore** (components/router_store.py): the Redis the replicas share per-key limits through;
  its password Secret is mounted as a file and the config's ``store`` points at its Service.
* **Service** (API + admin ports), **PodDisruptionBudget**, **HorizontalPodAutoscaler**, and an
  **HTTPRoute** on the cluster Gateway, which terminates TLS with the certificate the inference
  layer requests. Its NetworkPolicies (API only from the gateway, admin only from Prometheus;
  egress to DNS, the in-cluster pools, the limit store and other clusters' gateways) are in the
  flows table with every other one (components/network_policies.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from types import MappingProxyType

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.namespaces import Namespaces
from components.platform import Platform
from components.router_image import RouterImage
from components import workload
from components.gateway import HTTP_LISTENER, ROUTER_LISTENER, router_listener_hostname
from components.router_store import RouterStore, RouterStoreArgs
from fleet import layout
from fleet import drain
from fleet.spec import ClusterSpec, FleetSpec

NAME = "fleet-router"
CONFIG_DIR = "/etc/fleet-router"
CONFIG_FILE = "config.yaml"
KEYS_DIR = "/etc/fleet-router/keys"
KEYS_FILE = "api-key-hashes"
STORE_DIR = "/etc/fleet-router/store"
BACKEND_KEYS_DIR = "/etc/fleet-router/backend-keys"
UPSTREAM_CA_DIR = "/etc/fleet-router/upstream-ca"
UPSTREAM_CA_CONFIGMAP = f"{NAME}-upstream-ca"
CHECKSUM_ANNOTATION = "inference-fleet.io/config-checksum"
CA_CHECKSUM_ANNOTATION = "inference-fleet.io/upstream-ca-checksum"
RUN_AS = 10001
"""The image's non-root user (router/Dockerfile); a high UID no host account shares."""
"""Never fewer than two: one pod can drain or be evicted while the other serves."""

# Sized for the router's own work (parsing, routing, proxying streams); memory bounds in-flight
# request bodies (max_body_bytes x concurrency) with room to spare.
RESOURCES = MappingProxyType({
    "requests": {"cpu": "250m", "memory": "256Mi"},
    "limits": {"cpu": "2", "memory": "1Gi"},
})
TARGET_CPU_UTILIZATION = 70

def config_checksum(config_yaml: str) -> str:
    return hashlib.sha256(config_yaml.encode()).hexdigest()


def hash_api_keys(keys: str) -> str:
    """``key1,key2`` -> one sha256 hex digest per line (what the router compares against)."""
    hashes = sorted({hashlib.sha256(k.strip().encode()).hexdigest() for k in keys.split(",") if k.strip()})
    return "".join(f"{h}\n" for h in hashes)


def backend_key_files(spec: FleetSpec, keys_json: str) -> dict[str, str]:
    """``routerBackendKeys`` (JSON: pool -> key) as the Secret's data: a file per served pool, empty for
    pools without a key; a name that is no served pool is an error, not a silently unused key."""
    try:
        keys = json.loads(keys_json)
    except json.JSONDecodeError as e:
        raise pulumi.RunError(f"routerBackendKeys: not a JSON object of pool -> key: {e.msg}") from None
    served = [p.name for p in spec.pools if spec.models_on(p.name)]
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise pulumi.RunError("routerBackendKeys: not a JSON object of pool -> key")
    unknown = sorted(set(keys) - set(served))
    if unknown:
        raise pulumi.RunError(f"routerBackendKeys: no served pool named {', '.join(unknown)}")
    return {name: keys.get(name, "").strip() for name in served}


def upstream_ca_files(spec: FleetSpec, clusters_with_ca: set[str] | frozenset[str]) -> dict[str, str]:
    """pool -> the mounted CA file its gateway's certificate is verified against (served pools of the
    clusters that have one)."""
    return {p.name: f"{UPSTREAM_CA_DIR}/{p.cluster}.pem" for p in spec.pools
            if spec.models_on(p.name) and p.cluster in clusters_with_ca}


def _render_config(spec: FleetSpec, endpoints: dict[str, str], keys_file: str | None, store_password_file: str,
                   backend_keys: bool = False, ca_files: dict[str, str] | None = None) -> str:
    # Interim until the router package (fleet_router.config) lands: the generator's plain data as
    # YAML; tests/test_router_deploy.py loads it with the router's schema once it exists.
    from fleet.routerconfig import router_config_data

    files = ({p.name: f"{BACKEND_KEYS_DIR}/{p.name}" for p in spec.pools if spec.models_on(p.name)}
             if backend_keys else None)
    return yaml.safe_dump(router_config_data(spec, endpoints, api_key_hashes_file=keys_file, store=True,
                                             store_password_file=store_password_file, backend_key_files=files,
                                             ca_files=ca_files or None),
                          sort_keys=False)


@dataclass
class RouterArgs:
    spec: FleetSpec
    cluster: ClusterSpec
    pool_endpoints: dict[str, pulumi.Output[str]]
    image: RouterImage
    api_keys: pulumi.Output[str] | None
    namespaces: Namespaces | None
    platform: Platform | None
    """None in a stack set's router part: they are the cluster part's, deployed before it."""
    backend_keys: pulumi.Output[str] | None = None
    gateway_cas: dict[str, pulumi.Output[str]] = field(default_factory=dict)
    """cluster -> the CA certificate (PEM) that signs that cluster's gateway, for the clusters whose
    pools the router reaches over HTTPS through a private CA."""


class Router(pulumi.ComponentResource):
    def __init__(self, name: str, args: RouterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:router:Router", name, None, opts)
        spec, rspec = args.spec, args.spec.router
        ns = layout.NS_ROUTER
        child = pulumi.ResourceOptions(parent=self)
        selector = {layout.APP: layout.APP_ROUTER, layout.COMPONENT: layout.COMPONENT_ROUTER}
        labels = {**layout.COMMON_LABELS, **selector}

        def meta(obj_name: str = NAME, **extra) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(name=obj_name, namespace=ns, labels=labels, **extra)

        # --- API keys ----------------------------------------------------------------------------
        keys_file = f"{KEYS_DIR}/{KEYS_FILE}" if args.api_keys is not None else None
        self.api_keys_secret = None
        if args.api_keys is not None:
            self.api_keys_secret = k8s.core.v1.Secret(
                f"{name}-api-keys",
                metadata=meta(f"{NAME}-api-keys"),
                type="Opaque",
                string_data={KEYS_FILE: pulumi.Output.secret(args.api_keys.apply(hash_api_keys))},
                opts=child,
            )

        # --- the shared limit store beside the router -------------------------------------------
        self.store = RouterStore(f"{name}-store", RouterStoreArgs(namespace=ns, router_selector=selector), child)
        store_password_file = f"{STORE_DIR}/{self.store.password_key}"

        self.backend_keys_secret = None
        if args.backend_keys is not None:
            self.backend_keys_secret = k8s.core.v1.Secret(
                f"{name}-backend-keys",
                metadata=meta(f"{NAME}-backend-keys"),
                type="Opaque",
                string_data=pulumi.Output.secret(args.backend_keys.apply(lambda j: backend_key_files(spec, j))),
                opts=child,
            )

        # --- config ------------------------------------------------------------------------------
        endpoints = dict(sorted(args.pool_endpoints.items()))
        with_backend_keys = args.backend_keys is not None
        ca_files = upstream_ca_files(spec, set(args.gateway_cas))
        cas = {c: args.gateway_cas[c] for c in sorted({p.cluster for p in spec.pools if p.name in ca_files})}
        config_yaml = pulumi.Output.all(**endpoints).apply(
            lambda eps: _render_config(spec, dict(eps), keys_file, store_password_file, with_backend_keys, ca_files))
        self.config_map = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata=meta(f"{NAME}-config"),
            data={CONFIG_FILE: config_yaml},
            opts=child,
        )
        self.config_checksum = config_yaml.apply(config_checksum)

        self.upstream_ca = None
        ca_checksum: pulumi.Output[str] | None = None
        if cas:
            bundle = {f"{c}.pem": pem for c, pem in cas.items()}
            self.upstream_ca = k8s.core.v1.ConfigMap(
                f"{name}-upstream-ca", metadata=meta(UPSTREAM_CA_CONFIGMAP), data=bundle, opts=child)
            ca_checksum = pulumi.Output.all(**bundle).apply(
                lambda b: config_checksum("".join(f"{k}\n{v}" for k, v in sorted(b.items()))))

        # --- workload ----------------------------------------------------------------------------
        service_account = k8s.core.v1.ServiceAccount(
            f"{name}-sa", metadata=meta(), automount_service_account_token=False, opts=child)

        # As the spec says, not silently raised: the policy pack's router-highly-available rule is
        # where "at least 2" is enforced, with a message that says so.
        replicas = rspec.replicas
        max_replicas = max(replicas, rspec.max_replicas)
        local = args.cluster.cloud == "local"
        image = args.image.ref_for(args.cluster.name)
        volumes = [
            {"name": "config", "configMap": {"name": f"{NAME}-config"}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            {"name": "store-auth", "secret": {"secretName": self.store.secret_name, "defaultMode": 0o440,
                                              "items": [{"key": self.store.password_key,
                                                         "path": self.store.password_key}]}},
        ]
        mounts = [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "store-auth", "mountPath": STORE_DIR, "readOnly": True},
        ]
        if self.api_keys_secret is not None:
            volumes.append({"name": "api-keys", "secret": {"secretName": f"{NAME}-api-keys",
                                                           "defaultMode": 0o440}})
            mounts.append({"name": "api-keys", "mountPath": KEYS_DIR, "readOnly": True})
        if self.backend_keys_secret is not None:
            volumes.append({"name": "backend-keys", "secret": {"secretName": f"{NAME}-backend-keys",
                                                               "defaultMode": 0o440}})
            mounts.append({"name": "backend-keys", "mountPath": BACKEND_KEYS_DIR, "readOnly": True})
        if self.upstream_ca is not None:
            volumes.append({"name": "upstream-ca", "configMap": {"name": UPSTREAM_CA_CONFIGMAP}})
            mounts.append({"name": "upstream-ca", "mountPath": UPSTREAM_CA_DIR, "readOnly": True})

        def probe(path: str, period: int, failures: int) -> dict:
            return workload.http_probe(path, "admin", period=period, failures=failures, timeout=2)

        container = {
            "name": "router",
            "image": image,
            # Digests never move, so Always costs one manifest check; kind has no registry to ask.
            "imagePullPolicy": "IfNotPresent" if local else "Always",
            "args": ["--config", f"{CONFIG_DIR}/{CONFIG_FILE}"],
            "ports": [
                {"name": "http", "containerPort": layout.ROUTER_PORT, "protocol": "TCP"},
                {"name": "admin", "containerPort": layout.ROUTER_ADMIN_PORT, "protocol": "TCP"},
            ],
            "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
            "resources": {k: dict(v) for k, v in RESOURCES.items()},
            "volumeMounts": mounts,
            "startupProbe": probe("/healthz", 2, 30),
            "readinessProbe": probe("/readyz", 5, 2),
            "livenessProbe": probe("/healthz", 10, 3),
            "securityContext": workload.container_security(RUN_AS),
        }
        skips = {}
        if local:
            skips = {
                "checkov.io/skip1": "CKV_K8S_43=kind has no registry: `make image` builds the content-hash "
                                    "tag and `kind load` puts it on the nodes, so there is no digest to pin",
                "checkov.io/skip2": "CKV_K8S_15=the image is loaded into kind, not pullable; "
                                    "IfNotPresent is the only policy that starts",
            }

        def pod_annotations(sums: list[str]) -> dict[str, str]:
            out = {CHECKSUM_ANNOTATION: sums[0]}
            if len(sums) > 1:
                out[CA_CHECKSUM_ANNOTATION] = sums[1]
            return out

        spread = [
            {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": selector}}
            for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
        ]
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=meta(annotations=skips or None),
            spec={
                "replicas": replicas,
                "revisionHistoryLimit": 5,
                "selector": {"matchLabels": selector},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {"labels": labels, "annotations": pulumi.Output.all(
                    self.config_checksum, *([ca_checksum] if ca_checksum is not None else [])).apply(pod_annotations)},
                    "spec": {
                        "serviceAccountName": NAME,
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        # The router's shutdown config is generated to fit it (fleet.routerconfig).
                        "terminationGracePeriodSeconds": drain.router_termination_grace_s(rspec.request_timeout_s),
                        "securityContext": workload.pod_security(RUN_AS, fs_group=True),
                        "topologySpreadConstraints": spread,
                        "containers": [container],
                        "volumes": volumes,
                    },
                },
            },
            # The HPA owns the replica count once the Deployment exists.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[service_account, self.store.auth_secret],
                                        ignore_changes=["spec.replicas"]),
        )

        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=meta(),
            spec={
                "type": "ClusterIP",
                "selector": selector,
                "ports": [
                    {"name": "http", "port": layout.ROUTER_PORT, "targetPort": "http", "protocol": "TCP"},
                    {"name": "admin", "port": layout.ROUTER_ADMIN_PORT, "targetPort": "admin", "protocol": "TCP"},
                ],
            },
            opts=child,
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=meta(),
            spec={"maxUnavailable": 1, "selector": {"matchLabels": selector}},
            opts=child,
        )
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-hpa",
            metadata=meta(),
            spec={
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
                "minReplicas": replicas,
                "maxReplicas": max_replicas,
                "metrics": [{"type": "Resource", "resource": {
                    "name": "cpu", "target": {"type": "Utilization", "averageUtilization": TARGET_CPU_UTILIZATION}}}],
                # Scale down slowly: streams are long, and a shrinking fleet drains them.
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300,
                                           "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}},
            },
            opts=child,
        )

        hostname = rspec.hostname or args.cluster.gateway_hostname
        parent = {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                  "name": layout.GATEWAY_NAME, "namespace": layout.NS_GATEWAY}
        parents = [parent]
        if router_listener_hostname(args.cluster, rspec.hostname):
            # The listener for the router's own name, whose certificate covers it; on kind also the
            # plain-HTTP listener the local cluster has.
            parents = [{**parent, "sectionName": ROUTER_LISTENER}]
            if local:
                parents.append({**parent, "sectionName": HTTP_LISTENER})
        route_spec: dict = {
            "parentRefs": parents,
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                "backendRefs": [{"kind": "Service", "name": NAME, "port": layout.ROUTER_PORT}],
                "timeouts": {"request": drain.router_route_timeout(rspec.request_timeout_s)},
            }],
        }
        if hostname:
            route_spec["hostnames"] = [hostname]
        self.route = k8s.apiextensions.CustomResource(
            f"{name}-route",
            api_version="gateway.networking.k8s.io/v1",
            kind="HTTPRoute",
            metadata=meta(),
            spec=route_spec,
            opts=child,
        )
        self.url = pulumi.Output.from_input(
            f"https://{hostname}" if hostname
            else f"http://{NAME}.{ns}.svc.cluster.local:{layout.ROUTER_PORT}")
        self.register_outputs({"url": self.url, "config_checksum": self.config_checksum})

