"""The wiring: one :class:`Router` holding config and pool state, its handlers, and the lifecycle
(start, reload, drain, stop) behind :func:`serve`.

Each job has its module — :mod:`~fleet_router.admission` (keys, rate limits, routing headers),
:mod:`~fleet_router.openai_api` (the typed request), :mod:`~fleet_router.discovery` (model lists,
metric scraping), :mod:`~fleet_router.proxy` (attempts, failover, streaming, accounting) and
:mod:`~fleet_router.httpio` (the HTTP server; the only module that knows the framework). Every
routing decision is :func:`fleet_router.core.route`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import signal
import time
from pathlib import Path
from urllib.parse import unquote

import orjson

from fleet_router import core, httpio, openai_api
from fleet_router.admission import Admission
from fleet_router.config import ConfigError, RouterConfig, load_config
from fleet_router.discovery import Discovery, served_models
from fleet_router.forwarding import TrustedProxies
from fleet_router.metrics import RouterMetrics
from fleet_router.openai_api import INFERENCE_PATHS, error
from fleet_router.proxy import ClientGone, Proxy

log = logging.getLogger("fleet_router")


class Router:
    def __init__(self, config: RouterConfig, config_path: str | None = None, seed: int | None = None):
        self.config_path = config_path
        self.metrics = RouterMetrics()
        self.rng = random.Random(seed)
        self.states: dict[str, core.PoolState] = {}
        self.admission = Admission(config, self.metrics)
        self.discovery = Discovery(self.metrics)
        self.proxy = Proxy(self.metrics, config, self.states)
        self.in_flight = 0
        self.stopping = False  # SIGTERM seen: not ready, still serving (pre-stop grace)
        self.draining = False  # listeners closed: new requests are 503
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
        self.metrics.pool_info.values.clear()  # a pool removed by a reload stops being listed
        for p in config.pools:
            self.metrics.pool_info.set(p.name, p.vendor, p.cloud, p.cluster, p.accelerator, value=1)
        self.config = config
        self.learn = core.learns_prefixes(config)  # route()'s: hash every prompt, or none (see there)
        self.states = states
        self.metrics.drop_pools(set(states))
        self.admission.apply_config(config)
        self.proxy.apply_config(config, states)
        self.discovery.trust.clear()
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

    async def start(self) -> None:
        await self.admission.start()
        await self.discovery.start(self.config.limits)
        await self.proxy.start()
        await self.discovery.refresh(self.states.values(), self.config.discovery.models_expire_s)
        self.ready = True
        every = self.config.discovery
        self._tasks = [
            asyncio.create_task(self._loop(every.models_refresh_s, self.refresh_models)),
            asyncio.create_task(self._loop(every.metrics_scrape_s, self.scrape_metrics))]
        if self.config_path:
            self._tasks.append(asyncio.create_task(self._loop(1.0, self._watch_config)))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.discovery.close()
        await self.proxy.close()
        await self.admission.close()

    def stop_ready(self) -> None:
        """SIGTERM: /readyz turns 503 so load balancers stop sending; requests are still served."""
        self.stopping, self.ready = True, False

    async def refresh_models(self) -> None:
        await self.discovery.refresh_models(self.states.values(), self.config.discovery.models_expire_s)

    async def scrape_metrics(self) -> None:
        await self.discovery.scrape_metrics(self.states.values())

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

    # --- admin ---------------------------------------------------------------------------------

    async def healthz(self, request: httpio.Request) -> httpio.Response:
        return httpio.json_response({"status": "ok"})

    async def readyz(self, request: httpio.Request) -> httpio.Response:
        if not self.ready:
            return httpio.json_response({"status": "draining" if self.stopping else "starting"}, status=503)
        return httpio.json_response({"status": "ready", "pools": len(self.states)})

    async def metrics_page(self, request: httpio.Request) -> httpio.Response:
        self.metrics.observe_pools(self.states.values(), time.monotonic())
        return httpio.Response(text=self.metrics.render(), content_type="text/plain", charset="utf-8",
                               headers={"X-Content-Type-Options": "nosniff"})

    # --- API ---------------------------------------------------------------------------------------

    def _served(self) -> list[str]:
        """The models the pools serve (asked only when a request omits ``model`` where vLLM allows it)."""
        return served_models(self.states.values())

    async def models(self, request: httpio.Request) -> httpio.Response:
        _, denied = self.admission.authenticate(request.headers)
        if denied:
            return denied
        cards = self.discovery.model_cards(self.states.values())
        return httpio.json_response(openai_api.model_list(cards, int(time.time())))

    async def model(self, request: httpio.Request) -> httpio.Response:
        """``GET /v1/models/{id}`` (the openai client's ``models.retrieve``); an id may hold slashes."""
        _, denied = self.admission.authenticate(request.headers)
        if denied:
            return denied
        model_id = unquote(request.path[len(openai_api.MODEL_PREFIX):])
        card = self.discovery.model_cards(self.states.values()).get(model_id)
        if card is None:
            return error(404, f"The model `{model_id}` does not exist.", "invalid_request_error", "model_not_found",
                         "model")
        return httpio.json_response(openai_api.model_card(model_id, int(time.time()), card))

    async def inference(self, request: httpio.Request) -> httpio.StreamResponse:
        return await self._counted(request, time.perf_counter(), None)

    async def _counted(self, request: httpio.Request, started: float, forwarding) -> httpio.StreamResponse:
        """The answer of ``_inference`` — or of ``forwarding``, a proxy call :meth:`inference_now`
        started (in flight already) — counted however the request ends."""
        endpoint = request.path
        status = "500"
        try:
            if forwarding is None:
                response = await self._inference(request, started)
            else:
                try:
                    response = await forwarding
                finally:
                    self.in_flight -= 1
            status = str(response.status)
            return response
        except ClientGone as e:  # counted however the request ends (issue 23 item 7); 499 as nginx logs it
            status = "499"
            return e.response
        except asyncio.CancelledError:  # the client left before an answer (the edge cancels the handler)
            status = "499"
            raise
        finally:
            self._count(endpoint, status, started)

    def _count(self, endpoint: str, status: str, started: float) -> None:
        self.metrics.requests.inc(endpoint, status)
        self.metrics.latency.observe(endpoint, value=time.perf_counter() - started)

    def _route(self, request: httpio.Request, req: openai_api.InferenceRequest, key,
               started: float) -> core.Decision | httpio.Response:
        """The pool a checked request goes to (the routing headers this key may set, then the core's
        route), its overhead observed; or the error answer for a refused header or no route. One step
        for both paths: :meth:`inference_now` gives a refusal back to :meth:`inference` to answer."""
        routing = self.admission.routing_headers(request.headers, key)
        if not isinstance(routing, tuple):
            return routing
        headers, policy = routing
        try:
            decision = core.route(self.config, self.states, req.model, headers, req.body, time.monotonic(),
                                  self.rng, policy, self.learn)
        except core.NoRoute as e:
            return error(e.status, e.message, "invalid_request_error" if e.status < 500 else "server_error", e.code,
                         "model" if e.status == 404 else None)
        self.metrics.overhead.observe(value=time.perf_counter() - started)
        return decision

    def inference_now(self, request: httpio.Request) -> bool:
        """``inference`` for a request that arrived whole, started with no task (httpio's NowHandler):
        the same checks and the same route, then the proxy's task-free attempt for a non-streaming
        request (``Proxy.forward_now``), a task from the forwarding on for the rest. False, with
        nothing done, for what the checks refuse or what needs an await before routing (per-key
        limits ask the store; a body not all here): ``inference`` answers those."""
        if self.draining:
            return False
        key, denied = self.admission.authenticate(request.headers)
        if denied or self.admission.limiter.policy(key) is not None:
            return False
        started = time.perf_counter()
        req = openai_api.inference_now(request, self.config.limits.max_body_bytes,
                                       self._served)
        if not isinstance(req, openai_api.InferenceRequest):
            return False
        decision = self._route(request, req, key, started)
        if not isinstance(decision, core.Decision):
            return False  # (refused before the picker ran: nothing to undo; inference answers it)
        self.in_flight += 1
        endpoint = request.path

        def answer(result) -> None:
            if result is not None and not isinstance(result, httpio.Response):
                if not request.gone:  # the rest of the forwarding (failover), as forward() goes on
                    request.continue_with(self._counted(request, started, result))
                    return
                result.close()  # a coroutine never started: the client left meanwhile
                result = None
            self.in_flight -= 1
            self._count(endpoint, "499" if result is None else str(result.status), started)
            request.reply(result)

        if req.stream or not self.proxy.forward_now(request, req, decision, answer):
            answer(self.proxy.forward(request, req, decision))
        return True

    async def _inference(self, request: httpio.Request, started: float) -> httpio.StreamResponse:
        if self.draining:
            return error(503, "The router is shutting down; retry.", "server_error", "draining",
                         headers={"Retry-After": "1"})
        key, denied = self.admission.authenticate(request.headers)
        if denied:
            return denied
        verdict, denied = await self.admission.rate_limit(key)
        if denied:
            return denied
        req = await openai_api.read_inference(request, self.config.limits.max_body_bytes,
                                              self._served)
        if not isinstance(req, openai_api.InferenceRequest):
            return req
        decision = self._route(request, req, key, started)
        if not isinstance(decision, core.Decision):
            return decision
        self.in_flight += 1
        try:
            if verdict is None:
                return await self.proxy.forward(request, req, decision)
            limiter = self.admission.limiter

            def charge(pool, usage: dict) -> None:
                # Tokens: prompt + completion, as OpenAI's tokens/min count them; spend: completion
                # tokens at the serving pool's $ per million (config.Pool.cost_per_million_tokens).
                completion = int(usage.get("completion_tokens") or 0)
                tokens = int(usage.get("prompt_tokens") or 0) + completion
                limiter.charge(key, verdict.policy, tokens, completion * pool.cost_per_million_tokens / 1e6)

            return await self.proxy.forward(request, req, decision, verdict.headers, charge)
        finally:
            self.in_flight -= 1

    # --- routes ----------------------------------------------------------------------------------

    def api_routes(self) -> list[tuple[str, str, httpio.Handler]]:
        return [*(("POST", path, self.inference) for path in INFERENCE_PATHS),
                ("GET", "/v1/models", self.models), ("GET", openai_api.MODEL_PREFIX + "*", self.model),
                ("GET", "/healthz", self.healthz), ("GET", "/readyz", self.readyz)]

    def now_routes(self) -> dict[str, httpio.NowHandler]:
        """The API paths whose requests may be answered with no task (``inference_now``): the JSON ones."""
        return {path: self.inference_now for path, e in openai_api.ENDPOINTS.items() if e.body == "json"}

    def admin_routes(self) -> list[tuple[str, str, httpio.Handler]]:
        return [("GET", "/metrics", self.metrics_page), ("GET", "/healthz", self.healthz),
                ("GET", "/readyz", self.readyz)]


async def serve(config: RouterConfig, config_path: str | None = None) -> int:
    """Run until SIGTERM/SIGINT, then shut down in the order a load balancer needs (see
    :class:`fleet_router.config.Shutdown`); 0 after a drain, 1 if a second signal cut it short."""
    router = Router(config, config_path)
    await router.start()
    # What start-up made (modules, the config, pydantic's validators) lives as long as the process:
    # out of the collector's sight, a full collection no longer walks it every few thousand requests.
    gc.freeze()
    srv = config.server
    api = await httpio.start_site(
        router.api_routes(), config.listen.host, config.listen.port, make_error=openai_api.http_error,
        max_body_bytes=config.limits.max_body_bytes, max_header_bytes=srv.max_header_bytes,
        header_timeout=srv.header_timeout_s, body_timeout=srv.body_timeout_s, idle_timeout=srv.idle_timeout_s,
        max_connections=srv.max_connections, trusted=TrustedProxies(srv.trusted_proxies), access_log=srv.access_log,
        now=router.now_routes())
    admin = await httpio.start_site(router.admin_routes(), config.listen.host, config.listen.admin_port,
                                    make_error=openai_api.http_error, access_log=False)
    log.info(orjson.dumps({"event": "listening", "port": config.listen.port,
                           "admin_port": config.listen.admin_port, "pools": len(config.pools)}).decode())
    signals = 0
    stop, force = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        (stop if signals == 1 else force).set()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, on_signal)
    loop.add_signal_handler(signal.SIGINT, on_signal)
    loop.add_signal_handler(signal.SIGHUP, router.reload)
    await stop.wait()

    shutdown = config.shutdown
    router.stop_ready()
    log.info(orjson.dumps({"event": "stopping", "pre_stop_s": shutdown.pre_stop_s,
                           "drain_s": shutdown.drain_s}).decode())
    try:
        await asyncio.wait_for(force.wait(), shutdown.pre_stop_s)
    except TimeoutError:
        pass
    router.draining = True
    await api.stop_listening()
    deadline = time.monotonic() + shutdown.drain_s
    while (api.busy or router.in_flight) and time.monotonic() < deadline and not force.is_set():
        await asyncio.sleep(0.05)
    log.info(orjson.dumps({"event": "stopped", "forced": force.is_set(), "in_flight": api.busy}).decode())
    await api.close()
    await router.stop()
    await admin.close()
    return 1 if force.is_set() else 0
