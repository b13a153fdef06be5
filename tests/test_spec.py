"""The fleet spec refuses bad config before any resource is declared, naming the field."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from fleetctl.plan import ROOT, read_stack_config
from fleet.spec import SpecError, load_spec

from conftest import SHIPPED_STACKS


def base() -> dict:
    """A small valid GCP fleet to break one field at a time."""
    return {
        "topology": "gcp",
        "clusters": [{"name": "gke-main", "cloud": "gcp", "region": "us-central1"}],
        "pools": [
            {"name": "t4-spot", "cluster": "gke-main", "accelerator": "t4", "max_nodes": 2},
            {"name": "v6e", "cluster": "gke-main", "accelerator": "tpu-v6e", "tpu_topology": "2x2", "max_nodes": 1},
        ],
        "models": [
            {"name": "phi-3-mini", "hf_id": "microsoft/Phi-3-mini-4k-instruct", "params_b": 3.82,
             "dtype": "fp16", "max_context": 2048, "pools": ["t4-spot"]},
        ],
        "tiers": [
            {"name": "premium", "match": {"X-Priority": "high"},
             "backends": [{"pool": "t4-spot", "weight": 90}, {"pool": "v6e", "weight": 10}]},
            {"name": "default", "backends": [{"pool": "t4-spot", "weight": 100}], "overflow": ["v6e"]},
        ],
    }


def set_path(doc: dict, path: str, value) -> dict:
    doc = copy.deepcopy(doc)
    parts = path.replace("]", "").replace("[", ".").split(".")
    target = doc
    for p in parts[:-1]:
        target = target[int(p)] if p.isdigit() else target[p]
    last = parts[-1]
    if value is DELETE:
        del target[int(last) if last.isdigit() else last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return doc


DELETE = object()

# (id, path to change, new value, field path the error must name, words the message must contain)
BAD_CONFIGS = [
    ("unknown-top-key", "colour", "blue", "fleet.colour", "unknown key (not part of the fleet spec)"),
    ("unknown-pool-key", "pools[0].gpu", "t4", "fleet.pools[0].gpu", "unknown key"),
    ("unknown-cluster-key", "clusters[0].size", 3, "fleet.clusters[0].size", "unknown key"),
    ("bad-topology", "topology", "hybrid", "fleet.topology", "Input should be"),
    ("bad-cloud", "clusters[0].cloud", "oracle", "fleet.clusters[0].cloud", "Input should be"),
    ("missing-region", "clusters[0].region", DELETE, "fleet.clusters[0].region", "needs a region"),
    ("cluster-name-uppercase", "clusters[0].name", "GKE", "fleet.clusters[0].name", "pattern"),
    ("max-nodes-wrong-type", "pools[0].max_nodes", "lots", "fleet.pools[0].max_nodes", "integer"),
    ("max-nodes-missing", "pools[0].max_nodes", DELETE, "fleet.pools[0].max_nodes", "required key is missing"),
    ("negative-min-nodes", "pools[0].min_nodes", -1, "fleet.pools[0].min_nodes", "greater than or equal"),
    ("min-above-max", "pools[0].min_nodes", 3, "fleet.pools[0].min_nodes", "min_nodes (3) > max_nodes (2)"),
    ("unknown-accelerator", "pools[0].accelerator", "b200", "fleet.pools[0].accelerator", "unknown accelerator"),
    ("mi300x-on-gcp", "pools[0].accelerator", "mi300x", "fleet.pools[0].accelerator", "not offered on gcp"),
    ("pool-unknown-cluster", "pools[0].cluster", "eks-main", "fleet.pools[0].cluster", "not in clusters"),
    ("machine-not-carrying-accelerator", "pools[0].machine_type", "a3-highgpu-8g",
     "fleet.pools[0].machine_type", "does not carry"),
    ("accelerators-per-node-unavailable", "pools[0].accelerators_per_node", 3,
     "fleet.pools[0].accelerators_per_node", "no gcp machine carries 3"),
    ("tpu-bad-topology", "pools[1].tpu_topology", "4x4", "fleet.pools[1].tpu_topology", "does not support topology"),
    ("tpu-missing-topology", "pools[1].tpu_topology", DELETE, "fleet.pools[1].tpu_topology", "needs a tpu_topology"),
    ("topology-on-gpu", "pools[0].tpu_topology", "2x2", "fleet.pools[0].tpu_topology", "only for TPU"),
    ("topology-malformed", "pools[1].tpu_topology", "two-by-two", "fleet.pools[1].tpu_topology", "pattern"),
    ("sim-profile-on-cloud", "pools[0].sim_profile", "nvidia-t4", "fleet.pools[0].sim_profile", "only for local"),
    ("duplicate-pool", "pools[1].name", "t4-spot", "fleet.pools[1].name", "duplicate name"),
    ("model-unknown-pool", "models[0].pools", ["a100"], "fleet.models[0].pools[0]", "not in pools"),
    ("model-no-pools", "models[0].pools", [], "fleet.models[0].pools", "at least 1"),
    ("model-bad-dtype", "models[0].dtype", "fp12", "fleet.models[0].dtype", "Input should be"),
    ("model-bad-hf-id", "models[0].hf_id", "not a repo", "fleet.models[0].hf_id", "pattern"),
    ("model-zero-params", "models[0].params_b", 0, "fleet.models[0].params_b", "greater than 0"),
    ("model-tp-exceeds-node", "models[0].tensor_parallel", 2, "fleet.models[0].tensor_parallel",
     "exceeds the 1 accelerators per node"),
    ("model-replicas-inverted", "models[0].min_replicas", 5, "fleet.models[0].min_replicas", "min_replicas (5)"),
    ("tier-weights-not-100", "tiers[0].backends[1].weight", 20, "fleet.tiers[0].backends", "sum to 110, not 100"),
    ("tier-unknown-pool", "tiers[0].backends[1].pool", "h100", "fleet.tiers[0].backends[1].pool", "not in pools"),
    ("tier-unknown-overflow", "tiers[1].overflow", ["h100"], "fleet.tiers[1].overflow[0]", "not in pools"),
    ("tier-overflow-is-backend", "tiers[1].overflow", ["t4-spot"], "fleet.tiers[1].overflow[0]",
     "both a backend and an overflow"),
    ("tier-bad-header", "tiers[0].match", {"X Priority": "high"}, "fleet.tiers[0].match", "not a valid HTTP header"),
    ("tier-bad-policy", "tiers[0].policy", "random", "fleet.tiers[0].policy", "Input should be"),
    ("two-default-tiers", "tiers[0].match", {}, "fleet.tiers[1].match", "only one tier may have no match"),
    ("tier-weight-over-100", "tiers[0].backends[0].weight", 101, "fleet.tiers[0].backends[0].weight",
     "less than or equal to 100"),
    ("router-unknown-cluster", "router", {"cluster": "aks"}, "fleet.router.cluster", "not in clusters"),
    ("router-zero-replicas", "router", {"replicas": 0}, "fleet.router.replicas", "greater than or equal to 1"),
    ("cluster-of-other-cloud", "clusters[0].cloud", "aws", "fleet.clusters[0].cloud", "only has gcp clusters"),
    ("plain-secret-in-spec", "router", {"api_key": "sk-live-123"}, "fleet.router.api_key", "pulumi config set --secret"),
    ("plain-secret-in-a-list", "pools[0].labels", [{"token": "hf_abc"}], "fleet.pools[0].labels[0].token",
     "looks like a secret in plain config; store it with `pulumi config set --secret` under its own key (hfToken"),
    ("kserve-without-cert-manager", "platform", {"cert_manager": False, "istio": False},
     "fleet.platform.kserve", "needs cert-manager"),
    ("no-clusters", "clusters", [], "fleet.clusters", "at least 1"),
]


@pytest.mark.parametrize("case,path,value,field,words", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_rejected_naming_the_field(case, path, value, field, words):
    with pytest.raises(SpecError) as err:
        load_spec(set_path(base(), path, value), "Pulumi.test.yaml")
    lines = str(err.value).splitlines()
    hit = [line for line in lines if line.startswith(f"Pulumi.test.yaml: {field}:")]
    assert hit, f"no error names {field}; got: {lines}"
    assert any(words in line for line in hit), f"{words!r} not in {hit}"


def edited(*changes) -> dict:
    doc = base()
    for path, value in changes:
        doc = set_path(doc, path, value)
    return doc


def azure(pool_name: str) -> dict:
    """A one-pool AKS fleet: Azure's node pool names are the strictest (12 characters, a-z0-9)."""
    return {"topology": "azure", "clusters": [{"name": "aks", "cloud": "azure", "region": "eastus"}],
            "pools": [{"name": pool_name, "cluster": "aks", "accelerator": "t4", "max_nodes": 1}],
            "tiers": [{"name": "default", "backends": [{"pool": pool_name, "weight": 100}]}]}


