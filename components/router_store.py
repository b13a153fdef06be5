"""The router's shared limit store: one Redis beside the router, so per-key limits and budgets hold
for the fleet of router replicas (``fleet_router.limits``), not per replica.

* **Secret** ``fleet-router-store-auth``: the password, a Pulumi secret (``RandomPassword``: made
  once, kept encrypted in the stack state), as ``password`` (mounted by the router) and inside
  ``redis.conf`` (``requirepass``; mounted by Redis, so it is never on a command line or in env).
* **StatefulSet** of one Redis with append-only persistence on a PVC: a restart keeps the budgets'
  spend (the request and token buckets are seconds long and would refill anyway). One replica on
  purpose: while it moves, the routers keep serving with per-replica limits (fail-open,
  ``fleet_router_limits_degraded``) and resume the shared limits when it is back; a replicated
  Redis would add failover machinery for state that is cheap to lose for a minute.
  Pod hardened as the router's: non-root high UID, read-only root, no capabilities, seccomp
  RuntimeDefault, no service-account token; TCP probes (no password in a probe command).
* **Service** (ClusterIP), **PodDisruptionBudget** (one voluntary disruption at a time: with one
  replica it never blocks a node drain, which fail-open makes safe). Its NetworkPolicy, in the
  flows table (components/network_policies.py): ingress on 6379 from the router's pods only; no
  egress at all (the namespace's default deny).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import workload
from fleet import layout

NAME = layout.ROUTER_STORE_NAME
AUTH_SECRET = f"{NAME}-auth"
PASSWORD_KEY = "password"
CONF_KEY = "redis.conf"
CONF_DIR = "/etc/redis"
DATA_DIR = "/data"
RUN_AS = 10001
"""A high UID (checkov CKV_K8S_40) like the router's; the image's own ``redis`` user is 999. The data
volume is made writable by ``fsGroup``, and the image's entrypoint only changes users when root."""

# redis:7.2.16-alpine, the OCI image index (all platforms), as recorded by Docker's official-images
# bot in github.com/docker-library/repo-info, repos/redis/remote/7.2.16-alpine.md (commit 1742085).
# 7.2 is the last Redis line under the BSD licence. This machine reaches no registry; re-check with
# `crane digest redis:7.2.16-alpine` when bumping (README, "Pinned versions").
IMAGE = "redis:7.2.16-alpine@sha256:ccd6aa8d45ff3f033d6fa15b8cc1a50579f65c89f38cf9bb607a954c4f2128ed"

RESOURCES = MappingProxyType({
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
})
MAXMEMORY = "384mb"
"""Below the container's memory limit (AOF rewrites fork). ``noeviction``: a full store refuses
writes, which the routers treat as the store being away (fail-open), instead of silently evicting a
key's spend."""
STORAGE = "1Gi"


def redis_conf(password: str) -> str:
    # Directives as documented in redis.conf of the 7.2 branch (github.com/redis/redis, 7.2/redis.conf).
    return "".join(f"{line}\n" for line in (
        f"port {layout.ROUTER_STORE_PORT}",
        "bind * -::*",
        "protected-mode yes",
        f'requirepass "{password}"',
        f"dir {DATA_DIR}",
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        f"maxmemory {MAXMEMORY}",
        "maxmemory-policy noeviction",
    ))


@dataclass
class RouterStoreArgs:
    namespace: str
    router_selector: dict[str, str]


class RouterStore(pulumi.ComponentResource):
    def __init__(self, name: str, args: RouterStoreArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:router:RouterStore", name, None, opts)
        ns = args.namespace
        child = pulumi.ResourceOptions(parent=self)
        selector = {layout.APP: layout.APP_REDIS, layout.COMPONENT: layout.COMPONENT_ROUTER_STORE}
        labels = {**layout.COMMON_LABELS, **selector}

        def meta(obj_name: str = NAME, **extra) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(name=obj_name, namespace=ns, labels=labels, **extra)

        # Letters and digits only: nothing to quote in redis.conf or a URL.
        # pulumi-random keeps no configuration of its own, but Pulumi.yaml disables default providers.
        # Moving from the default provider to this one keeps the password: the engine diffs the two
        # providers' configurations (pulumi step_generator.go providerChanged, DiffConfig), both empty.
        random_provider = random.Provider(f"{name}-random", opts=pulumi.ResourceOptions(parent=self))
        password = random.RandomPassword(f"{name}-password", length=40, special=False,
                                         opts=pulumi.ResourceOptions(parent=self, provider=random_provider))
        secret_value = pulumi.Output.secret(password.result)
        self.auth_secret = k8s.core.v1.Secret(
            f"{name}-auth",
            metadata=meta(AUTH_SECRET),
            type="Opaque",
            string_data={PASSWORD_KEY: secret_value,
                         CONF_KEY: pulumi.Output.secret(secret_value.apply(redis_conf))},
            opts=child,
        )
        self.secret_name = AUTH_SECRET
        self.password_key = PASSWORD_KEY

        service_account = k8s.core.v1.ServiceAccount(
            f"{name}-sa", metadata=meta(), automount_service_account_token=False, opts=child)
        container = {
            "name": "redis",
            "image": IMAGE,
            "imagePullPolicy": "Always",
            "args": [f"{CONF_DIR}/{CONF_KEY}"],
            "ports": [{"name": "redis", "containerPort": layout.ROUTER_STORE_PORT, "protocol": "TCP"}],
            "resources": {k: dict(v) for k, v in RESOURCES.items()},
            "volumeMounts": [
                {"name": "data", "mountPath": DATA_DIR},
                {"name": "conf", "mountPath": CONF_DIR, "readOnly": True},
            ],
            "readinessProbe": workload.tcp_probe("redis", period=5, failures=2, timeout=2),
            "livenessProbe": workload.tcp_probe("redis", period=10, failures=3, timeout=2, initial_delay=10),
            "securityContext": workload.container_security(RUN_AS),
        }
        self.stateful_set = k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            metadata=meta(),
            spec={
                "serviceName": NAME,
                "replicas": 1,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": NAME,
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "terminationGracePeriodSeconds": 30,
                        "securityContext": workload.pod_security(RUN_AS, fs_group=True),
                        "containers": [container],
                        "volumes": [{"name": "conf", "secret": {
                            "secretName": AUTH_SECRET, "defaultMode": 0o440,
                            "items": [{"key": CONF_KEY, "path": CONF_KEY}]}}],
                    },
                },
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data", "labels": labels},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": STORAGE}}},
                }],
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[service_account, self.auth_secret]),
        )
        k8s.core.v1.Service(
            f"{name}-service",
            metadata=meta(),
            spec={"type": "ClusterIP", "selector": selector,
                  "ports": [{"name": "redis", "port": layout.ROUTER_STORE_PORT, "targetPort": "redis",
                             "protocol": "TCP"}]},
            opts=child,
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=meta(),
            spec={"maxUnavailable": 1, "selector": {"matchLabels": selector}},
            opts=child,
        )
        self.register_outputs({})
