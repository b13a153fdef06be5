"""The parts of a stack set (fleet/stackset.py): one cluster's stack, and the router's stack.

A **cluster part** runs exactly the slice of ``stacks/_compose.py`` the single stack runs for that
cluster — the cluster (its registry), namespaces, platform, network policies, monitoring and the
inference layer, from the same frozen :class:`fleet.clusterplan.ClusterPlan` — and pushes the router
image to *its own* registry (so a registry that refuses a push fails its own stack, not the fleet's).
It exports :data:`fleet.stackset.CLUSTER_EXPORT`, what the router needs to reach and trust it, and
its kubeconfig (secret).

The **router part** declares no cloud resource: a ``StackReference`` per cluster part, a Kubernetes
provider on the router's cluster from that part's kubeconfig, and the Router with the config
generated from the spec and the records (``fleet.routerconfig``, as the single stack does). The
records are read *before* anything is declared (``get_output_details``, awaited): the router's shape
(which pools, which CA bundle) follows from what the cluster stacks really export, and a missing or
stale export stops the run with one message naming the stack and the key, instead of a router
deployed with a hole in its config. StackReference outputs are known in a preview too (they are the
referenced stack's last deployed outputs), so previews read them the same way.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi.runtime.sync_await import _sync_await

from components.clouds import create_cluster
from components.router import Router, RouterArgs
from components.router_image import REPOSITORY as ROUTER_REPOSITORY, RouterImage, RouterImageArgs
from fleet.clusterplan import plan_cluster
from fleet.spec import FleetSpec
from fleet.stackset import (CLUSTER_EXPORT, KUBECONFIG_EXPORT, Part, cluster_record, part_stack,
                            record_problems)
from stacks._compose import build_layers
from stacks.secrets import FleetSecrets

ORGANIZATION_KEY = "organization"
"""Stack config key: the Pulumi organization the cluster parts live in (default: this stack's)."""


def build_cluster_part(spec: FleetSpec, cluster: str, secrets: FleetSecrets) -> dict[str, Any]:
    plan = plan_cluster(spec, cluster)
    handle = create_cluster(plan.cluster, list(plan.pools), repositories=(ROUTER_REPOSITORY,))
    image = RouterImage("router-image", RouterImageArgs(
        registries={cluster: handle.registry} if handle.registry is not None else {}))
    layers = build_layers(plan, handle, image, secrets)
    inference = layers.inference
    record = pulumi.Output.all(
        url=inference.gateway_url,
        ca=inference.pool_ca,
        image=image.ref_for(cluster),
        pools=pulumi.Output.all(**inference.pool_endpoints),
    ).apply(lambda a: cluster_record(spec, cluster, gateway_url=a["url"], pool_urls=a["pools"],
                                     ca_certificate=a["ca"], router_image=a["image"]))
    return {CLUSTER_EXPORT: record, KUBECONFIG_EXPORT: pulumi.Output.secret(handle.kubeconfig)}


class _PublishedImage:
    """The router image a cluster part pushed to its registry (what ``Router`` asks of a RouterImage)."""

    def __init__(self, ref: str):
        self.ref = pulumi.Output.from_input(ref)

    def ref_for(self, cluster: str) -> pulumi.Output[str]:
        return self.ref


def _require(ref: pulumi.StackReference, stack: str, key: str) -> Any:
    details = _sync_await(ref.get_output_details(key))
    value = details.value if details.value is not None else details.secret_value
    if value is None:
        raise pulumi.RunError(
            f"stack {stack!r} has no output {key!r}, which the router part reads: deploy the cluster parts "
            f"first (`pulumi up -s {stack}`), then the router")
    return value


def build_router_part(spec: FleetSpec, set_name: str, secrets: FleetSecrets) -> dict[str, Any]:
    org = pulumi.Config().get(ORGANIZATION_KEY) or pulumi.get_organization()
    project = pulumi.get_project()
    host = spec.router_cluster()
    records: dict[str, dict[str, Any]] = {}
    kubeconfig = None
    for c in spec.clusters:
        stack = part_stack(set_name, Part("cluster", c.name))
        ref = pulumi.StackReference(stack, f"{org}/{project}/{stack}")
        record = _require(ref, stack, CLUSTER_EXPORT)
        problems = record_problems(spec, c.name, record)
        if problems:
            raise pulumi.RunError(f"stack {stack!r} output {CLUSTER_EXPORT!r} {'; '.join(problems)}: "
                                  f"`pulumi up -s {stack}` from this spec first")
        records[c.name] = record
        if c.name == host.name:
            kubeconfig = _require(ref, stack, KUBECONFIG_EXPORT)
    provider = k8s.Provider(f"{host.name}-k8s", kubeconfig=pulumi.Output.secret(kubeconfig),
                            enable_server_side_apply=True)
    endpoints = {pool: pulumi.Output.from_input(info["url"])
                 for r in records.values() for pool, info in r["pools"].items()}
    cas = {c: pulumi.Output.from_input(r["gateway"]["ca_certificate"])
           for c, r in records.items() if r["gateway"].get("ca_certificate")}
    router = Router(
        "router",
        RouterArgs(spec=spec, cluster=host, pool_endpoints=endpoints, gateway_cas=cas,
                   image=_PublishedImage(records[host.name]["router_image"]),  # type: ignore[arg-type]
                   api_keys=secrets.router_api_keys, namespaces=None, platform=None,
                   backend_keys=secrets.router_backend_keys),
        pulumi.ResourceOptions(provider=provider),
    )
    outputs: dict[str, Any] = {"router_url": router.url}
    host_ca = records[host.name]["gateway"].get("ca_certificate")
    if host_ca:
        outputs["router_ca_certificate"] = host_ca
    return outputs


def build_part(spec: FleetSpec, set_name: str, part: Part, secrets: FleetSecrets) -> dict[str, Any]:
    if part.kind == "cluster":
        assert part.cluster is not None
        return build_cluster_part(spec, part.cluster, secrets)
    return build_router_part(spec, set_name, secrets)
