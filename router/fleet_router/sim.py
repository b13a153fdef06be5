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

Output is a function of the request alone: token i of a completion is ``tok{i % 97}`` plus a
space, whichever server produces it. A request that carries text already generated continues
the numbering after it, as vLLM continues a partial answer: chat with ``continue_final_message``
(the last message, an assistant one, is the partial answer; vLLM refuses it together with
``add_generation_prompt``), or a completions prompt that ends in generated text. So a stream cut
on one server and resumed on another yields exactly the text of an uninterrupted one. A
continuation's ``usage.prompt_tokens`` is the original prompt's plus one per generated token it
carries, as vLLM's is (the partial text is tokenized again as part of the prompt).

Faults: ``--error-rate`` (share of requests answered 500), ``--die-after N`` (exit after N
requests), ``--die-after-tokens K`` (exit, mid-stream, once K tokens were streamed in all),
``--no-continue`` (a server without ``continue_final_message``: it answers 400, as OpenAI's API
does to an argument it does not know), ``--delay-ms`` (added before the first byte).
``--time-scale F`` multiplies every modelled duration by F (a benchmark slows the pools so their
latency, not the machine's CPU, decides what it measures). ``--api-key`` as vLLM's: every ``/v1``
path wants ``Authorization: Bearer <key>``, else 401.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import email.parser
import email.policy
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
                 delay_ms: float = 0.0, seed: int = 0, api_key: str | None = None,
                 die_after_tokens: int | None = None, can_continue: bool = True, time_scale: float = 1.0):
        if profile not in PROFILES:
            raise SystemExit(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
        if not time_scale > 0:
            raise SystemExit(f"--time-scale must be positive, not {time_scale!r}")
        prof = PROFILES[profile]
        if time_scale != 1.0:  # every modelled duration longer (or shorter) by the same factor
            prof = dataclasses.replace(prof, prefill_ms_per_token=prof.prefill_ms_per_token * time_scale,
                                       ms_per_output_token=prof.ms_per_output_token * time_scale)
        self.name, self.profile, self.models = profile, prof, models
        self.error_rate, self.die_after, self.delay = error_rate, die_after, delay_ms * time_scale / 1000
        self.rng = random.Random(seed)
        self.api_key = api_key
        self.die_after_tokens, self.can_continue = die_after_tokens, can_continue
        self.streamed = 0  # tokens streamed by this server, for --die-after-tokens
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
        # As vLLM v1 labels its series: one per engine, model_name and engine (vllm/v1/metrics/loggers.py,
        # PrometheusStatLogger). running: requests holding a slot (prefilling or decoding), as vLLM's
        # "requests in model execution batches"; waiting: those queued for a slot.
        series = f'engine="0",model_name="{self.models[0]}"'
        labels = "{" + series + "}"
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
            lines.append(f'vllm:time_to_first_token_seconds_bucket{{{series},le="{b:g}"}} {cum}')
        lines.append(f'vllm:time_to_first_token_seconds_bucket{{{series},le="+Inf"}} '
                     f"{self.c['success']}")
        lines.append(f"vllm:time_to_first_token_seconds_sum{labels} {self.ttft_sum:.6f}")
        lines.append(f"vllm:time_to_first_token_seconds_count{labels} {self.c['success']}")
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def generate(self, request: web.Request):
        self._count()
        raw = await request.read()
        body = _json_object(raw)
        if not isinstance(body, dict):
            return body
        model = body.get("model")
        if model not in self.models:
            return _err(404, f"The model `{model}` does not exist.")
        if self.error_rate and self.rng.random() < self.error_rate:
            return _err(500, "simulated backend failure", 500)
        chat = request.path.endswith("/chat/completions")
        if body.get("continue_final_message"):
            if not self.can_continue:
                return _err(400, "Unrecognized request argument supplied: continue_final_message")
            # vLLM's ChatCompletionRequest.check_generation_prompt (protocol.py, v0.11): the two are
            # exclusive, and add_generation_prompt defaults to true there.
            if body.get("add_generation_prompt", True):
                return _err(400, "Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
        done_before = _generated_before(body, chat)
        text = _input_text(body) if request.path.endswith("/responses") else prompt_text(body, limit=None)
        prompt_tokens = tokens_of(text)
        if done_before:
            # As vLLM counts a continuation: its prompt is the original one plus the text already
            # generated, which the server tokenizes again — one token per generated token here.
            prompt_tokens = tokens_of(_original_prompt(body, chat, done_before)) + done_before
        if request.path.endswith("/embeddings"):
            return self._embeddings(body, prompt_tokens, self._digest_header(raw))
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or body.get("max_output_tokens") or 16
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return _err(400, "max_tokens must be a positive integer")
        max_tokens = min(max_tokens, 4096)
        stream = bool(body.get("stream"))
        responses = request.path.endswith("/responses")
        n = body.get("n", 1)
        if not isinstance(n, int) or not 1 <= n <= 16:
            return _err(400, "n must be an integer from 1 to 16")
        logprobs = bool(body.get("logprobs"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        # Tools: with ``tools`` and a tool_choice other than "none", the sim calls the first tool.
        tools = body.get("tools") if isinstance(body.get("tools"), list) else []
        tool_calls = [] if not tools or body.get("tool_choice") == "none" else [{
            "id": f"call-{self.served}", "type": "function",
            "function": {"name": (tools[0].get("function") or {}).get("name", ""), "arguments": "{}"}}]
        finish = "tool_calls" if tool_calls else "length"
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
            words = [f"tok{i % 97}" for i in range(done_before, done_before + max_tokens)]
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": max_tokens * n,
                     "total_tokens": prompt_tokens + max_tokens * n,
                     "prompt_tokens_details": {"cached_tokens": cached}}
            rid = f"cmpl-{self.served}"
            headers = self._digest_header(raw)
            if responses:
                return await self._responses(request, body, model, words, usage, stream, t0, headers)
            if stream:
                resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                                   **headers})
                await resp.prepare(request)
                self._ttft(time.perf_counter() - t0)
                per = p.ms_per_output_token / 1000
                # Token i is due at first byte + i x per, as a server whose decode steps run at the
                # accelerator's pace: a late write (a busy CPU here) does not push back every later token.
                due = time.perf_counter()
                obj = "chat.completion.chunk" if chat else "text_completion"
                for i, w in enumerate(words):
                    for k in range(n):
                        choice = ({"index": k, "delta": {"content": w + " "}, "finish_reason": None} if chat
                                  else {"index": k, "text": w + " ", "finish_reason": None})
                        if logprobs:
                            choice["logprobs"] = _logprobs([w + " "], chat)
                        await resp.write(b"data: " + orjson.dumps({"id": rid, "object": obj, "created": 0,
                                                                   "model": model, "choices": [choice]}) + b"\n\n")
                    self.streamed += 1
                    if self.die_after_tokens is not None and self.streamed >= self.die_after_tokens:
                        os._exit(3)  # a spot node vanishing mid-stream: the connection is reset
                    if per:
                        due += per
                        await asyncio.sleep(max(0.0, due - time.perf_counter()))
                for k in range(n):
                    last = {"index": k, "delta": {}, "finish_reason": finish} if chat else \
                        {"index": k, "text": "", "finish_reason": finish}
                    if chat and tool_calls:
                        last["delta"] = {"tool_calls": [{"index": 0, **tool_calls[0]}]}
                    await resp.write(b"data: " + orjson.dumps({"id": rid, "object": obj, "created": 0, "model": model,
                                                               "choices": [last]}) + b"\n\n")
                if include_usage:  # as vLLM: a last chunk with no choices, only when asked for
                    await resp.write(b"data: " + orjson.dumps({"id": rid, "object": obj, "created": 0, "model": model,
                                                               "choices": [], "usage": usage}) + b"\n\n")
                await resp.write(b"data: [DONE]\n\n")
                await resp.write_eof()
                self._done(max_tokens * n)
                return resp
            await asyncio.sleep(max_tokens * p.ms_per_output_token / 1000)
            self._ttft(time.perf_counter() - t0)
            content = " ".join(words)
            choices = []
            for k in range(n):
                if chat:
                    message = {"role": "assistant", "content": None if tool_calls else content}
                    if tool_calls:
                        message["tool_calls"] = tool_calls
                    choice = {"index": k, "message": message, "finish_reason": finish}
                else:
                    choice = {"index": k, "text": content, "finish_reason": finish}
                if logprobs:
                    choice["logprobs"] = _logprobs([w + " " for w in words], chat)
                choices.append(choice)
            self._done(max_tokens * n)
            return web.Response(body=orjson.dumps({
                "id": rid, "object": "chat.completion" if chat else "text_completion", "created": 0,
                "model": model, "choices": choices, "usage": usage}), content_type="application/json",
                headers=headers)
        finally:
            self.running -= 1
            self.slots.release()

    @staticmethod
    def _digest_header(raw: bytes) -> dict:
        """The sha256 of the body as this server received it: a test compares it with what the
        client sent to prove the router forwarded the body byte for byte."""
        return {"x-sim-body-sha256": hashlib.sha256(raw).hexdigest()}

    async def _responses(self, request, body, model, words, usage, stream, t0, headers):
        """The Responses API (``POST /v1/responses``) in the shape vLLM serves it: one assistant
        message of ``output_text``; streamed as typed server-sent events."""
        rid = f"resp_{self.served}"
        text = " ".join(words)
        u = {"input_tokens": usage["prompt_tokens"], "output_tokens": len(words),
             "total_tokens": usage["prompt_tokens"] + len(words),
             "input_tokens_details": {"cached_tokens": usage["prompt_tokens_details"]["cached_tokens"]},
             "output_tokens_details": {"reasoning_tokens": 0}}

        def response(status: str, output: list, usage_=None) -> dict:
            return {"id": rid, "object": "response", "created_at": 0, "model": model, "status": status,
                    "output": output, "usage": usage_, "parallel_tool_calls": True, "tool_choice": "auto",
                    "tools": []}

        message = {"type": "message", "id": f"msg_{self.served}", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": text, "annotations": []}]}
        if not stream:
            await asyncio.sleep(len(words) * self.profile.ms_per_output_token / 1000)
            self._ttft(time.perf_counter() - t0)
            self._done(len(words))
            return web.Response(body=orjson.dumps(response("completed", [message], u)),
                                content_type="application/json", headers=headers)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **headers})
        await resp.prepare(request)
        self._ttft(time.perf_counter() - t0)
        seq = 0

        async def event(kind: str, **data):
            nonlocal seq
            await resp.write(f"event: {kind}\n".encode() + b"data: " +
                             orjson.dumps({"type": kind, "sequence_number": seq, **data}) + b"\n\n")
            seq += 1

        await event("response.created", response=response("in_progress", []))
        for w in words:
            await event("response.output_text.delta", item_id=message["id"], output_index=0, content_index=0,
                        delta=w + " ")
            if self.profile.ms_per_output_token:
                await asyncio.sleep(self.profile.ms_per_output_token / 1000)
        await event("response.output_text.done", item_id=message["id"], output_index=0, content_index=0, text=text)
        await event("response.completed", response=response("completed", [message], u))
        await resp.write_eof()
        self._done(len(words))
        return resp

    async def pooling(self, request: web.Request):
        """Rerank, score, tokenize and detokenize (vLLM's shapes; ``model`` optional, as in vLLM)."""
        self._count()
        raw = await request.read()
        body = _json_object(raw)
        if not isinstance(body, dict):
            return body
        model = body.get("model") or self.models[0]
        if model not in self.models:
            return _err(404, f"The model `{model}` does not exist.")
        kind = request.path.rsplit("/", 1)[-1]
        out = {"rerank": _rerank, "score": _score, "tokenize": _tokenize, "detokenize": _detokenize}[kind](body)
        if isinstance(out, web.Response):
            return out
        if kind in ("rerank", "score"):
            out = {"id": f"{kind}-{self.served}", "model": model, **out}
        self._done(0)
        return web.Response(body=orjson.dumps(out), content_type="application/json", headers=self._digest_header(raw))

    async def transcribe(self, request: web.Request):
        """``POST /v1/audio/transcriptions`` (and translations): ``multipart/form-data`` with the audio
        in ``file`` (vLLM's TranscriptionRequest); the "transcript" names what was received."""
        self._count()
        raw = await request.read()
        try:
            fields, files = _parse_form(request.headers.get("Content-Type", ""), raw)
        except ValueError as e:
            return _err(400, str(e))
        if "file" not in files:
            return _err(400, "a `file` form field with the audio is required")
        model = fields.get("model") or self.models[0]
        if model not in self.models:
            return _err(404, f"The model `{model}` does not exist.")
        filename, audio = files["file"]
        text = f"{len(audio)} bytes of audio from {filename}"
        seconds = max(1, len(audio) // 32000)  # 16 kHz 16-bit mono
        headers = self._digest_header(raw)
        self._done(0)
        if fields.get("stream", "false").lower() == "true":
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **headers})
            await resp.prepare(request)
            for w in text.split(" "):
                chunk = {"id": f"trsc-{self.served}", "object": "transcription.chunk", "created": 0, "model": model,
                         "choices": [{"delta": {"content": w + " "}, "finish_reason": None}]}
                await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        if fields.get("response_format") == "text":
            return web.Response(text=text, content_type="text/plain", headers=headers)
        return web.Response(body=orjson.dumps({"text": text, "usage": {"type": "duration", "seconds": seconds}}),
                            content_type="application/json", headers=headers)

    def _embeddings(self, body, prompt_tokens, headers):
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
                            content_type="application/json", headers=headers)

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


