"""The HTTP layer: parse and check the request, ask the core where to send it, proxy, account.

Thin on purpose — every decision is :func:`fleet_router.core.route`. What lives here is I/O:
auth, rate limits, body limits, the backend connection pool, streaming pass-through, failover
before the first byte, background model discovery and metric scraping, reload and drain.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from fleet_router import core
from fleet_router.config import ConfigError, RouterConfig, load_config
from fleet_router.metrics import RouterMetrics
from fleet_router.upstream import UpstreamError, UpstreamPool

log = logging.getLogger("fleet_router")

INFERENCE_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
               "content-length", "authorization", "proxy-authorization"}
FORWARD_SKIP = HOP_HEADERS | {"content-type", "expect"}
_WAITING = re.compile(r'^vllm:num_requests_waiting(?:\{[^}]*\})?\s+([0-9.eE+-]+)', re.M)
_KV = re.compile(r'^vllm:(?:gpu_)?kv_cache_usage_perc(?:\{[^}]*\})?\s+([0-9.eE+-]+)', re.M)


def error(status: int, message: str, type_: str, code: str | None = None, param: str | None = None,
          headers: dict | None = None) -> web.Response:
    """An error in OpenAI's shape."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


async def read_body(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, however the network split it, up to ``limit + 1`` bytes (one more than allowed,
    so the caller can tell "too large" from "exactly the limit").

    ``StreamReader.read(n)`` returns whatever is buffered *now* (at most ``n`` bytes), not ``n`` bytes:
    a body that arrives in two TCP segments came back cut at the first one and failed as invalid JSON.
    Read until EOF (``b""``) or past the limit."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _Retryable(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Bucket:
    tokens: float
    updated: float


class Router:
    def __init__(self, config: RouterConfig, config_path: str | None = None, seed: int | None = None):
        self.config_path = config_path
        self.metrics = RouterMetrics()
        self.rng = random.Random(seed)
        self.states: dict[str, core.PoolState] = {}
        self.session: aiohttp.ClientSession | None = None  # discovery and scraping (GETs off the hot path)
        self.upstream: UpstreamPool | None = None  # proxied requests
        self.buckets: dict[str, _Bucket] = {}
        self._digests: dict[str, str] = {}  # presented key -> sha256, so hashing is once per key
        self.in_flight = 0
        self.draining = False
        self.ready = False
        self._tasks: list[asyncio.Task] = []
        self._config_mtime = 0.0
        self.apply_config(config)

    # --- config ---------------------------------------------------------------------------------

    def apply_config(self, config: RouterConfig) -> None:
        """Swap in a new config; pool state (in-flight, prefixes) survives for pools that remain."""
        states = {}
        for p in config.pools:
            old = self.states.get(p.name)
            if old is not None:
                old.pool = p
                states[p.name] = old
            else:
                states[p.name] = core.PoolState(pool=p)
            self.metrics.cost_per_hour.set(p.name, p.vendor, value=p.cost_per_hour)
        self.config = config
        self.states = states
        self.key_hashes = config.auth.load_hashes()
        self.tier_headers = core.tier_header_names(config.tiers)
        if self.config_path:
            try:
                self._config_mtime = Path(self.config_path).stat().st_mtime
            except OSError:
                pass

    def reload(self) -> bool:
        if not self.config_path:
            return False
        try:
            config = load_config(self.config_path)
        except (ConfigError, OSError) as e:
            log.error(orjson.dumps({"event": "reload_failed", "error": str(e)}).decode())
            return False
        self.apply_config(config)
        log.info(orjson.dumps({"event": "reloaded", "pools": len(config.pools)}).decode())
        return True

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self, app: web.Application) -> None:
        limits = self.config.limits
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=30),
            timeout=aiohttp.ClientTimeout(total=limits.request_timeout_s, sock_connect=limits.connect_timeout_s),
            auto_decompress=False,
        )
        self.upstream = UpstreamPool(connect_timeout=limits.connect_timeout_s)
        await self.refresh_backends()
        self.ready = True
        self._tasks = [asyncio.create_task(self._loop(self.config.discovery.models_refresh_s, self.refresh_models)),
                       asyncio.create_task(self._loop(self.config.discovery.metrics_scrape_s, self.scrape_metrics))]
        if self.config_path:
            self._tasks.append(asyncio.create_task(self._loop(1.0, self._watch_config)))

    async def stop(self, app: web.Application) -> None:
        for t in self._tasks:
            t.cancel()
        if self.session:
            await self.session.close()
        if self.upstream:
            await self.upstream.close()

    async def drain(self, timeout: float = 30.0) -> None:
        """Stop being ready, let in-flight requests finish (up to ``timeout``)."""
        self.draining, self.ready = True, False
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _loop(self, every: float, fn) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await fn()
            except Exception as e:  # noqa: BLE001 - background refresh must never die
                log.warning(orjson.dumps({"event": "background_error", "fn": fn.__name__, "error": str(e)}).decode())

    async def _watch_config(self) -> None:
        try:
            mtime = Path(self.config_path).stat().st_mtime
        except OSError:
            return
        if mtime != self._config_mtime:
            self.reload()

    async def refresh_backends(self) -> None:
        await asyncio.gather(self.refresh_models(), self.scrape_metrics(), return_exceptions=True)

    async def _get(self, url: str) -> bytes | None:
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                return await r.read() if r.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return None

    async def refresh_models(self) -> None:
        async def one(s: core.PoolState):
            raw = await self._get(f"{s.pool.url.rstrip('/')}/v1/models")
            if raw is not None:
                try:
                    s.discovered_models = frozenset(m["id"] for m in orjson.loads(raw).get("data", []))
                except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                    pass
        await asyncio.gather(*(one(s) for s in self.states.values()))

    async def scrape_metrics(self) -> None:
        async def one(s: core.PoolState):
            raw = await self._get(f"{s.pool.url.rstrip('/')}/metrics")
            if raw is not None:
                text = raw.decode(errors="replace")
                s.waiting = sum(float(v) for v in _WAITING.findall(text))
                kv = [float(v) for v in _KV.findall(text)]
                s.kv_usage = max(kv) if kv else 0.0
            self.metrics.utilization.set(s.name, s.pool.vendor, value=round(s.load(), 4))
        await asyncio.gather(*(one(s) for s in self.states.values()))

    # --- admin ---------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.json_response({"status": "draining" if self.draining else "starting"}, status=503)
        return web.json_response({"status": "ready", "pools": len(self.states)})

    async def metrics_page(self, request: web.Request) -> web.Response:
        for s in self.states.values():
            self.metrics.utilization.set(s.name, s.pool.vendor, value=round(s.load(), 4))
        return web.Response(text=self.metrics.registry.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    # --- API ---------------------------------------------------------------------------------------

    def _auth(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        if not self.key_hashes:
            return "anonymous", None
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return None, error(401, "Missing API key: send `Authorization: Bearer <key>`.",
                               "invalid_request_error", "invalid_api_key")
        key = header[7:].strip()
        digest = self._digests.get(key)
        if digest is None:
            if len(self._digests) >= 4096:  # bounded: a flood of random keys cannot grow it
                self._digests.clear()
            digest = self._digests[key] = hashlib.sha256(key.encode()).hexdigest()
        if digest not in self.key_hashes:
            return None, error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return digest, None

    def _rate_limited(self, key: str) -> float:
        """0 if allowed; else seconds until a token is available."""
        limits = self.config.limits
        rate = limits.rate_limit_rps
        burst = limits.rate_limit_burst or max(1, int(rate * 2))
        now = time.monotonic()
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = _Bucket(tokens=float(burst), updated=now)
        b.tokens = min(burst, b.tokens + (now - b.updated) * rate)
        b.updated = now
        if b.tokens >= 1:
            b.tokens -= 1
            return 0.0
        return (1 - b.tokens) / rate

    async def models(self, request: web.Request) -> web.Response:
        _, denied = self._auth(request)
        if denied:
            return denied
        now = int(time.time())
        ids = sorted({m for s in self.states.values() for m in (*s.pool.models, *s.discovered_models)})
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": now, "owned_by": "inference-fleet"} for m in ids]})

    async def inference(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        endpoint = request.path
        response = await self._inference(request, started)
        self.metrics.requests.inc(endpoint, str(response.status))
        self.metrics.latency.observe(endpoint, value=time.perf_counter() - started)
        return response

    async def _inference(self, request: web.Request, started: float) -> web.StreamResponse:
        if self.draining:
            return error(503, "The router is shutting down; retry.", "server_error", "draining",
                         headers={"Retry-After": "1"})
        key, denied = self._auth(request)
        if denied:
            return denied
        wait = self._rate_limited(key)
        if wait:
            return error(429, f"Rate limit of {self.config.limits.rate_limit_rps:g} requests/s exceeded.",
                         "rate_limit_error", "rate_limit_exceeded", headers={"Retry-After": str(max(1, round(wait)))})
        ctype = request.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip().lower() != "application/json":
            return error(415, "Send the request body as JSON with `Content-Type: application/json`.",
                         "invalid_request_error", "unsupported_media_type")
        limit = self.config.limits.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return error(413, f"Request body is larger than {limit} bytes.", "invalid_request_error",
                         "request_too_large")
        try:
            raw = await read_body(request.content, limit)
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
            return error(400, "Could not read the request body.", "invalid_request_error", "bad_body")
        if len(raw) > limit:
            return error(413, f"Request body is larger than {limit} bytes.", "invalid_request_error",
                         "request_too_large")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            return error(400, f"Request body is not valid JSON: {e}.", "invalid_request_error", "invalid_json")
        if not isinstance(body, dict):
            return error(400, "Request body must be a JSON object.", "invalid_request_error", "invalid_json")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return error(400, "`model` is required and must be a string.", "invalid_request_error",
                         "missing_model", "model")
        if request.path == "/v1/chat/completions" and not isinstance(body.get("messages"), list):
            return error(400, "`messages` is required and must be a list.", "invalid_request_error",
                         "missing_messages", "messages")
        if request.path == "/v1/completions" and not isinstance(body.get("prompt"), (str, list)):
            return error(400, "`prompt` is required.", "invalid_request_error", "missing_prompt", "prompt")
        if request.path == "/v1/embeddings" and not isinstance(body.get("input"), (str, list)):
            return error(400, "`input` is required.", "invalid_request_error", "missing_input", "input")
        if "stream" in body and not isinstance(body["stream"], bool):
            return error(400, "`stream` must be true or false.", "invalid_request_error", "invalid_stream", "stream")
        headers = {}
        for name, allowed in self.tier_headers.items():
            value = request.headers.get(name)
            if value is None:
                continue
            if value not in allowed:
                return error(400, f"Header `{name}` must be one of: {', '.join(sorted(allowed))} (got {value!r}).",
                             "invalid_request_error", "invalid_header", name)
            headers[name] = value
        policy = request.headers.get("x-fleet-policy")
        if policy is not None and policy not in core.POLICY_ORDER:
            return error(400, f"Header `x-fleet-policy` must be one of: {', '.join(core.POLICY_ORDER)}.",
                         "invalid_request_error", "invalid_header", "x-fleet-policy")

        now = time.monotonic()
        try:
            decision = core.route(self.config, self.states, model, headers, core.prompt_text(body), now, self.rng,
                                  policy)
        except core.NoRoute as e:
            return error(e.status, e.message, "invalid_request_error" if e.status < 500 else "server_error", e.code,
                         "model" if e.status == 404 else None)
        self.metrics.overhead.observe(value=time.perf_counter() - started)
        self.in_flight += 1
        try:
            return await self._proxy(request, raw, body, model, decision)
        finally:
            self.in_flight -= 1

    async def _proxy(self, request, raw: bytes, body: dict, model: str,
                     decision: core.Decision) -> web.StreamResponse:
        cfg = self.config
        attempts = decision.attempts[:cfg.failover.max_attempts]
        fwd_headers = [(k, v) for k, v in request.headers.items() if k.lower() not in FORWARD_SKIP]
        fwd_headers.append(("Content-Type", "application/json"))
        last_reason = "no attempt"
        for i, pool_name in enumerate(attempts):
            state = self.states.get(pool_name)
            if state is None:
                continue
            if i > 0:
                self.metrics.retries.inc(attempts[i - 1], last_reason)
            try:
                return await self._attempt(request, raw, body, model, decision, state, fwd_headers)
            except _Retryable as e:
                last_reason = e.reason
                if core.record_failure(state, time.monotonic(), cfg.failover.eject_after_failures,
                                       cfg.failover.eject_seconds):
                    self.metrics.ejections.inc(state.name)
                log.warning(orjson.dumps({"event": "attempt_failed", "pool": state.name, "reason": e.reason}).decode())
        return error(502, f"No pool could serve the request ({last_reason}).", "server_error", "upstream_failed")

    async def _attempt(self, request, raw, body, model, decision, state: core.PoolState,
                       fwd_headers) -> web.StreamResponse:
        limits = self.config.limits
        t0 = time.perf_counter()
        # The prompt's uncached blocks queue for prefill here until the first byte; its blocks are
        # remembered now, not at the first byte, so the next turn of a conversation already follows.
        blocks = decision.blocks
        uncached = len(blocks) - core.cached_blocks(state, blocks)
        state.backlog += uncached
        core.remember_prefix(state, blocks)
        state.in_flight += 1
        upstream = None
        try:
            try:
                upstream = await self.upstream.request(self.upstream.origin(state.pool.url), request.path,
                                                       fwd_headers, raw, limits.first_byte_timeout_s,
                                                       limits.request_timeout_s)
                if upstream.status >= 500:
                    raise _Retryable(f"http_{upstream.status}")
                first = await upstream.read()
                streaming = body.get("stream") is True
                # A whole (non-streaming) answer is read before anything reaches the client, so a
                # backend failing mid-body is still failed over.
                whole = None if streaming else first + await upstream.read_all()
            except UpstreamError as e:
                raise _Retryable(type(e).__name__) from None
            ttft = time.perf_counter() - t0
            state.backlog -= uncached
            uncached = 0
            core.record_success(state)
            core.record_ttft(state, ttft, time.monotonic())
            headers = {k: v for k, v in upstream.headers if k.lower() not in HOP_HEADERS}
            headers["x-fleet-pool"] = state.name
            headers["x-fleet-vendor"] = state.pool.vendor
            headers["x-fleet-tier"] = decision.tier
            if whole is not None:
                self._account(decision, state, model, ttft, whole, upstream.status)
                return web.Response(status=upstream.status, body=whole, headers=headers)
            # From here bytes reach the client: never retried again.
            resp = web.StreamResponse(status=upstream.status, headers=headers)
            await resp.prepare(request)
            chunk = first
            while chunk:
                await resp.write(chunk)
                chunk = await upstream.read()  # a backend dying mid-stream aborts the client's stream
            await resp.write_eof()
            self._account(decision, state, model, ttft, None, upstream.status)
            return resp
        finally:
            if upstream is not None:
                upstream.release()
            state.in_flight -= 1
            state.backlog -= uncached

    def _account(self, decision: core.Decision, state: core.PoolState, model: str, ttft: float,
                 whole: bytes | None, status: int) -> None:
        m, p = self.metrics, state.pool
        m.decisions.inc(decision.tier, p.name, p.vendor, decision.policy, decision.reason.split(" ")[0])
        m.ttft.observe(p.name, value=ttft)
        tier = next((t for t in self.config.tiers if t.name == decision.tier), None)
        if tier is not None and tier.ttft_slo_ms is not None and status < 400:
            (m.sla_ok if ttft * 1000 <= tier.ttft_slo_ms else m.sla_bad).inc(tier.name, p.name, p.name, p.vendor)
        tokens = 0
        if whole:
            try:
                tokens = int(orjson.loads(whole).get("usage", {}).get("completion_tokens") or 0)
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                tokens = 0
        if tokens:
            m.tokens.inc(p.name, p.vendor, amount=tokens)
            pair, saved = core.cost_savings(self.states, model, p.name, tokens)
            m.cost_savings.inc(pair, amount=saved)


@web.middleware
async def _errors(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status >= 400:
            kind = {404: "not_found", 405: "method_not_allowed"}.get(e.status, "http_error")
            return error(e.status, f"{request.method} {request.path}: {e.reason}.", "invalid_request_error", kind)
        raise


def build_apps(router: Router) -> tuple[web.Application, web.Application]:
    api = web.Application(middlewares=[_errors], client_max_size=router.config.limits.max_body_bytes + 1)
    for path in INFERENCE_PATHS:
        api.router.add_post(path, router.inference)
    api.router.add_get("/v1/models", router.models)
    api.router.add_get("/healthz", router.healthz)
    api.router.add_get("/readyz", router.readyz)
    api.on_startup.append(router.start)
    api.on_cleanup.append(router.stop)
    admin = web.Application(middlewares=[_errors])
    admin.router.add_get("/metrics", router.metrics_page)
    admin.router.add_get("/healthz", router.healthz)
    admin.router.add_get("/readyz", router.readyz)
    return api, admin


async def serve(config: RouterConfig, config_path: str | None = None) -> None:
    router = Router(config, config_path)
    api, admin = build_apps(router)
    runners = [web.AppRunner(api, access_log=None), web.AppRunner(admin, access_log=None)]
    for r in runners:
        await r.setup()
    await web.TCPSite(runners[0], config.listen.host, config.listen.port, backlog=1024).start()
    await web.TCPSite(runners[1], config.listen.host, config.listen.admin_port).start()
    log.info(orjson.dumps({"event": "listening", "port": config.listen.port,
                           "admin_port": config.listen.admin_port, "pools": len(config.pools)}).decode())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, router.reload)
    await stop.wait()
    await router.drain()
    for r in runners:
        await r.cleanup()
