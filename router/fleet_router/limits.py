"""Per-key limits that hold for the fleet: requests/s, tokens/min and spend budgets in USD.

Every replica asks one Redis (``store`` in the config) through two Lua scripts, so a key's limit is
the fleet's, not the replica count times it. A script runs atomically on the server and reads the
clock there (``TIME``), so replicas whose clocks disagree still share one timeline.

**Algorithm: GCRA** (the generic cell rate algorithm, a token bucket written as one timestamp) for
requests/s and for tokens/min. Why GCRA and not a sliding window:

* one number per key and limit (the *theoretical arrival time*), O(1) work and memory, where a
  sliding-window log keeps one entry per request (tens of thousands for a busy key);
* exact at every instant: a fixed window lets 2x the limit through across a window edge, and the
  sliding-window *counter* approximation is off by up to the previous window's share;
* the same state answers what OpenAI's ``x-ratelimit-*`` headers report — remaining capacity and
  the time until the bucket is full again — and the ``Retry-After`` of a refusal, with no extra reads.

Tokens are known only when the answer is back, so a request is admitted while the key's token
bucket is not empty and its actual prompt + completion tokens are charged afterwards (a big answer
can leave the key in debt, which the next minutes repay) — as OpenAI's tokens/min limits behave.
Budgets are a USD counter per key and period (UTC day, UTC month, or total), checked at admission
and charged with each answer's cost (completion tokens x the pool's $ per million tokens), so a
key is stopped at its budget; requests already in flight when it is reached can overrun it by at
most their own cost.

**When Redis is unreachable** (an error or a call slower than ``store.timeout_s``) the replica
enforces the same limits on its own (per replica), sets ``fleet_router_limits_degraded`` to 1 and
logs ``limits_degraded`` once; it tries the store again every ``store.retry_s`` and on success
replays the spend it charged meanwhile (money spent is real), logs ``limits_restored`` and goes
back to the shared limits. ``store.on_unavailable: closed`` answers 503 to limited keys instead.
Keys without limits never touch the store: no limit, no Redis call, no added latency.

Metrics are this replica's own (counters of its own refusals and store errors, a 0/1 gauge), so
``sum()`` over replicas in Prometheus is the fleet's; fleet-wide state from Redis is never exported
per replica (it would be counted once per replica).
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import math
import time
from dataclasses import dataclass, field

import orjson

from fleet_router.config import Limits, Store

log = logging.getLogger("fleet_router")

TOKEN_WINDOW_S = 60.0
"""Tokens per *minute*: the token bucket holds one minute's worth."""

# KEYS: request TAT, token TAT, spend.  ARGV: request emission interval (us, 0 = no limit), request
# burst tolerance (us), token emission interval (us, 0 = no limit), token window (us), budget
# (USD, negative = none).  Returns {reason, wait_us, request_tat - now, token_tat - now, spent}.
# Times are integers of microseconds (Lua numbers are doubles: exact below 2^53, ~285 years of us);
# string.format('%.0f') writes them back without the 14-digit rounding of Lua's tostring.
ADMIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ri, rtol = tonumber(ARGV[1]), tonumber(ARGV[2])
local ti, twin = tonumber(ARGV[3]), tonumber(ARGV[4])
local budget = tonumber(ARGV[5])
local rtat, ttat, spent = now, now, 0
if ri > 0 then rtat = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now) end
if ti > 0 then ttat = math.max(tonumber(redis.call('GET', KEYS[2]) or 0), now) end
if budget >= 0 then spent = tonumber(redis.call('GET', KEYS[3]) or 0) end
local reason, wait = '', 0
if budget >= 0 and spent >= budget then
  reason = 'budget'
elseif ri > 0 and rtat - now > rtol then
  reason, wait = 'requests', rtat - now - rtol
elseif ti > 0 and ttat - now > twin - ti then
  reason, wait = 'tokens', ttat - now - twin + ti
elseif ri > 0 then
  rtat = rtat + ri
  redis.call('SET', KEYS[1], string.format('%.0f', rtat), 'PX', math.ceil((rtat - now) / 1000) + 1)
end
return {reason, wait, rtat - now, ttat - now, tostring(spent)}
"""

# KEYS: token TAT, spend.  ARGV: token cost (us = tokens x emission interval, 0 = none), USD
# (0 = none), seconds the spend counter lives (0 = for ever).
SETTLE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost, usd, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if cost > 0 then
  local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now) + cost
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
if usd > 0 then
  redis.call('INCRBYFLOAT', KEYS[2], ARGV[2])
  if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
end
return 1
"""


