"""Model-fit preflight: will this model, at this dtype and context, fit the pool's accelerators?

Seed 001's first failure was Mistral-7B in fp16 on a 16 GB T4: CrashLoopBackOff, "CUDA out of
memory". The arithmetic that predicts it is simple, so the spec runs it before any resource is
declared and refuses the pool with the numbers.

    needed    = weights + KV cache + runtime overhead
    weights   = parameters x bytes per parameter (dtype or quantization)
    KV cache  = 2 (K and V) x layers x KV heads x head dim x KV bytes x context x concurrency
    available = usable accelerator memory x tensor parallel x gpu_memory_utilization
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

GIB = 1024**3

BYTES_PER_PARAM: Mapping[str, float] = MappingProxyType(
    {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "awq": 0.5, "gptq": 0.5, "int4": 0.5}
)
"""Weight bytes per parameter. AWQ/GPTQ are 4-bit (group scales are within the headroom)."""

KV_BYTES: Mapping[str, float] = MappingProxyType(
    {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 2.0, "awq": 2.0, "gptq": 2.0, "int4": 2.0}
)
"""KV-cache bytes per element: quantized weights still keep a 16-bit KV cache in vLLM by default."""

GPU_MEMORY_UTILIZATION = 0.90
"""vLLM's default share of accelerator memory it may take (``--gpu-memory-utilization``)."""

RUNTIME_OVERHEAD_GIB = 1.0
"""CUDA/ROCm/XLA context, activations and CUDA graphs, per accelerator: a conservative floor."""


@dataclass(frozen=True)
class Architecture:
    layers: int
    kv_heads: int
    head_dim: int


KNOWN_ARCHITECTURES: Mapping[str, Architecture] = MappingProxyType(
    {
        # Hugging Face config.json values (num_hidden_layers, num_key_value_heads, head_dim).
        "mistralai/Mistral-7B-Instruct-v0.3": Architecture(32, 8, 128),
        "microsoft/Phi-3-mini-4k-instruct": Architecture(32, 32, 96),
        "google/gemma-2b-it": Architecture(18, 1, 256),
        "Qwen/Qwen2.5-3B-Instruct": Architecture(36, 2, 128),
        "Qwen/Qwen2.5-7B-Instruct": Architecture(28, 4, 128),
        "meta-llama/Llama-3.1-8B-Instruct": Architecture(32, 8, 128),
        "meta-llama/Llama-3.1-70B-Instruct": Architecture(80, 8, 128),
        "meta-llama/Llama-3.3-70B-Instruct": Architecture(80, 8, 128),
        "meta-llama/Llama-2-7b-chat-hf": Architecture(32, 32, 128),
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0": Architecture(22, 4, 64),
    }
)

FALLBACK_KV_BYTES_PER_TOKEN_PER_B_PARAMS = 16 * 1024
"""When the architecture is unknown: 16 KiB of fp16 KV per token per billion parameters.

Close for GQA models (Llama-3-8B: 128 KiB exact vs 128 KiB) and conservative for large ones."""


@dataclass(frozen=True)
class Fit:
    weights_gib: float
    kv_cache_gib: float
    overhead_gib: float
    available_gib: float
    kv_estimated: bool

    @property
    def needed_gib(self) -> float:
        return self.weights_gib + self.kv_cache_gib + self.overhead_gib

    @property
    def fits(self) -> bool:
        return self.needed_gib <= self.available_gib

    def explain(self) -> str:
        est = " (KV estimated: architecture unknown)" if self.kv_estimated else ""
        return (
            f"needs {self.needed_gib:.2f} GiB (weights {self.weights_gib:.2f} + KV cache "
            f"{self.kv_cache_gib:.2f}{est} + overhead {self.overhead_gib:.2f}) but "
            f"{self.available_gib:.2f} GiB is available"
        )


def kv_bytes_per_token(hf_id: str, params_b: float, dtype: str, arch: Architecture | None = None) -> tuple[float, bool]:
    arch = arch or KNOWN_ARCHITECTURES.get(hf_id)
    if arch is None:
        return FALLBACK_KV_BYTES_PER_TOKEN_PER_B_PARAMS * params_b * KV_BYTES[dtype] / 2.0, True
    return 2.0 * arch.layers * arch.kv_heads * arch.head_dim * KV_BYTES[dtype], False


def model_fit(*, hf_id: str, params_b: float, dtype: str, max_context: int, concurrency: int,
              usable_memory_gib: float, tensor_parallel: int, arch: Architecture | None = None) -> Fit:
    weights = params_b * 1e9 * BYTES_PER_PARAM[dtype] / GIB
    per_token, estimated = kv_bytes_per_token(hf_id, params_b, dtype, arch)
    kv = per_token * max_context * concurrency / GIB
    return Fit(
        weights_gib=weights,
        kv_cache_gib=kv,
        overhead_gib=RUNTIME_OVERHEAD_GIB * tensor_parallel,
        available_gib=usable_memory_gib * tensor_parallel * GPU_MEMORY_UTILIZATION,
        kv_estimated=estimated,
    )
