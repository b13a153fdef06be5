"""The router's shared limit store as the stacks deploy it (components/router_store.py): Redis
beside the router, pinned, password from a Pulumi secret, reachable from the router only, and the
router's config pointing at it; per-key limits from the stack file, none unless set."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import ROOT, SHIPPED_STACKS, plan_of
from fleet import layout
from fleet.routerconfig import router_config
from fleet.spec import SpecError, load_spec
from fleetctl.plan import SECRET
from netpol_flow import Cluster, Pod, workload_pods

STORE = {layout.APP: layout.APP_REDIS, layout.COMPONENT: layout.COMPONENT_ROUTER_STORE}


def _store_objects(plan) -> dict[str, dict]:
    return {o["kind"]: o for o in plan.objects() if o["metadata"].get("namespace") == layout.NS_ROUTER
            and (o["metadata"].get("labels") or {}).get(layout.COMPONENT) == layout.COMPONENT_ROUTER_STORE}


def _router_config(plan) -> dict:
    (cm,) = [o for o in plan.objects("ConfigMap") if o["metadata"]["name"] == "fleet-router-config"]
    return yaml.safe_load(cm["data"]["config.yaml"])


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_every_router_has_its_store_and_its_config_points_at_it(stack):
    plan = plan_of(stack)
    objs = _store_objects(plan)
    # (its NetworkPolicy is in the flows table: tests/test_network_policies.py)
    assert {"StatefulSet", "Service", "Secret", "PodDisruptionBudget"} <= set(objs)
    store = _router_config(plan)["store"]
    svc = objs["Service"]
    host, port = re.fullmatch(r"redis://([^:/]+):(\d+)/0", store["url"]).groups()
    assert host == f"{svc['metadata']['name']}.{layout.NS_ROUTER}.svc.cluster.local"
    assert int(port) == svc["spec"]["ports"][0]["port"] == layout.ROUTER_STORE_PORT
    assert svc["spec"]["selector"] == STORE
    assert store["on_unavailable"] == "open", "fail-open unless the stack says otherwise"
    # The router reads the password from the Secret the store's redis.conf is rendered from.
    (router,) = [o for o in plan.objects("Deployment") if o["metadata"]["name"] == "fleet-router"]
    pod = router["spec"]["template"]["spec"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"]
                if m["mountPath"] == store["password_file"].rsplit("/", 1)[0]]
    (vol,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert vol["secret"]["secretName"] == objs["Secret"]["metadata"]["name"]


def test_store_image_is_pinned_by_digest_and_its_pod_hardened(dev_plan):
    sts = _store_objects(dev_plan)["StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+-alpine@sha256:[0-9a-f]{64}", c["image"])
    sc = c["securityContext"]
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["runAsUser"] >= 10000
    assert set(c["resources"]["requests"]) == set(c["resources"]["limits"]) == {"cpu", "memory"}
    assert c["readinessProbe"] and c["livenessProbe"]
    # Persistence for the budgets' spend, on a volume (the root filesystem is read-only).
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["data"]
    assert c["args"] == ["/etc/redis/redis.conf"]


def test_store_password_is_a_pulumi_secret_never_in_the_plan(dev_plan):
    secret = _store_objects(dev_plan)["Secret"]
    assert secret["stringData"] == SECRET
    (pw,) = [r for r in dev_plan.resources if r["type"] == "random:index/randomPassword:RandomPassword"]
    assert pw["inputs"]["length"] >= 32
    text = (ROOT / "components" / "router_store.py").read_text()
    assert "requirepass" in text  # rendered into the Secret's redis.conf, not a command line
    sts = _store_objects(dev_plan)["StatefulSet"]
    assert not sts["spec"]["template"]["spec"]["containers"][0].get("env"), "no password in env"


def test_store_admits_only_the_router(dev_plan):
    objects = dev_plan.objects()
    cluster = Cluster.from_objects(objects)
    pods = workload_pods(objects)
    (router,) = [p for p in pods if p.labels.get(layout.COMPONENT) == layout.COMPONENT_ROUTER]
    (store,) = [p for p in pods if p.labels.get(layout.COMPONENT) == layout.COMPONENT_ROUTER_STORE]
    port = layout.ROUTER_STORE_PORT
    assert cluster.allows(router, store, port)
    others = [p for p in pods if p is not router and p is not store]
    others += [Pod(layout.NS_GATEWAY, {layout.GATEWAY_NAME_LABEL: layout.GATEWAY_NAME}, "gateway"),
               Pod(layout.NS_MONITORING, {layout.APP: layout.APP_PROMETHEUS}, "prometheus"),
               Pod(layout.NS_ROUTER, {"some": "pod"}, "neighbour")]
    assert others
    for pod in others:
        assert not cluster.allows(pod, store, port), f"{pod.name} -> store"
    assert not cluster.allows(store, router, layout.ROUTER_PORT), "the store calls nobody"


def test_store_pdb_covers_it_without_blocking_drains(dev_plan):
    objs = _store_objects(dev_plan)
    pdb = objs["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"] == STORE
    assert objs["StatefulSet"]["spec"]["replicas"] == 1 and pdb["maxUnavailable"] == 1


def _spec(**router):
    raw = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]["inference-fleet:fleet"]
    raw["router"] = {**raw.get("router", {}), **router}
    return load_spec(raw, "test")


def test_no_per_key_limit_unless_the_stack_sets_one(dev_plan):
    limits = _router_config(dev_plan)["limits"]
    assert not {"rate_limit_rps", "tokens_per_minute", "budget_usd", "keys"} & set(limits)
    endpoints = {p.name: "http://127.0.0.1:9" for p in dev_plan.spec.pools}
    assert router_config(dev_plan.spec, endpoints).limits.rate_limit_rps is None


def test_limits_and_per_key_budgets_from_the_stack_reach_the_router():
    digest = "ab" * 32
    spec = _spec(rate_limit_rps=20, tokens_per_minute=90000, budget_usd=50, budget_period="day",
                 key_limits={digest: {"budget_usd": 500}}, limits_on_store_unavailable="closed")
    endpoints = {p.name: "http://127.0.0.1:9" for p in spec.pools}
    cfg = router_config(spec, endpoints, store=True, store_password_file="/x/password")
    assert (cfg.limits.rate_limit_rps, cfg.limits.tokens_per_minute, cfg.limits.budget_usd) == (20, 90000, 50)
    assert cfg.limits.budget_period == "day" and cfg.limits.keys[digest].budget_usd == 500
    assert cfg.store.on_unavailable == "closed" and cfg.store.password_file == "/x/password"


def test_a_key_itself_in_the_stack_file_is_a_clear_error():
    with pytest.raises(SpecError, match="not a sha256 hex digest"):
        _spec(key_limits={"sk-live-123": {"budget_usd": 5}})