@dataclass(frozen=True)
class KeyPolicy:
    """The limits that apply to one key, resolved from the defaults and its own entry."""

    rps: float | None
    burst: int
    tpm: int | None
    budget_usd: float | None
    period: str

    @property
    def request_interval_us(self) -> int:
        return round(1e6 / self.rps) if self.rps else 0

    @property
    def token_interval_us(self) -> float:
        return TOKEN_WINDOW_S * 1e6 / self.tpm if self.tpm else 0.0


def resolve(limits: Limits, key: str) -> KeyPolicy | None:
    """``key``'s limits, or None when it has none (then nothing is counted for it)."""
    own = limits.keys.get(key)
    rps = own.rate_limit_rps if own and own.rate_limit_rps is not None else limits.rate_limit_rps
    burst = own.rate_limit_burst if own and own.rate_limit_burst is not None else limits.rate_limit_burst
    tpm = own.tokens_per_minute if own and own.tokens_per_minute is not None else limits.tokens_per_minute
    budget = own.budget_usd if own and own.budget_usd is not None else limits.budget_usd
    if rps is None and tpm is None and budget is None:
        return None
    return KeyPolicy(rps=rps, burst=burst or max(1, int(rps * 2)) if rps else 0, tpm=tpm, budget_usd=budget,
                     period=limits.budget_period)


def period_id(period: str, now: float) -> tuple[str, float]:
    """The budget period ``now`` falls in (part of the Redis key) and the seconds until it ends."""
    if period == "total":
        return "total", math.inf
    tm = time.gmtime(now)
    if period == "day":
        start = calendar.timegm((tm.tm_year, tm.tm_mon, tm.tm_mday, 0, 0, 0))
        return time.strftime("%Y-%m-%d", tm), start + 86400 - now
    year, month = (tm.tm_year + 1, 1) if tm.tm_mon == 12 else (tm.tm_year, tm.tm_mon + 1)
    return time.strftime("%Y-%m", tm), calendar.timegm((year, month, 1, 0, 0, 0)) - now


def duration(seconds: float) -> str:
    """A duration as OpenAI's ``x-ratelimit-reset-*`` headers write it ("12ms", "1s", "6m0s")."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    m, s = divmod(round(seconds), 60)
    if m < 60:
        return f"{m}m{s}s"
    h, m = divmod(m, 60)
    return f"{h}h{m}m{s}s"


@dataclass
class Verdict:
    allowed: bool
    reason: str = ""  # requests | tokens | budget | store_unavailable
    retry_after: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    policy: KeyPolicy | None = None


def _verdict(p: KeyPolicy, reason: str, wait_us: float, rtat_us: float, ttat_us: float, spent: float,
             budget_reset_s: float) -> Verdict:
    """Headers as OpenAI names them (platform.openai.com/docs/guides/rate-limits, "Rate limits in
    headers": x-ratelimit-{limit,remaining,reset}-{requests,tokens}; reset is the time until the
    limit is back to its initial state, written "1s", "6m0s"). The budget follows the same pattern
    (x-ratelimit-*-budget, in USD): OpenAI has no budget header to copy."""
    h: dict[str, str] = {}
    if p.rps:
        interval = p.request_interval_us
        tolerance = (p.burst - 1) * interval
        remaining = max(0, min(p.burst, math.floor((tolerance - rtat_us) / interval) + 1))
        h["x-ratelimit-limit-requests"] = str(p.burst)
        h["x-ratelimit-remaining-requests"] = str(remaining)
        h["x-ratelimit-reset-requests"] = duration(rtat_us / 1e6)
    if p.tpm:
        remaining = max(0, math.floor((TOKEN_WINDOW_S * 1e6 - ttat_us) / p.token_interval_us))
        h["x-ratelimit-limit-tokens"] = str(p.tpm)
        h["x-ratelimit-remaining-tokens"] = str(min(p.tpm, remaining))
        h["x-ratelimit-reset-tokens"] = duration(ttat_us / 1e6)
    if p.budget_usd is not None:
        h["x-ratelimit-limit-budget"] = f"{p.budget_usd:.6f}"
        h["x-ratelimit-remaining-budget"] = f"{max(0.0, p.budget_usd - spent):.6f}"
        if math.isfinite(budget_reset_s):
            h["x-ratelimit-reset-budget"] = duration(budget_reset_s)
    retry = budget_reset_s if reason == "budget" else wait_us / 1e6
    return Verdict(allowed=not reason, reason=reason, retry_after=retry, headers=h, policy=p)


class LocalLimits:
    """The same GCRA and budget counters in this process: the limits while the store is away, and
    all the limits when no store is configured (a single replica)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.request_tat: dict[str, float] = {}
        self.token_tat: dict[str, float] = {}
        self.spent: dict[tuple[str, str], float] = {}

    def admit(self, key: str, p: KeyPolicy, period: str, base_spent: float = 0.0) -> tuple:
        now = self.clock() * 1e6
        rtat = max(self.request_tat.get(key, 0.0), now) if p.rps else now
        ttat = max(self.token_tat.get(key, 0.0), now) if p.tpm else now
        spent = base_spent + self.spent.get((key, period), 0.0)
        reason, wait = "", 0.0
        ri, tolerance = p.request_interval_us, (p.burst - 1) * p.request_interval_us
        if p.budget_usd is not None and spent >= p.budget_usd:
            reason = "budget"
        elif p.rps and rtat - now > tolerance:
            reason, wait = "requests", rtat - now - tolerance
        elif p.tpm and ttat - now > TOKEN_WINDOW_S * 1e6 - p.token_interval_us:
            reason, wait = "tokens", ttat - now - TOKEN_WINDOW_S * 1e6 + p.token_interval_us
        elif p.rps:
            rtat += ri
            self.request_tat[key] = rtat
        if len(self.request_tat) > 100_000:  # bounded: a flood of keys cannot grow it for ever
            self._forget(now)
        return reason, wait, rtat - now, ttat - now, spent

    def settle(self, key: str, p: KeyPolicy, period: str, tokens: int, usd: float) -> None:
        now = self.clock() * 1e6
        if p.tpm and tokens:
            self.token_tat[key] = max(self.token_tat.get(key, 0.0), now) + tokens * p.token_interval_us
        if usd:
            self.spent[(key, period)] = self.spent.get((key, period), 0.0) + usd

    def _forget(self, now: float) -> None:
        for d in (self.request_tat, self.token_tat):
            for k in [k for k, tat in d.items() if tat < now]:
                del d[k]


