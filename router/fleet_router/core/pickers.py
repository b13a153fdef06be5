"""Pickers: order the candidates from their combined scores; the first is tried, the rest are the
failover order (the pipeline then prefers another vendor for the second attempt)."""

from __future__ import annotations

import random
from typing import Callable, Sequence

from fleet_router.core.scorers import rendezvous
from fleet_router.core.state import PoolState, RequestContext

Picker = Callable[[RequestContext, Sequence[PoolState], Sequence[float], random.Random], list[PoolState]]


def _weighted_keys(pools: Sequence[PoolState], weights: Sequence[float], rng: random.Random) -> list[float]:
    """Efraimidis-Spirakis keys: sorting by them descending is a weighted random permutation."""
    return [rng.random() ** (1.0 / w) if w > 0 else -rng.random() for w in weights]


def max_score(ctx: RequestContext, pools: Sequence[PoolState], scores: Sequence[float],
              rng: random.Random) -> list[PoolState]:
    """Highest score first. Ties go to the conversation's rendezvous order (the same on every
    replica), or for a prompt too short to have one, a draw weighted by the tier's weights."""
    if ctx.key is not None:
        aff = rendezvous(ctx.key, pools, ctx.weights)
        tie = [aff[p.name] for p in pools]
    else:
        tie = _weighted_keys(pools, [ctx.weights.get(p.name, 0.0) for p in pools], rng)
    order = sorted(range(len(pools)), key=lambda i: (-scores[i], -tie[i], pools[i].name))
    return [pools[i] for i in order]


def weighted_random(ctx: RequestContext, pools: Sequence[PoolState], scores: Sequence[float],
                    rng: random.Random) -> list[PoolState]:
    """A draw in proportion to tier weight x score (GAIE's weighted-random picker), then the rest."""
    keys = _weighted_keys(pools, [ctx.weights.get(p.name, 0.0) * s for p, s in zip(pools, scores)], rng)
    order = sorted(range(len(pools)), key=lambda i: (-keys[i], pools[i].name))
    return [pools[i] for i in order]


def smooth_round_robin(ctx: RequestContext, pools: Sequence[PoolState], scores: Sequence[float],
                       rng: random.Random) -> list[PoolState]:
    """nginx's smooth weighted round-robin over the tier's weights: deterministic, proportional,
    interleaved. Scores are ignored (round-robin is this picker with no scorers)."""
    w = ctx.weights
    total = 0.0
    best = None
    for p in pools:
        weight = w.get(p.name, 0.0)
        total += weight
        p.rr_current += weight
        if best is None or (p.rr_current, p.name) > (best.rr_current, best.name):
            best = p
    best.rr_current -= total or 1.0
    if len(pools) == 2:  # the common fleet: the other one
        return [best, pools[1] if pools[0] is best else pools[0]]
    rest = sorted((p for p in pools if p is not best), key=lambda p: -w.get(p.name, 0.0))
    return [best, *rest]


PICKERS: dict[str, Picker] = {
    "max-score": max_score,
    "weighted-random": weighted_random,
    "smooth-round-robin": smooth_round_robin,
}
