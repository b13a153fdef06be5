"""The multicloud fleet as a stack set (fleet/stackset.py): one stack per cluster, a router stack that
reads them through StackReferences, planned (verified, priced, reviewed) together by one command.

What a platform team relies on: each cluster's stack holds that cluster and nothing else; the router
stack declares no cloud resource and configures the router exactly as the single stack did; a
cluster stack that does not export what the router reads stops the router's run with the stack and
the key named; and the set as a whole still verifies clean.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from conftest import ROOT, plan_of
from fleet import layout
from fleet.stackset import CLUSTER_EXPORT, KUBECONFIG_EXPORT, RECORD_VERSION
from fleetctl import cli
from fleetctl.plan import run_plan

SET = "multicloud"
ROUTER_STACK = f"{SET}.router"
STACK_OF_URN = re.compile(r"^urn:pulumi:([^:]+)::")


def _fleet() -> dict:
    return yaml.safe_load((ROOT / "fleets" / f"{SET}.yaml").read_text())["fleet"]


def _cluster_stacks() -> list[str]:
    return [f"{SET}.{c['name']}" for c in _fleet()["clusters"]]


def _refs(**drop: str) -> dict:
    """What the router part's StackReferences read: the cluster parts' planned outputs (``drop``:
    stack -> an output to leave out)."""
    plan = plan_of(SET)
    out = {}
    for stack in _cluster_stacks():
        exports = dict(plan.part_plans[stack].exports)
        exports.pop(drop.get(stack, ""), None)
        out[f"organization/inference-fleet/{stack}"] = exports
    return out


def test_the_set_plans_offline_with_one_command(tmp_path, capsys):
    assert cli.main(["plan", "--stack", SET, "--no-charts", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    doc = json.loads((tmp_path / "plan.json").read_text())
    for p in doc["parts"]:
        assert f"  {p['resources']:4d}  {p['stack']}  ({p['part']})" in printed
    # Deploy order: every cluster (the spec's order), then the router.
    assert [p["stack"] for p in doc["parts"]] == _cluster_stacks() + [ROUTER_STACK]
    assert [p["part"] for p in doc["parts"]] == [f"cluster {c['name']}" for c in _fleet()["clusters"]] + ["router"]
    stacks = [STACK_OF_URN.match(r["urn"]).group(1) for r in doc["resources"]]
    assert set(stacks) == {p["stack"] for p in doc["parts"]}
    assert {p["stack"]: p["resources"] for p in doc["parts"]} == {s: stacks.count(s) for s in set(stacks)}
    # Each missing secret names the stack that needs it, in the command that sets it.
    commands = {m["command"] for m in doc["missing_secrets"]}
    assert f"pulumi config set --secret routerApiKeys <value> --stack {ROUTER_STACK}" in commands
    assert f"pulumi config set --secret hfToken <value> --stack {SET}.aws-east" in commands
    assert not any("routerApiKeys" in c and "router" not in c for c in commands)


@pytest.mark.parametrize("cluster", [c["name"] for c in _fleet()["clusters"]])
def test_each_cluster_stack_holds_only_its_own_cluster(cluster):
    part = plan_of(SET).part_plans[f"{SET}.{cluster}"]
    provider = f"{cluster}-k8s"
    by_urn = {r["urn"]: r for r in part.resources}
    for r in part.resources:
        if r["type"].startswith("kubernetes:"):
            assert by_urn[r["provider"]]["name"] == provider, r["urn"]
        # Every name is the cluster's (its components are named after it), but the router image its
        # registry gets, which carries the cluster's name one level down.
        assert r["name"].startswith((cluster, "router-image")), r["name"]
    assert {rel.split("/")[0] for rel in part.manifests} == {provider}
    assert [r["name"] for r in part.by_type("docker-build:index:Image")] == [f"router-image-{cluster}"]
    assert not part.by_type("fleet:router:Router")
    assert set(part.outputs) == {CLUSTER_EXPORT, KUBECONFIG_EXPORT}
    assert part.outputs[KUBECONFIG_EXPORT] == "[secret]"


def test_each_cluster_exports_the_endpoints_models_and_ca_its_router_pins():
    plan = plan_of(SET)
    fleet = _fleet()
    for c in fleet["clusters"]:
        part = plan.part_plans[f"{SET}.{c['name']}"]
        record = part.outputs[CLUSTER_EXPORT]
        assert record["version"] == RECORD_VERSION and record["cluster"] == c["name"]
        assert record["gateway"]["hostname"] == c["gateway_hostname"]
        want = {p["name"]: [m["name"] for m in fleet["models"] if p["name"] in m["pools"]]
                for p in fleet["pools"] if p["cluster"] == c["name"]}
        assert {k: v["models"] for k, v in record["pools"].items()} == want
        for pool, info in record["pools"].items():
            assert info["url"].startswith(f"https://{c['gateway_hostname']}/"), info
        # The CA in the record is the one this cluster's gateway certificates chain to: the CA
        # Issuer's fingerprint annotation (components/gateway.py) names the same certificate.
        [issuer] = [o for o in part.objects("Issuer") if o["metadata"]["namespace"] == layout.NS_GATEWAY]
        assert issuer["metadata"]["annotations"][layout.CA_SHA256_ANNOTATION] == ",".join(
            layout.pem_certificate_sha256s(record["gateway"]["ca_certificate"]))


def test_the_router_stack_declares_no_cloud_resource_and_runs_on_its_cluster():
    fleet = _fleet()
    part = plan_of(SET).part_plans[ROUTER_STACK]
    packages = {r["type"].split(":")[0] for r in part.resources}
    # random: the limit store's password, made where the store runs (with the router).
    assert packages == {"kubernetes", "fleet", "pulumi", "random"}
    [provider] = part.by_type("pulumi:providers:kubernetes")
    host = fleet["router"]["cluster"]
    assert provider["name"] == f"{host}-k8s"
    # It reaches the very cluster the cluster stack manages: the same kubeconfig (compared by the
    # plan's non-secret fingerprint of its server and CA), read from that stack's output.
    [theirs] = plan_of(SET).part_plans[f"{SET}.{host}"].by_type("pulumi:providers:kubernetes")
    assert provider["fingerprints"] == theirs["fingerprints"] and provider["inputs"]["kubeconfig"] == "[secret]"
    assert {rel.split("/")[0] for rel in part.manifests} == {f"{host}-k8s"}
    [deployment] = [o for o in part.objects("Deployment") if o["metadata"]["namespace"] == layout.NS_ROUTER]
    record = plan_of(SET).part_plans[f"{SET}.{host}"].outputs[CLUSTER_EXPORT]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == record["router_image"]


def _normal(plan) -> dict[str, dict]:
    """Resources by URN with the stack taken out of every URN (the single stack's and the parts')."""
    text = re.sub(r"urn:pulumi:[^:]+::", "urn:pulumi:S::", json.dumps(plan.resources))
    text = re.sub(r"pulumi:pulumi:Stack::inference-fleet-[A-Za-z0-9._-]+", "pulumi:pulumi:Stack::S", text)
    out: dict[str, dict] = {}
    for r in json.loads(text):
        out.setdefault(r["urn"], []).append(r)  # type: ignore[arg-type]
    return out  # type: ignore[return-value]


def test_the_set_declares_what_the_single_stack_did_with_the_router_in_its_own_stack(tmp_path):
    """The multicloud spec planned as one stack (how it shipped before) against the set: the same
    resources with the same inputs — the router's config, CA bundle and Deployment included — but for
    what splitting them must change, each named here."""
    single_file = tmp_path / f"Pulumi.{SET}.yaml"
    single_file.write_text(yaml.safe_dump({"config": {"inference-fleet:fleet": _fleet()}}))
    single, split = _normal(run_plan(SET, config_file=single_file, charts=False)), _normal(plan_of(SET))
    provider = "urn:pulumi:S::inference-fleet::pulumi:pulumi:Stack$pulumi:providers:kubernetes::aws-east-k8s"
    image = "urn:pulumi:S::inference-fleet::pulumi:pulumi:Stack$fleet:router:RouterImage::router-image"
    # New: the router stack's provider on its cluster (from the cluster stack's kubeconfig output) and
    # a RouterImage component in each cluster stack, where there was one for all.
    assert set(split) - set(single) == {provider}
    assert set(single) == set(split) - {provider}
    assert len(split[image]) == len(_fleet()["clusters"]) and len(single[image]) == 1
    router = "urn:pulumi:S::inference-fleet::pulumi:pulumi:Stack$fleet:router:Router::router"

    def the_routers(urn: str) -> bool:
        while urn in single and urn != router:
            urn = single[urn][0]["parent"]
        return urn == router

    for urn, [old] in single.items():
        new = split[urn][0]
        assert new["inputs"] == old["inputs"], urn
        if urn == image:
            continue
        if the_routers(urn):
            # The router's objects: on the router stack's provider, and no longer depending on the
            # cluster stack's resources (its platform, its CA, its image build): that order is the
            # deploy order of the stacks now (clusters, then the router).
            cluster_provider = "urn:pulumi:S::inference-fleet::fleet:eks:EksCluster$pulumi:providers:kubernetes::aws-east-k8s"
            assert new["provider"] == (provider if old["provider"] == cluster_provider else old["provider"]), urn
            assert set(new["dependencies"]) <= set(old["dependencies"]), urn
            assert {k: v for k, v in new.items() if k not in ("provider", "dependencies", "property_dependencies")} \
                == {k: v for k, v in old.items() if k not in ("provider", "dependencies", "property_dependencies")}
            continue
        assert new == old, urn
    router_config = [u for u in single if u.endswith("ConfigMap::router-config")]
    assert router_config and split[router_config[0]][0]["inputs"]["data"] == single[router_config[0]][0]["inputs"]["data"]


@pytest.mark.parametrize("stack, key", [(f"{SET}.azure-east", CLUSTER_EXPORT), (f"{SET}.aws-east", KUBECONFIG_EXPORT)])
def test_a_missing_export_stops_the_router_naming_the_stack_and_the_key(stack, key):
    import pulumi

    with pytest.raises(pulumi.RunError) as e:
        run_plan(ROUTER_STACK, references=_refs(**{stack: key}), charts=False)
    assert f"stack {stack!r} has no output {key!r}" in str(e.value)
    assert f"pulumi up -s {stack}" in str(e.value)


def test_a_cluster_stack_deployed_from_another_spec_stops_the_router():
    import pulumi

    refs = _refs()
    name = f"organization/inference-fleet/{SET}.gcp-central"
    value, secret = refs[name][CLUSTER_EXPORT]
    stale = json.loads(json.dumps(value))
    stale["pools"]["tpu-v6e"]["models"] = []
    refs[name] = {**refs[name], CLUSTER_EXPORT: (stale, secret)}
    with pytest.raises(pulumi.RunError) as e:
        run_plan(ROUTER_STACK, references=refs, charts=False)
    assert f"stack '{SET}.gcp-central' output {CLUSTER_EXPORT!r}" in str(e.value) and "tpu-v6e" in str(e.value)
    newer = {**json.loads(json.dumps(value)), "version": RECORD_VERSION + 1}
    refs[name] = {**refs[name], CLUSTER_EXPORT: (newer, secret)}
    with pytest.raises(pulumi.RunError, match=f"version {RECORD_VERSION + 1}; this program reads version"):
        run_plan(ROUTER_STACK, references=refs, charts=False)


def test_a_part_under_another_stack_name_is_refused_before_anything_is_declared(tmp_path):
    import pulumi

    doc = yaml.safe_load((ROOT / f"Pulumi.{SET}.aws-east.yaml").read_text())
    path = tmp_path / "Pulumi.aws-team.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(pulumi.RunError, match=f"the router part finds that part as stack '{SET}.aws-east'"):
        run_plan("aws-team", config_file=path, charts=False)


def test_under_the_engine_the_router_stack_fails_closed_without_its_api_keys():
    import pulumi

    with pytest.raises(Exception) as e:  # Pulumi's own "Missing required configuration variable"
        run_plan(ROUTER_STACK, references=_refs(), charts=False, as_engine=True)
    assert isinstance(e.value, pulumi.ConfigMissingError) and "routerApiKeys" in str(e.value)


def test_the_set_verifies_with_no_findings(tmp_path):
    from fleetctl import verify
    from fleetctl.plan import write_plan

    plan = plan_of(SET)
    write_plan(plan, tmp_path)
    topo = verify.load_plan(plan, tmp_path)
    assert set(topo.clusters) == {f"{c['name']}-k8s" for c in _fleet()["clusters"]}
    assert verify.verify(topo) == []
    # The router's objects are checked on its cluster with that cluster's pools and policies.
    host = topo.clusters[f"{_fleet()['router']['cluster']}-k8s"]
    assert host.cloud == "aws" and any(o.kind == "Deployment" and o.name == "fleet-router" for o in host.objects)


def test_the_set_has_a_stack_file_per_part_each_saying_so_and_none_besides(tmp_path):
    """A set whose files drifted from its spec (a cluster added without its stack, a stack left behind
    after its cluster went, a file naming another part) is refused naming each file."""
    import shutil

    from fleet.spec import SpecError, load_spec
    from fleet.stackset import parts_of
    from fleetctl.plan import read_stack_config
    from fleetctl.stackset import part_files

    cfg = read_stack_config(SET)
    parts = parts_of(load_spec(cfg.fleet_raw(), cfg.spec_source))
    for stack in _cluster_stacks() + [ROUTER_STACK]:
        shutil.copy(ROOT / f"Pulumi.{stack}.yaml", tmp_path)
    assert list(part_files(cfg, parts, tmp_path).values()) == _cluster_stacks() + [ROUTER_STACK]
    (tmp_path / f"Pulumi.{SET}.gcp-central.yaml").unlink()
    (tmp_path / f"Pulumi.{SET}.old-cluster.yaml").write_text("config: {}\n")
    doc = yaml.safe_load((tmp_path / f"Pulumi.{SET}.azure-east.yaml").read_text())
    doc["config"]["inference-fleet:part"] = "cluster aws-east"
    (tmp_path / f"Pulumi.{SET}.azure-east.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError) as e:
        part_files(cfg, parts, tmp_path)
    message = str(e.value)
    assert message.startswith(f"fleets/{SET}.yaml: ")
    assert f"part `cluster gcp-central` has no stack file Pulumi.{SET}.gcp-central.yaml" in message
    assert f"Pulumi.{SET}.old-cluster.yaml is no part of the set" in message
    assert f"Pulumi.{SET}.azure-east.yaml must say stackSet: {SET} and part: cluster azure-east" in message


def test_the_router_stack_plans_alone_reading_its_clusters_plans(tmp_path):
    # `fleet plan --stack multicloud.router`: what `pulumi preview -s multicloud.router` declares.
    assert cli.main(["plan", "--stack", ROUTER_STACK, "--no-charts", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "plan.json").read_text())
    assert doc["stack"] == ROUTER_STACK and "parts" not in doc
    assert {STACK_OF_URN.match(r["urn"]).group(1) for r in doc["resources"]} == {ROUTER_STACK}
    assert [m["key"] for m in doc["missing_secrets"]] == ["routerApiKeys"]
    assert set(doc["outputs"]) == {"router_url", "router_ca_certificate"}


def test_the_set_is_priced_whole_and_per_stack(capsys):
    """`fleet cost --stack multicloud` prices the set's one spec and splits it by the stack that owns
    each node: a cluster stack its cluster's pools (system nodes too), the router stack none."""
    from fleetctl.cost import by_part_stack, cost_of_stack

    report = cost_of_stack(SET)
    parts = by_part_stack(SET, report)
    assert list(parts) == _cluster_stacks() + [ROUTER_STACK]
    assert parts[ROUTER_STACK] == {"min": 0, "typical": 0, "max": 0}
    for scale in ("min", "typical", "max"):
        assert sum(c[scale] for c in parts.values()) == pytest.approx(report.totals[scale], abs=0.05)
    for c in _fleet()["clusters"]:
        mine = [p for p in report.pools if p.cluster == c["name"]]
        assert mine and parts[f"{SET}.{c['name']}"]["max"] == pytest.approx(sum(p.monthly["max"] for p in mine),
                                                                           abs=0.05)
    assert by_part_stack("dev", cost_of_stack("dev")) is None
    assert cli.main(["cost", "--stack", SET]) == 0
    printed = capsys.readouterr().out
    assert "### By stack" in printed and f"| `{ROUTER_STACK}` | 0 | 0 | 0 |" in printed
    assert cli.main(["cost", "--stack", SET, "--json"]) == 0
    assert "By stack" not in capsys.readouterr().out  # the JSON report keeps its shape (fleet diff reads it)
