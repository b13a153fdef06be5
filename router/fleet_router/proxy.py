"""Proxying a routed request: attempts in the core's order, failover, streaming pass-through, and
accounting (metrics, the core's state hooks).

What is retried — only what another pool can fix, each pool at most once per request:

* the pool could not be reached (connect error or connect timeout), or the connection broke before
  any response byte (the request reached no model server, or one that died with it);
* ``502`` / ``503`` / ``504``: a gateway or a server that is down, overloaded or restarting;
* ``429``: that pool is full — the next pool is asked, and the pool is skipped for its
  ``Retry-After`` (capped at :data:`RETRY_AFTER_CAP_S`); not counted as a failure;
* ``500``: once. A ``500`` is often caused by the request itself (vLLM answers a request its engine
  chokes on with 500), so the same request failing on a second pool stops there and the client
  gets that answer; the first pool's ``500`` counts as its failure only if another pool then
  served the request.

Never retried: any other 4xx (the client's error: passed through as the backend said it), a
timeout once the request was sent (the backend may be working on it; a copy doubles the cost), an
answer over ``max_response_bytes``, anything after bytes reached the client. Between attempts a
jittered exponential backoff. When every attempt failed, the answer lists each pool's reason with
the backend's own message.

A stream cut after its head (the backend went silent past ``stream_idle_s``, or died) ends with an
SSE ``data:`` event holding an error in OpenAI's shape, so clients see an error, not a short answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from operator import attrgetter

import orjson

from fleet_router import core, forwarding, httpio, migration
from fleet_router.config import ConfigError, Pool, RouterConfig
from fleet_router.metrics import RouterMetrics
from fleet_router.openai_api import InferenceRequest, error
from fleet_router.upstream import (Deadlines, Exchange, Response, UpstreamError, UpstreamPool, UpstreamTimeout,
                                   UpstreamTooLarge, request_head_end, request_lead)

log = logging.getLogger("fleet_router")

# Response headers a backend may pass to clients; everything else (Set-Cookie, Server, a gateway's
# or mesh's internal headers, hop-by-hop ones) stays inside. Content-Length and framing are the
# router's own, and so is X-Request-Id (the edge sets the request's own on every response).
RESPONSE_HEADERS = frozenset({"content-type", "content-encoding", "cache-control", "retry-after"})
RETRYABLE_STATUS = frozenset({502, 503, 504})
RETRY_AFTER_CAP_S = 60.0
_DISCOVERED = attrgetter("discovered_models")
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')


class ClientGone(Exception):
    """The client left mid-stream; ``response`` is the prepared stream (the edge ends it quietly)."""

    def __init__(self, response):
        super().__init__("client disconnected")
        self.response = response


class _Failed(Exception):
    """One attempt that did not serve the request.

    ``retry``: another pool may. ``pool_fault``: counts toward ejecting the pool. ``answer``: the
    backend's own answer (status, body, headers) to pass on if this is where the request stops."""

    def __init__(self, reason: str, message: str, *, retry: bool, pool_fault: bool, status: int = 502,
                 answer: tuple[int, bytes, dict] | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.reason, self.message, self.retry, self.pool_fault = reason, message, retry, pool_fault
        self.status, self.answer, self.retry_after = status, answer, retry_after


def _backend_message(body: bytes) -> str:
    """The backend's error message: OpenAI's ``error.message``, vLLM's ``message`` / ``detail``, or text."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"][:300]
        for k in ("message", "detail"):
            if isinstance(data.get(k), str):
                return data[k][:300]
        if isinstance(err, str):
            return err[:300]
    return body[:300].decode(errors="replace").strip() or "(empty body)"


def _retry_after(headers: list[tuple[str, str]]) -> float | None:
    for k, v in headers:
        if k.lower() == "retry-after":
            try:
                return min(RETRY_AFTER_CAP_S, max(0.0, float(v)))
            except ValueError:
                return None  # an HTTP-date: not worth parsing for a backend hint
    return None


def sse_error(message: str, code: str) -> bytes:
    """An SSE event carrying an error in OpenAI's shape (the openai client raises on it)."""
    return b"data: " + orjson.dumps({"error": {"message": message, "type": "server_error", "param": None,
                                               "code": code}}) + b"\n\n"


class Proxy:
    def __init__(self, metrics: RouterMetrics, config: RouterConfig, states: dict[str, core.PoolState],
                 rng: random.Random | None = None):
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.upstream: UpstreamPool | None = None
        self.non_resumable: set[str] = set()  # pools that refused a continuation (400)
        self.legs: dict[str, set[migration.Leg]] = {}  # pool -> continuable stream legs it serves now
        self.apply_config(config, states)

    def apply_config(self, config: RouterConfig, states: dict[str, core.PoolState]) -> None:
        auth_lines = {}  # pool -> its "Authorization: Bearer ..." header line, encoded
        for p in config.pools:
            try:
                key = p.load_api_key()  # load_config checked it; a file gone since keeps the pool keyless
            except (OSError, ConfigError) as e:
                log.error(orjson.dumps({"event": "backend_key_unreadable", "pool": p.name, "error": str(e)}).decode())
                key = None
            if key is not None:
                auth_lines[p.name] = f"Authorization: Bearer {key}\r\n".encode("latin-1")
        self.config, self.states, self._auth_lines = config, states, auth_lines
        #: (client headers, peer, trusted, content type) -> the forwarded headers but the request id, encoded
        self._fwd_blocks: dict[tuple, bytes] = {}
        #: the same and (origin, target, pool) -> the request head up to its length and id (see _request_head)
        self._leads: dict[tuple, bytes] = {}
        self._tiers = {t.name: t for t in config.tiers}
        if self.upstream is not None:
            self.upstream.trust.clear()  # a reload re-reads the pools' CA bundles (a rotated CA)
        self._pass = RESPONSE_HEADERS | {h.lower() for h in config.limits.pass_response_headers}
        #: (backend headers passed, pool, vendor, tier) -> the answer's header lines, encoded once
        self._blocks: dict[tuple, bytes] = {}
        #: (model, pool) -> (the pools' discovered models then, vendor pair, USD saved per Mtok):
        #: core.savings_rate depends on the config (a reload clears this) and on what discovery saw
        self._savings: dict[tuple[str, str], tuple[tuple, str, float]] = {}

    async def start(self) -> None:
        self.upstream = UpstreamPool()

    async def close(self) -> None:
        if self.upstream:
            await self.upstream.close()

    async def forward(self, request: httpio.Request, req: InferenceRequest, decision: core.Decision,
                      extra_headers: Mapping[str, str] | None = None,
                      on_usage: Callable[[Pool, dict], None] | None = None,
                      prior: tuple[core.PoolState, "_Failed"] | None = None) -> httpio.StreamResponse:
        """``extra_headers`` go on the answer (the key's ``x-ratelimit-*``); ``on_usage(pool, usage)``
        gets the answer's OpenAI ``usage`` (per-key token and spend accounting, fleet_router.limits).
        ``prior``: the first pool's failed attempt, made by :meth:`forward_now` (the rest go on from it)."""
        cfg = self.config.failover
        attempts = list(dict.fromkeys(decision.attempts))[:cfg.max_attempts]  # never one pool twice
        fwd_headers = self._head_block(request, req)
        failed: list[tuple[str, _Failed]] = []
        first_500: core.PoolState | None = None  # its 500 is its fault only if another pool serves
        if prior is not None:
            stop, first_500 = self._book(prior[0], prior[1], failed, None)
            if stop is not None:
                return stop
            if not prior[1].retry:
                return self._all_failed(failed)
            attempts = attempts[1:]
        for i, pool_name in enumerate(attempts):
            state = self.states.get(pool_name)
            if state is None:
                continue
            if failed:
                self.metrics.retries.inc(failed[-1][0], failed[-1][1].reason)
                pause = min(cfg.backoff_max_s, cfg.backoff_s * 2 ** (len(failed) - 1))
                if pause > 0:
                    await asyncio.sleep(self.rng.uniform(0, pause))
            try:
                response = await self._attempt(request, req, decision, state, fwd_headers, extra_headers, on_usage)
            except _Failed as f:
                stop, first_500 = self._book(state, f, failed, first_500)
                if stop is not None:
                    return stop
                if not f.retry:
                    break
                continue
            if first_500 is not None and response.status < 500:
                self._pool_failed(first_500, time.monotonic())
            return response
        return self._all_failed(failed)

    def _book(self, state: core.PoolState, f: "_Failed", failed: list, first_500: core.PoolState | None
              ) -> tuple[httpio.Response | None, core.PoolState | None]:
        """Count one failed attempt; returns the answer to stop with (the same request failing with
        500 on two pools: it is the request, and neither pool is at fault), and the pool whose 500
        counts against it if another pool serves."""
        failed.append((state.name, f))
        now = time.monotonic()
        if f.retry_after:
            state.ejected_until = max(state.ejected_until, now + f.retry_after)  # "busy", not broken
        if f.pool_fault:
            self._pool_failed(state, now)
        log.warning(orjson.dumps({"event": "attempt_failed", "pool": state.name, "reason": f.reason,
                                  "message": f.message}).decode())
        if f.reason == "http_500":
            if first_500 is not None:
                return self._pass_on(f), first_500
            first_500 = state
        return None, first_500

    def _request_headers(self, request: httpio.Request, req: InferenceRequest) -> list[tuple[str, str]]:
        fwd_headers = forwarding.request_headers(request)
        fwd_headers.append(("Content-Type", req.content_type))  # a multipart body keeps its boundary
        return fwd_headers

    def _forward_block(self, request: httpio.Request, req: InferenceRequest) -> bytes:
        """``_request_headers`` but the request id, encoded, remembered by what they derive from: a
        client sends the same headers request after request."""
        key = (request.headers.key(), request.peer, request.trusted_peer, req.content_type)
        block = self._fwd_blocks.get(key)
        if block is None:
            if len(self._fwd_blocks) >= 4096:
                self._fwd_blocks.clear()
            block = self._fwd_blocks[key] = "".join(
                f"{k}: {v}\r\n" for k, v in self._request_headers(request, req) if k != "X-Request-Id").encode("latin-1")
        return block

    def _head_block(self, request: httpio.Request, req: InferenceRequest) -> bytes:
        """Every header the backend gets but the pool's key (``_auth_lines``), encoded."""
        return self._forward_block(request, req) + _id_line(request)

    def _request_head(self, request: httpio.Request, req: InferenceRequest, pool: str, origin) -> bytes:
        """The head :func:`request_head_block` writes for this request to ``pool`` at ``origin``, from
        a remembered :func:`request_lead` (request line, Host, the forwarded headers, the pool's key):
        only the length and the request id change from one request to the next."""
        key = (request.headers.key(), request.peer, request.trusted_peer, req.content_type, req.target, pool, origin)
        lead = self._leads.get(key)
        if lead is None:
            if len(self._leads) >= 4096:
                self._leads.clear()
            lead = self._leads[key] = request_lead(origin, req.target, self._forward_block(request, req)
                                                   + self._auth_lines.get(pool, b""))
        return request_head_end(lead, len(req.raw), _id_line(request))

    def forward_now(self, request: httpio.Request, req: InferenceRequest, decision: core.Decision,
                    answer: Callable[[httpio.Response | Awaitable | None], None]) -> bool:
        """The common case without a task (issue 18: the task, the coroutines and the futures of
        :meth:`forward` were most of a short request's CPU): a non-streaming request sent to its
        first pool on a kept-alive connection, the answer read whole by the connection's parser
        callbacks (:class:`fleet_router.upstream.Exchange`) and handed to ``answer`` as the
        Response :meth:`forward` would return. Anything else goes on as :meth:`forward` would from
        the same point, handed to ``answer`` as the awaitable that does it: a failed attempt (booked
        the same way, then failover), a stale kept-alive connection (sent again on a fresh one, as
        upstream does). ``answer(None)``: the client left (the backend connection was closed).
        False, with nothing done: no kept-alive connection to the first pool (``forward`` connects)."""
        attempts = decision.attempts
        state = self.states.get(attempts[0]) if attempts and self.config.failover.max_attempts else None
        if state is None:
            return False
        pool = state.pool
        conn = self.upstream.take_idle(self.upstream.origin(pool.url, pool.ca_file))
        if conn is None:
            return False
        head = self._request_head(request, req, state.name, conn.origin)
        attempt = core.on_dispatch(state, decision)

        def on_end(x: Exchange) -> None:
            e = x.error
            if e is None and x.status < 400 and not request.gone:
                core.on_first_byte(attempt, None, 0.0)  # no TTFT for a whole answer (see _attempt)
                core.on_done(attempt)
                self._account(decision, state, req.model, None, completion_tokens_of(x.body), x.status)
                answer(httpio.Response(status=x.status, body=x.body, block=self._block(x, state, decision)))
                return
            core.on_done(attempt)
            if request.gone:
                answer(None)
                return
            if e is None:
                try:
                    self._refuse(x, state, decision, x.status, x.body)
                except _Failed as failed:
                    f = failed
            elif isinstance(e, UpstreamTooLarge):
                f = _Failed("too_large", str(e), retry=False, pool_fault=False)
            elif isinstance(e, UpstreamTimeout):  # sent, then silent: never resent
                f = _Failed("timeout", str(e), retry=False, pool_fault=True, status=504)
            elif e.phase == "head" and not x.got_bytes:
                # Closed before any byte on a kept-alive connection: stale (it reached no server).
                # forward() sends it again on another or a fresh connection, as upstream.request does.
                answer(self.forward(request, req, decision))
                return
            else:
                f = _Failed("reset" if e.phase == "head" else "broken", str(e), retry=e.phase == "head",
                            pool_fault=True)
            answer(self.forward(request, req, decision, prior=(state, f)))

        t = pool.timeouts
        x = conn.exchange(head, req.raw, on_end, t.response_s, self.config.limits.max_response_bytes)
        request.on_gone(x.client_gone)
        return True

    def _pool_failed(self, state: core.PoolState, now: float) -> None:
        cfg = self.config.failover
        if core.record_failure(state, now, cfg.eject_after_failures, cfg.eject_seconds):
            self.metrics.ejections.inc(state.name)
            # Its continuable streams move now (issue 20: the pool ejected is a trigger), not when
            # the pool the router stopped trusting fails them too.
            for leg in self.legs.get(state.name, ()):
                # (a leg that already failed on its own keeps its own reason)
                leg.ejected = leg.ejected or leg.upstream.abort(f"pool {state.name} was ejected")

    def _track(self, leg: migration.Leg) -> migration.Leg:
        """``leg`` registered as streaming from its pool until its ``close()``."""
        legs = self.legs.setdefault(leg.state.name, set())
        legs.add(leg)
        close = leg.close

        def untrack() -> None:
            legs.discard(leg)
            close()
        leg.close = untrack
        return leg

    def _all_failed(self, failed: list[tuple[str, _Failed]]) -> httpio.Response:
        if not failed:
            return error(503, "No pool could take the request.", "server_error", "no_backend")
        last = failed[-1][1]
        if last.answer is not None and (not last.retry or all(f.reason == "http_500" for _, f in failed)):
            return self._pass_on(last)  # the backend's own answer: a 4xx, or a 500 nobody else was asked
        detail = "; ".join(f"{pool}: {f.reason}: {f.message}" for pool, f in failed)
        if all(f.reason == "http_429" for _, f in failed):
            wait = min((f.retry_after for _, f in failed if f.retry_after), default=1.0)
            return error(429, f"Every pool is at capacity ({detail}).", "rate_limit_error", "pools_busy",
                         headers={"Retry-After": str(max(1, round(wait)))})
        status = 504 if last.status == 504 else 502
        return error(status, f"No pool could serve the request ({detail}).", "server_error",
                     "upstream_timeout" if status == 504 else "upstream_failed")

    @staticmethod
    def _pass_on(f: _Failed) -> httpio.Response:
        status, body, headers = f.answer
        return httpio.Response(status=status, body=body, headers=headers)

    def _headers(self, upstream: Response | Exchange, state: core.PoolState, decision: core.Decision) -> dict:
        headers = {k: v for k, v in upstream.headers if k.lower() in self._pass}
        headers["x-fleet-pool"] = state.name
        headers["x-fleet-vendor"] = state.pool.vendor
        headers["x-fleet-tier"] = decision.tier
        return headers

    def _block(self, x: Exchange | Response, state: core.PoolState, decision: core.Decision) -> bytes:
        """``_headers`` of an answer as encoded header lines, remembered: they repeat answer after answer."""
        passed = self._pass
        key = (tuple([kv for kv in x.headers if kv[0].lower() in passed]), state.name, state.pool.vendor, decision.tier)
        block = self._blocks.get(key)
        if block is None:
            if len(self._blocks) >= 4096:
                self._blocks.clear()
            block = self._blocks[key] = httpio.header_block(self._headers(x, state, decision))
        return block

    async def _attempt(self, request: httpio.Request, req: InferenceRequest, decision: core.Decision,
                       state: core.PoolState, fwd_headers, extra_headers=None, on_usage=None) -> httpio.StreamResponse:
        t0 = time.perf_counter()
        attempt = core.on_dispatch(state, decision)  # in flight, its prefill queued, its blocks remembered
        upstream = None
        t = state.pool.timeouts
        try:
            try:
                deadlines = (Deadlines(t.connect_s, t.stream_head_s, t.stream_idle_s) if req.stream
                             else Deadlines(t.connect_s, t.response_s, None, t.response_s))
                auth = self._auth_lines.get(state.name)
                origin = self.upstream.origin(state.pool.url, state.pool.ca_file)
                upstream = await self.upstream.request(origin, req.target, fwd_headers + auth if auth else fwd_headers,
                                                       req.raw, deadlines)
                status = upstream.status
                if status >= 400 or not req.stream:
                    # Answers that are not streams are read whole before anything reaches the client.
                    whole = await upstream.read_all(self.config.limits.max_response_bytes)
            except UpstreamTooLarge as e:
                raise _Failed("too_large", str(e), retry=False, pool_fault=False) from None
            except UpstreamTimeout as e:
                connect = e.phase == "connect"
                raise _Failed("connect_timeout" if connect else "timeout", str(e), retry=connect, pool_fault=True,
                              status=502 if connect else 504) from None
            except UpstreamError as e:
                # Before any response byte: the request reached no server, or one that died with it.
                raise _Failed("connect" if e.phase == "connect" else "reset" if e.phase == "head" else "broken",
                              str(e), retry=e.phase in ("connect", "head"), pool_fault=True) from None
            if status >= 400:
                self._refuse(upstream, state, decision, status, whole)
            if extra_headers:
                headers, block = self._headers(upstream, state, decision), b""
                headers.update(extra_headers)
            else:
                headers, block = None, self._block(upstream, state, decision)
            if not req.stream:
                # vLLM reports no time to first token in a non-streaming answer: none is recorded
                # (the whole latency is not a TTFT, and must not feed SLOs or the cost policy).
                core.on_first_byte(attempt, None, 0.0)  # no TTFT: the clock is not read
                usage = usage_of(whole)  # parsed once, for the metrics and the key's charge
                self._account(decision, state, req.model, None, _completion_tokens(usage), status)
                if on_usage is not None:
                    on_usage(state.pool, usage)
                return httpio.Response(status=status, body=whole, headers=headers, block=block)
            if migration.applies(req.path, req.body, self.config.failover.max_migrations):
                return await self._stream_migrating(request, req, decision, attempt, upstream, headers, block, t0,
                                                    fwd_headers, on_usage)
            return await self._stream(request, req, decision, attempt, upstream, headers, block, t0, on_usage)
        finally:
            if upstream is not None:
                upstream.release()  # incomplete (cut, or the client left): closed, so vLLM aborts it
            core.on_done(attempt)

    def _refuse(self, upstream: Response | Exchange, state: core.PoolState, decision: core.Decision, status: int,
                body: bytes) -> None:
        """A 4xx/5xx answer: raise how it counts (see the module's docstring)."""
        message = _backend_message(body)
        answer = (status, body, self._headers(upstream, state, decision))
        if status == 429:
            raise _Failed("http_429", message, retry=True, pool_fault=False, status=429, answer=answer,
                          retry_after=_retry_after(upstream.headers))
        if status in RETRYABLE_STATUS:
            raise _Failed(f"http_{status}", message, retry=True, pool_fault=True, status=status, answer=answer,
                          retry_after=_retry_after(upstream.headers) if status == 503 else None)
        if status == 500:
            raise _Failed("http_500", message, retry=True, pool_fault=False, status=500, answer=answer)
        raise _Failed(f"http_{status}", message, retry=False, pool_fault=False, status=status, answer=answer)

    async def _stream(self, request: httpio.Request, req: InferenceRequest, decision: core.Decision,
                      attempt: core.Dispatch, upstream: Response, headers: dict | None, block: bytes, t0: float,
                      on_usage=None) -> httpio.StreamResponse:
        # From here bytes reach the client: never retried again.
        state = attempt.state
        resp = httpio.StreamResponse(status=upstream.status, headers=headers, block=block)
        await resp.prepare(request)
        events = 0
        tokens = None  # from the backend's usage, when it sends one
        ttft = None
        tail = b""  # the stream's end, where the usage event is (per-key accounting)
        try:
            while chunk := await upstream.read_available():  # what has arrived, in one write
                if on_usage is not None:
                    tail = (tail + chunk)[-8192:]
                if ttft is None:  # the first token: prefill is done (vLLM sent the head before it)
                    ttft = time.perf_counter() - t0
                    core.on_first_byte(attempt, ttft, time.monotonic())
                events += chunk.count(b"\n\n")
                if b'"usage"' in chunk:
                    m = _COMPLETION_TOKENS.findall(chunk)
                    if m:
                        tokens = int(m[-1])
                try:
                    await resp.write(chunk)
                except ConnectionError:  # the client left: release() below closes the backend's stream
                    raise ClientGone(resp) from None
        except UpstreamError as e:
            reason = "timeout" if isinstance(e, UpstreamTimeout) else "broken"
            self.metrics.stream_errors.inc(state.name, reason)
            self._pool_failed(state, time.monotonic())  # a stream that stalls or dies is the pool's failure
            log.warning(orjson.dumps({"event": "stream_cut", "pool": state.name, "reason": reason,
                                      "error": str(e)}).decode())
            try:
                await resp.write(sse_error(f"The backend stream was cut: {e}.", f"upstream_{reason}"))
            except ConnectionError:
                raise ClientGone(resp) from None
        else:
            if tokens is None:
                tokens = max(0, events - 1)  # one event per token, less `data: [DONE]`: vLLM's default
        try:
            await resp.write_eof()
        except ConnectionError:
            raise ClientGone(resp) from None
        self._account(decision, state, req.model, ttft, tokens or 0, upstream.status)
        if on_usage is not None:
            on_usage(state.pool, sse_usage(tail) or {"completion_tokens": tokens or 0})
        return resp

    async def _stream_migrating(self, request: httpio.Request, req: InferenceRequest, decision: core.Decision,
                                attempt: core.Dispatch, upstream: Response, headers: dict | None, block: bytes,
                                t0: float, fwd_headers: bytes, on_usage=None) -> httpio.StreamResponse:
        """A chat or completions stream that a failure after its first byte does not end: it is
        continued on another pool (``fleet_router.migration``)."""
        resp = httpio.StreamResponse(status=upstream.status, headers=headers, block=block)
        await resp.prepare(request)
        ttfts: dict[str, float] = {}

        async def write(data: bytes) -> None:
            try:
                await resp.write(data)
            except ConnectionError:  # the client left: closing the leg tells the backend to stop
                raise ClientGone(resp) from None

        def first_byte(d: core.Dispatch):
            def record(ttft: float) -> None:
                ttfts.setdefault(d.state.name, ttft)
                core.on_first_byte(d, ttft, time.monotonic())
            return record

        async def open_leg(state: core.PoolState, body: bytes) -> migration.Leg:
            d = core.on_dispatch(state, decision)
            t = state.pool.timeouts
            auth = self._auth_lines.get(state.name)
            up = None
            t1 = time.perf_counter()
            try:
                origin = self.upstream.origin(state.pool.url, state.pool.ca_file)
                up = await self.upstream.request(origin, req.target, fwd_headers + auth if auth else fwd_headers, body,
                                                 Deadlines(t.connect_s, t.stream_head_s, t.stream_idle_s))
                if up.status != 200:
                    message = _backend_message(await up.read_all(65536))
                    if up.status >= 500:
                        self._pool_failed(state, time.monotonic())
                    raise migration.Refused(up.status, message)
            except UpstreamError as e:
                self._pool_failed(state, time.monotonic())
                if up is not None:
                    up.release()
                core.on_done(d)
                raise migration.Refused(0, str(e)) from None
            except BaseException:
                if up is not None:
                    up.release()
                core.on_done(d)
                raise
            return self._track(migration.Leg(state, up, lambda: (up.release(), core.on_done(d)), first_byte(d), t1))

        def on_cut(state: core.PoolState, reason: str) -> None:
            self.metrics.stream_errors.inc(state.name, reason)
            if reason != "ejected":  # cut because the pool already is: no new evidence against it
                self._pool_failed(state, time.monotonic())
            log.warning(orjson.dumps({"event": "stream_cut", "pool": state.name, "reason": reason}).decode())

        relay = migration.Relay(req.path, req.body, write)
        first = self._track(migration.Leg(attempt.state, upstream, lambda: None, first_byte(attempt), t0))
        out = await migration.run(relay, first, open_leg=open_leg, states=self.states, preferred=decision.attempts,
                                  model=req.model, max_migrations=self.config.failover.max_migrations,
                                  non_resumable=self.non_resumable, on_cut=on_cut)
        m = self.metrics
        for reason, src, dst, gap, recomputed in out.migrations:
            fv, tv = self.states[src].pool.vendor, self.states[dst].pool.vendor
            m.migrations.inc(reason, fv, tv)
            if gap is not None:
                m.migration_gap.observe(value=gap)
            m.migration_recomputed.inc(tv, amount=recomputed)
            log.info(orjson.dumps({"event": "stream_migrated", "from": src, "to": dst, "reason": reason,
                                   "gap_s": None if gap is None else round(gap, 4), "recomputed_tokens": recomputed}).decode())
        if out.error:
            m.migrations_failed.inc(attempt.state.pool.vendor)
            await write(sse_error(f"The backend stream was cut and could not be continued: {out.error}.",
                                  "upstream_timeout" if out.reason == "timeout" else "upstream_broken"))
        try:
            await resp.write_eof()
        except ConnectionError:
            raise ClientGone(resp) from None
        for name, tokens in out.tokens.items():
            self._account(decision, self.states[name], req.model, ttfts.get(name), tokens, upstream.status)
            if on_usage is not None:  # each pool's share; the original prompt once, with the leg that ended it
                last = name == out.last_pool
                on_usage(self.states[name].pool, {**(relay.usage if last else {}), "completion_tokens": tokens})
        return resp

    def _account(self, decision: core.Decision, state: core.PoolState, model: str, ttft: float | None,
                 tokens: int, status: int) -> None:
        m, p = self.metrics, state.pool
        pair, rate = self._savings_rate(model, p.name)
        t = m.tally(decision.tier, p.name, p.vendor, decision.policy, decision.reason, pair)
        t.decisions += 1
        if ttft is not None:
            m.ttft.observe(p.name, value=ttft)
            tier = self._tiers.get(decision.tier)
            if tier is not None and tier.ttft_slo_ms is not None and status < 400:
                (m.sla_ok if ttft * 1000 <= tier.ttft_slo_ms else m.sla_bad).inc(tier.name, p.name, p.name, p.vendor)
        if tokens:
            t.answers += 1
            t.tokens += tokens
            t.saved += rate * tokens / 1e6  # core.cost_savings

    def _savings_rate(self, model: str, pool: str) -> tuple[str, float]:
        """``core.savings_rate``, remembered per (model, pool) while the pools serve the same models."""
        served = tuple(map(_DISCOVERED, self.states.values()))
        hit = self._savings.get((model, pool))
        if hit is None or hit[0] != served:
            if len(self._savings) >= 4096:
                self._savings.clear()
            hit = self._savings[(model, pool)] = (served, *core.savings_rate(self.states, model, pool))
        return hit[1], hit[2]


def _id_line(request: httpio.Request) -> bytes:
    """The request's own id, as the backend gets it (every log on the way can follow it)."""
    return b"X-Request-Id: %b\r\n" % request.request_id.encode("latin-1")


def usage_of(whole: bytes) -> dict:
    """The ``usage`` of a whole OpenAI answer ({} if it has none)."""
    try:
        usage = orjson.loads(whole).get("usage")
    except (orjson.JSONDecodeError, AttributeError):
        return {}
    return usage if isinstance(usage, dict) else {}


def completion_tokens_of(whole: bytes) -> int:
    """``usage.completion_tokens`` of a whole OpenAI answer, found without parsing the answer (issue
    18: parsing a long answer only to count its tokens): the last ``"usage"`` key — vLLM and OpenAI
    write it after the choices — then the ``completion_tokens`` after it. Inside a JSON string a
    quote is escaped, so these quoted bytes can only be keys, never generated text. 0 without."""
    i = whole.rfind(b'"usage"')
    if i < 0:
        return 0
    m = _COMPLETION_TOKENS.search(whole, i)
    return int(m.group(1)) if m is not None else 0


def sse_usage(tail: bytes) -> dict:
    """The ``usage`` of the last event of an SSE stream that has one ({} if none: a stream without
    ``stream_options.include_usage``)."""
    for event in reversed(tail.split(b"\n\n")):
        data = event.strip()
        if data.startswith(b"data:") and b'"usage"' in data:
            usage = usage_of(data[5:])
            if usage:
                return usage
    return {}


def _completion_tokens(usage: dict) -> int:
    """``usage.completion_tokens`` of an answer (0 when missing or not a number)."""
    try:
        return max(0, int(usage.get("completion_tokens") or 0))
    except (TypeError, ValueError, OverflowError):
        return 0
