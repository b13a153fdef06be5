"""The shipped stacks: each topology plans offline, passes the policy pack, renders schema-valid
manifests, and is the topology its issue and seeds describe.

Every topology plans through the whole program, cluster components included.
"""

from __future__ import annotations

import importlib
import json
import typing
from pathlib import Path

import pytest
import yaml

import schemas
from conftest import ROOT, SHIPPED_STACKS, fleet_raw, plan_of
from fleetctl.plan import read_stack_config
from fleet import catalog, layout
from fleet.spec import FleetSpec, Topology, load_spec

TOPOLOGIES = list(typing.get_args(Topology))


def _stack_file(stack: str) -> Path:
    """The file holding the stack's spec: its stack file, or a stack set's fleet file (multicloud)."""
    path = ROOT / read_stack_config(stack).spec_source if stack in SHIPPED_STACKS else ROOT / f"Pulumi.{stack}.yaml"
    assert path.exists(), f"{path.name} is missing"
    return path


def _raw(stack: str) -> dict:
    return fleet_raw(stack)


def _spec(stack: str) -> FleetSpec:
    return load_spec(_raw(stack), _stack_file(stack).name)


def _plan(stack: str):
    _stack_file(stack)
    return plan_of(stack)


# --- every stack ------------------------------------------------------------------------------------

@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_every_topology_has_a_module_that_builds_it(topology):
    module = importlib.import_module(f"stacks.{topology}")
    assert callable(module.build)
    assert module.__doc__ and f"`{topology}` topology" in module.__doc__


@pytest.mark.parametrize("stack", TOPOLOGIES)
def test_stack_file_names_its_own_topology(stack):
    assert _spec(stack).topology == stack


@pytest.mark.parametrize("stack", TOPOLOGIES)
def test_stack_plans_offline_with_every_cluster_pool_and_model(stack):
    plan = _plan(stack)
    spec = plan.spec
    # Top-level components (a stack set's: under each part's own stack).
    clusters = {r["name"] for r in plan.resources if r["type"].startswith("fleet:")
                and r["parent"].split("::")[-2] == "pulumi:pulumi:Stack"}
    assert {c.name for c in spec.clusters} <= clusters
    served = {(o["metadata"]["labels"].get(layout.MODEL_LABEL), o["metadata"]["labels"].get(f"{catalog.LABEL_PREFIX}/pool"))
              for o in plan.objects() if o["metadata"].get("labels", {}).get(layout.COMPONENT)
              == layout.COMPONENT_MODEL_SERVER and o["kind"] in ("Deployment", "LLMInferenceService")}
    for m in spec.models:
        for p in m.pools:
            assert any(pool == p for _, pool in served), f"{m.name} on {p}: no model server"
    if plan.parts:  # a stack set: each part's outputs under its stack, each cluster's in its record
        outputs = {k: v for part in plan.outputs.values() for k, v in part.items() if k != "fleet_cluster"}
        gateways = {o["fleet_cluster"]["cluster"] for o in plan.outputs.values() if "fleet_cluster" in o}
    else:
        outputs, gateways = plan.outputs, set(plan.outputs["gateways"])
    if spec.router.enabled:
        assert "router_url" in outputs
    assert gateways == {c.name for c in spec.clusters}


@pytest.mark.parametrize("stack", TOPOLOGIES)
def test_stack_renders_schema_valid_manifests(stack):
    plan = _plan(stack)
    problems = []
    for obj in plan.objects():
        found = schemas.validate_object(obj)
        if not schemas.crds_available():  # core kinds are checked whatever happens to the CRDs
            found = [p for p in found if "no schema for" not in p]
        problems += found
    assert problems == []
    schemas.require_crds()  # ... and custom kinds are not silently left out


@pytest.mark.parametrize("stack", TOPOLOGIES)
def test_stack_passes_the_policy_pack(stack):
    plan = _plan(stack)
    from fleetctl import policy_eval

    mandatory = [v for v in _violations(policy_eval, plan) if str(_get(v, "level", "enforcement")) == "mandatory"]
    assert mandatory == []


def _get(v, *names):
    for n in names:
        if isinstance(v, dict) and n in v:
            return v[n]
        if hasattr(v, n):
            return getattr(v, n)
    return None