# Rules the first mutation run (make mutation) showed no case reached: (id, spec, field, words).
BAD_SPECS = [
    ("kserve-model-without-kserve", edited(("models[0].serving", "kserve"), ("models[0].min_replicas", 1),
                                           ("models[0].max_replicas", 1), ("platform", {"kserve": False})),
     "fleet.models[0].serving", "needs platform.kserve enabled"),
    ("kserve-model-autoscaled", edited(("models[0].serving", "kserve"), ("models[0].max_replicas", 2)),
     "fleet.models[0].max_replicas", "runs a fixed replica count"),
    ("istio-without-cert-manager", edited(("platform", {"cert_manager": False, "kserve": False})),
     "fleet.platform.istio", "TLS certificate comes from cert-manager"),
    ("router-replicas-over-max", edited(("router", {"replicas": 3, "max_replicas": 2})),
     "fleet.router.replicas", "router replicas (3) > max_replicas (2)"),
    ("typical-over-max", edited(("pools[0].typical_nodes", 3)), "fleet.pools[0].typical_nodes",
     "must lie between min_nodes (0) and max_nodes (2)"),
    ("typical-under-min", edited(("pools[0].min_nodes", 1), ("pools[0].typical_nodes", 0.5)),
     "fleet.pools[0].typical_nodes", "must lie between min_nodes (1)"),
    ("same-match-any-case", edited(("tiers", base()["tiers"] + [{"name": "p2", "match": {"x-priority": "high"},
                                                                "backends": [{"pool": "t4-spot", "weight": 100}]}])),
     "fleet.tiers[2].match", "the same match as another tier"),
    ("dev-on-a-cloud", edited(("topology", "dev")), "fleet.clusters[0].cloud", "runs on a local cluster, not gcp"),
    ("kubernetes-too-old", edited(("clusters[0].kubernetes_version", "1.20")),
     "fleet.clusters[0].kubernetes_version", "does not offer it for new clusters"),
    ("kubernetes-too-new", edited(("clusters[0].kubernetes_version", "1.99")),
     "fleet.clusters[0].kubernetes_version", "the cloud does not offer it yet; use one of"),
    ("tpu-machine-other-slice", edited(("pools[1].machine_type", "ct6e-standard-8t")),
     "fleet.pools[1].tpu_topology", "ct6e-standard-8t is a 2x4 slice, not 2x2"),
    ("local-without-context", {"topology": "dev", "clusters": [{"name": "kind", "cloud": "local"}],
                               "pools": [{"name": "sim", "cluster": "kind", "accelerator": "t4", "max_nodes": 1,
                                          "sim_profile": "nvidia-t4"}],
                               "tiers": [{"name": "default", "backends": [{"pool": "sim", "weight": 100}]}]},
     "fleet.clusters[0].kubeconfig_context", "needs the kubeconfig context of a kind/k3d cluster"),
    ("azure-pool-name-13-chars", azure("abcdefghijklm"), "fleet.pools[0].name", "longer than azure allows (12"),
    ("azure-pool-name-dash", azure("t4-spot"), "fleet.pools[0].name", "has characters azure does not allow"),
]


