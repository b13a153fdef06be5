"""Model servers as rendered: each vendor's image, resource name, node selector and tolerations from
the catalog; seed 001's probes; a hardened pod; the labels the InferencePool selects on; the
Hugging Face token only through a Secret; the simulator on the dev stack; and a model that does not
fit its pool never reaching a Deployment."""

from __future__ import annotations

import copy

import pytest

from conftest import plan_of
from fleet import catalog, layout
from fleetctl.plan import run_plan
from fleet.spec import SpecError
from inference_render import MULTICLOUD_SPEC, inference_objects, seed_plan, render, write_stack


def _servers(plan) -> list[dict]:
    """(Deployment or LLMInferenceService, its pod spec) for every model server in the plan."""
    out = []
    for objs in inference_objects(plan).values():
        for o in objs:
            if o["kind"] == "Deployment" and o["metadata"]["labels"].get(layout.COMPONENT) == layout.COMPONENT_MODEL_SERVER:
                out.append((o, o["spec"]["template"]["spec"]))
            elif o["kind"] == "LLMInferenceService":
                out.append((o, o["spec"]["template"]))
    return out


def _vllm_servers():
    return [(o, pod) for o, pod in _servers(seed_plan())
            if o["metadata"]["labels"][layout.APP] == layout.APP_VLLM]


def _pool(plan, name):
    return plan.spec.pool(name)


# --- a model that does not fit --------------------------------------------------------------------

T4_FLEET = {
    "topology": "gcp",
    "clusters": [{"name": "gke", "cloud": "gcp", "region": "us-central1"}],
    "pools": [{"name": "t4", "cluster": "gke", "accelerator": "t4", "max_nodes": 2}],
    "models": [{"name": "mistral-7b", "hf_id": "mistralai/Mistral-7B-Instruct-v0.3", "params_b": 7.25,
                "dtype": "fp16", "max_context": 2048, "pools": ["t4"]}],
}


def test_mistral_7b_fp16_on_a_t4_is_a_spec_error_before_any_deployment(tmp_path):
    config = write_stack(tmp_path, "t4", T4_FLEET)
    with pytest.raises(SpecError) as err:
        run_plan("t4", config_file=config)
    assert "fleet.models[0].pools[0]" in str(err.value)
    assert "does not fit pool 't4'" in str(err.value)


def test_quantized_mistral_7b_on_a_t4_does_reach_a_deployment(tmp_path):
    fleet = copy.deepcopy(T4_FLEET)
    fleet["models"][0]["dtype"] = "awq"
    plan = render(fleet, tmp_path, "t4awq")
    [(server, pod)] = _servers(plan)
    assert server["kind"] == "Deployment"
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["args"][container["args"].index("--quantization") + 1] == "awq"


# --- vendors from the catalog --------------------------------------------------------------------

def test_multicloud_renders_a_vllm_server_for_each_of_the_three_vendors():
    vendors = {o["metadata"]["labels"][layout.VENDOR_LABEL] for o, _ in _vllm_servers()}
    assert vendors == {"nvidia", "amd", "google"}


def test_each_vendor_gets_its_image_resource_name_selector_and_tolerations_from_the_catalog():
    plan = seed_plan()
    for server, pod in _vllm_servers():
        pool = _pool(plan, server["metadata"]["labels"][layout.POOL_LABEL])
        vendor = catalog.VENDORS[pool.vendor]
        [container] = pod["containers"]
        assert container["image"] == vendor.vllm_image
        assert "@sha256:" in container["image"]
        resources = container["resources"]
        assert vendor.resource_name in resources["limits"]
        assert resources["limits"][vendor.resource_name] == resources["requests"][vendor.resource_name]
        assert pod["nodeSelector"] == catalog.pool_labels(pool.vendor, pool.accelerator, pool.name)
        tolerated = {(t["key"], t.get("value"), t["effect"]) for t in pod["tolerations"]}
        for taint in catalog.pool_taints(pool.vendor):
            assert (taint["key"], taint["value"], taint["effect"]) in tolerated
        cloud = plan.spec.cluster(pool.cluster).cloud
        spot = catalog.CLOUD_TRAITS[cloud].spot_taint
        if spot and pool.spot:
            assert spot in tolerated
        env = {e["name"]: e.get("value") for e in container["env"]}
        for key, value in vendor.vllm_env.items():
            assert env[key] == value


def test_accelerators_requested_follow_tensor_parallel_and_tpu_takes_the_whole_slice():
    plan = seed_plan()
    for server, pod in _vllm_servers():
        pool = _pool(plan, server["metadata"]["labels"][layout.POOL_LABEL])
        model = next(m for m in plan.spec.models if m.slug == server["metadata"]["labels"][layout.MODEL_LABEL])
        vendor = catalog.VENDORS[pool.vendor]
        container = pod["containers"][0]
        asked = int(container["resources"]["limits"][vendor.resource_name])
        args = container["args"]
        assert args[args.index("--max-model-len") + 1] == str(model.max_context)
        assert asked == (pool.accelerators if pool.vendor == "google" else model.tensor_parallel)


