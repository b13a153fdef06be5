"""The replacement facts table (fleetctl/diff_rules.py): complete for the program, sourced, and its
conditional rules decided the way the providers decide them."""

from __future__ import annotations

import functools

import pytest

from conftest import SHIPPED_STACKS
from fleetctl import diff_rules
from fleetctl.diff import compare, verdict
from fleetctl.plan import run_plan


@functools.lru_cache(maxsize=None)
def _types(stack: str) -> set[str]:
    return {r["type"] for r in run_plan(stack, charts=False).resources if r["custom"]}


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_every_type_the_program_declares_has_an_entry(stack):
    missing = sorted(t for t in _types(stack) if not diff_rules.covers(t))
    assert not missing, f"{stack}: no replacement facts for {missing}: read the provider and add them"


def test_every_rule_carries_its_source_and_a_known_condition():
    for typ, facts in diff_rules.TYPES.items():
        for rule in facts.rules:
            assert rule.source.project and rule.source.file and rule.source.version, (typ, rule)
            assert rule.why, (typ, rule)
            assert rule.when is None or rule.when in diff_rules.CONDITIONS, (typ, rule)
        for key in facts.name_keys:
            assert facts.clash, (typ, key)


SUBNET = "gcp:compute/subnetwork:Subnetwork"
NODE_POOL = "gcp:container/nodePool:NodePool"


@pytest.mark.parametrize("old, new, replaces", [
    # resource_compute_subnetwork.go: ForceNewIfChange("ip_cidr_range", IsShrinkageIpCidr); an expansion is
    # an in-place expandIpCidrRange.
    ("10.10.0.0/20", "10.10.0.0/19", False),
    ("10.10.0.0/20", "10.10.0.0/21", True),
    ("10.10.0.0/20", "10.20.0.0/20", True),
])
def test_a_subnetwork_range_replaces_only_when_it_does_not_grow(old, new, replaces):
    ctx = {"old": {"ipCidrRange": old}, "new": {"ipCidrRange": new}}
    rule = verdict(SUBNET, "ipCidrRange", ctx=ctx)
    assert (rule is not None and rule.effect == diff_rules.REPLACE) is replaces


@pytest.mark.parametrize("provider, immutable, replaces", [
    # pulumi-kubernetes diff.go forceNewProperties: ConfigMap data replaces unless the provider sets
    # enableConfigMapMutable and the ConfigMap is not immutable.
    ({}, None, True),
    ({"enableConfigMapMutable": "true"}, None, False),
    ({"enableConfigMapMutable": "true"}, True, True),
])
def test_configmap_data_replaces_unless_the_provider_makes_it_mutable(provider, immutable, replaces):
    new = {"data": {"a": "2"}, **({"immutable": immutable} if immutable is not None else {})}
    ctx = {"old": {"data": {"a": "1"}}, "new": new, "provider_new": provider}
    rule = verdict("kubernetes:core/v1:ConfigMap", 'data["a"]', ctx=ctx)
    assert (rule is not None and rule.effect == diff_rules.REPLACE) is replaces


def test_secret_data_replaces_by_default_and_its_type_always():
    ctx = {"old": {}, "new": {}, "provider_new": {"enableSecretMutable": "true"}}
    assert verdict("kubernetes:core/v1:Secret", "stringData.k", ctx={**ctx, "provider_new": {}}).effect == "replace"
    assert verdict("kubernetes:core/v1:Secret", "stringData.k", ctx=ctx) is None
    assert verdict("kubernetes:core/v1:Secret", "type", ctx=ctx).effect == "replace"


def _pool(inputs: dict) -> dict:
    return {"resources": [{"urn": "urn:pulumi:s::p::gcp:container/nodePool:NodePool::pool", "type": NODE_POOL,
                           "name": "pool", "custom": True, "parent": "", "provider": "", "dependencies": [],
                           "property_dependencies": {}, "options": {}, "inputs": inputs}]}



