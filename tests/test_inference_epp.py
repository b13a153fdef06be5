"""InferencePools and their endpoint pickers: one pool per accelerator pool serving all its models,
an explicit failure mode, the scorers as configuration, the seed ports, and RBAC that grants only
what the picker reads, in its own namespace."""

from __future__ import annotations

import yaml

from components import inference_data
from conftest import plan_of
from fleet import layout
from inference_render import inference_objects, seed_plan

READ = {"get", "list", "watch"}
# What the endpoint picker reads: the pods it picks from, its InferencePool, InferenceObjectives and
# InferenceModelRewrites (GAIE v1.5.0 pkg/epp/server/controller_config.go: watched whenever the API
# server serves the kind; the v1.5.0 bundle's config/crd installs both CRDs).
ALLOWED = {("", "pods"), ("inference.networking.k8s.io", "inferencepools"),
           ("inference.networking.x-k8s.io", "inferenceobjectives"),
           ("inference.networking.x-k8s.io", "inferencemodelrewrites")}


def _plans():
    return [plan_of("dev"), seed_plan()]


def _by_name(objs):
    return {o["metadata"]["name"]: o for o in objs}


def test_one_inference_pool_per_served_pool_selecting_every_model_on_it():
    for plan in _plans():
        for cluster, pools in inference_objects(plan, "InferencePool").items():
            served = {p.name for p in plan.spec.pools_in(cluster) if plan.spec.models_on(p.name)}
            assert {p["metadata"]["name"] for p in pools} == served
            for pool in pools:
                name = pool["metadata"]["name"]
                spec = pool["spec"]
                # Selects by pool and the serving label, never by model: several models share it.
                assert spec["selector"]["matchLabels"] == {layout.INFERENCE_SERVING: "true",
                                                           layout.POOL_LABEL: name}
                assert spec["targetPorts"] == [{"number": layout.VLLM_PORT}]
                ref = spec["endpointPickerRef"]
                assert ref["failureMode"] in ("FailOpen", "FailClose"), "failure mode must be explicit"
                assert ref["failureMode"] == "FailClose"
                assert ref["port"] == {"number": layout.EPP_EXTPROC_PORT}
                assert ref["name"] == f"{name}-epp"


def test_epp_service_and_deployment_expose_seed_ports_and_pin_the_image():
    for plan in _plans():
        for cluster, objs in inference_objects(plan).items():
            services = _by_name(o for o in objs if o["kind"] == "Service")
            deployments = _by_name(o for o in objs if o["kind"] == "Deployment")
            for pool in (o for o in objs if o["kind"] == "InferencePool"):
                epp = pool["spec"]["endpointPickerRef"]["name"]
                ports = {p["port"] for p in services[epp]["spec"]["ports"]}
                assert {layout.EPP_EXTPROC_PORT, layout.EPP_METRICS_PORT} <= ports
                pod = deployments[epp]["spec"]["template"]
                assert pod["metadata"]["labels"][layout.COMPONENT] == layout.COMPONENT_EPP
                assert pod["metadata"]["labels"][layout.APP] == layout.APP_EPP
                [c] = pod["spec"]["containers"]
                assert "@sha256:" in c["image"] and c["image"] == inference_data.EPP_IMAGE
                args = c["args"]
                assert args[args.index("--pool-name") + 1] == pool["metadata"]["name"]
                assert args[args.index("--pool-namespace") + 1] == layout.NS_INFERENCE
                assert {p["containerPort"] for p in c["ports"]} == {
                    layout.EPP_EXTPROC_PORT, layout.EPP_HEALTH_PORT, layout.EPP_METRICS_PORT}
                assert c["securityContext"]["readOnlyRootFilesystem"] is True
                assert pod["spec"]["serviceAccountName"] == epp


def test_epp_scorers_are_prefix_cache_queue_and_kv_cache_from_its_config_map():
    for plan in _plans():
        for objs in inference_objects(plan, "ConfigMap").values():
            for cm in objs:
                config = yaml.safe_load(cm["data"][inference_data.EPP_CONFIG_FILE])
                assert config["kind"] == "EndpointPickerConfig"
                [profile] = config["schedulingProfiles"]
                refs = {p["pluginRef"]: p.get("weight") for p in profile["plugins"]}
                for scorer in ("prefix-cache-scorer", "queue-scorer", "kv-cache-utilization-scorer"):
                    assert refs[scorer] and refs[scorer] > 0
                declared = {p["type"] for p in config["plugins"]}
                assert set(refs) <= declared


def rbac_problems(role: dict) -> list[str]:
    """Why a Role grants more than the endpoint picker reads (empty when it does not)."""
    problems, granted = [], set()
    if role["metadata"].get("namespace") != layout.NS_INFERENCE:
        problems.append("not namespaced to the inference namespace")
    for rule in role.get("rules", []):
        if not set(rule["verbs"]) <= READ:
            problems.append(f"verbs beyond reading: {sorted(set(rule['verbs']) - READ)}")
        granted |= {(g, r) for g in rule["apiGroups"] for r in rule["resources"]}
    extra = granted - ALLOWED
    if extra:
        problems.append(f"resources the picker does not read: {sorted(extra)}")
    return problems


