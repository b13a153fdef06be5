"""fleet verify, identity: the endpoint picker's RBAC against what the v1.5.0 picker watches.

What it watches is what upstream's inferencepool chart v1.5.0 grants (../shared/charts,
templates/rbac.yaml and the epplib _rbac.yaml): pods; inferencepools; inferenceobjectives and
inferencemodelrewrites (inference.networking.x-k8s.io); get, list, watch.
"""

from __future__ import annotations

import pytest

from verify_fixtures import edit, findings_for, plan_copy, template

pytestmark = pytest.mark.slow

CL, ROLE = "local-k8s", "Role/fleet-inference/nvidia-h100-epp"
X = "inference.networking.x-k8s.io"


def _complete(doc):
    doc["rules"] = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["inference.networking.k8s.io"], "resources": ["inferencepools"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [X], "resources": ["inferenceobjectives", "inferencemodelrewrites"], "verbs": ["get", "list", "watch"]},
    ]


def test_removed_verb_and_missing_rewrites_are_named_on_the_role(tmp_path):
    d = plan_copy("dev", tmp_path, charts=False)
    edit(d, CL, "Role", "fleet-inference", "nvidia-h100-epp", _complete)
    assert not findings_for(d, "identity", ROLE)

    def no_watch(doc):
        doc["rules"][1]["verbs"] = ["get", "list"]
    edit(d, CL, "Role", "fleet-inference", "nvidia-h100-epp", no_watch)
    got = findings_for(d, "identity", ROLE)
    assert len(got) == 1 and "may not watch inferencepools.inference.networking.k8s.io" in got[0].problem

    def no_rewrites(doc):
        _complete(doc)
        doc["rules"][2]["resources"] = ["inferenceobjectives"]
    edit(d, CL, "Role", "fleet-inference", "nvidia-h100-epp", no_rewrites)
    got = findings_for(d, "identity", ROLE)
    assert len(got) == 1 and f"inferencemodelrewrites.{X}" in got[0].problem
    assert "inferencemodelrewrites" in got[0].fix and got[0].file.endswith("Role_fleet-inference_nvidia-h100-epp.yaml")


def test_a_role_bound_to_another_service_account_does_not_count(tmp_path):
    d = plan_copy("dev", tmp_path, charts=False)
    edit(d, CL, "Role", "fleet-inference", "nvidia-h100-epp", _complete)
    edit(d, CL, "RoleBinding", "fleet-inference", "nvidia-h100-epp",
         lambda doc: doc["subjects"][0].update(name="someone-else"))
    got = findings_for(d, "identity")
    assert any("nvidia-h100-epp" in f.problem and "pods.core" in f.problem for f in got)


def test_picker_without_a_token_cannot_watch(tmp_path):
    d = plan_copy("dev", tmp_path, charts=False)
    edit(d, CL, "Deployment", "fleet-inference", "nvidia-h100-epp",
         lambda doc: template(doc).update(automountServiceAccountToken=False))
    got = findings_for(d, "identity", "Deployment/fleet-inference/nvidia-h100-epp")
    assert got and "no ServiceAccount token" in got[0].problem
