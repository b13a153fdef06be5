"""The AMD GPU operator runs released images only: no `dev` or `latest` tag, in the objects its
release installs or in what the operator starts from our DeviceConfig.

ROCm/gpu-operator v1.4.0's git tree (the chart cache is built from it, ../shared/charts/SOURCES.md)
has ``controllerManager.manager.image.tag: dev`` and ``latest`` for every KMM image; only its release
pipeline rewrites them. The operator's own defaults for images a DeviceConfig leaves out are
``latest`` ones (v1.4.0: internal/kmmmodule/kmmmodule.go ``rocm/k8s-device-plugin:latest``,
internal/nodelabeller/nodelabeller.go ``rocm/k8s-device-plugin:labeller-latest``,
internal/controllers/upgrademgr.go ``docker.io/rocm/gpu-operator-utils:latest``). A moving tag means
two MI300X nodes of one pool can run different device plugins, and a bad push upstream reaches
every cluster on its next node.
"""

from __future__ import annotations

import re

import pytest

from conftest import needs_charts, plan_of

MOVING = re.compile(r"(^|[-_.])(latest|dev)$")
AMD_STACKS = ["azure", "multicloud"]


def _tag(image: str) -> str | None:
    """The tag of an image reference (None when it has none: Docker then pulls `latest`)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def _images(obj) -> list[str]:
    """Every container image of a pod template, and every KMM RELATED_IMAGE_* env value."""
    out: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("image"), str) and ("name" in node or "command" in node or "args" in node):
                out.append(node["image"])
            if str(node.get("name", "")).startswith("RELATED_IMAGE") and isinstance(node.get("value"), str):
                out.append(node["value"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(obj.get("spec", {}))
    return out


@needs_charts
@pytest.mark.parametrize("stack", AMD_STACKS)
def test_every_image_the_amd_operator_release_installs_has_a_release_tag(stack):
    plan = plan_of(stack)
    objects = [m for path, m in sorted(plan.chart_manifests.items()) if "/amd-gpu-operator/" in f"/{path}"
               and m.get("kind") != "CustomResourceDefinition"]
    images = sorted({i for m in objects for i in _images(m)})
    assert any("rocm/gpu-operator:" in i for i in images), images  # the operator itself is among them
    assert any("kernel-module-management-operator:" in i for i in images), images
    moving = [i for i in images if _tag(i) is None or MOVING.search(_tag(i))]
    assert moving == []


@pytest.mark.parametrize("stack", AMD_STACKS)
def test_our_device_config_names_every_image_the_operator_would_default_to_latest(stack):
    [config] = plan_of(stack).objects("DeviceConfig")
    spec = config["spec"]
    named = {
        "devicePlugin.devicePluginImage": spec["devicePlugin"].get("devicePluginImage"),
        "devicePlugin.nodeLabellerImage": spec["devicePlugin"].get("nodeLabellerImage"),
        "commonConfig.utilsContainer.image": spec.get("commonConfig", {}).get("utilsContainer", {}).get("image"),
        "metricsExporter.image": spec["metricsExporter"].get("image"),
    }
    missing = [k for k, v in named.items() if not v]
    assert missing == [], f"left to the operator's latest-tagged defaults: {missing}"
    moving = {k: v for k, v in named.items() if _tag(v) is None or MOVING.search(_tag(v))}
    assert moving == {}
    # The device plugin and its labeller are one release of ROCm/k8s-device-plugin.
    plugin, labeller = _tag(named["devicePlugin.devicePluginImage"]), _tag(named["devicePlugin.nodeLabellerImage"])
    assert labeller == f"labeller-{plugin}"


def test_a_moving_tag_is_what_the_check_refuses():
    assert [bool(MOVING.search(t)) for t in ("latest", "dev", "labeller-latest", "rhubi-latest", "v1.4.0",
                                             "1.31.0.7", "labeller-1.31.0.7", "v0.16.1")] == \
        [True, True, True, True, False, False, False, False]
    assert _tag("busybox") is None and _tag("registry:5000/x/y:1.2") == "1.2"
