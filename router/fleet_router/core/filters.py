"""Filters: which pools may serve a request at all. The pipeline's own — serves the model, not
ejected, in the tier with a weight and not saturated — are applied in one pass by
:func:`fleet_router.core.pipeline.route` (else the tier's overflow pools, below, else the least
loaded of whatever serves it). A profile may add its own after those, from ``FILTERS``."""

from __future__ import annotations

from typing import Callable, Sequence

from fleet_router.core.state import PoolState, RequestContext

BOUNDED_LOAD_C = 1.25
"""``bounded-load``: a pool is busy once its queued prefill time exceeds this multiple of the
fleet's average (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded Loads", 2016)."""

Filter = Callable[[RequestContext, Sequence[PoolState]], list[PoolState]]


def overflow(names, pools: Sequence[PoolState]) -> list[PoolState]:
    return [p for p in pools if p.name in names and not p.saturated()]


def bounded_load(ctx: RequestContext, pools: Sequence[PoolState]) -> list[PoolState]:
    """Drop pools whose queued prefill (blocks over speed) exceeds ``BOUNDED_LOAD_C`` times the
    candidates' average with this request added; the least busy pool always stays."""
    total_speed = sum(p.pool.tokens_per_second for p in pools)
    if not pools or total_speed <= 0:
        return list(pools)
    bound = BOUNDED_LOAD_C * (sum(p.backlog for p in pools) + len(ctx.blocks)) / total_speed
    return [p for p in pools if p.backlog / p.pool.tokens_per_second <= bound] or list(pools)


FILTERS: dict[str, Filter] = {"bounded-load": bounded_load}
