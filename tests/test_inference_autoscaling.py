"""Queue-depth autoscaling: a KEDA ScaledObject per model Deployment on vLLM's waiting-request
gauge, bounded by the model's replicas, to zero (with a wake-up trigger) where min_replicas is 0,
and the same triggers inside KServe-served models; Pulumi leaves the replica count to KEDA."""

from __future__ import annotations

import promql_parser

from conftest import plan_of
from fleet import layout
from inference_render import inference_objects, seed_plan


def _scaled(plan):
    return [o for objs in inference_objects(plan, "ScaledObject").values() for o in objs]


def _deployments(plan):
    return {o["metadata"]["name"]: o for objs in inference_objects(plan, "Deployment").values() for o in objs
            if o["metadata"]["labels"].get(layout.COMPONENT) == layout.COMPONENT_MODEL_SERVER}


def test_every_model_deployment_has_a_scaled_object_on_vllm_queue_depth():
    for plan in (plan_of("dev"), seed_plan()):
        deployments = _deployments(plan)
        scaled = {o["spec"]["scaleTargetRef"]["name"]: o for o in _scaled(plan)}
        assert set(scaled) == set(deployments)
        for name, so in scaled.items():
            labels = deployments[name]["metadata"]["labels"]
            model = next(m for m in plan.spec.models if m.slug == labels[layout.MODEL_LABEL])
            assert so["spec"]["scaleTargetRef"]["kind"] == "Deployment"
            assert so["spec"]["minReplicaCount"] == model.min_replicas
            assert so["spec"]["maxReplicaCount"] == model.max_replicas
            queue = next(t for t in so["spec"]["triggers"] if t["name"] == "queue-depth")
            query = queue["metadata"]["query"]
            assert "vllm:num_requests_waiting" in query
            assert f'pool="{labels[layout.POOL_LABEL]}"' in query
            assert f'model="{labels[layout.MODEL_LABEL]}"' in query
            promql_parser.parse(query)
            assert int(queue["metadata"]["threshold"]) > 0


def test_models_allowed_to_idle_scale_to_zero_and_wake_on_demand():
    plan = seed_plan()
    to_zero = [so for so in _scaled(plan) if so["spec"]["minReplicaCount"] == 0]
    assert to_zero
    for so in to_zero:
        names = {t["name"] for t in so["spec"]["triggers"]}
        assert names == {"queue-depth", "demand"}
        demand = next(t for t in so["spec"]["triggers"] if t["name"] == "demand")
        promql_parser.parse(demand["metadata"]["query"])
        assert demand["metadata"]["activationThreshold"] == "0"
    for so in _scaled(plan_of("dev")):  # dev keeps one simulated server per pool up
        assert so["spec"]["minReplicaCount"] == 1
        assert {t["name"] for t in so["spec"]["triggers"]} == {"queue-depth"}


