"""Scorers: each rates every candidate pool in [0, 1] for one request (1 = best). Plain functions
of the :class:`RequestContext` and :class:`PoolState` values; a profile sums them with weights.

``affinity`` is the one that makes replicas agree: a weighted rendezvous hash (highest random
weight, Thaler & Ravishankar 1998; weighted form -w / ln(u), Schindelhauer & Schomaker 2005) of
the conversation's key over the pools. Every router replica computes it from the prompt and the
config alone, so every turn of a conversation has the same *home* pool whichever replica sees it,
and conversations spread over pools in proportion to the tier's weights. Nothing is shared at run
time: no store to reach, nothing to lose when a replica restarts, and a new replica routes like
the old ones from its first request. A shared store of prefix locations (e.g. Redis) would be
exact but adds a round trip to every decision and a failure mode to the hot path; the hash is
wrong only where the pools' real load made an earlier turn go elsewhere, which ``prefill`` below
then sees in this replica's own memory.

The key is the conversation (its bytes through the first non-system message), not the leading
blocks alone: keyed on a shared system prompt, every conversation using it would have one home
and pile onto it until load pushed them off, bouncing between pools as the load moved. Keyed on
the conversation, they spread by weight, and the price is that each pool computes each shared
system prompt once. Load still decides: ``prefill`` moves a turn off a home whose queued prefill
costs more than recomputing the history elsewhere. That queue is this replica's own count (blocks
sent, not yet answered): behind N replicas about 1/N of every pool's queue. Estimating the
fleet's queue from it was measured and not kept (bench/replicas.py's pools and conversations,
144 of them at 3x the rate and 1/5 the think time, 3 replicas, 6 interleaved rounds, sims at
--time-scale 3, machine load 6-11): this replica's backlog scaled by the pools' reported requests
over its own gave a hit rate of 91.9-92.6 % against 93.0-93.4 % and latency p95 1.18-1.43x per
round (one long prompt of its own read as three, none read as none); the others' reported
requests at this replica's average blocks per request came out level with the replica's own
count (hit rate 93.2-93.5 %, p95 ratio median 0.99, 0.80-1.64), and so did one router seeing the
whole queue (93.1-93.6 %). A third of the queue keeps a few more turns at home than one router
would, and those turns hit the cache. What the pools report is the load every replica sees
alike: their running and waiting requests (:meth:`~fleet_router.core.state.PoolState.requests`)
decide saturation (the pipeline's filters) and ``load``.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import xxhash

from fleet_router.core.state import PoolState, RequestContext

AFFINITY_MIN_MATCH = 0.25
"""``prefill`` weighs cache hits once some pool (most likely) holds at least this share of the
prompt's blocks; below it no pool has a useful cache and the affinity order decides."""
COST_SLO_HEADROOM = 0.5
"""``ttft-headroom``: a pool is within the tier's TTFT target while its recent mean TTFT is within
this share of it (a p95 target; under queueing the tail is about twice the mean)."""

Scorer = Callable[[RequestContext, Sequence[PoolState]], list[float]]
_EPS = 1e-12


def rendezvous(key: int | None, pools: Sequence[PoolState], weights) -> dict[str, float]:
    """Each pool's weighted rendezvous score for ``key``, scaled so the home pool has 1.0 (all 1.0
    without a key). The pool with the highest score wins with probability w / sum(w)."""
    if key is None:
        return {p.name: 1.0 for p in pools}
    raw = {}
    for p in pools:
        w = weights.get(p.name, 0.0)
        u = (xxhash.xxh3_64_intdigest(p.name.encode(), key) + 0.5) / 18446744073709551616.0
        raw[p.name] = -w / math.log(u) if w > 0 else 0.0
    top = max(raw.values(), default=0.0) or 1.0
    return {n: r / top for n, r in raw.items()}


def affinity(ctx: RequestContext, pools: Sequence[PoolState]) -> list[float]:
    """The conversation's home pool 1.0, the others their rendezvous score (consistent across
    replicas; see the module's docstring)."""
    scores = rendezvous(ctx.key, pools, ctx.weights)
    return [scores[p.name] for p in pools]