def test_epp_rbac_grants_only_reads_of_what_it_reads_in_its_namespace():
    for plan in _plans():
        objs = [o for group in inference_objects(plan).values() for o in group]
        assert not {o["kind"] for o in objs} & {"ClusterRole", "ClusterRoleBinding"}, \
            "the picker needs nothing cluster-wide"
        roles = [o for o in objs if o["kind"] == "Role"]
        assert roles
        for role in roles:
            assert rbac_problems(role) == []
            granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
            # Everything the picker watches, or its informers never sync and it never becomes ready.
            assert ALLOWED <= granted, sorted(ALLOWED - granted)
        for binding in (o for o in objs if o["kind"] == "RoleBinding"):
            assert binding["roleRef"]["kind"] == "Role"
            [subject] = binding["subjects"]
            assert subject == {"kind": "ServiceAccount", "name": binding["metadata"]["name"],
                               "namespace": layout.NS_INFERENCE}


def test_the_gateway_speaks_tls_to_the_picker_it_cannot_verify():
    # GAIE v1.5.0 pkg/epp/server/options.go: `--secure-serving` defaults to true; with no
    # `--cert-path` runserver.go serves ext-proc with a self-signed certificate. Upstream's chart
    # (config/charts/inferencepool v1.5.0, templates/istio.yaml) therefore gives Istio a
    # DestinationRule for the picker's Service: tls.mode SIMPLE with insecureSkipVerify. Without it
    # istio's gateway speaks cleartext gRPC to a TLS port and every request fails closed.
    for plan in _plans():
        for cluster, objs in inference_objects(plan).items():
            rules = {o["spec"]["host"]: o for o in objs if o["kind"] == "DestinationRule"}
            services = _by_name(o for o in objs if o["kind"] == "Service")
            for pool in (o for o in objs if o["kind"] == "InferencePool"):
                epp = pool["spec"]["endpointPickerRef"]["name"]
                assert "--secure-serving=false" not in _by_name(
                    o for o in objs if o["kind"] == "Deployment")[epp]["spec"]["template"]["spec"]["containers"][0]["args"]
                host = f"{epp}.{layout.NS_INFERENCE}.svc.cluster.local"
                assert host in rules, f"{cluster}: no DestinationRule for {host}"
                assert rules[host]["spec"]["trafficPolicy"]["tls"]["mode"] == "SIMPLE"
                assert rules[host]["metadata"]["namespace"] == layout.NS_INFERENCE
                [grpc] = [p for p in services[epp]["spec"]["ports"] if p["port"] == layout.EPP_EXTPROC_PORT]
                # appProtocol http2 / kubernetes.io/h2c declare cleartext HTTP/2
                assert grpc.get("appProtocol") not in ("http2", "kubernetes.io/h2c"), grpc


def test_the_picker_rolls_out_by_recreate_as_upstream_does():
    # GAIE v1.5.0 config/charts/epplib templates/_deployment.yaml: `strategy: type: Recreate` — one
    # active picker (its prefix-cache index is per process); RollingUpdate would keep the old one
    # serving beside the new.
    for plan in _plans():
        for objs in inference_objects(plan, "Deployment").values():
            for d in objs:
                if d["spec"]["template"]["metadata"]["labels"].get(layout.COMPONENT) == layout.COMPONENT_EPP:
                    assert d["spec"].get("strategy", {}).get("type") == "Recreate", d["metadata"]["name"]


def test_rbac_check_flags_a_role_that_could_read_secrets_or_write_pods():
    role = {"metadata": {"namespace": layout.NS_INFERENCE}, "rules": [
        {"apiGroups": [""], "resources": ["pods", "secrets"], "verbs": ["get", "list", "watch", "delete"]}]}
    problems = rbac_problems(role)
    assert any("secrets" in p for p in problems)
    assert any("delete" in p for p in problems)


SEED_001 = {
    "topology": "gcp",
    "clusters": [{"name": "nvidia-test", "cloud": "gcp", "region": "us-central1", "zones": ["us-central1-a"]}],
    "pools": [{"name": "nvidia-t4-pool", "cluster": "nvidia-test", "accelerator": "t4", "max_nodes": 3}],
    "models": [
        {"name": "google/gemma-2b-it", "hf_id": "google/gemma-2b-it", "params_b": 2.51, "dtype": "bf16",
         "max_context": 2048, "pools": ["nvidia-t4-pool"], "min_replicas": 1},
        {"name": "microsoft/Phi-3-mini-4k-instruct", "hf_id": "microsoft/Phi-3-mini-4k-instruct",
         "params_b": 3.82, "dtype": "bf16", "max_context": 2048, "pools": ["nvidia-t4-pool"], "min_replicas": 1},
    ],
}


def test_one_inference_pool_and_one_picker_serve_both_seed_001_models(tmp_path):
    from inference_render import render

    plan = render(SEED_001, tmp_path, "seed001")
    objs = inference_objects(plan)["nvidia-test"]
    [pool] = [o for o in objs if o["kind"] == "InferencePool"]
    epps = [o for o in objs if o["kind"] == "Deployment"
            and o["metadata"]["labels"][layout.COMPONENT] == layout.COMPONENT_EPP]
    servers = [o for o in objs if o["kind"] == "Deployment"
               and o["metadata"]["labels"][layout.COMPONENT] == layout.COMPONENT_MODEL_SERVER]
    assert len(epps) == 1 and len(servers) == 2
    selector = pool["spec"]["selector"]["matchLabels"]
    served = set()
    for server in servers:
        labels = server["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        args = server["spec"]["template"]["spec"]["containers"][0]["args"]
        served.add(args[args.index("--served-model-name") + 1])
    assert served == {m["name"] for m in SEED_001["models"]}
