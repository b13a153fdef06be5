"""A simulated vLLM server: OpenAI-compatible, with a latency model, a prefix cache and faults.

``python -m fleet_router.sim --port P --profile NAME --model M [--model M ...]``

Tokens are approximated as 4-character chunks of text (documented, deterministic, cheap). The
latency model per vendor profile: queueing when more than ``max_seqs`` sequences run, then
prefill of the *uncached* prompt tokens, then time per output token. Prefill is compute-bound on
the accelerator, so it is one FIFO lane per server: a request's prefill starts when the prefill
work queued ahead of it is done (what makes cache hits and balanced queues shorten TTFT); decode
is memory-bound and runs for every sequence at once. The prefix cache holds
16-token (64-character) blocks, chained so a block names its whole prefix, with LRU eviction;
``usage.prompt_tokens_details.cached_tokens`` reports the hit. ``/metrics`` uses vLLM's names.

Faults: ``--error-rate`` (share of requests answered 500), ``--die-after N`` (exit after N
requests), ``--delay-ms`` (added before the first byte). ``--api-key`` as vLLM's: every ``/v1``
path wants ``Authorization: Bearer <key>``, else 401.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import time
from collections import OrderedDict
from dataclasses import dataclass

import orjson
from aiohttp import web

# The same blocks and prompt text the router hashes: its cache model and this cache agree.
from fleet_router.core import BLOCK_TOKENS, CHARS_PER_TOKEN, Prompt, prefix_blocks, prompt_text


@dataclass(frozen=True)
class Profile:
    prefill_ms_per_token: float
    ms_per_output_token: float
    max_seqs: int
    cache_blocks: int


# Relative speeds from seed 000 (H100 45 tok/s, MI300X 38 tok/s per stream for 7B chat) and the
# catalog's throughput estimates; scaled so demos and tests stay quick.
PROFILES: dict[str, Profile] = {
    "nvidia-h100": Profile(0.05, 2.2, 64, 4096),
    "nvidia-a100-80gb": Profile(0.08, 2.6, 48, 3072),
    "nvidia-l4": Profile(0.20, 3.3, 16, 1024),
    "nvidia-t4": Profile(0.40, 5.5, 8, 512),
    "amd-mi300x": Profile(0.06, 2.6, 64, 8192),
    "google-tpu-v6e": Profile(0.07, 2.5, 48, 4096),
    "google-tpu-v5e": Profile(0.12, 3.3, 32, 2048),
    "fast": Profile(0.0, 0.0, 1024, 4096),
}


def tokens_of(text: str | bytes | Prompt) -> int:
    n = len(text.data if isinstance(text, Prompt) else text)
    return max(1, (n + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN)


class Sim:
    def __init__(self, profile: str, models: list[str], error_rate: float = 0.0, die_after: int | None = None,
                 delay_ms: float = 0.0, seed: int = 0, api_key: str | None = None):
        if profile not in PROFILES:
            raise SystemExit(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
        self.name, self.profile, self.models = profile, PROFILES[profile], models
        self.error_rate, self.die_after, self.delay = error_rate, die_after, delay_ms / 1000
        self.rng = random.Random(seed)
        self.api_key = api_key
        self.cache: OrderedDict[str, None] = OrderedDict()
        self.slots = asyncio.Semaphore(self.profile.max_seqs)
        self.running = self.waiting = self.served = 0
        self.prefill_free_at = 0.0  # when the prefill lane finishes the work queued so far
        self.c = {"prompt": 0, "generation": 0, "hits": 0, "queries": 0, "success": 0}
        self.ttft: list[int] = [0] * 12
        self.ttft_sum = 0.0

    # --- cache ------------------------------------------------------------------------------

    def lookup_and_insert(self, prompt: Prompt, model: str) -> int:
        """Cached prompt tokens for ``prompt`` (leading full blocks), then cache all its blocks
        (a model server caches the whole prompt: no cap on the blocks here)."""
        blocks = prefix_blocks(prompt, model, max_blocks=None)
        hit = 0
        for b in blocks:
            if b not in self.cache:
                break
            hit += 1
        for b in blocks:
            self.cache[b] = None
            self.cache.move_to_end(b)
        while len(self.cache) > self.profile.cache_blocks:
            self.cache.popitem(last=False)
        return hit * BLOCK_TOKENS

    # --- API ------------------------------------------------------------------------------

    def _count(self):
        self.served += 1
        if self.die_after is not None and self.served > self.die_after:
            os._exit(3)  # a spot node vanishing: no goodbye

    async def health(self, request):
        return web.Response(text="")

    async def list_models(self, request):
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "fleet-sim"} for m in self.models]})

    async def metrics(self, request):
        labels = f'{{model_name="{self.models[0]}"}}'
        lines = [
            "# TYPE vllm:num_requests_running gauge", f"vllm:num_requests_running{labels} {self.running}",
            "# TYPE vllm:num_requests_waiting gauge", f"vllm:num_requests_waiting{labels} {self.waiting}",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{labels} {len(self.cache) / self.profile.cache_blocks:.4f}",
            "# TYPE vllm:prefix_cache_queries_total counter", f"vllm:prefix_cache_queries_total{labels} {self.c['queries']}",
            "# TYPE vllm:prefix_cache_hits_total counter", f"vllm:prefix_cache_hits_total{labels} {self.c['hits']}",
            "# TYPE vllm:prompt_tokens_total counter", f"vllm:prompt_tokens_total{labels} {self.c['prompt']}",
            "# TYPE vllm:generation_tokens_total counter", f"vllm:generation_tokens_total{labels} {self.c['generation']}",
            "# TYPE vllm:request_success_total counter", f"vllm:request_success_total{labels} {self.c['success']}",
            "# TYPE vllm:time_to_first_token_seconds histogram",
        ]
        cum = 0
        for b, n in zip(TTFT_BUCKETS, self.ttft):
            cum += n
            lines.append(f'vllm:time_to_first_token_seconds_bucket{{model_name="{self.models[0]}",le="{b:g}"}} {cum}')
        lines.append(f'vllm:time_to_first_token_seconds_bucket{{model_name="{self.models[0]}",le="+Inf"}} '
                     f"{self.c['success']}")
        lines.append(f"vllm:time_to_first_token_seconds_sum{labels} {self.ttft_sum:.6f}")
        lines.append(f"vllm:time_to_first_token_seconds_count{labels} {self.c['success']}")
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def generate(self, request: web.Request):
        self._count()
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _err(400, "invalid JSON")
        if not isinstance(body, dict):
            return _err(400, "body must be an object")
        model = body.get("model")
        if model not in self.models:
            return _err(404, f"The model `{model}` does not exist.")
        if self.error_rate and self.rng.random() < self.error_rate:
            return _err(500, "simulated backend failure", 500)
        text = prompt_text(body, limit=None)
        prompt_tokens = tokens_of(text)
        if request.path.endswith("/embeddings"):
            return self._embeddings(body, prompt_tokens)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 16
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return _err(400, "max_tokens must be a positive integer")
        max_tokens = min(max_tokens, 4096)
        stream = bool(body.get("stream"))
        t0 = time.perf_counter()
        self.waiting += 1
        await self.slots.acquire()
        self.waiting -= 1
        self.running += 1
        try:
            cached = self.lookup_and_insert(text, model)
            cached = min(cached, prompt_tokens)
            self.c["queries"] += prompt_tokens
            self.c["hits"] += cached
            self.c["prompt"] += prompt_tokens
            p = self.profile
            now = time.perf_counter()
            start = max(now, self.prefill_free_at)
            self.prefill_free_at = start + (prompt_tokens - cached) * p.prefill_ms_per_token / 1000
            await asyncio.sleep(self.delay + self.prefill_free_at - now)
            words = [f"tok{i % 97}" for i in range(max_tokens)]
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": max_tokens,
                     "total_tokens": prompt_tokens + max_tokens,
                     "prompt_tokens_details": {"cached_tokens": cached}}
            rid = f"cmpl-{self.served}"
            chat = request.path.endswith("/chat/completions")
            if stream:
                resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
                await resp.prepare(request)
                self._ttft(time.perf_counter() - t0)
                per = p.ms_per_output_token / 1000
                for i, w in enumerate(words):
                    delta = ({"choices": [{"index": 0, "delta": {"content": w + " "}, "finish_reason": None}]}
                             if chat else {"choices": [{"index": 0, "text": w + " ", "finish_reason": None}]})
                    await resp.write(b"data: " + orjson.dumps({"id": rid, "object": "chat.completion.chunk"
                                                               if chat else "text_completion",
                                                               "created": 0, "model": model, **delta}) + b"\n\n")
                    if per:
                        await asyncio.sleep(per)
                final = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": 0,
                         "model": model, "usage": usage,
                         "choices": [{"index": 0, "delta": {} if chat else None, "text": "" if not chat else None,
                                      "finish_reason": "length"}]}
                final["choices"][0] = {k: v for k, v in final["choices"][0].items() if v is not None}
                await resp.write(b"data: " + orjson.dumps(final) + b"\n\ndata: [DONE]\n\n")
                await resp.write_eof()
                self._done(max_tokens)
                return resp
            await asyncio.sleep(max_tokens * p.ms_per_output_token / 1000)
            self._ttft(time.perf_counter() - t0)
            content = " ".join(words)
            choice = ({"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "length"}
                      if chat else {"index": 0, "text": content, "finish_reason": "length"})
            self._done(max_tokens)
            return web.Response(body=orjson.dumps({
                "id": rid, "object": "chat.completion" if chat else "text_completion", "created": 0,
                "model": model, "choices": [choice], "usage": usage}), content_type="application/json")
        finally:
            self.running -= 1
            self.slots.release()

    def _embeddings(self, body, prompt_tokens):
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        data = []
        for i, text in enumerate(inputs):
            h = hashlib.sha256(str(text).encode()).digest()
            data.append({"object": "embedding", "index": i, "embedding": [b / 255.0 for b in h[:16]]})
        self._done(0)
        return web.Response(body=orjson.dumps({"object": "list", "data": data, "model": body.get("model"),
                                               "usage": {"prompt_tokens": prompt_tokens,
                                                         "total_tokens": prompt_tokens}}),
                            content_type="application/json")

    def _ttft(self, seconds: float) -> None:
        self.ttft_sum += seconds
        for i, b in enumerate(TTFT_BUCKETS):
            if seconds <= b:
                self.ttft[i] += 1
                break

    def _done(self, tokens: int) -> None:
        self.c["success"] += 1
        self.c["generation"] += tokens


TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5)


def _err(status: int, message: str, code=None):
    return web.Response(status=status, content_type="application/json", body=orjson.dumps(
        {"error": {"message": message, "type": "invalid_request_error" if status < 500 else "server_error",
                   "param": None, "code": code}}))


def _api_key_middleware(sim: Sim):
    # vLLM's AuthenticationMiddleware (api_server.py; v0.14.0 lines 689-692): only paths starting
    # with /v1 are checked, against `Authorization: Bearer <key>`; else 401 {"error": "Unauthorized"}.
    @web.middleware
    async def check(request, handler):
        if sim.api_key and request.path.startswith("/v1") and \
                request.headers.get("Authorization") != f"Bearer {sim.api_key}":
            return web.json_response({"error": "Unauthorized"}, status=401)
        return await handler(request)
    return check


def build_app(sim: Sim) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[_api_key_middleware(sim)])
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        app.router.add_post(path, sim.generate)
    app.router.add_get("/v1/models", sim.list_models)
    app.router.add_get("/health", sim.health)
    app.router.add_get("/metrics", sim.metrics)
    return app


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fleet_router.sim", description="simulated vLLM server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--profile", default="nvidia-h100", choices=sorted(PROFILES))
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--error-rate", type=float, default=0.0)
    ap.add_argument("--die-after", type=int, default=None)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--api-key", default=None, help="as vLLM's: /v1 paths want this bearer key")
    args = ap.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sim = Sim(args.profile, args.model, args.error_rate, args.die_after, args.delay_ms, api_key=args.api_key)
    web.run_app(build_app(sim), host=args.host, port=args.port, access_log=None, print=None,
                handle_signals=True, shutdown_timeout=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