def _selected_metric_names(node) -> set[str]:
    """Every metric name a PromQL expression selects (exact names and __name__ regex alternatives)."""
    import re

    out: set[str] = set()
    for attr in ("expr", "lhs", "rhs", "param", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            out |= _selected_metric_names(child)
    for arg in getattr(node, "args", None) or []:
        out |= _selected_metric_names(arg)
    if type(node).__name__ == "VectorSelector":
        if node.name:
            out.add(node.name)
        for m in node.matchers.matchers:
            if m.name == "__name__":
                out |= set(re.sub(r"[()^$]", "", m.value).split("|"))
    return out


def test_the_wake_up_trigger_counts_requests_that_found_no_server():
    # GAIE v1.5.0 endpoint picker: inference_objective_request_total is recorded only once the
    # director picked an endpoint (pkg/epp/handlers/server.go); with zero servers the request fails
    # with ServiceUnavailable ("failed to find endpoint candidates", requestcontrol/director.go) and
    # only inference_objective_request_error_total{model_name} counts it (the deferred
    # RecordRequestErrCounter). A demand trigger on request_total alone never leaves zero.
    plan = seed_plan()
    to_zero = [so for so in _scaled(plan) if so["spec"]["minReplicaCount"] == 0]
    assert to_zero
    for so in to_zero:
        demand = next(t for t in so["spec"]["triggers"] if t["name"] == "demand")
        names = _selected_metric_names(promql_parser.parse(demand["metadata"]["query"]))
        assert "inference_objective_request_error_total" in names, demand["metadata"]["query"]
        assert "inference_objective_request_total" in names


def test_pulumi_does_not_fight_keda_over_replicas():
    for plan in (plan_of("dev"), seed_plan()):
        for r in plan.resources:
            if r["type"] == "kubernetes:apps/v1:Deployment" and \
                    r["inputs"]["metadata"]["labels"].get(layout.COMPONENT) == layout.COMPONENT_MODEL_SERVER:
                assert "spec.replicas" in r["options"].get("ignore_changes", [])


def test_kserve_models_use_only_scaling_fields_the_pinned_crd_has():
    # kserve-llmisvc-crd v0.19.0 (templates/serving.kserve.io_llminferenceservices.yaml, v1alpha2):
    # spec.scaling has minReplicas, maxReplicas and wva; there is no scaling.keda (the newer CRD in
    # ../shared/crds has one, so the schema check cannot see this). The model runs a fixed count.
    plan = seed_plan()
    services = [o for objs in inference_objects(plan, "LLMInferenceService").values() for o in objs]
    assert services
    for svc in services:
        assert set(svc["spec"].get("scaling", {})) <= {"minReplicas", "maxReplicas", "wva"}
        model = next(m for m in plan.spec.models if m.slug == svc["metadata"]["labels"][layout.MODEL_LABEL])
        assert svc["spec"]["replicas"] == model.min_replicas == model.max_replicas


def test_a_kserve_model_asking_for_autoscaling_is_a_spec_error_naming_the_field(tmp_path):
    import copy

    import pytest

    from fleet.spec import SpecError
    from inference_render import MULTICLOUD_SPEC, render

    fleet = copy.deepcopy(MULTICLOUD_SPEC)
    i, model = next((i, m) for i, m in enumerate(fleet["models"]) if m.get("serving") == "kserve")
    model["max_replicas"] = model["min_replicas"] + 1
    with pytest.raises(SpecError) as e:
        render(fleet, tmp_path, "kservescale")
    assert f"models[{i}].max_replicas" in str(e.value) and "Workload Variant Autoscaler" in str(e.value)


def test_without_keda_every_model_runs_at_least_one_replica_and_pulumi_owns_the_count(tmp_path):
    import copy

    from inference_render import MULTICLOUD_SPEC, render

    fleet = copy.deepcopy(MULTICLOUD_SPEC)
    fleet["platform"] = {"keda": False}
    plan = render(fleet, tmp_path, "nokeda")
    assert not _scaled(plan)
    deployments = _deployments(plan)
    assert deployments
    for d in deployments.values():
        assert d["spec"]["replicas"] >= 1
    # Model servers only: the router's replicas belong to its own HPA, which needs no KEDA.
    for r in plan.resources:
        if r["type"] == "kubernetes:apps/v1:Deployment" and \
                r["inputs"]["metadata"]["labels"].get(layout.COMPONENT) == layout.COMPONENT_MODEL_SERVER:
            assert "spec.replicas" not in r["options"].get("ignore_changes", [])
    for svc in (o for objs in inference_objects(plan, "LLMInferenceService").values() for o in objs):
        assert "scaling" not in svc["spec"]


def test_queue_queries_use_labels_the_model_server_pod_monitor_attaches():
    plan = plan_of("dev")
    monitors = {o["metadata"]["name"]: o for o in plan.objects("PodMonitor")}
    servers = monitors["model-servers"]["spec"]
    targets = {r["targetLabel"] for ep in servers["podMetricsEndpoints"] for r in ep.get("relabelings", [])}
    assert {"pool", "model"} <= targets
    selector = servers["selector"]["matchLabels"]
    for d in _deployments(plan).values():
        assert selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        assert {p["containerPort"] for p in d["spec"]["template"]["spec"]["containers"][0]["ports"]} >= {
            ep["portNumber"] for ep in servers["podMetricsEndpoints"]}
    pickers = monitors["endpoint-pickers"]["spec"]
    epps = [o for o in inference_objects(plan, "Deployment")["local"]
            if o["metadata"]["labels"][layout.COMPONENT] == layout.COMPONENT_EPP]
    assert epps
    for epp in epps:
        assert pickers["selector"]["matchLabels"].items() <= epp["spec"]["template"]["metadata"]["labels"].items()
