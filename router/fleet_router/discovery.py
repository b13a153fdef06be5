"""Discovery: what each pool serves (its ``/v1/models``) and how loaded it is (its ``/metrics``).

Background GETs off the hot path; results are written into the core's :class:`~fleet_router.core.PoolState`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable

import aiohttp
import orjson

from fleet_router import core
from fleet_router.config import Limits
from fleet_router.metrics import RouterMetrics
from fleet_router.tls import Contexts, TrustError

_WAITING = re.compile(r'^vllm:num_requests_waiting(?:\{[^}]*\})?\s+([0-9.eE+-]+)', re.M)
_PREFIX_QUERIES = re.compile(r'^vllm:prefix_cache_queries_total(?:\{[^}]*\})?\s+([0-9.eE+-]+)', re.M)
_PREFIX_HITS = re.compile(r'^vllm:prefix_cache_hits_total(?:\{[^}]*\})?\s+([0-9.eE+-]+)', re.M)
_KV = re.compile(r'^vllm:(?:gpu_)?kv_cache_usage_perc(?:\{[^}]*\})?\s+([0-9.eE+-]+)', re.M)


class Discovery:
    def __init__(self, metrics: RouterMetrics):
        self.metrics = metrics
        self.session: aiohttp.ClientSession | None = None
        self.trust = Contexts()  # a pool's TLS is verified as the proxy verifies it (its ca_file)

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

    async def refresh(self, states: Iterable[core.PoolState]) -> None:
        states = list(states)
        await asyncio.gather(self.refresh_models(states), self.scrape_metrics(states), return_exceptions=True)

    async def refresh_models(self, states: Iterable[core.PoolState]) -> None:
        async def one(s: core.PoolState):
            raw = await self._get(f"{s.pool.url.rstrip('/')}/v1/models", _auth(s), s.pool.ca_file)
            if raw is not None:
                try:
                    s.discovered_models = frozenset(m["id"] for m in orjson.loads(raw).get("data", []))
                except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                    pass
        await asyncio.gather(*(one(s) for s in states))

    async def scrape_metrics(self, states: Iterable[core.PoolState]) -> None:
        async def one(s: core.PoolState):
            raw = await self._get(f"{s.pool.url.rstrip('/')}/metrics", ca_file=s.pool.ca_file)
            if raw is not None:
                text = raw.decode(errors="replace")
                s.waiting = sum(float(v) for v in _WAITING.findall(text))
                kv = [float(v) for v in _KV.findall(text)]
                s.kv_usage = max(kv) if kv else 0.0
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


def served_models(states: Iterable[core.PoolState]) -> list[str]:
    """Every model a pool is configured with or was seen serving, sorted."""
    return sorted({m for s in states for m in (*s.pool.models, *s.discovered_models)})
