"""The model-fit preflight: seed 001's Mistral-7B fp16 on a T4 is refused with the numbers."""

from __future__ import annotations

import re

import pytest

from fleet.models import model_fit
from fleet.spec import SpecError, load_spec


def fleet_with(model: dict, accelerator: str = "t4", **pool) -> dict:
    return {
        "topology": "gcp",
        "clusters": [{"name": "gke", "cloud": "gcp", "region": "us-central1"}],
        "pools": [{"name": "gpu", "cluster": "gke", "accelerator": accelerator, "max_nodes": 2, **pool}],
        "models": [{"pools": ["gpu"], **model}],
    }


MISTRAL_7B = {"name": "mistral-7b", "hf_id": "mistralai/Mistral-7B-Instruct-v0.3", "params_b": 7.25,
              "dtype": "fp16", "max_context": 2048}
PHI_3_MINI = {"name": "phi-3-mini", "hf_id": "microsoft/Phi-3-mini-4k-instruct", "params_b": 3.82,
              "dtype": "fp16", "max_context": 2048}


def test_t4_pool_rejects_fp16_mistral_7b_with_needed_and_available_gib():
    with pytest.raises(SpecError) as err:
        load_spec(fleet_with(MISTRAL_7B))
    msg = str(err.value)
    assert "fleet.models[0].pools[0]" in msg
    needed = float(re.search(r"needs ([\d.]+) GiB", msg).group(1))
    available = float(re.search(r"but ([\d.]+) GiB is available", msg).group(1))
    assert needed > available
    # Seed 001: the T4 reports 14.58 GB; vLLM may take 90 % of it.
    assert available == pytest.approx(14.58 * 0.9, abs=0.01)
    # fp16 weights alone: 7.25e9 x 2 bytes = 13.50 GiB.
    assert "weights 13.50" in msg
    assert "quantize" in msg and "tensor_parallel" in msg


def test_t4_pool_accepts_phi_3_mini_as_seed_001_ran_it():
    spec = load_spec(fleet_with(PHI_3_MINI))
    fit = spec.fit(spec.models[0], spec.pools[0])
    assert fit.fits and fit.needed_gib < fit.available_gib


def test_quantized_mistral_7b_fits_a_t4():
    spec = load_spec(fleet_with(MISTRAL_7B | {"dtype": "awq"}))
    assert spec.fit(spec.models[0], spec.pools[0]).fits


def test_tensor_parallel_across_four_t4s_fits_mistral_7b():
    # Refused on one T4 (above); with the weights split four ways it fits, with room for its KV cache.
    spec = load_spec(fleet_with(MISTRAL_7B | {"tensor_parallel": 4}, accelerators_per_node=4))
    fit = spec.fit(spec.models[0], spec.pools[0])
    assert fit.fits and fit.needed_gib < fit.available_gib


def test_70b_needs_tensor_parallel_on_h100():
    llama70 = {"name": "llama-70b", "hf_id": "meta-llama/Llama-3.1-70B-Instruct", "params_b": 70.6,
               "dtype": "bf16", "max_context": 8192}
    with pytest.raises(SpecError, match="does not fit"):
        load_spec(fleet_with(llama70, "h100"))
    # bf16 weights, 70.6e9 x 2 bytes = 131.5 GiB, exceed one H100's 80 GB; over four they fit.
    spec = load_spec(fleet_with(llama70 | {"tensor_parallel": 4}, "h100"))
    assert spec.fit(spec.models[0], spec.pools[0]).fits


def test_longer_context_and_concurrency_need_more_kv_cache():
    small = model_fit(hf_id="meta-llama/Llama-3.1-8B-Instruct", params_b=8.03, dtype="bf16", max_context=4096,
                      concurrency=1, usable_memory_gib=22.0, tensor_parallel=1)
    large = model_fit(hf_id="meta-llama/Llama-3.1-8B-Instruct", params_b=8.03, dtype="bf16", max_context=32768,
                      concurrency=8, usable_memory_gib=22.0, tensor_parallel=1)
    # Llama-3.1-8B: 2 x 32 layers x 8 KV heads x 128 dims x 2 bytes = 128 KiB per token.
    assert small.kv_cache_gib == pytest.approx(4096 * 128 / 1024**2)
    assert large.kv_cache_gib == pytest.approx(small.kv_cache_gib * 8 * 8)
    assert small.fits and not large.fits


