"""Proxying a routed request: attempts in the core's order, failover before the first byte,
streaming pass-through, and accounting (metrics, the core's state hooks)."""

from __future__ import annotations

import logging
import time

import orjson

from fleet_router import core, forwarding, httpio
from fleet_router.config import ConfigError, RouterConfig
from fleet_router.metrics import RouterMetrics
from fleet_router.openai_api import InferenceRequest, error
from fleet_router.upstream import Deadlines, UpstreamError, UpstreamPool

log = logging.getLogger("fleet_router")

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
               "content-length", "authorization", "proxy-authorization"}


class _Retryable(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Proxy:
    def __init__(self, metrics: RouterMetrics, config: RouterConfig, states: dict[str, core.PoolState]):
        self.metrics = metrics
        self.upstream: UpstreamPool | None = None
        self.apply_config(config, states)

    def apply_config(self, config: RouterConfig, states: dict[str, core.PoolState]) -> None:
        keys = {}
        for p in config.pools:
            try:
                key = p.load_api_key()  # load_config checked it; a file gone since keeps the pool keyless
            except (OSError, ConfigError) as e:
                log.error(orjson.dumps({"event": "backend_key_unreadable", "pool": p.name, "error": str(e)}).decode())
                key = None
            if key is not None:
                keys[p.name] = [("Authorization", f"Bearer {key}")]
        self.config, self.states, self._pool_auth = config, states, keys

    async def start(self) -> None:
        self.upstream = UpstreamPool()

    async def close(self) -> None:
        if self.upstream:
            await self.upstream.close()

    async def forward(self, request: httpio.Request, req: InferenceRequest,
                      decision: core.Decision) -> httpio.StreamResponse:
        cfg = self.config
        attempts = decision.attempts[:cfg.failover.max_attempts]
        fwd_headers = forwarding.request_headers(request)
        fwd_headers.append(("Content-Type", req.content_type))  # a multipart body keeps its boundary
        last_reason = "no attempt"
        for i, pool_name in enumerate(attempts):
            state = self.states.get(pool_name)
            if state is None:
                continue
            if i > 0:
                self.metrics.retries.inc(attempts[i - 1], last_reason)
            try:
                return await self._attempt(request, req, decision, state, fwd_headers)
            except _Retryable as e:
                last_reason = e.reason
                if core.record_failure(state, time.monotonic(), cfg.failover.eject_after_failures,
                                       cfg.failover.eject_seconds):
                    self.metrics.ejections.inc(state.name)
                log.warning(orjson.dumps({"event": "attempt_failed", "pool": state.name, "reason": e.reason}).decode())
        return error(502, f"No pool could serve the request ({last_reason}).", "server_error", "upstream_failed")

    async def _attempt(self, request: httpio.Request, req: InferenceRequest, decision: core.Decision,
                       state: core.PoolState, fwd_headers) -> httpio.StreamResponse:
        t0 = time.perf_counter()
        attempt = core.on_dispatch(state, decision)  # in flight, its prefill queued, its blocks remembered
        upstream = None
        try:
            try:
                t = state.pool.timeouts
                deadlines = (Deadlines(t.connect_s, t.stream_head_s, t.stream_idle_s) if req.stream
                             else Deadlines(t.connect_s, t.response_s, None, t.response_s))
                auth = self._pool_auth.get(state.name)
                upstream = await self.upstream.request(self.upstream.origin(state.pool.url), req.target,
                                                       fwd_headers + auth if auth else fwd_headers, req.raw,
                                                       deadlines)
                if upstream.status >= 500:
                    raise _Retryable(f"http_{upstream.status}")
                first = await upstream.read()
                # A whole (non-streaming) answer is read before anything reaches the client, so a
                # backend failing mid-body is still failed over.
                whole = None if req.stream else first + await upstream.read_all()
            except UpstreamError as e:
                raise _Retryable(type(e).__name__) from None
            ttft = time.perf_counter() - t0
            core.on_first_byte(attempt, ttft, time.monotonic())
            headers = {k: v for k, v in upstream.headers if k.lower() not in HOP_HEADERS}
            headers["x-fleet-pool"] = state.name
            headers["x-fleet-vendor"] = state.pool.vendor
            headers["x-fleet-tier"] = decision.tier
            if whole is not None:
                self._account(decision, state, req.model, ttft, whole, upstream.status)
                return httpio.Response(status=upstream.status, body=whole, headers=headers)
            # From here bytes reach the client: never retried again.
            resp = httpio.StreamResponse(status=upstream.status, headers=headers)
            await resp.prepare(request)
            chunk = first
            while chunk:
                await resp.write(chunk)
                chunk = await upstream.read()  # a backend dying mid-stream aborts the client's stream
            await resp.write_eof()
            self._account(decision, state, req.model, ttft, None, upstream.status)
            return resp
        finally:
            if upstream is not None:
                upstream.release()
            core.on_done(attempt)

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
