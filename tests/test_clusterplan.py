"""Each cluster's layers get that cluster's slice of the spec (fleet.clusterplan), read here from
the stack file itself, not through the spec's own helpers: a pool's servers, InferencePool and
route land on the cluster the stack file puts it on, and the router's namespace only on its cluster."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import fleet_raw, plan_of
from fleet import layout
from fleet.clusterplan import plan_cluster
from fleet.spec import load_spec
from inference_render import inference_objects


def _raw(stack: str) -> dict:
    return fleet_raw(stack)


def test_each_cluster_plan_holds_the_pools_the_stack_file_puts_on_it_and_nothing_else():
    raw = _raw("multicloud")
    spec = load_spec(raw)
    for c in raw["clusters"]:
        plan = plan_cluster(spec, c["name"])
        assert {p.name for p in plan.pools} == {p["name"] for p in raw["pools"] if p["cluster"] == c["name"]}
        assert plan.hosts_router == (c["name"] == raw["router"]["cluster"])
        assert plan.fleet_size == len(raw["clusters"]) > 1
        with pytest.raises(dataclasses.FrozenInstanceError):
            plan.hosts_router = not plan.hosts_router  # type: ignore[misc]


def test_the_plan_puts_each_pools_inference_pool_on_its_own_cluster_and_the_router_on_one():
    raw, plan = _raw("multicloud"), plan_of("multicloud")
    served = {p for m in raw["models"] for p in m["pools"]}
    pools_of = {c: {o["metadata"]["name"] for o in objs} for c, objs in inference_objects(plan, "InferencePool").items()}
    for c in raw["clusters"]:
        want = {p["name"] for p in raw["pools"] if p["cluster"] == c["name"] and p["name"] in served}
        assert pools_of.get(c["name"], set()) == want, c["name"]
    router_ns = {r["name"] for r in plan.resources
                 if r["type"] == "kubernetes:core/v1:Namespace" and r["inputs"]["metadata"]["name"] == layout.NS_ROUTER}
    assert len(router_ns) == 1 and next(iter(router_ns)).startswith(raw["router"]["cluster"])