def test_every_accelerator_a_server_holds_is_one_it_shards_over():
    # vLLM shards a model over --tensor-parallel-size devices and leaves any other visible device
    # idle; a TPU server takes the whole slice (seed 003: TPU chips are not fractional), so on a 2x2
    # v6e it must run at tensor parallel 4 — the multicloud stack's llama-3.1-8b held 4 chips at 1.
    for plan in (seed_plan(), plan_of("multicloud")):
        for server, pod in _servers(plan):
            pool = _pool(plan, server["metadata"]["labels"][layout.POOL_LABEL])
            container = pod["containers"][0]
            asked = int(container["resources"]["limits"][catalog.VENDORS[pool.vendor].resource_name])
            args = container["args"]
            assert args[args.index("--tensor-parallel-size") + 1] == str(asked), server["metadata"]["name"]


def test_tpu_servers_carry_seed_003_topology_environment():
    tpu = [(o, pod) for o, pod in _vllm_servers() if o["metadata"]["labels"][layout.VENDOR_LABEL] == "google"]
    assert tpu
    for _, pod in tpu:
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["PJRT_DEVICE"] == "TPU"
        assert env["TPU_CHIPS_PER_HOST_BOUNDS"] == "2,2,1"
        assert env["TPU_HOST_BOUNDS"] == "1,1,1"


def test_amd_servers_keep_triton_flash_attention_off():
    amd = [pod for o, pod in _vllm_servers() if o["metadata"]["labels"][layout.VENDOR_LABEL] == "amd"]
    assert amd
    for pod in amd:
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["VLLM_USE_TRITON_FLASH_ATTN"] == "0"


# --- how a vLLM server runs ----------------------------------------------------------------------

def test_vllm_startup_probe_waits_45_minutes_for_weights_and_readiness_is_on_health():
    for _, pod in _vllm_servers():
        c = pod["containers"][0]
        assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 90 * 30
        assert c["readinessProbe"]["httpGet"]["path"] == "/health"
        assert c["readinessProbe"]["httpGet"]["port"] in ("http", layout.VLLM_PORT)


def test_vllm_serves_the_spec_name_with_prefix_caching_and_a_model_cache():
    for server, pod in _vllm_servers():
        c = pod["containers"][0]
        assert "--enable-prefix-caching" in c["args"]
        assert c["args"][c["args"].index("--port") + 1] == str(layout.VLLM_PORT)
        cache = c["args"][c["args"].index("--download-dir") + 1]
        assert cache in {m["mountPath"] for m in c["volumeMounts"]}
        served = c["args"][c["args"].index("--served-model-name") + 1]
        assert served in {m.name for m in seed_plan().spec.models}


def test_model_server_pods_are_hardened_for_the_restricted_namespace():
    servers = _vllm_servers() + _servers(plan_of("dev"))
    assert servers
    for _, pod in servers:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert sc["runAsNonRoot"] is True
            assert sc.get("privileged", False) is False


def test_model_server_pods_carry_the_labels_the_layers_rely_on():
    for plan in (seed_plan(), plan_of("dev")):
        for server, pod in _servers(plan):
            labels = (server["spec"]["template"]["metadata"]["labels"] if server["kind"] == "Deployment"
                      else server["spec"]["labels"])
            assert labels[layout.INFERENCE_SERVING] == "true"
            assert labels[layout.COMPONENT] == layout.COMPONENT_MODEL_SERVER
            assert labels[layout.APP] in (layout.APP_VLLM, layout.APP_SIM)
            pool = plan.spec.pool(labels[layout.POOL_LABEL])
            assert labels[layout.VENDOR_LABEL] == pool.vendor
            assert labels[layout.MODEL_LABEL] in {m.slug for m in plan.spec.models_on(pool.name)}


# --- secrets -------------------------------------------------------------------------------------

def _model_server_secrets(plan) -> dict[str, list[dict]]:
    """Secrets the inference layer puts beside the model servers (the gateway's CA key, also in the
    layer since components/gateway.py issues the cluster's certificates, lives in its own namespace)."""
    out = {c: [o for o in objs if o["metadata"]["namespace"] == layout.NS_INFERENCE]
           for c, objs in inference_objects(plan, "Secret").items()}
    return {c: objs for c, objs in out.items() if objs}


def test_hf_token_reaches_vllm_only_through_a_secret_fed_by_the_pulumi_secret():
    plan = seed_plan()
    secrets = _model_server_secrets(plan)
    assert secrets, "the seed fleet serves gated models: the token must reach its servers"
    for cluster, objs in secrets.items():
        [secret] = objs
        assert secret["stringData"] == "[secret]" or set(secret["stringData"].values()) == {"[secret]"}
    for _, pod in _vllm_servers():
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        ref = env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "hf-token"
        assert "value" not in env["HF_TOKEN"]


def test_without_an_hf_token_no_secret_and_no_token_env(tmp_path):
    plan = render(MULTICLOUD_SPEC, tmp_path, "nohf", hf_token=False)
    assert not _model_server_secrets(plan)
    for _, pod in _servers(plan):
        assert "HF_TOKEN" not in {e["name"] for e in pod["containers"][0]["env"]}