def test_unknown_architecture_is_estimated_and_says_so():
    fit = model_fit(hf_id="acme/secret-model", params_b=13, dtype="fp16", max_context=4096, concurrency=4,
                    usable_memory_gib=14.58, tensor_parallel=1)
    assert fit.kv_estimated and "estimated" in fit.explain()


# --- what the first mutation run (make mutation) showed no test would notice --------------------------

def test_the_estimate_for_an_unknown_architecture_is_16_kib_per_token_per_billion_at_16_bits():
    from fleet.models import kv_bytes_per_token

    # The documented fallback: Llama-3-8B's exact 128 KiB per fp16 token (2 x 32 x 8 x 128 x 2 B) for 8 B.
    assert kv_bytes_per_token("acme/unknown-8b", 8.0, "fp16") == (2 * 32 * 8 * 128 * 2, True)
    assert kv_bytes_per_token("acme/unknown-8b", 8.0, "fp8") == (2 * 32 * 8 * 128, True)  # an 8-bit KV cache
    assert kv_bytes_per_token("acme/unknown-8b", 16.0, "fp16")[0] == 2 * 2 * 32 * 8 * 128 * 2  # twice the size
    assert kv_bytes_per_token("meta-llama/Llama-3.1-8B-Instruct", 8.03, "bf16") == (2 * 32 * 8 * 128 * 2, False)


def test_an_architecture_in_the_spec_replaces_the_estimate():
    unknown = {"name": "house-model", "hf_id": "acme/house-model-7b", "params_b": 7.0, "dtype": "fp16",
               "max_context": 2048, "concurrency": 1}
    spec = load_spec(fleet_with(unknown, "l4"))
    assert spec.fit(spec.models[0], spec.pools[0]).kv_estimated
    spec = load_spec(fleet_with(unknown | {"architecture": {"layers": 28, "kv_heads": 4, "head_dim": 128}}, "l4"))
    fit = spec.fit(spec.models[0], spec.pools[0])
    assert not fit.kv_estimated and "estimated" not in fit.explain()
    assert fit.kv_cache_gib == pytest.approx(2 * 28 * 4 * 128 * 2 * 2048 / 1024**3)


def test_each_accelerator_pays_the_runtime_overhead_and_brings_its_memory():
    one = model_fit(hf_id="meta-llama/Llama-3.1-8B-Instruct", params_b=8.03, dtype="bf16", max_context=4096,
                    concurrency=1, usable_memory_gib=22.0, tensor_parallel=1)
    four = model_fit(hf_id="meta-llama/Llama-3.1-8B-Instruct", params_b=8.03, dtype="bf16", max_context=4096,
                     concurrency=1, usable_memory_gib=22.0, tensor_parallel=4)
    assert four.overhead_gib == 4 * one.overhead_gib == 4.0  # 1 GiB of runtime per accelerator (fleet/models.py)
    assert four.available_gib == pytest.approx(4 * 22.0 * 0.9)
    assert four.weights_gib == one.weights_gib == pytest.approx(8.03e9 * 2 / 1024**3)  # TP splits, not adds


def test_the_refusal_suggests_what_would_make_it_fit():
    msg = str(pytest.raises(SpecError, load_spec, fleet_with(MISTRAL_7B)).value)
    assert msg.endswith("try: quantize (dtype awq/gptq/int8/fp8), use a larger accelerator, use a machine with "
                        "more accelerators and raise tensor_parallel, or lower max_context / concurrency")
    # Already 4-bit: no quantize hint. A 4-GPU node with TP 1: raise tensor_parallel on it.
    huge = MISTRAL_7B | {"params_b": 40.0, "dtype": "awq"}
    msg = str(pytest.raises(SpecError, load_spec, fleet_with(huge, accelerators_per_node=4)).value)
    assert "try: use a larger accelerator, raise tensor_parallel (pool has 4 per node), or lower max_context" in msg
