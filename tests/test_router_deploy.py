"""The router as deployed: image by digest from the recorded build, config that rolls pods only when it
changes, a hardened pod and its guard rails (checkov over every object a stack renders:
tests/test_chart_checks.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SHIPPED_STACKS, plan_of
from fleet import layout
from fleetctl.plan import run_plan
from wiring import fed_by

import schemas

IMAGE_TYPE = "docker-build:index:Image"


def _router_objects(plan) -> dict[str, dict]:
    """kind -> the router's object of that kind (namespace fleet-router)."""
    return {o["kind"]: o for o in plan.objects() if o["metadata"].get("namespace") == layout.NS_ROUTER}


def _deployment(plan) -> dict:
    return _router_objects(plan)["Deployment"]


def _container(plan) -> dict:
    return _deployment(plan)["spec"]["template"]["spec"]["containers"][0]


def _stacks_with_registries() -> list[str]:
    return [s for s in SHIPPED_STACKS if plan_of(s).by_type(IMAGE_TYPE)] if SHIPPED_STACKS else []


# --- image --------------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_router_pod_runs_the_image_the_stack_builds(stack):
    plan = plan_of(stack)
    builds = plan.by_type(IMAGE_TYPE)
    image = _container(plan)["image"]
    if not builds:
        # Local clusters: the tag `make image` builds and `kind load` loads (the Makefile's own command).
        made = subprocess.run(["make", "-s", "-n", "image", "BUILDER=docker"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert made.returncode == 0, made.stderr
        assert f"docker build -f router/Dockerfile -t {image} router" in made.stdout
        return
    # One build per registry (issue 17 item 5): the router pod runs its own cluster's.
    host = plan.spec.router_cluster().name
    [build] = [b for b in builds if b["name"] == f"router-image-{host}"]
    [repo] = [t.rsplit(":", 1)[0] for t in build["inputs"]["tags"]]
    assert build["inputs"]["push"] is True
    assert len(build["inputs"]["registries"]) == 1
    # By digest (never a tag), and the digest is that build's output: a new build rolls the pods.
    image_repo, _, digest = image.partition("@")
    assert image_repo == repo and re.fullmatch(r"sha256:[0-9a-f]{64}", digest), (image, repo)
    if plan.part_plans:
        # A stack set: the router's stack runs the image its cluster's stack built, pushed and exported
        # (fleet/stackset.py), not one of its own.
        assert plan.part_plans[f"{plan.stack}.{host}"].outputs["fleet_cluster"]["router_image"] == image
        assert not plan.part_plans[f"{plan.stack}.router"].by_type(IMAGE_TYPE)
        return
    deployment = next(r for r in plan.by_type("kubernetes:apps/v1:Deployment")
                      if r["inputs"]["metadata"].get("namespace") == layout.NS_ROUTER)
    assert (IMAGE_TYPE, build["name"]) in fed_by(plan, deployment, "spec")


def test_each_registry_gets_its_own_build_with_only_its_own_credentials():
    # One docker_build.Image with every registry's tag and login pushes to all of them or to none
    # (issue 17 item 5: one missing ACR password and the first multicloud `up` pushed nothing).
    stacks = [s for s in _stacks_with_registries() if len(plan_of(s).spec.clusters) > 1]
    assert stacks, "multicloud has a registry per cluster"
    for stack in stacks:
        plan = plan_of(stack)
        builds = plan.by_type(IMAGE_TYPE)
        assert sorted(b["name"] for b in builds) == sorted(f"router-image-{c.name}" for c in plan.spec.clusters)
        for build in builds:
            [tag] = build["inputs"]["tags"]
            [login] = build["inputs"]["registries"]
            assert tag.split("/", 1)[0] == login["address"]
            assert login["password"] == "[secret]"


IMAGE_PROGRAM = """
import json, sys
sys.path.insert(0, sys.argv[1])
import pulumi
from pulumi.runtime import mocks
from pulumi.runtime.stack import wait_for_rpcs
from pulumi.runtime.sync_await import _sync_await
from fleetctl.plan import FleetMocks

class Mocks(FleetMocks, mocks.Mocks):
    pass

class Registry:  # what the cluster components expose
    def __init__(self, base, host):
        self.url = pulumi.Output.from_input(base + "/fleet")
        self.address = pulumi.Output.from_input(host)
        self.username = pulumi.Output.from_input("push")
        self.password = pulumi.Output.secret("hunter2")

pulumi.runtime.set_mocks(Mocks(), project="p", stack="s", preview=False)
from components.router_image import RouterImage, RouterImageArgs
image = RouterImage("img", RouterImageArgs(registries={
    "gke": Registry("us-docker.pkg.dev/p", "us-docker.pkg.dev"),
    "eks": Registry("1.dkr.ecr.us-east-1.amazonaws.com", "1.dkr.ecr.us-east-1.amazonaws.com")}))
out = {}
pulumi.Output.all(refs=pulumi.Output.all(**image.refs),
                  tags=pulumi.Output.all(**{c: i.tags for c, i in image.images.items()}),
                  digests=pulumi.Output.all(**{c: i.digest for c, i in image.images.items()}),
                  logins=pulumi.Output.all(**{c: i.registries for c, i in image.images.items()}),
                  push=pulumi.Output.all(*[i.push for i in image.images.values()])).apply(out.update)
_sync_await(wait_for_rpcs())
print(json.dumps(out))
"""


def test_each_registry_gets_a_build_of_its_own_referenced_by_its_digest():
    """A mocked program with two registries shows the contract every cloud cluster relies on."""
    result = subprocess.run([sys.executable, "-c", IMAGE_PROGRAM, str(ROOT)], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["push"] == [True, True]
    assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", d) for d in out["digests"].values())
    assert out["refs"] == {
        "gke": f"us-docker.pkg.dev/p/fleet/fleet-router@{out['digests']['gke']}",
        "eks": f"1.dkr.ecr.us-east-1.amazonaws.com/fleet/fleet-router@{out['digests']['eks']}",
    }
    for cluster, ref in out["refs"].items():
        [tag] = out["tags"][cluster]
        assert tag.rsplit(":", 1)[0] == ref.split("@")[0]
        assert [r["address"] for r in out["logins"][cluster]] == [ref.split("/", 1)[0]]  # its own login only


def test_a_router_code_change_changes_the_image_tag_and_digest(tmp_path):
    from components.router_image import source_hash

    src = ROOT / "router"
    copy = tmp_path / "router"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    before = source_hash(str(copy))
    py = copy / "fleet_router" / "server.py"  # in the image, whatever else the tree holds (a build/, say)
    py.write_text(py.read_text() + "\n# changed\n")
    after = source_hash(str(copy))
    assert before != after
    # Files .dockerignore keeps out of the image do not change it.
    (copy / "tests").mkdir(exist_ok=True)
    (copy / "tests" / "test_new.py").write_text("def test_x(): pass\n")
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert source_hash(str(copy)) == after


def test_a_router_code_change_changes_what_the_stack_asks_docker_build_to_build(tmp_path, monkeypatch):
    """The aws stack's Image inputs (tag, revision label) follow router/'s content: Pulumi diffs them and
    rebuilds; the Deployment references that build's digest, so the pods roll (and only then)."""
    from components import router_image

    shutil.copytree(ROOT / "router", tmp_path / "router", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    monkeypatch.setattr(router_image, "ROOT", tmp_path)

    def build_inputs():
        return run_plan("aws", charts=False).by_type(IMAGE_TYPE)[0]["inputs"]

    before, again = build_inputs(), build_inputs()
    assert before == again  # an unchanged tree asks for nothing new
    core = tmp_path / "router" / "fleet_router" / "proxy.py"
    core.write_text(core.read_text() + "\n# changed\n")
    after = build_inputs()
    revision = "org.opencontainers.image.revision"
    assert after["labels"][revision] != before["labels"][revision]
    assert [t.rsplit(":", 1)[1] for t in after["tags"]] == [after["labels"][revision]]


# --- config -------------------------------------------------------------------------------------

def _load_router_config(plan):
    from fleet_router import config

    text = _router_objects(plan)["ConfigMap"]["data"]["config.yaml"]
    return config.parse_config(text, "ConfigMap config.yaml")


def test_config_map_loads_with_the_routers_own_schema(dev_plan):
    from fleet_router import config

    cm = _router_objects(dev_plan)["ConfigMap"]
    text = cm["data"]["config.yaml"]
    path = ROOT / "build" / "test-router-config.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    loaded = config.load_config(path)
    assert {p.name for p in loaded.pools} == {p.name for p in dev_plan.spec.pools}


def test_checksum_annotation_is_the_sha256_of_the_config(dev_plan):
    import hashlib

    cm = _router_objects(dev_plan)["ConfigMap"]
    annotations = _deployment(dev_plan)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["inference-fleet.io/config-checksum"] == hashlib.sha256(
        cm["data"]["config.yaml"].encode()).hexdigest()


def test_a_tier_weight_change_changes_the_checksum_and_nothing_else_in_the_deployment(tmp_path, dev_plan):
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    fleet = doc["config"]["inference-fleet:fleet"]
    tier = fleet["tiers"][0]
    tier["backends"][0]["weight"] -= 5
    tier["backends"][1]["weight"] += 5
    changed_file = tmp_path / "Pulumi.dev.yaml"
    changed_file.write_text(yaml.safe_dump(doc))
    changed = run_plan("dev", config_file=changed_file)

    before, after = _deployment(dev_plan), _deployment(changed)
    key = "inference-fleet.io/config-checksum"
    b_sum = before["spec"]["template"]["metadata"]["annotations"].pop(key)
    a_sum = after["spec"]["template"]["metadata"]["annotations"].pop(key)
    try:
        assert b_sum != a_sum
        assert before == after
    finally:
        before["spec"]["template"]["metadata"]["annotations"][key] = b_sum
        after["spec"]["template"]["metadata"]["annotations"][key] = a_sum
    assert _router_objects(dev_plan)["ConfigMap"] != _router_objects(changed)["ConfigMap"]


def test_api_keys_reach_the_router_hashed_from_a_secret(tmp_path):
    from components.router import hash_api_keys

    hashed = hash_api_keys("key-one, key-two,")
    assert "key-one" not in hashed
    assert len(hashed.split()) == 2 and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashed.split())

    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"]["inference-fleet:routerApiKeys"] = {"secure": "v1:offline-ciphertext"}
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text(yaml.safe_dump(doc))
    plan = run_plan("dev", config_file=stack_file)
    objs = _router_objects(plan)
    secret = objs["Secret"]
    assert secret["stringData"] == "[secret]", "the hashed keys stay a Pulumi secret"
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    mounted = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secret["metadata"]["name"] in mounted
    assert not any("valueFrom" in e for e in pod["containers"][0].get("env", [])), "keys as files, not env"


# --- hardening ----------------------------------------------------------------------------------

def test_router_pod_is_hardened(dev_plan):
    pod = _deployment(dev_plan)["spec"]["template"]["spec"]
    c = pod["containers"][0]
    sc = c["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(c["resources"]["requests"]) == set(c["resources"]["limits"]) == {"cpu", "memory"}
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "startupProbe" in c
    keys = {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
    assert {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys
    labels = _deployment(dev_plan)["spec"]["template"]["metadata"]["labels"]
    assert labels[layout.APP] == layout.APP_ROUTER and labels[layout.COMPONENT] == layout.COMPONENT_ROUTER


def test_router_keeps_two_replicas_through_disruption_and_scales_to_the_spec(dev_plan, tmp_path):
    objs = _router_objects(dev_plan)
    assert objs["Deployment"]["spec"]["replicas"] >= 2
    hpa = objs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["minReplicas"] == objs["Deployment"]["spec"]["replicas"]
    assert objs["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    # The stack file's replica range is the one the HPA gets (not a value recomputed here).
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"]["inference-fleet:fleet"]["router"].update(replicas=3, max_replicas=9)
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(yaml.safe_dump(doc))
    scaled = _router_objects(run_plan("dev", config_file=path, charts=False))
    assert scaled["Deployment"]["spec"]["replicas"] == 3
    assert (scaled["HorizontalPodAutoscaler"]["spec"]["minReplicas"],
            scaled["HorizontalPodAutoscaler"]["spec"]["maxReplicas"]) == (3, 9)


def test_router_service_exposes_api_and_admin_ports(dev_plan):
    ports = {p["name"]: p["port"] for p in _router_objects(dev_plan)["Service"]["spec"]["ports"]}
    assert ports == {"http": layout.ROUTER_PORT, "admin": layout.ROUTER_ADMIN_PORT}


def test_router_service_has_the_port_its_service_monitor_scrapes(dev_plan):
    (monitor,) = [o for o in dev_plan.objects("ServiceMonitor") if o["metadata"]["name"] == "fleet-router"]
    ports = {p["name"] for p in _router_objects(dev_plan)["Service"]["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["port"] in ports


def test_router_is_published_on_the_cluster_gateway_with_its_hostname(dev_plan):
    route = _router_objects(dev_plan)["HTTPRoute"]
    parent = route["spec"]["parentRefs"][0]
    assert (parent["name"], parent["namespace"]) == (layout.GATEWAY_NAME, layout.NS_GATEWAY)
    assert route["spec"]["hostnames"] == [dev_plan.spec.router.hostname]
    assert dev_plan.outputs["router_url"] == f"https://{dev_plan.spec.router.hostname}"


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_router_objects_are_valid_kubernetes(stack):
    problems = [p for o in _router_objects(plan_of(stack)).values() for p in schemas.validate_object(o)
                if schemas.crds_available() or "no schema for" not in p]  # core kinds always
    assert not problems, "\n".join(problems)
    schemas.require_crds()


def test_router_drain_fits_the_pods_termination_grace(dev_plan):
    # The router keeps serving through its pre-stop grace, then drains in flight; both must end
    # before the kubelet's SIGKILL at terminationGracePeriodSeconds, and the drain must be long
    # enough for the longest request the router allows.
    config = _load_router_config(dev_plan)
    grace = _deployment(dev_plan)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    shutdown = config.shutdown
    assert shutdown.pre_stop_s > 0
    assert shutdown.pre_stop_s + shutdown.drain_s < grace
    assert shutdown.drain_s >= dev_plan.spec.router.request_timeout_s


def test_backend_keys_reach_the_router_as_mounted_files_from_a_secret(tmp_path):
    # Issue 23 item 8: pools whose vLLM servers run with --api-key need the router to send a key.
    from components.router import BACKEND_KEYS_DIR

    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"]["inference-fleet:routerBackendKeys"] = {"secure": "v1:offline-ciphertext"}
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text(yaml.safe_dump(doc))
    plan = run_plan("dev", config_file=stack_file)
    objs = _router_objects(plan)
    secret = next(o for o in plan.objects() if o["kind"] == "Secret"
                  and o["metadata"]["name"] == "fleet-router-backend-keys")
    assert secret["stringData"] == "[secret]", "the keys stay a Pulumi secret"
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    vol = next(v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "fleet-router-backend-keys")
    assert mounts[vol["name"]]["mountPath"] == BACKEND_KEYS_DIR and mounts[vol["name"]]["readOnly"] is True
    config = yaml.safe_load(objs["ConfigMap"]["data"]["config.yaml"])
    files = {p["name"]: p.get("api_key_file") for p in config["pools"]}
    assert files and all(f == f"{BACKEND_KEYS_DIR}/{name}" for name, f in files.items())
    # without the secret, no pool names a file (and the dev plan stays as it was)
    plain = yaml.safe_load(_router_objects(plan_of("dev"))["ConfigMap"]["data"]["config.yaml"])
    assert not any("api_key_file" in p for p in plain["pools"])


def test_backend_keys_name_only_served_pools():
    import pulumi

    from components.router import backend_key_files

    spec = plan_of("dev").spec
    served = [p.name for p in spec.pools if spec.models_on(p.name)]
    data = backend_key_files(spec, json.dumps({served[0]: " sk-1 \n"}))
    assert data == {served[0]: "sk-1", **{n: "" for n in served[1:]}}
    with pytest.raises(pulumi.RunError, match="no-such-pool"):
        backend_key_files(spec, json.dumps({"no-such-pool": "k"}))
    with pytest.raises(pulumi.RunError, match="JSON"):
        backend_key_files(spec, "k1,k2")