def _json_object(raw: bytes) -> dict | web.Response:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _err(400, "invalid JSON")
    return body if isinstance(body, dict) else _err(400, "body must be an object")


def _generated_before(body: dict, chat: bool) -> int:
    """How many of the sim's tokens the request already carries as generated text: the partial
    assistant message of a chat ``continue_final_message``, or the run ``tok0 tok1 ...`` that ends a
    completions prompt (the first ``tok0 `` from which the rest of the prompt is that run)."""
    if chat:
        msgs = body.get("messages")
        if not body.get("continue_final_message") or not isinstance(msgs, list) or not msgs:
            return 0
        last = msgs[-1]
        if not isinstance(last, dict) or last.get("role") != "assistant" or not isinstance(last.get("content"), str):
            return 0
        return len(last["content"].split())
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        return 0
    at = prompt.find("tok0 ")
    while at >= 0:
        words = prompt[at:].split(" ")
        if words[-1] == "" and all(w == f"tok{i % 97}" for i, w in enumerate(words[:-1])):
            return len(words) - 1
        at = prompt.find("tok0 ", at + 1)
    return 0


def _original_prompt(body: dict, chat: bool, done_before: int) -> Prompt | str:
    """The prompt of the request a continuation continues: without the partial assistant message
    (chat), without the generated run that ends it (completions)."""
    if chat:
        return prompt_text({"messages": body["messages"][:-1]}, limit=None)
    run = sum(len(f"tok{i % 97} ") for i in range(done_before))
    return body["prompt"][:-run]


