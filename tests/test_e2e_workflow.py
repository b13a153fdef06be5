"""The kind end-to-end workflow (.github/workflows/e2e.yml) matches what it deploys. It cannot run
here (no container runtime); these checks keep it consistent with the dev stack and pinned."""

from __future__ import annotations

import re

import yaml

from conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "e2e.yml"


def _doc():
    doc = yaml.safe_load(WORKFLOW.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def _runs(doc) -> str:
    return "\n".join(s.get("run", "") for s in doc["jobs"]["e2e"]["steps"])


def test_the_kind_cluster_is_the_context_the_dev_stack_deploys_to():
    doc = _doc()
    dev = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]["inference-fleet:fleet"]
    [cluster] = dev["clusters"]
    assert cluster["kubeconfig_context"] == f"kind-{doc['env']['CLUSTER']}"  # kind names contexts kind-<name>
    ups = [s for s in doc["jobs"]["e2e"]["steps"] if s.get("with", {}).get("command") == "up"]
    assert [s["with"]["stack-name"] for s in ups] == ["dev"]
    assert ups[0]["with"]["cloud-url"].startswith("file://")  # local backend: no Pulumi Cloud token


def test_kind_its_node_image_and_kubectl_are_pinned():
    doc = _doc()
    env, runs = doc["env"], _runs(doc)
    assert re.fullmatch(r"v\d+\.\d+\.\d+", env["KIND_VERSION"])
    assert re.fullmatch(r"kindest/node:v\d+\.\d+\.\d+@sha256:[0-9a-f]{64}", env["KIND_NODE_IMAGE"])
    assert '--image "$KIND_NODE_IMAGE"' in runs
    # kubectl is copied out of the node image pinned by digest, never downloaded by a moving name.
    assert "docker cp" in runs and "/usr/bin/kubectl" in runs
    assert not re.search(r"curl[^\n]*kubectl|stable\.txt", runs)


def test_the_router_image_loaded_is_the_tag_the_dev_stack_runs():
    runs = _runs(_doc())
    assert "from components.router_image import local_tag" in runs and "kind load docker-image" in runs


def test_it_tears_down_whatever_happened():
    steps = _doc()["jobs"]["e2e"]["steps"]
    destroy = [s for s in steps if s.get("with", {}).get("command") == "destroy"]
    delete = [s for s in steps if "kind delete cluster" in s.get("run", "")]
    assert destroy and delete and all(s.get("if") == "always()" for s in destroy + delete)
    assert steps.index(delete[0]) == len(steps) - 1
