"""The routing core's edges the first mutation run (``make mutation``) showed no test would notice:
which pools overflow may use, where bounded-load draws its line, how the TTFT-headroom and
tier-weight scorers grade pools. Plain data in, decisions out (test_core.py's fixtures)."""

from __future__ import annotations

import random

from fleet_router import core
from fleet_router.core import filters, scorers
from test_core import config, states


def _with_spare(**kw):
    """test_core's fleet plus an idle pool that is in no tier and no overflow list."""
    base = config().model_dump(mode="json")
    base["pools"].append({"name": "spare", "url": "http://s", "vendor": "nvidia", "cloud": "aws", "models": ["m"],
                          "cost_per_hour": 0.1, "tokens_per_second": 2500, "max_concurrency": 10})
    base.update(kw)
    return type(config())(**base)


def test_overflow_goes_to_the_tiers_overflow_pools_only_never_to_a_pool_outside_the_tier():
    cfg = _with_spare(policy="round-robin")
    st = states(cfg)
    st["nvidia"].in_flight = st["amd"].in_flight = 10  # the premium tier's backends are full
    firsts = {core.route(cfg, st, "m", {"x-priority": "high"}, f"q{i}", 0, random.Random(i)).attempts[0]
              for i in range(8)}
    assert firsts == {"tpu"}  # the idle, cheaper "spare" is not the tier's to use


def test_a_full_overflow_pool_is_skipped_for_the_least_loaded_of_all():
    cfg = _with_spare()
    st = states(cfg)
    st["nvidia"].in_flight = st["amd"].in_flight = st["tpu"].in_flight = 10
    d = core.route(cfg, st, "m", {"x-priority": "high"}, "", 0, random.Random(0))
    assert d.attempts[0] == "spare" and d.overflow


def _ctx(blocks: int = 0, slo_s: float | None = None, weights=None, now: float = 100.0) -> core.RequestContext:
    return core.RequestContext(model="m", tier=None, weights=weights or {}, blocks=tuple(range(blocks)), key=None,
                               key_blocks=0, history_blocks=0, total_blocks=blocks, now=now, ttft_slo_s=slo_s)


def test_bounded_load_drops_a_pool_past_its_share_and_keeps_one_exactly_at_it():
    cfg = config()
    st = states(cfg)
    a, b = st["nvidia"], st["amd"]
    b.pool = b.pool.model_copy(update={"tokens_per_second": a.pool.tokens_per_second})
    speed = a.pool.tokens_per_second
    # bound = 1.25 x (queued blocks + this request's) / total speed; a pool is busy past it.
    a.backlog, b.backlog = 6, 0
    assert filters.bounded_load(_ctx(blocks=3), [a, b]) == [b]  # 6/s > 1.25 x 9 / 2s
    a.backlog = 5
    assert filters.bounded_load(_ctx(blocks=3), [a, b]) == [a, b]  # 5/s == 1.25 x 8 / 2s: still in
    assert 5 / speed == 1.25 * 8 / (2 * speed)


def test_ttft_headroom_is_full_within_half_the_target_and_falls_with_the_overshoot():
    cfg = config()
    st = states(cfg)
    within, at, over = st["nvidia"], st["amd"], st["tpu"]
    now = 100.0
    for s, t in ((within, 0.1), (at, 0.25), (over, 1.0)):
        s.ttft_s, s.ttft_at = t, now  # observed just now: no decay
    # A 500 ms target: within 250 ms (COST_SLO_HEADROOM 0.5) scores 1; past it, 0.5 x 250 / ttft.
    assert scorers.ttft_headroom(_ctx(slo_s=0.5, now=now), [within, at, over]) == [1.0, 1.0, 0.125]
    assert scorers.ttft_headroom(_ctx(slo_s=None, now=now), [within, at, over]) == [1.0, 1.0, 1.0]


def test_tier_weight_grades_by_the_heaviest_and_gives_pools_outside_the_tier_nothing():
    st = list(states(config()).values())
    assert scorers.tier_weight(_ctx(weights={"nvidia": 90.0, "amd": 45.0}), st) == [1.0, 0.5, 0.0]
    assert scorers.tier_weight(_ctx(weights={}), st) == [0.0, 0.0, 0.0]
