"""Per-key limits (fleet_router.limits) against a real Redis: several Limiter objects sharing one
store are several replicas; the e2e tests (test_limits_e2e.py) do the same with router processes."""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import logging
import time

import pytest

from fleet_router.config import Limits, Store
from fleet_router.limits import Limiter, duration, period_id, resolve
from fleet_router.metrics import RouterMetrics
from redisproc import redis_server  # noqa: F401 - fixture

KEY = hashlib.sha256(b"sk-a").hexdigest()
OTHER = hashlib.sha256(b"sk-b").hexdigest()


def run(coro, timeout: float = 30.0):
    # Its own loop, never installed as the thread's (see test_upstream.run).
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        loop.close()


def store(redis, **kw) -> Store:
    return Store(url=redis.url, password_file=redis.password_file, **{"retry_s": 0.2, **kw})


async def replicas(n: int, limits: Limits, st: Store | None) -> list[Limiter]:
    out = []
    for _ in range(n):
        lim = Limiter(limits, st, RouterMetrics())
        await lim.start()
        out.append(lim)
    return out


async def settle(limiters) -> None:
    """Wait for the background charges to reach the store (bounded)."""
    deadline = time.monotonic() + 5
    while any(lim._tasks for lim in limiters) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def test_no_limit_unless_configured_and_no_store_call_for_it(redis_server):
    async def go():
        [lim] = await replicas(1, Limits(keys={OTHER: {"rate_limit_rps": 1000}}), store(redis_server))
        verdicts = [await lim.admit(KEY) for _ in range(1000)]
        keys_before = redis_server.dbsize()
        limited = await lim.admit(OTHER)
        await lim.close()
        return verdicts, keys_before, limited, lim
    verdicts, keys_before, limited, lim = run(go())
    assert verdicts == [None] * 1000 and keys_before == 0, "a key without limits is never counted"
    assert limited.allowed and redis_server.dbsize() == 1, "a key with limits is counted in the store"
    assert not lim.metrics.rate_limited.values and lim.metrics.limits_degraded.values[()] == 0


def test_three_replicas_share_one_request_rate(redis_server):
    rate, burst = 20.0, 4

    async def go():
        lims = await replicas(3, Limits(rate_limit_rps=rate, rate_limit_burst=burst), store(redis_server))
        allowed, t0 = 0, time.monotonic()
        i = 0
        while time.monotonic() - t0 < 2.5:
            v = await lims[i % 3].admit(KEY)
            allowed += v.allowed
            i += 1
            await asyncio.sleep(0.002)  # several times the limit offered, spread over the replicas
        elapsed = time.monotonic() - t0
        for lim in lims:
            await lim.close()
        return allowed, elapsed, i
    allowed, elapsed, offered = run(go())
    expected = burst + rate * elapsed
    assert offered > 2 * expected, "the load must exceed the limit for the test to mean anything"
    assert abs(allowed - expected) <= 0.1 * expected, (allowed, expected)


def test_a_refusal_says_when_to_retry_and_headers_follow_openai(redis_server):
    async def go():
        [a, b] = await replicas(2, Limits(rate_limit_rps=1, rate_limit_burst=2, tokens_per_minute=1000),
                                store(redis_server))
        first = await a.admit(KEY)
        second = await b.admit(KEY)
        third = await a.admit(KEY)
        other = await b.admit(OTHER)
        for lim in (a, b):
            await lim.close()
        return first, second, third, other
    first, second, third, other = run(go())
    assert first.allowed and second.allowed and not third.allowed and other.allowed
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert third.reason == "requests" and 0.5 < third.retry_after <= 1.0
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    assert first.headers["x-ratelimit-remaining-tokens"] == "1000"
    assert set(first.headers) == {f"x-ratelimit-{w}-{what}" for w in ("limit", "remaining", "reset")
                                  for what in ("requests", "tokens")}
    assert other.headers["x-ratelimit-remaining-requests"] == "1", "each key has its own bucket"


