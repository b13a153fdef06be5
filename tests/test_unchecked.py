"""The plan's summary names what it could not check (issue 17, "Also"): Spot capacity for each cloud
pool, images pinned by tag only, and the credentials only a cloud hands out, each with a command."""

from __future__ import annotations

import re

from conftest import plan_of
from fleetctl.plan import summary
from fleetctl.unchecked import unchecked


def test_every_cloud_pool_has_its_capacity_check_and_dev_pools_none():
    plan = plan_of("multicloud")
    items = unchecked(plan)
    for pool in plan.spec.pools:
        cluster = next(c for c in plan.spec.clusters if c.name == pool.cluster)
        [line] = [u for u in items if u.what.startswith(("Spot capacity for", "capacity for"))
                  and f" {pool.name} (" in u.what]
        assert pool.machine.name in line.what and cluster.region in line.what
        assert pool.machine.name in line.check or pool.vendor == "google"
        assert line.check.split()[0] == {"aws": "aws", "azure": "az", "gcp": "gcloud"}[cluster.cloud]
    assert not [u for u in unchecked(plan_of("dev")) if "capacity" in u.what]


def test_images_by_tag_are_listed_and_images_by_digest_are_not():
    plan = plan_of("multicloud")
    [line] = [u for u in unchecked(plan) if "pinned by tag" in u.what]
    listed = line.check.split("# for each of: ", 1)[1].split()
    assert listed and all("@" not in i for i in listed)
    text = "\n".join(str(o) for o in plan.all_objects())
    assert all(i in text for i in listed)  # each one is an image the plan deploys
    assert "docker.io/rocm/k8s-device-plugin:1.31.0.7" in listed  # our DeviceConfig's, not a pod's
    digests = set(re.findall(r"[\w./-]+@sha256:[0-9a-f]{64}", text))
    assert digests and not digests & set(listed)


def test_the_amd_driver_push_password_and_the_deployers_acr_rights_are_named_for_azure():
    whats = [u.what for u in unchecked(plan_of("azure"))]
    assert any("acrPushPassword" in w for w in whats)
    assert any("AcrPush" in w for w in whats)
    assert not any("acrPushPassword" in u.what for u in unchecked(plan_of("aws")))


def test_the_summary_prints_them():
    text = summary(plan_of("aws"))
    assert "not checked offline" in text
    assert "aws ec2 get-spot-placement-scores --instance-types p5.48xlarge" in text