@pytest.mark.parametrize("case,doc,field,words", BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_each_cross_field_rule_names_its_field(case, doc, field, words):
    with pytest.raises(SpecError) as err:
        load_spec(doc, "Pulumi.test.yaml")
    hit = [line for line in str(err.value).splitlines() if line.startswith(f"Pulumi.test.yaml: {field}:")]
    assert any(words in line for line in hit), f"{words!r} not in {hit or str(err.value)}"


@pytest.mark.parametrize("doc", [edited(("router", {"replicas": 2, "max_replicas": 2})),
                                 edited(("pools[0].typical_nodes", 2)), edited(("pools[0].typical_nodes", 0)),
                                 azure("abcdefghijkl"),
                                 edited(("models[0].serving", "kserve"), ("models[0].min_replicas", 1),
                                        ("models[0].max_replicas", 1))],
                         ids=["router-replicas-at-max", "typical-at-max", "typical-at-min", "azure-name-12-chars",
                              "kserve-fixed-replicas"])
def test_the_edge_of_each_rule_is_still_valid(doc):
    load_spec(doc, "Pulumi.test.yaml")


def test_a_stack_without_the_fleet_key_is_told_which_key_to_set():
    with pytest.raises(SpecError) as err:
        load_spec(None, "Pulumi.test.yaml")
    text = str(err.value)
    assert text.startswith("Pulumi.test.yaml: ") and len(text.splitlines()) == 1
    assert text.endswith("missing: set the structured config key `fleet` (see README)")


def test_at_least_thirty_distinct_bad_configs_are_covered():
    assert len({c[0] for c in BAD_CONFIGS}) >= 30
    assert len({(c[1], json.dumps(c[2], default=str)) for c in BAD_CONFIGS}) == len(BAD_CONFIGS)


def test_the_base_config_is_valid():
    spec = load_spec(base())
    assert spec.pool("t4-spot").machine.name == "n1-standard-4"
    assert spec.pool("v6e").machine.name == "ct6e-standard-4t"


def test_wrong_accelerator_on_azure_is_rejected():
    doc = base() | {"topology": "azure"}
    doc["clusters"] = [{"name": "aks", "cloud": "azure", "region": "eastus"}]
    doc["pools"] = [{"name": "tpu", "cluster": "aks", "accelerator": "tpu-v5e", "tpu_topology": "2x2", "max_nodes": 1}]
    doc["models"], doc["tiers"] = [], []
    with pytest.raises(SpecError, match=r"fleet\.pools\[0\]\.accelerator: .*not offered on azure"):
        load_spec(doc)


def test_every_problem_is_reported_at_once():
    doc = set_path(set_path(base(), "pools[0].min_nodes", 9), "tiers[0].backends[0].weight", 10)
    with pytest.raises(SpecError) as err:
        load_spec(doc)
    assert len(err.value.problems) == 2


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_every_shipped_stack_config_loads(stack):
    cfg = read_stack_config(stack)
    spec = load_spec(cfg.fleet_raw(), cfg.spec_source)
    assert spec.topology == stack
    assert spec.clusters


def test_stack_file_secrets_are_never_plain():
    """Anything secret-looking in a shipped stack file is a `secure:` value, never plain text."""
    for path in ROOT.glob("Pulumi.*.yaml"):
        config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
        for key, value in config.items():
            if any(w in key.lower() for w in ("token", "key", "password", "secret")):
                assert isinstance(value, dict) and set(value) == {"secure"}, f"{path.name}: {key} is plain"


# As of 2026-12 (fleet/catalog.KUBERNETES_SUPPORT): EKS standard support for 1.34 ended 2026-12-02
# (1.35: EKS release 2026-01-28, standard support to 2027-03-27; endoflife.date/amazon-eks, EKS user
# guide "Kubernetes version lifecycle": 14 months standard, then paid extended support); AKS keeps
# three GA minors, older ones as Premium-tier LTS only; GKE's REGULAR channel offers no 1.32 for new
# clusters.
@pytest.mark.parametrize("cloud,region", [("aws", "us-east-1"), ("azure", "eastus"), ("gcp", "us-central1")])
def test_a_kubernetes_version_the_cloud_no_longer_offers_is_refused_with_the_reason(cloud, region):
    doc = base() | {"topology": cloud}
    doc["clusters"] = [{"name": "c1", "cloud": cloud, "region": region, "kubernetes_version": "1.32"}]
    doc["pools"], doc["models"], doc["tiers"] = [], [], []
    with pytest.raises(SpecError) as err:
        load_spec(doc)
    [problem] = [p for p in err.value.problems if "kubernetes_version" in str(p)]
    text = str(problem)
    assert "clusters[0].kubernetes_version" in text and "1.32" in text and "1.35" in text
    assert {"aws": "extended support", "azure": "LTS", "gcp": "REGULAR"}[cloud] in text


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_shipped_clusters_run_a_kubernetes_version_in_standard_support_everywhere(stack):
    cfg = read_stack_config(stack)
    for c in load_spec(cfg.fleet_raw(), cfg.spec_source).clusters:
        if c.cloud != "local":
            assert int(c.kubernetes_version.split(".")[1]) >= 35, (stack, c.name, c.kubernetes_version)