def test_tokens_per_minute_are_charged_after_the_answer_across_replicas(redis_server):
    async def go():
        lims = await replicas(3, Limits(tokens_per_minute=1000), store(redis_server))
        seen = []
        for i in range(4):
            lim = lims[i % 3]
            v = await lim.admit(KEY)
            seen.append(v)
            if v.allowed:
                lim.charge(KEY, v.policy, 400, 0.0)
                await settle(lims)
        for lim in lims:
            await lim.close()
        return seen
    seen = run(go())
    assert [v.allowed for v in seen] == [True, True, True, False]
    # 1000, then 600 and 200 — plus what the bucket refilled (1000/min) in the milliseconds between.
    remaining = [int(v.headers["x-ratelimit-remaining-tokens"]) for v in seen[:3]]
    assert remaining[0] == 1000 and 600 <= remaining[1] <= 615 and 200 <= remaining[2] <= 230, remaining
    # 200 tokens of debt at 1000/min: the bucket has room again in ~12 s.
    assert seen[3].reason == "tokens" and 11 < seen[3].retry_after < 13


def test_a_budget_stops_a_key_at_its_dollar_limit_across_replicas(redis_server):
    budget, cost = 0.05, 0.004  # 12.5 answers' worth

    async def go():
        lims = await replicas(3, Limits(budget_usd=budget), store(redis_server))
        answered = 0
        for i in range(40):
            lim = lims[i % 3]
            v = await lim.admit(KEY)
            if not v.allowed:
                refused = v
                break
            lim.charge(KEY, v.policy, 10, cost)
            answered += 1
            await settle(lims)
        later = [await lim.admit(KEY) for lim in lims]
        fresh = await lims[0].admit(OTHER)
        for lim in lims:
            await lim.close()
        return answered, refused, later, fresh
    answered, refused, later, fresh = run(go())
    assert answered == 13  # 12 x $0.004 = $0.048 < $0.05; the 13th takes it to $0.052; then no more
    assert refused.reason == "budget" and refused.headers["x-ratelimit-remaining-budget"] == "0.000000"
    assert all(not v.allowed for v in later)
    assert fresh.allowed and fresh.headers["x-ratelimit-remaining-budget"] == f"{budget:.6f}"


def test_store_killed_then_back_degrades_to_per_replica_limits_and_resumes(redis_server, caplog):
    rate, burst = 20.0, 3

    async def go():
        lims = await replicas(3, Limits(rate_limit_rps=rate, rate_limit_burst=burst, budget_usd=1.0),
                              store(redis_server))

        async def offered(seconds: float):
            allowed, t0, i = 0, time.monotonic(), 0
            while time.monotonic() - t0 < seconds:
                v = await lims[i % 3].admit(KEY)
                assert v is not None
                if v.allowed:
                    allowed += 1
                    lims[i % 3].charge(KEY, v.policy, 1, 0.001)
                i += 1
                await asyncio.sleep(0.002)
            return (allowed - burst) / (time.monotonic() - t0)  # beyond the full bucket it starts with

        shared = await offered(1.5)
        redis_server.kill()
        degraded = await offered(1.5)
        gauges = [lim.metrics.limits_degraded.values[()] for lim in lims]
        redis_server.start()  # same port, empty: the shared limits start afresh
        deadline = time.monotonic() + 10
        while any(lim.degraded for lim in lims) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        back = [lim.metrics.limits_degraded.values[()] for lim in lims]
        resumed = await offered(1.5)
        await settle(lims)
        # The spend charged while the store was away was replayed into it.
        spent = max(lim._known_spent.get((KEY, period_id("month", time.time())[0]), 0) for lim in lims)
        probe = await lims[0].admit(KEY)
        for lim in lims:
            await lim.close()
        return shared, degraded, gauges, back, resumed, probe
    with caplog.at_level(logging.WARNING, logger="fleet_router"):
        shared, degraded, gauges, back, resumed, probe = run(go(), timeout=60)
    assert abs(shared - rate) <= 0.15 * rate
    # Each replica enforces the limit on its own while the store is away: 3 replicas, ~3x the rate.
    assert degraded > 1.5 * rate
    assert gauges == [1, 1, 1] and back == [0, 0, 0]
    assert abs(resumed - rate) <= 0.15 * rate
    events = [r.getMessage() for r in caplog.records]
    assert sum('"event":"limits_degraded"' in m for m in events) == 3
    assert sum('"event":"limits_restored"' in m for m in events) == 3
    assert "test-store-password" not in "".join(events)
    # Redis restarted empty, so all the spend it now holds was charged after the restart or replayed.
    remaining = float(probe.headers["x-ratelimit-remaining-budget"])
    assert remaining < 1.0 - 0.001 * degraded * 1.5 * 0.8