def _input_text(body: dict) -> Prompt:
    """The Responses API's ``input``: a string, or message items (their text, as chat messages)."""
    inp = body.get("input")
    if isinstance(inp, list):
        return prompt_text({"messages": [m for m in inp if isinstance(m, dict)]}, limit=None)
    return prompt_text(body, limit=None)


def _logprobs(tokens: list[str], chat: bool) -> dict:
    if chat:
        return {"content": [{"token": t, "logprob": -0.5, "bytes": list(t.encode()), "top_logprobs": []}
                            for t in tokens]}
    return {"tokens": tokens, "token_logprobs": [-0.5] * len(tokens), "top_logprobs": None,
            "text_offset": list(range(len(tokens)))}


def _overlap(a: str, b: str) -> float:
    """A deterministic relevance in [0, 1]: the share of ``a``'s words found in ``b``."""
    wa, wb = set(a.lower().split()), set(b.lower().split())
    return round(len(wa & wb) / len(wa), 4) if wa else 0.0


def _rerank(body: dict):
    query, docs = body.get("query"), body.get("documents")
    if not isinstance(query, str) or not isinstance(docs, list) or not all(isinstance(d, str) for d in docs):
        return _err(400, "`query` (a string) and `documents` (a list of strings) are required")
    ranked = sorted(range(len(docs)), key=lambda i: (-_overlap(query, docs[i]), i))
    top_n = body.get("top_n") or len(docs)
    return {"usage": {"total_tokens": sum(tokens_of(d) + tokens_of(query) for d in docs)},
            "results": [{"index": i, "document": {"text": docs[i]}, "relevance_score": _overlap(query, docs[i])}
                        for i in ranked[:top_n]]}


