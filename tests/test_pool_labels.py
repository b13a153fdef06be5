"""Every accelerator pool carries the catalog's labels and taints, the same on GKE, EKS and AKS,
so a workload selects and tolerates a pool the same way on every cloud; pool names fit each
cloud's limits."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, plan_of
from fleet import catalog, naming

CLOUD_STACKS = ("gcp", "aws", "azure")
GKE_EFFECTS = {"NO_SCHEDULE": "NoSchedule", "PREFER_NO_SCHEDULE": "PreferNoSchedule", "NO_EXECUTE": "NoExecute"}


def _pools(stack):
    """(pool name as the cloud sees it, labels, taints as (key, value, effect)) per accelerator pool."""
    out = []
    for r in plan_of(stack).resources:
        i = r["inputs"]
        if r["type"] == "gcp:container/nodePool:NodePool":
            nc = i["nodeConfig"]
            out.append((i["name"], nc.get("labels") or {},
                        {(t["key"], t["value"], GKE_EFFECTS[t["effect"]]) for t in nc.get("taints") or []}))
        elif r["type"] == "aws:eks/nodeGroup:NodeGroup":
            out.append((i["nodeGroupName"], i.get("labels") or {},
                        {(t["key"], t["value"], GKE_EFFECTS[t["effect"]]) for t in i.get("taints") or []}))
        elif r["type"] == "azure-native:containerservice:AgentPool":
            taints = {tuple(re.split("[=:]", t)) for t in i.get("nodeTaints") or []}
            out.append((i["agentPoolName"], i.get("nodeLabels") or {}, taints))
    return [p for p in out if f"{catalog.LABEL_PREFIX}/accelerator" in p[1]]


def _cloud_added(cloud):
    traits = catalog.CLOUD_TRAITS[cloud]
    return ({traits.spot_label[0]} if traits.spot_label else set(),
            {traits.spot_taint} if traits.spot_taint else set())


@pytest.mark.parametrize("stack", CLOUD_STACKS)
def test_every_accelerator_pool_carries_the_catalogs_labels_and_taints(stack):
    spec = plan_of(stack).spec
    found = _pools(stack)
    assert len(found) == len(spec.pools)
    extra_labels, extra_taints = _cloud_added(stack)
    for name, labels, taints in found:
        pool = next(p for p in spec.pools if naming.pool_name(stack, p.name) == name)
        own = {k: v for k, v in labels.items() if k not in extra_labels}
        assert own == catalog.pool_labels(pool.vendor, pool.accelerator, pool.name), name
        expected = {(t["key"], t["value"], t["effect"]) for t in catalog.pool_taints(pool.vendor)}
        assert taints - extra_taints == expected, name


def test_a_t4_pool_is_selected_and_tolerated_the_same_way_on_all_three_clouds():
    seen = {}
    for stack in CLOUD_STACKS:
        extra_labels, extra_taints = _cloud_added(stack)
        [(_, labels, taints)] = [p for p in _pools(stack) if p[1][f"{catalog.LABEL_PREFIX}/accelerator"] == "t4"]
        seen[stack] = ({k: v for k, v in labels.items() if k not in extra_labels and not k.endswith("/pool")},
                       taints - extra_taints)
    assert seen["gcp"] == seen["aws"] == seen["azure"]
    assert seen["gcp"][0] == {f"{catalog.LABEL_PREFIX}/vendor": "nvidia", f"{catalog.LABEL_PREFIX}/accelerator": "t4"}
    assert seen["gcp"][1] == {("nvidia.com/gpu", "present", "NoSchedule")}


@pytest.mark.parametrize("cloud,pattern", [("gcp", r"[a-z0-9-]{1,40}"), ("aws", r"[a-zA-Z0-9_-]{1,63}"),
                                           ("azure", r"[a-z0-9]{1,12}")])
def test_long_pool_names_are_shortened_to_valid_unique_stable_names(cloud, pattern):
    names = ["nvidia-h100-premium-tier-pool-east-zone-b", "nvidia-h100-premium-tier-pool-east-zone-c"]
    fitted = [naming.pool_name(cloud, n) for n in names]
    assert all(re.fullmatch(pattern, f) for f in fitted), fitted
    assert fitted[0] != fitted[1]
    # Stable means the same in the next `pulumi up`, a new process with another hash seed: a name
    # that changed there would replace the node pool.
    code = f"from fleet import naming; print(*[naming.pool_name({cloud!r}, n) for n in {names!r}])"
    again = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"}, timeout=60).stdout.split()
    assert again == fitted
    assert naming.pool_name(cloud, "gpu") == "gpu"  # a valid short name is kept as is


def test_reserved_reasons_become_valid_label_values():
    value = naming.label_value("Steady daytime load: one node for the premium tier's 500 ms TTFT SLO, always")
    assert re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?", value)