class Limiter:
    """Admits or refuses a request for a key, and charges its tokens and cost once answered."""

    def __init__(self, limits: Limits, store: Store | None, metrics, *, clock=time.time):
        self.limits = limits
        self.store_config = store
        self.metrics = metrics
        self.clock = clock
        self.local = LocalLimits()
        self.redis = None
        self._admit = self._settle = None
        self.degraded = False
        self._probe: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._known_spent: dict[tuple[str, str], float] = {}  # last fleet spend read from the store
        self._pending: dict[tuple[str, str], float] = {}  # spend charged locally while degraded
        self._policies: dict[str, KeyPolicy | None] = {}
        self._period_cache: dict[str, tuple[str, float, float]] = {}  # period -> (id, from, until)
        metrics.limits_degraded.set(value=0)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.store_config is None:
            return
        import redis.asyncio as aioredis  # only when a store is configured
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as StoreConnectionError

        s = self.store_config
        # One immediate retry on a connection error (a pooled connection the server closed, e.g.
        # after a restart); none on a timeout: a slow store is the degraded case, and redis-py's
        # default (3 retries with backoff) would make each request wait 4 x the timeout.
        self.redis = aioredis.Redis.from_url(
            s.url, password=s.load_password(), socket_timeout=s.timeout_s, socket_connect_timeout=s.timeout_s,
            retry=Retry(NoBackoff(), 1, (StoreConnectionError,)), health_check_interval=0)
        self._admit = self.redis.register_script(ADMIT_LUA)
        self._settle = self.redis.register_script(SETTLE_LUA)
        try:
            await asyncio.wait_for(self.redis.ping(), s.timeout_s * 4)
        except Exception as e:  # noqa: BLE001 - any failure to reach the store means degraded
            self._degrade(e)

    async def close(self) -> None:
        if self._probe:
            self._probe.cancel()
        for t in list(self._tasks):
            t.cancel()
        if self.redis is not None:
            await self.redis.aclose()

    def update(self, limits: Limits) -> None:
        """A reloaded config: new limits apply to the next request (the store config is fixed at start)."""
        self.limits = limits
        self._policies.clear()

    # --- the API the server calls -----------------------------------------------------------------

    def policy(self, key: str) -> KeyPolicy | None:
        try:
            return self._policies[key]
        except KeyError:
            if len(self._policies) >= 4096:
                self._policies.clear()
            p = self._policies[key] = resolve(self.limits, key)
            return p

    async def admit(self, key: str) -> Verdict | None:
        """None when ``key`` has no limits; else whether it may go on, with its headers."""
        p = self.policy(key)
        if p is None:
            return None
        period, reset_s = self._period_of(p.period, self.clock())
        if self.redis is not None and not self.degraded:
            try:
                reason, wait, rtat, ttat, spent = await self._admit(
                    keys=self._keys(key, period),
                    args=[p.request_interval_us, (p.burst - 1) * p.request_interval_us if p.rps else 0,
                          repr(p.token_interval_us), int(TOKEN_WINDOW_S * 1e6),
                          repr(p.budget_usd) if p.budget_usd is not None else -1])
                spent = float(spent)
                self._known_spent[(key, period)] = spent
                v = _verdict(p, reason.decode() if isinstance(reason, bytes) else reason, wait, rtat, ttat, spent,
                             reset_s)
                return self._count(v)
            except Exception as e:  # noqa: BLE001 - the store failing must not fail the request
                self._degrade(e)
        if self.redis is not None and self.store_config.on_unavailable == "closed":
            return self._count(Verdict(allowed=False, reason="store_unavailable",
                                       retry_after=self.store_config.retry_s, policy=p))
        base = self._known_spent.get((key, period), 0.0)
        return self._count(_verdict(p, *self.local.admit(key, p, period, base), reset_s))

    def charge(self, key: str, policy: KeyPolicy | None, tokens: int, usd: float) -> None:
        """Charge an answered request (tokens: prompt + completion; usd: its cost). Returns at once;
        the store is updated in the background."""
        if policy is None or (not tokens and not usd):
            return
        tokens = tokens if policy.tpm else 0
        usd = usd if policy.budget_usd is not None else 0.0
        if not tokens and not usd:
            return
        period, _ = self._period_of(policy.period, self.clock())
        if self.redis is None or self.degraded:
            self.local.settle(key, policy, period, tokens, usd)
            if self.redis is not None and usd:
                self._pending[(key, period)] = self._pending.get((key, period), 0.0) + usd
            return
        self._spawn(self._charge(key, policy, period, tokens, usd))

    def _period_of(self, period: str, now: float) -> tuple[str, float]:
        """:func:`period_id`, remembered until the period ends (calendar arithmetic per request
        cost more than the rest of admission)."""
        c = self._period_cache.get(period)
        if c is not None and c[1] <= now < c[2]:
            return c[0], c[2] - now
        pid, left = period_id(period, now)
        start = -math.inf if period == "total" else now  # valid from now (a clock set back: computed again)
        self._period_cache[period] = (pid, start, now + left)
        return pid, left

    # --- store ------------------------------------------------------------------------------------

    @staticmethod
    def _keys(key: str, period: str) -> list[str]:
        # One hash tag per key: the three keys of a script share a slot, as Redis Cluster requires.
        tag = f"fleet-router:{{{key}}}"
        return [f"{tag}:requests", f"{tag}:tokens", f"{tag}:spend:{period}"]

    def _ttl(self, policy: KeyPolicy) -> int:
        # A spend counter outlives its period by one more (late answers), then goes.
        return {"day": 2 * 86400, "month": 62 * 86400}.get(policy.period, 0)

    async def _charge(self, key: str, policy: KeyPolicy, period: str, tokens: int, usd: float) -> None:
        keys = self._keys(key, period)
        try:
            await self._settle(keys=[keys[1], keys[2]],
                               args=[repr(tokens * policy.token_interval_us), repr(usd), self._ttl(policy)])
            self._known_spent[(key, period)] = self._known_spent.get((key, period), 0.0) + usd
        except Exception as e:  # noqa: BLE001
            self._degrade(e)
            self.local.settle(key, policy, period, tokens, usd)
            if usd:
                self._pending[(key, period)] = self._pending.get((key, period), 0.0) + usd

    def _spawn(self, coro) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _degrade(self, e: BaseException) -> None:
        self.metrics.limits_store_errors.inc(type(e).__name__)
        if self.degraded:
            return
        self.degraded = True
        self.metrics.limits_degraded.set(value=1)
        mode = "per-replica limits" if self.store_config.on_unavailable == "open" else "refusing limited keys (503)"
        log.warning(orjson.dumps({"event": "limits_degraded", "store": _redacted(self.store_config.url),
                                  "error": f"{type(e).__name__}: {e}", "now": mode}).decode())
        self.local = LocalLimits()  # start the local buckets afresh: shared state is not copied
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        s = self.store_config
        while self.degraded:
            await asyncio.sleep(s.retry_s)
            try:
                # Connections from before the outage are dead: start the pool afresh.
                await self.redis.connection_pool.disconnect()
                await self.redis.ping()
                # Replay the spend charged while away, so a budget counts every dollar.
                for (key, period), usd in list(self._pending.items()):
                    p = self.policy(key)
                    await self._settle(keys=self._keys(key, period)[1:],
                                       args=[0, repr(usd), self._ttl(p) if p else 0])
                    del self._pending[(key, period)]
            except Exception as e:  # noqa: BLE001 - still away; try again later
                self.metrics.limits_store_errors.inc(type(e).__name__)
                continue
            self.degraded = False
            self.metrics.limits_degraded.set(value=0)
            log.warning(orjson.dumps({"event": "limits_restored", "store": _redacted(s.url)}).decode())

    def _count(self, v: Verdict) -> Verdict:
        if not v.allowed:
            self.metrics.rate_limited.inc(v.reason)
        return v


def _redacted(url: str) -> str:
    """The store's URL without a password in it."""
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url