def _score(body: dict):
    t1, t2 = body.get("text_1"), body.get("text_2")
    t1 = [t1] if isinstance(t1, str) else t1
    t2 = [t2] if isinstance(t2, str) else t2
    if not isinstance(t1, list) or not isinstance(t2, list) or not t2 or len(t1) not in (1, len(t2)):
        return _err(400, "`text_1` and `text_2` are required (a string, or lists: one-to-many or pairwise)")
    pairs = [(t1[0] if len(t1) == 1 else t1[i], b) for i, b in enumerate(t2)]
    tokens = sum(tokens_of(a) + tokens_of(b) for a, b in pairs)
    return {"object": "list", "created": 0,
            "data": [{"index": i, "object": "score", "score": _overlap(a, b)} for i, (a, b) in enumerate(pairs)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


MAX_MODEL_LEN = 8192


def _tokenize(body: dict):
    """Tokens of the sim: each 4 bytes of the UTF-8 text packed into one integer (so a token is
    ~4 characters, as in the latency model, and detokenize inverts tokenize exactly)."""
    if "messages" in body:
        data = prompt_text(body, limit=None).data
    elif isinstance(body.get("prompt"), str):
        data = body["prompt"].encode()
    else:
        return _err(400, "`prompt` (a string) or `messages` is required")
    tokens = [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]
    out = {"count": len(tokens), "max_model_len": MAX_MODEL_LEN, "tokens": tokens}
    if body.get("return_token_strs"):
        out["token_strs"] = [data[i:i + 4].decode("utf-8", "replace") for i in range(0, len(data), 4)]
    return out


def _detokenize(body: dict):
    tokens = body.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, int) and 0 <= t < 2 ** 32 for t in tokens):
        return _err(400, "`tokens` must be a list of token ids")
    data = b"".join(t.to_bytes(4, "little").rstrip(b"\0") for t in tokens)
    return {"prompt": data.decode("utf-8", "replace")}