# --- dev: the simulator --------------------------------------------------------------------------

def test_dev_pools_run_the_simulator_from_the_router_image_without_accelerators():
    from components.router_image import local_tag

    plan = plan_of("dev")
    servers = _servers(plan)
    assert len(servers) == sum(len(m.pools) for m in plan.spec.models)
    for server, pod in servers:
        labels = server["metadata"]["labels"]
        pool = plan.spec.pool(labels[layout.POOL_LABEL])
        assert labels[layout.APP] == layout.APP_SIM
        [c] = pod["containers"]
        assert c["image"] == local_tag()
        cmd = c["command"]
        assert cmd[:3] == ["python", "-m", "fleet_router.sim"]
        assert cmd[cmd.index("--port") + 1] == str(layout.VLLM_PORT)
        profile = pool.sim_profile or f"{catalog.VENDORS[pool.vendor].sim_profile_prefix}-{pool.accelerator}"
        assert cmd[cmd.index("--profile") + 1] == profile
        assert cmd[cmd.index("--model") + 1] in {m.name for m in plan.spec.models_on(pool.name)}
        resources = c["resources"]
        assert not any("/" in k for k in {**resources["requests"], **resources["limits"]})
        assert "tolerations" not in pod and "nodeSelector" not in pod
    assert not _model_server_secrets(plan)


def test_dev_sim_profiles_name_the_vendor_and_accelerator():
    profiles = set()
    for _, pod in _servers(plan_of("dev")):
        cmd = pod["containers"][0]["command"]
        profiles.add(cmd[cmd.index("--profile") + 1])
    assert profiles == {"nvidia-h100", "amd-mi300x", "google-tpu-v6e"}


def test_kserve_models_render_an_llminferenceservice_joining_the_pool_instead_of_a_deployment():
    plan = seed_plan()
    kserve = {m.slug for m in plan.spec.models if m.serving == "kserve"}
    assert kserve
    services = [o for objs in inference_objects(plan, "LLMInferenceService").values() for o in objs]
    assert {o["metadata"]["labels"][layout.MODEL_LABEL] for o in services} == kserve
    deployments = [o for objs in inference_objects(plan, "Deployment").values() for o in objs]
    assert not {o["metadata"]["labels"].get(layout.MODEL_LABEL) for o in deployments} & kserve
    for o in services:
        assert o["spec"]["router"]["scheduler"]["pool"]["ref"]["name"] == o["metadata"]["labels"][layout.POOL_LABEL]
        assert o["spec"]["template"]["containers"][0]["name"] == "main"


def test_vllm_servers_drain_longer_than_the_longest_request_the_router_allows():
    plan = seed_plan()
    for _, pod in _vllm_servers():
        assert pod["terminationGracePeriodSeconds"] > plan.spec.router.request_timeout_s
        assert pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] > 0


def test_each_model_deployment_has_a_disruption_budget_of_one():
    for plan in (plan_of("dev"), seed_plan()):
        for cluster, objs in inference_objects(plan).items():
            pdbs = {o["metadata"]["name"]: o for o in objs if o["kind"] == "PodDisruptionBudget"}
            for d in (o for o in objs if o["kind"] == "Deployment"
                      and o["metadata"]["labels"][layout.COMPONENT] == layout.COMPONENT_MODEL_SERVER):
                pdb = pdbs[d["metadata"]["name"]]
                assert pdb["spec"]["maxUnavailable"] == 1
                assert pdb["spec"]["selector"] == d["spec"]["selector"]


def test_every_simulated_server_behind_a_dev_pool_service_answers_every_model_of_the_pool(tmp_path):
    import yaml

    from conftest import ROOT

    # A third model on one pool only, beside the shipped two (one on all pools, one on two).
    fleet = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]["inference-fleet:fleet"]
    fleet["models"].append({"name": "phi-3-mini", "hf_id": "microsoft/Phi-3-mini-4k-instruct", "params_b": 3.82,
                            "pools": ["amd-mi300x"], "min_replicas": 1, "max_replicas": 1})
    plan = render(fleet, tmp_path, "devthree", hf_token=False)
    services = {o["metadata"]["name"]: o for o in inference_objects(plan, "Service")["local"]}
    for pool in plan.spec.pools:
        selector = services[f"{pool.name}-sim"]["spec"]["selector"]
        behind = [pod for server, pod in _servers(plan)
                  if selector.items() <= server["spec"]["template"]["metadata"]["labels"].items()]
        assert behind
        for pod in behind:
            cmd = pod["containers"][0]["command"]
            answered = {cmd[i + 1] for i, a in enumerate(cmd) if a == "--model"}
            assert answered == {m.name for m in plan.spec.models_on(pool.name)}


def test_every_vendor_image_starts_the_openai_server_explicitly():
    # rocm/vllm's entrypoint is a shell: arguments alone would start nothing.
    for _, pod in _vllm_servers():
        assert pod["containers"][0]["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