def expected_cached(ctx: RequestContext, pools: Sequence[PoolState]) -> list[int]:
    """Leading blocks each pool most likely holds: what this replica sent there, and for the
    conversation's home pool what every replica would have sent there: its earlier turns, and on a
    first turn its opening (the system prompt and first question), so a new conversation settles
    at home unless the home is busy — even where this replica never sent the system prompt there
    (another replica may have; if none did, the home computes it once, as round-robin would).
    The home's share counts past the hashed blocks too: two long prompts alike in their first
    256 blocks are told apart by whose conversation they are. A plain prompt (no earlier message)
    predicts nothing: only this replica's memory counts."""
    blocks = ctx.blocks
    cached = [p.prefixes.matched(blocks) for p in pools] if blocks else [0] * len(pools)
    if ctx.key is None or not blocks or not ctx.history_blocks:
        return cached
    aff = rendezvous(ctx.key, pools, ctx.weights)
    i = max(range(len(pools)), key=lambda i: (aff[pools[i].name], pools[i].name))
    cached[i] = max(cached[i], min(ctx.total_blocks, max(ctx.history_blocks, ctx.key_blocks)))
    return cached


def prefill(ctx: RequestContext, pools: Sequence[PoolState]) -> list[float]:
    """How soon the first token comes: the blocks queued for prefill at each pool plus this prompt's
    blocks it would have to compute, over its speed (``PoolState.prefill_work``); the soonest 1.0.
    A pool holding the conversation wins until its queue costs more than recomputing elsewhere:
    affinity without piling every conversation that shares a system prompt onto one pool, and a
    busy home stops taking its conversations."""
    n = ctx.total_blocks
    cached = expected_cached(ctx, pools)
    if not ctx.blocks or max(cached) < AFFINITY_MIN_MATCH * n:
        return [1.0] * len(pools)
    work = [p.prefill_work(n - c) for p, c in zip(pools, cached)]
    best = min(work)
    return [(best + _EPS) / (w + _EPS) for w in work]


def prefix_cache(ctx: RequestContext, pools: Sequence[PoolState]) -> list[float]:
    """Share of the prompt's leading blocks this replica sent to each pool."""
    n = len(ctx.blocks)
    if not n:
        return [0.0] * len(pools)
    return [p.prefixes.matched(ctx.blocks) / n for p in pools]


def load(ctx: RequestContext, pools: Sequence[PoolState]) -> list[float]:
    """1 idle, 0 at max concurrency (the pool's requests from every replica, its queue and KV use)."""
    return [1.0 - min(1.0, p.load()) for p in pools]


def cost(ctx: RequestContext, pools: Sequence[PoolState]) -> list[float]:
    """The cheapest $ per million tokens 1.0, the others in proportion (cheapest / theirs)."""
    c = [round(p.pool.cost_per_million_tokens, 6) for p in pools]
    lo = min(c)
    return [1.0 if x <= lo else (lo / x) for x in c]


def ttft_headroom(ctx: RequestContext, pools: Sequence[PoolState]) -> list[float]:
    """1 while a pool's recent TTFT is within the tier's target (``COST_SLO_HEADROOM`` of it);
    slower pools below 0.5, the slower the lower. No target: 1 for all."""
    if ctx.ttft_slo_s is None:
        return [1.0] * len(pools)
    limit = ctx.ttft_slo_s * COST_SLO_HEADROOM
    out = []
    for p in pools:
        t = p.recent_ttft(ctx.now)
        out.append(1.0 if t <= limit else 0.5 * limit / t)
    return out


def tier_weight(ctx: RequestContext, pools: Sequence[PoolState]) -> list[float]:
    """The tier's weight for each pool, the heaviest 1.0."""
    w = [ctx.weights.get(p.name, 0.0) for p in pools]
    top = max(w) or 1.0
    return [x / top for x in w]


SCORERS: dict[str, Scorer] = {
    "affinity": affinity,
    "prefill": prefill,
    "prefix-cache": prefix_cache,
    "load": load,
    "cost": cost,
    "ttft-headroom": ttft_headroom,
    "tier-weight": tier_weight,
}