def _parse_form(content_type: str, raw: bytes) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """A ``multipart/form-data`` body with the standard library's MIME parser (not the router's:
    the sim checks what the router forwards with an independent reading)."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ValueError("send multipart/form-data")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw)
    if not msg.is_multipart():
        raise ValueError("not a multipart body")
    fields, files = {}, {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files[name] = (part.get_filename(), payload)
        else:
            fields[name] = payload.decode()
    return fields, files


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
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"):
        app.router.add_post(path, sim.generate)
    # vLLM's paths (vllm/entrypoints/pooling/score/api_router.py and the tokenize router).
    for path in ("/v1/rerank", "/rerank", "/v2/rerank", "/v1/score", "/score", "/tokenize", "/detokenize"):
        app.router.add_post(path, sim.pooling)
    for path in ("/v1/audio/transcriptions", "/v1/audio/translations"):
        app.router.add_post(path, sim.transcribe)
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
    ap.add_argument("--die-after-tokens", type=int, default=None,
                    help="exit mid-stream once this many tokens were streamed (all requests together)")
    ap.add_argument("--no-continue", action="store_true", help="answer 400 to continue_final_message")
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--api-key", default=None, help="as vLLM's: /v1 paths want this bearer key")
    ap.add_argument("--time-scale", type=float, default=1.0,
                    help="multiply the profile's prefill and per-token times (and --delay-ms) by this")
    args = ap.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    sim = Sim(args.profile, args.model, args.error_rate, args.die_after, args.delay_ms, api_key=args.api_key,
              die_after_tokens=args.die_after_tokens, can_continue=not args.no_continue, time_scale=args.time_scale)
    web.run_app(build_app(sim), host=args.host, port=args.port, access_log=None, print=None,
                handle_signals=True, shutdown_timeout=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
