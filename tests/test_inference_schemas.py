"""Every object the inference layer renders is valid: custom resources (InferencePool, HTTPRoute,
Gateway, Certificate, Issuer, ScaledObject, LLMInferenceService) against the upstream CRDs in
../shared/crds, core kinds against Kubernetes 1.35."""

from __future__ import annotations

import copy

import pytest

import schemas
from conftest import plan_of
from inference_render import inference_objects, multicloud_plan, seed_plan

CUSTOM = {"InferencePool", "HTTPRoute", "Gateway", "Certificate", "Issuer", "ScaledObject", "LLMInferenceService"}


def _unmasked(obj: dict) -> dict:
    """The plan masks secret values (the whole stringData when it is secret): validate the shape."""
    if obj["kind"] == "Secret" and obj.get("stringData") == "[secret]":
        obj = copy.deepcopy(obj)
        obj["stringData"] = {"token": "[secret]"}
    return obj


def _all(plan):
    return [o for objs in inference_objects(plan).values() for o in objs]


PLANS = {"dev": lambda: plan_of("dev"), "multicloud": multicloud_plan, "seed": seed_plan}


@pytest.mark.parametrize("which", sorted(PLANS))
def test_inference_objects_are_valid_against_kubernetes_and_upstream_crds(which):
    plan = PLANS[which]()
    objs = _all(plan)
    kinds = {o["kind"] for o in objs}
    problems = [p for o in objs for p in schemas.validate_object(_unmasked(o))
                if schemas.crds_available() or "no schema for" not in p]  # core kinds always
    assert problems == []
    if kinds & CUSTOM:
        schemas.require_crds()


def test_multicloud_renders_every_custom_kind_the_layer_owns():
    kinds = {o["kind"] for o in _all(seed_plan())}
    assert CUSTOM <= kinds


def test_schema_check_catches_a_bad_inference_pool():
    schemas.require_crds()
    pool = next(o for o in _all(plan_of("dev")) if o["kind"] == "InferencePool")
    bad = copy.deepcopy(pool)
    bad["spec"]["endpointPickerRef"]["failureMode"] = "FailSometimes"
    del bad["spec"]["targetPorts"]
    assert schemas.validate_object(pool) == []
    assert len(schemas.validate_object(bad)) >= 2
