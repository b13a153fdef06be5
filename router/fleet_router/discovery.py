"""Discovery: what each pool serves (its ``/v1/models``) and how loaded it is (its ``/metrics``).

Background GETs off the hot path; results are written into the core's :class:`~fleet_router.core.PoolState`.
A pool whose model list cannot be read for ``discovery.models_expire_s`` (dead, unreachable,
answering errors or garbage) loses the models it alone reported: they leave ``/v1/models`` and
routing. Models a pool is configured with stay (the config is the fleet's declared contract; a
request for one whose pools are all down gets a 503 naming each pool's reason, not a 404).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable

import aiohttp
import orjson

from fleet_router import core
from fleet_router.config import Limits
from fleet_router.metrics import RouterMetrics
from fleet_router.tls import Contexts, TrustError

_WAITING = re.compile(r'^vllm:num_requests_waiting(?:\{[^}]*\})?\s+([0-9.eE+-]+)', re.M)
_RUNNING = re.compile(r'^vllm:num_requests_running(?:\{[^}]*\})?\s+([0-9.eE+-]+)', re.M)
_PREFIX_QUERIES = re.compile(r'^vllm:prefix_cache_queries_total(?:\{[^}]*\})?\s+([0-9.eE+-]+)', re.M)
_PREFIX_HITS = re.compile(r'^vllm:prefix_cache_hits_total(?:\{[^}]*\})?\s+([0-9.eE+-]+)', re.M)
_KV = re.compile(r'^vllm:(?:gpu_)?kv_cache_usage_perc(?:\{[^}]*\})?\s+([0-9.eE+-]+)', re.M)

CARD_FIELDS = ("root", "parent", "max_model_len")
"""What the router keeps of a backend's model card besides the id: vLLM's ``ModelCard``
(vllm/entrypoints/openai/protocol.py, at v0.11.0 as the catalog pins and still at ec3b890) adds
``root`` (the served path), ``parent`` (the base model of a LoRA adapter, else null) and
``max_model_len`` (the context the server was started with) to OpenAI's id/object/created/owned_by.
``permission`` (per-request random ids) is not kept."""


class Discovery:
    def __init__(self, metrics: RouterMetrics, clock=time.monotonic):
        self.metrics = metrics
        self.clock = clock
        self.session: aiohttp.ClientSession | None = None
        self.trust = Contexts()  # a pool's TLS is verified as the proxy verifies it (its ca_file)
        self.cards: dict[str, dict[str, dict]] = {}  # pool -> model id -> its CARD_FIELDS, as last read
        self.listed_at: dict[str, float] = {}  # pool -> when its model list was last read

    async def start(self, limits: Limits) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=30),
            timeout=aiohttp.ClientTimeout(total=5, sock_connect=2),  # background GETs; each call bounds itself
            auto_decompress=False,
        )

    async def close(self) -> None:
        if self.session:
            await self.session.close()

    async def _get(self, url: str, headers: dict | None = None, ca_file: str | None = None) -> bytes | None:
        try:
            kw = {"ssl": self.trust.get(ca_file)} if url.startswith("https:") else {}
            async with self.session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=2), **kw) as r:
                return await r.read() if r.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, TrustError):
            return None

    async def refresh(self, states: Iterable[core.PoolState], expire_s: float) -> None:
        states = list(states)
        await asyncio.gather(self.refresh_models(states, expire_s), self.scrape_metrics(states),
                             return_exceptions=True)

    async def refresh_models(self, states: Iterable[core.PoolState], expire_s: float) -> None:
        async def one(s: core.PoolState):
            raw = await self._get(f"{s.pool.url.rstrip('/')}/v1/models", _auth(s), s.pool.ca_file)
            cards = _parse_models(raw)
            now = self.clock()
            if cards is not None:
                s.discovered_models = frozenset(cards)
                self.cards[s.name], self.listed_at[s.name] = cards, now
            elif now - self.listed_at.setdefault(s.name, now) >= expire_s:
                # Not read for expire_s (counted from its last good list, or from the first try):
                # what only this pool reported is no longer believed.
                s.discovered_models = frozenset()
                self.cards.pop(s.name, None)
        states = list(states)
        await asyncio.gather(*(one(s) for s in states))
        names = {s.name for s in states}
        for gone in set(self.listed_at) - names:  # pools removed by a reload
            self.listed_at.pop(gone, None)
            self.cards.pop(gone, None)

    def model_cards(self, states: Iterable[core.PoolState]) -> dict[str, dict]:
        """Every model a pool is configured with or currently reports, sorted by id -> the
        backend's card fields. Pools that disagree: the smallest ``max_model_len`` (a request
        longer than it may land on that pool), ``root`` / ``parent`` from the first pool in
        config order that names them."""
        out: dict[str, dict] = {}
        for s in states:
            cards = self.cards.get(s.name, {}) if s.discovered_models else {}
            for m in (*s.pool.models, *s.discovered_models):
                card = out.setdefault(m, {})
                for k, v in cards.get(m, {}).items():
                    if k == "max_model_len" and "max_model_len" in card:
                        card[k] = min(card[k], v)
                    else:
                        card.setdefault(k, v)
        return dict(sorted(out.items()))

    async def scrape_metrics(self, states: Iterable[core.PoolState]) -> None:
        async def one(s: core.PoolState):
            raw = await self._get(f"{s.pool.url.rstrip('/')}/metrics", ca_file=s.pool.ca_file)
            if raw is not None:
                text = raw.decode(errors="replace")
                # vLLM's v1 engine (vllm/v1/metrics/loggers.py, PrometheusStatLogger, read at commit
                # 005a810; the names and labels test_router_signals pins for v0.11.0): the gauges
                # vllm:num_requests_running ("Number of requests in model execution batches.") and
                # vllm:num_requests_waiting, one series per engine (labels model_name, engine):
                # summed, they are the server's requests from every router replica.
                running = _RUNNING.findall(text)
                kv = [float(v) for v in _KV.findall(text)]
                core.on_scrape(s, waiting=sum(float(v) for v in _WAITING.findall(text)),
                               kv_usage=max(kv) if kv else 0.0,
                               running=sum(float(v) for v in running) if running else None)
                queries = _PREFIX_QUERIES.findall(text)
                if queries:
                    self.metrics.pool_prefix_queries.set(s.name, value=sum(float(v) for v in queries))
                    self.metrics.pool_prefix_hits.set(s.name, value=sum(float(v) for v in _PREFIX_HITS.findall(text)))
            self.metrics.utilization.set(s.name, s.pool.vendor, value=round(s.load(), 4))
        await asyncio.gather(*(one(s) for s in states))


def _auth(s: core.PoolState) -> dict | None:
    """The pool's key (vLLM --api-key guards every /v1 path; /metrics stays open), read each time so
    a rotated Secret is picked up."""
    try:
        key = s.pool.load_api_key()
    except (OSError, ValueError):
        return None
    return {"Authorization": f"Bearer {key}"} if key else None


def _parse_models(raw: bytes | None) -> dict[str, dict] | None:
    """A ``/v1/models`` answer -> model id -> its kept card fields; None if it is not one."""
    if raw is None:
        return None
    try:
        data = orjson.loads(raw).get("data")
        cards = {}
        for m in data:
            if not isinstance(m["id"], str):
                return None
            cards[m["id"]] = {k: m[k] for k in CARD_FIELDS
                              if m.get(k) is not None and (k != "max_model_len" or _positive_int(m[k]))
                              and (k == "max_model_len" or isinstance(m[k], str))}
        return cards
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def served_models(states: Iterable[core.PoolState]) -> list[str]:
    """Every model a pool is configured with or was seen serving, sorted."""
    return sorted({m for s in states for m in (*s.pool.models, *s.discovered_models)})