def test_a_placement_policy_replaces_when_added_but_its_topology_is_never_sent():
    # resource_container_node_pool.go: placement_policy is a ForceNew block (adding or removing it
    # replaces the pool); tpu_topology inside it is neither ForceNew nor sent by nodePoolUpdate.
    base = {"name": "tpu", "placementPolicy": {"type": "COMPACT", "tpuTopology": "2x2"}}
    (added,), _ = compare(_pool({"name": "tpu"}), _pool(base))
    assert added.action == "replace" and "placementPolicy" in added.reason
    (moved,), _ = compare(_pool(base), _pool({**base, "placementPolicy": {"type": "COMPACT", "tpuTopology": "2x4"}}))
    assert moved.action == "update"
    assert [p.path for p in moved.properties if p.not_applied] == ["placementPolicy.tpuTopology"]
    assert "the cloud keeps the old value" in moved.reason


def test_chart_objects_are_patched_by_helm_not_replaced():
    # A chart's ConfigMap is Helm's: `helm upgrade` patches it, pulumi-kubernetes' rules do not apply.
    def side(data):
        return {"resources": [{"urn": "urn:pulumi:s::p::kubernetes:core/v1:ConfigMap::rel:ns/cm",
                               "type": "kubernetes:core/v1:ConfigMap", "name": "rel:ns/cm", "custom": True,
                               "chart_object": True, "parent": "", "provider": "", "dependencies": [],
                               "property_dependencies": {}, "options": {}, "inputs": {"data": data}}]}
    (ch,), _ = compare(side({"a": "1"}), side({"a": "2"}))
    assert ch.action == "update"


def _kubeconfig(server: str, token: str = "t") -> str:
    return (f"apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n"
            f"    certificate-authority-data: Q0E=\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\n"
            f"current-context: c\nusers:\n- name: u\n  user: {{token: {token}}}\n")


def test_a_kubeconfig_fingerprint_follows_the_active_cluster_and_reveals_nothing():
    # pulumi-kubernetes DiffConfig replaces the provider when the active cluster (server, CA) changes,
    # not when the credentials do; the plan records the kubeconfig masked, so the review compares this.
    from fleetctl.plan import kubeconfig_fingerprint

    a = kubeconfig_fingerprint(_kubeconfig("https://203.0.113.7"))
    assert a == kubeconfig_fingerprint(_kubeconfig("https://203.0.113.7", token="rotated"))
    assert a != kubeconfig_fingerprint(_kubeconfig("https://203.0.113.8"))
    assert "203.0.113" not in a and a.startswith("sha256:")
    assert kubeconfig_fingerprint("context: kind-fleet") is None  # names no cluster: nothing to compare


def test_a_provider_whose_cluster_changes_replaces_what_it_manages():
    def side(fp: str) -> dict:
        prov = {"urn": "urn:pulumi:s::p::pulumi:providers:kubernetes::c-k8s", "type": "pulumi:providers:kubernetes",
                "name": "c-k8s", "custom": True, "parent": "", "provider": "", "dependencies": [],
                "property_dependencies": {}, "options": {}, "inputs": {"kubeconfig": "[secret]"},
                "fingerprints": {"kubeconfig": fp}}
        cm = {"urn": "urn:pulumi:s::p::kubernetes:core/v1:Namespace::ns", "type": "kubernetes:core/v1:Namespace",
              "name": "ns", "custom": True, "parent": "", "provider": prov["urn"], "dependencies": [],
              "property_dependencies": {}, "options": {}, "inputs": {"metadata": {"name": "ns"}}}
        return {"resources": [prov, cm]}

    changes, unchanged = compare(side("sha256:aaaa"), side("sha256:bbbb"))
    assert {(c.name, c.action) for c in changes} == {("c-k8s", "replace"), ("ns", "replace")}
    ns = next(c for c in changes if c.name == "ns")
    assert "calculateDependentReplacements" in ns.reason
    # Same cluster (the credentials rotated): nothing to replace, and no secret shows in the review.
    assert compare(side("sha256:aaaa"), side("sha256:aaaa")) == ([], 2)
