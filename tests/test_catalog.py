"""The catalog reproduces the seeds' price figures and holds one consistent table of facts."""

from __future__ import annotations

import pytest

from fleet import catalog


@pytest.mark.parametrize("cloud,machine,monthly", [
    ("aws", "g4dn.xlarge", 114),  # seed 002: ~$114/month (g4dn.xlarge spot)
    ("azure", "Standard_NC4as_T4_v3", 151),  # seed 002: ~$151/month
    ("gcp", "n1-standard-4", 201),  # seed 002: ~$201/month (n1-standard-4 + T4 preemptible)
])
def test_seed_002_t4_spot_monthly_costs(cloud, machine, monthly):
    m = catalog.machine("t4", cloud, machine)
    assert round(catalog.monthly(m.price.spot)) == monthly
    assert "seed 002" in m.price.source and m.price.as_of


def test_seed_002_gpu_total_is_466_per_month():
    total = sum(catalog.monthly(catalog.machine("t4", c).price.spot) for c in ("aws", "azure", "gcp"))
    assert round(total) == 466


@pytest.mark.parametrize("acc,per_hour", [("h100", 2.00), ("mi300x", 0.50)])
def test_seed_000_per_accelerator_hour(acc, per_hour):
    a = catalog.accelerator(acc)
    assert a.reference_price_per_hour == per_hour
    for m in a.machines:
        assert m.price.spot / m.accelerators == pytest.approx(per_hour)


def test_seed_000_amd_is_75_percent_cheaper_per_hour():
    h100 = catalog.accelerator("h100").reference_price_per_hour
    mi300x = catalog.accelerator("mi300x").reference_price_per_hour
    assert 1 - mi300x / h100 == pytest.approx(0.75)
    # Seed 000's performance table: H100 45 tok/s vs MI300X 38 tok/s for 7B chat (-15 %).
    assert catalog.accelerator("h100").stream_tokens_per_second == 45
    assert catalog.accelerator("mi300x").stream_tokens_per_second == 38


def test_seed_001_t4_usable_memory():
    assert catalog.accelerator("t4").usable_memory_gib == 14.58


def test_vendor_specific_accelerators_stay_on_their_cloud():
    assert catalog.accelerator("mi300x").clouds() == ("azure",)
    assert catalog.accelerator("tpu-v5e").clouds() == ("gcp",)
    assert catalog.accelerator("tpu-v6e").clouds() == ("gcp",)
    with pytest.raises(catalog.CatalogError, match="not offered on gcp"):
        catalog.machine("mi300x", "gcp")


def test_tpu_topology_picks_the_single_host_machine():
    assert catalog.machine("tpu-v6e", "gcp", tpu_topology="2x2").name == "ct6e-standard-4t"
    assert catalog.machine("tpu-v5e", "gcp", tpu_topology="2x4").accelerators == 8
    for acc in (catalog.accelerator("tpu-v5e"), catalog.accelerator("tpu-v6e")):
        for m in acc.machines:
            x, y = map(int, m.tpu_topology.split("x"))
            assert x * y == m.accelerators, m.name


def test_every_vendor_image_is_pinned_by_digest():
    for v in catalog.VENDORS.values():
        name, _, digest = v.vllm_image.partition("@sha256:")
        assert ":" in name.rsplit("/", 1)[-1], f"{v.name}: tag missing"
        assert len(digest) == 64 and all(c in "0123456789abcdef" for c in digest), v.name


def test_every_price_has_a_source_and_date_and_spot_is_cheaper():
    for acc in catalog.ACCELERATORS.values():
        for m in acc.machines:
            assert m.price.source and m.price.as_of
            assert 0 < m.price.spot < m.price.on_demand, m.name


def test_labels_and_taints_are_the_same_shape_for_every_vendor():
    for vendor in catalog.VENDORS:
        labels = catalog.pool_labels(vendor, "x", "p")
        assert set(labels) == {f"{catalog.LABEL_PREFIX}/{k}" for k in ("vendor", "accelerator", "pool")}
        (taint,) = catalog.pool_taints(vendor)
        assert taint["key"] == catalog.VENDORS[vendor].resource_name and taint["effect"] == "NoSchedule"


def test_cost_per_million_tokens():
    # One H100 node at spot ($16/h for 8 GPUs) generating 8 x 2500 tok/s.
    assert catalog.cost_per_million_tokens(16.0, 8, "h100") == pytest.approx(16.0 / (20000 * 3600) * 1e6)