def _violations(policy_eval, plan):
    for fn in ("evaluate_plan", "evaluate", "run"):
        if hasattr(policy_eval, fn):
            result = getattr(policy_eval, fn)(plan)
            return list(_get(result, "violations") or result) if not isinstance(result, list) else result
    pytest.fail("fleetctl.policy_eval has no evaluate_plan/evaluate/run entry point")


# --- dev ----------------------------------------------------------------------------------------------

def test_dev_runs_on_a_local_kind_cluster_with_simulated_pools_of_every_vendor():
    spec = _spec("dev")
    assert [(c.cloud, c.kubeconfig_context) for c in spec.clusters] == [("local", "kind-inference-fleet")]
    assert {p.vendor for p in spec.pools} == {"nvidia", "amd", "google"}
    plan = plan_of("dev")
    servers = [o for o in plan.objects("Deployment")
               if o["metadata"]["labels"].get(layout.COMPONENT) == layout.COMPONENT_MODEL_SERVER]
    assert {o["metadata"]["labels"][f"{catalog.LABEL_PREFIX}/pool"] for o in servers} == {p.name for p in spec.pools}
    # The simulator, not vLLM: no accelerator is requested on a laptop.
    for o in servers:
        limits = o["spec"]["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
        assert not {v.resource_name for v in catalog.VENDORS.values()} & set(limits)


# --- multicloud (seed 000) ---------------------------------------------------------------------------------

def _pool_of(spec: FleetSpec, accelerator: str):
    (pool,) = [p for p in spec.pools if p.accelerator == accelerator]
    return pool, spec.cluster(pool.cluster).cloud


def test_multicloud_puts_h100_mi300x_and_tpu_v6e_on_their_clouds():
    spec = _spec("multicloud")
    h100, h100_cloud = _pool_of(spec, "h100")
    mi300x, mi300x_cloud = _pool_of(spec, "mi300x")
    tpu, tpu_cloud = _pool_of(spec, "tpu-v6e")
    assert (h100_cloud, h100.machine.name) in {("aws", "p5.48xlarge"), ("gcp", "a3-highgpu-8g")}
    assert (mi300x_cloud, mi300x.machine.name) == ("azure", "Standard_ND96isr_MI300X_v5")
    assert (tpu_cloud, tpu.tpu_topology) == ("gcp", "2x2")
    assert len({c.cloud for c in spec.clusters}) == 3
    assert all(p.spot for p in spec.pools)


def test_multicloud_tiers_are_seed_000s():
    spec = _spec("multicloud")
    tpu, _ = _pool_of(spec, "tpu-v6e")

    def by_vendor(header: str, value: str) -> dict[str, int]:
        (tier,) = [t for t in spec.tiers if t.match == {header: value}]
        assert tier.overflow == (tpu.name,)
        return {spec.pool(b.pool).vendor: b.weight for b in tier.backends}

    assert by_vendor("X-Priority", "high") == {"nvidia": 90, "amd": 10}
    assert by_vendor("X-Cost-Tier", "standard") == {"amd": 80, "nvidia": 20}


def test_multicloud_models_fit_and_every_pool_serves_one():
    spec = _spec("multicloud")
    for m in spec.models:
        for p in m.pools:
            assert spec.fit(m, spec.pool(p)).fits
    assert {p for m in spec.models for p in m.pools} == {p.name for p in spec.pools}
    seventy = [m for m in spec.models if m.params_b > 60]
    assert all(m.tensor_parallel == 8 and {spec.pool(p).vendor for p in m.pools} <= {"nvidia", "amd"}
               for m in seventy)


def test_multicloud_router_reaches_every_pool_through_its_clusters_gateway():
    plan = _plan("multicloud")
    spec = plan.spec
    configs = [o for o in plan.objects("ConfigMap") if "config.yaml" in o.get("data", {})
               and o["metadata"]["namespace"] == layout.NS_ROUTER]
    assert configs, "the router's ConfigMap"
    pools = {p["name"]: p for p in yaml.safe_load(configs[0]["data"]["config.yaml"])["pools"]}
    home = spec.router_cluster().name
    assert set(pools) == {p.name for p in spec.pools}
    for p in spec.pools:
        cluster = spec.cluster(p.cluster)
        assert pools[p.name]["cluster"] == cluster.name
        if cluster.name != home:
            assert pools[p.name]["url"].startswith(f"https://{cluster.gateway_hostname}/"), pools[p.name]


def test_multicloud_stays_within_its_budget_at_max_scale():
    from fleetctl.cost import cost_of_stack

    spec = _spec("multicloud")
    report = cost_of_stack("multicloud")
    assert spec.budget.monthly_max_usd is not None
    assert report.budget["stack_within"] is True and report.budget["pools_over"] == []


def test_multicloud_without_a_remote_gateway_hostname_is_rejected_naming_the_field():
    from stacks.multicloud import problems

    raw = _raw("multicloud")
    home = raw.get("router", {}).get("cluster") or raw["clusters"][0]["name"]
    i = next(i for i, c in enumerate(raw["clusters"]) if c["name"] != home)
    raw["clusters"][i].pop("gateway_hostname")
    found = problems(load_spec(raw, "Pulumi.multicloud.yaml"))
    assert [path for path, _ in found] == [f"clusters[{i}].gateway_hostname"]
    assert "reaches its pools" in found[0][1]
    raw["router"]["enabled"] = False
    assert [path for path, _ in problems(load_spec(raw, "x"))] == ["router.enabled"]


# --- single-cloud stacks (seed 002, seed 003, seed 000) ---------------------------------------------------

def _pools(stack: str) -> dict[str, list]:
    spec = _spec(stack)
    out: dict[str, list] = {}
    for p in spec.pools:
        out.setdefault(p.accelerator, []).append(p)
    return out


def test_gcp_has_t4_spot_from_zero_l4_and_tpu_v6e_2x2():
    pools = _pools("gcp")
    assert any(p.spot and p.min_nodes == 0 and p.machine.name == "n1-standard-4" for p in pools["t4"])
    assert "l4" in pools
    assert any(p.tpu_topology == "2x2" for p in pools["tpu-v6e"])


def test_aws_has_g4dn_t4_spot_from_zero_and_an_h100_pool():
    pools = _pools("aws")
    assert any(p.spot and p.min_nodes == 0 and p.machine.name.startswith("g4dn.") for p in pools["t4"])
    assert "h100" in pools


def test_azure_has_nc4as_t4_spot_and_nd_mi300x():
    pools = _pools("azure")
    assert any(p.spot and p.machine.name == "Standard_NC4as_T4_v3" for p in pools["t4"])
    assert any(p.machine.name == "Standard_ND96isr_MI300X_v5" for p in pools["mi300x"])


def test_multicloud_inference_layers_render_servers_gateways_and_pool_routes():
    """Through the whole program: every cluster gets its servers, Gateway and a route per pool (tiers
    are the router's: tests/test_routes.py)."""
    from inference_render import inference_objects

    plan = _plan("multicloud")
    spec = plan.spec
    objs = inference_objects(plan)
    assert set(objs) == {c.name for c in spec.clusters}
    for cluster, items in objs.items():
        assert [o["kind"] for o in items].count("Gateway") == 1, cluster
        servers = {(o["metadata"]["labels"][layout.MODEL_LABEL], o["metadata"]["labels"][layout.POOL_LABEL])
                   for o in items if o["kind"] == "Deployment"
                   and o["metadata"]["labels"].get(layout.COMPONENT) == layout.COMPONENT_MODEL_SERVER}
        want = {(m.slug, p.name) for p in spec.pools_in(cluster) for m in spec.models_on(p.name)}
        assert servers == want, cluster
        names = {o["metadata"]["name"] for o in items if o["kind"] == "HTTPRoute"}
        assert {f"pool-{p.name}" for p in spec.pools_in(cluster) if spec.models_on(p.name)} <= names, cluster
        # A GPU server asks for tensor_parallel GPUs (70B: all 8); a TPU server claims its whole slice.
        for o in items:
            labels = o["metadata"].get("labels", {})
            if o["kind"] != "Deployment" or labels.get(layout.COMPONENT) != layout.COMPONENT_MODEL_SERVER:
                continue
            model = next(m for m in spec.models if m.slug == labels[layout.MODEL_LABEL])
            pool = spec.pool(labels[layout.POOL_LABEL])
            want_n = pool.accelerators if catalog.accelerator(pool.accelerator).is_tpu else model.tensor_parallel
            limits = o["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
            assert limits[catalog.VENDORS[pool.vendor].resource_name] == str(want_n), (cluster, model.name)