def test_fail_closed_refuses_limited_keys_only(redis_server):
    async def go():
        [lim] = await replicas(1, Limits(keys={KEY: {"rate_limit_rps": 100}}),
                               store(redis_server, on_unavailable="closed"))
        ok = await lim.admit(KEY)
        redis_server.kill()
        refused = await lim.admit(KEY)
        unlimited = await lim.admit(OTHER)
        await lim.close()
        return ok, refused, unlimited, lim
    ok, refused, unlimited, lim = run(go())
    assert ok.allowed
    assert not refused.allowed and refused.reason == "store_unavailable"
    assert unlimited is None
    assert lim.metrics.rate_limited.values[("store_unavailable",)] == 1


def test_per_key_limits_override_the_defaults():
    limits = Limits(rate_limit_rps=5, keys={KEY: {"rate_limit_rps": 50, "budget_usd": 2.0}})
    own, other = resolve(limits, KEY), resolve(limits, OTHER)
    assert (own.rps, own.burst, own.budget_usd) == (50, 100, 2.0)
    assert (other.rps, other.burst, other.budget_usd) == (5, 10, None)


def test_without_a_store_limits_hold_in_the_replica():
    async def go():
        [lim] = await replicas(1, Limits(rate_limit_rps=1, rate_limit_burst=3), None)
        return [(await lim.admit(KEY)).allowed for _ in range(5)]
    assert run(go()) == [True, True, True, False, False]


@pytest.mark.parametrize("seconds,text", [(0.012, "12ms"), (1, "1s"), (1.5, "1.5s"), (360, "6m0s"),
                                          (3725, "1h2m5s")])
def test_reset_durations_are_written_as_openai_does(seconds, text):
    assert duration(seconds) == text


def test_budget_periods_end_at_utc_midnight_and_month_end():
    t = 1_767_225_599.0  # 2025-12-31 23:59:59 UTC
    assert period_id("day", t) == ("2025-12-31", 1.0)
    assert period_id("month", t) == ("2025-12", 1.0)
    assert period_id("total", t)[0] == "total"


def test_a_daily_budget_spent_before_midnight_is_back_after_it():
    # The budget period is remembered between requests until it ends: the first request after
    # midnight (UTC) counts against the new day's budget, the spend before it stays in the old one.
    now = [calendar.timegm((2026, 12, 1, 23, 59, 58))]

    async def go():
        lim = Limiter(Limits(budget_usd=1.0, budget_period="day"), None, RouterMetrics(), clock=lambda: now[0])
        await lim.start()
        first = await lim.admit(KEY)
        lim.charge(KEY, first.policy, 10, 1.5)  # over the day's budget
        refused = await lim.admit(KEY)
        now[0] += 1.5  # 23:59:59.5: the same day
        still = await lim.admit(KEY)
        now[0] += 1.0  # 00:00:00.5 the next day
        next_day = await lim.admit(KEY)
        await lim.close()
        return first, refused, still, next_day

    first, refused, still, next_day = run(go())
    assert first.allowed and not refused.allowed and refused.reason == "budget"
    assert not still.allowed and 0 < still.retry_after <= 0.5
    assert next_day.allowed and next_day.headers["x-ratelimit-remaining-budget"] == "1.000000"
