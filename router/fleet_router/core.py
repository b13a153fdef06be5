"""Routing as pure functions over plain data: no sockets, no framework types, no clocks read here.

The pipeline, in the endpoint picker's manner:

1. **tier** — the request's headers pick a tier (``X-Priority: high`` -> premium); no match, the
   default tier; no tiers at all, every pool at equal weight;
2. **filters** — pools that serve the model, are not ejected, and are not saturated;
   when a tier's pools are all saturated or down, its overflow pools; then any pool that serves it;
3. **policy** — orders the survivors: ``round-robin`` (smooth weighted), ``least-load``,
   ``prefix-affinity`` (the pool most likely to hold this prompt's prefix in its KV cache) or
   ``cost-aware`` (cheapest $ per million tokens first, weights as the tie-break);
4. the caller tries the first pool and fails over down the list, preferring another vendor.

Every decision is a function of :class:`PoolState` values, the request and a ``random.Random``,
so tests replay it exactly.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from fleet_router.config import Pool, RouterConfig, Tier

PREFIX_BLOCK_CHARS = 64
"""Prompt prefixes are hashed in blocks of this many characters (about 16 tokens)."""
PREFIX_BLOCKS_PER_POOL = 50_000
"""How many prefix blocks the router remembers per pool (LRU), roughly the pool's KV cache."""
AFFINITY_MIN_MATCH = 0.25
"""Affinity applies once some pool holds at least this share of the prompt's blocks; below it no
pool has a useful cache and the tier's weights spread the load."""
TTFT_DECAY_S = 2.0
"""How fast a pool's observed TTFT is forgotten without new samples, so a pool that was slow and
got no traffic for it is tried again."""
COST_SLO_HEADROOM = 0.5
"""cost-aware keeps a tier on a cheap pool while its recent mean TTFT is within this share of the
tier's TTFT target (a p95 target; under queueing the tail is about twice the mean)."""


@dataclass
class PoolState:
    """What the router knows about one pool right now. Mutated only by the HTTP layer."""

    pool: Pool
    in_flight: int = 0
    waiting: float = 0.0  # vllm:num_requests_waiting, scraped
    kv_usage: float = 0.0  # vllm:kv_cache_usage_perc, scraped (0..1)
    failures: int = 0
    ejected_until: float = 0.0
    discovered_models: frozenset[str] = frozenset()
    prefixes: OrderedDict = field(default_factory=OrderedDict)
    rr_current: float = 0.0  # smooth weighted round-robin state
    backlog: int = 0  # prompt blocks sent here, not cached, and not yet answered by a first byte
    ttft_s: float = 0.0  # observed time to first byte, exponentially weighted
    ttft_at: float = 0.0  # when ttft_s was last updated (monotonic seconds)

    @property
    def name(self) -> str:
        return self.pool.name

    def serves(self, model: str) -> bool:
        return model in self.pool.models or model in self.discovered_models

    def available(self, now: float) -> bool:
        return now >= self.ejected_until

    def load(self) -> float:
        """0 = idle, 1 = at max concurrency; queueing and a full KV cache push it past 1."""
        return (self.in_flight + self.waiting) / self.pool.max_concurrency + max(0.0, self.kv_usage - 0.9) * 5

    def saturated(self) -> bool:
        return self.load() >= 1.0

    def prefill_work(self, uncached_blocks: int) -> float:
        """Relative time until this request's first token here: the prompt blocks queued ahead of
        it plus its own uncached ones, over the pool's speed. Comparable across pools, not seconds."""
        return (self.backlog + uncached_blocks) / self.pool.tokens_per_second

    def recent_ttft(self, now: float) -> float:
        """Observed TTFT, decayed toward 0 while no request reports a new one."""
        if not self.ttft_at:
            return 0.0
        return self.ttft_s * math.exp(-max(0.0, now - self.ttft_at) / TTFT_DECAY_S)


@dataclass(frozen=True)
class Decision:
    tier: str
    policy: str
    attempts: tuple[str, ...]  # pool names, in the order to try
    reason: str  # why the first pool (affinity, weight, cost, overflow, ...)
    overflow: bool = False
    blocks: tuple[str, ...] = ()  # the prompt's prefix blocks, for the caller's cache bookkeeping


class NoRoute(Exception):
    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


# --- tiers ----------------------------------------------------------------------------------

def select_tier(tiers: Sequence[Tier], headers: Mapping[str, str]) -> Tier | None:
    """The first tier whose every header matches (names case-insensitive, values exact), else the
    default tier (no match), else None. ``headers`` keys must be lower-case."""
    default = None
    for t in tiers:
        if not t.match:
            default = default or t
            continue
        if all(headers.get(k.lower()) == v for k, v in t.match.items()):
            return t
    return default


def tier_header_names(tiers: Sequence[Tier]) -> dict[str, set[str]]:
    """Header name (lower-case) -> the values some tier accepts; anything else is a bad header."""
    out: dict[str, set[str]] = {}
    for t in tiers:
        for k, v in t.match.items():
            out.setdefault(k.lower(), set()).add(v)
    return out


# --- prefixes ---------------------------------------------------------------------------------

def prefix_blocks(prompt: str) -> list[str]:
    """Chained hashes of the prompt's full 64-character blocks: block i names the whole prefix."""
    out, h = [], hashlib.blake2b(digest_size=8)
    for i in range(0, len(prompt) - PREFIX_BLOCK_CHARS + 1, PREFIX_BLOCK_CHARS):
        h.update(prompt[i:i + PREFIX_BLOCK_CHARS].encode())
        out.append(h.hexdigest())
    return out


def cached_blocks(state: PoolState, blocks: Sequence[str]) -> int:
    """How many of the prompt's leading blocks this pool has (most likely) cached."""
    prefixes = state.prefixes
    n = 0
    for b in blocks:
        if b not in prefixes:
            break
        n += 1
    return n


def remember_prefix(state: PoolState, blocks: Iterable[str], capacity: int = PREFIX_BLOCKS_PER_POOL) -> None:
    for b in blocks:
        state.prefixes[b] = None
        state.prefixes.move_to_end(b)
    while len(state.prefixes) > capacity:
        state.prefixes.popitem(last=False)


# --- policies -----------------------------------------------------------------------------------

def _weighted_order(pools: list[PoolState], weights: Mapping[str, float], rng: random.Random) -> list[PoolState]:
    """A weighted random permutation (Efraimidis-Spirakis): the first pick is proportional to weight."""
    keyed = []
    for p in pools:
        w = weights.get(p.name, 0.0)
        key = rng.random() ** (1.0 / w) if w > 0 else -rng.random()
        keyed.append((key, p.name, p))
    return [p for _, _, p in sorted(keyed, key=lambda k: (-k[0], k[1]))]


def order_round_robin(pools, weights, rng, blocks, ctx):
    """Smooth weighted round-robin (nginx's): deterministic, proportional, interleaved."""
    total = sum(weights.get(p.name, 0.0) for p in pools) or 1.0
    for p in pools:
        p.rr_current += weights.get(p.name, 0.0)
    best = max(pools, key=lambda p: (p.rr_current, p.name))
    best.rr_current -= total
    rest = sorted((p for p in pools if p is not best), key=lambda p: -weights.get(p.name, 0.0))
    return [best, *rest], "round-robin"


def order_least_load(pools, weights, rng, blocks, ctx):
    ordered = sorted(pools, key=lambda p: (p.load() / max(weights.get(p.name, 0.0), 1e-6), p.name))
    return ordered, "least-load"


def order_prefix_affinity(pools, weights, rng, blocks, ctx):
    """The pool where this prompt's first token comes soonest: the prompt blocks it would have to
    compute (those not in its cache) plus the uncached blocks already queued there, over its speed.
    A pool holding the conversation wins until its queue costs more than recomputing elsewhere —
    affinity without piling every conversation that shares a system prompt onto one pool."""
    ordered = _weighted_order(pools, weights, rng)
    if not blocks:
        return ordered, "weight"
    cached = {p.name: cached_blocks(p, blocks) for p in pools}
    top = max(cached.values())
    if top < AFFINITY_MIN_MATCH * len(blocks):
        return ordered, "weight"
    rank = {p.name: i for i, p in enumerate(ordered)}  # ties go the tier's weights' way
    n = len(blocks)
    ordered = sorted(ordered, key=lambda p: (p.prefill_work(n - cached[p.name]), rank[p.name]))
    return ordered, f"prefix-affinity ({cached[ordered[0].name] / n:.0%} cached)"


def order_cost_aware(pools, weights, rng, blocks, ctx):
    """Cheapest $ per million tokens first — while that pool still answers within the tier's TTFT
    target; pools running slower than the target go to the back, fastest first."""
    ordered = sorted(_weighted_order(pools, weights, rng), key=lambda p: round(p.pool.cost_per_million_tokens, 6))
    slo_s, now = ctx
    if slo_s is None:
        return ordered, "cost"
    limit = slo_s * COST_SLO_HEADROOM
    ttft = {p.name: p.recent_ttft(now) for p in ordered}
    fast = [p for p in ordered if ttft[p.name] <= limit]
    slow = sorted((p for p in ordered if ttft[p.name] > limit), key=lambda p: ttft[p.name])
    return [*fast, *slow], "cost" if fast else "cost (every pool over the TTFT target)"


POLICY_ORDER = {
    "round-robin": order_round_robin,
    "least-load": order_least_load,
    "prefix-affinity": order_prefix_affinity,
    "cost-aware": order_cost_aware,
}


# --- the pipeline -------------------------------------------------------------------------------

def _prefer_other_vendors(first: PoolState, rest: list[PoolState]) -> list[PoolState]:
    """Failover order: after the chosen pool, pools of another vendor or cloud first (a spot pool
    that vanished tends to take its neighbours with it)."""
    other = [p for p in rest if (p.pool.vendor, p.pool.cloud) != (first.pool.vendor, first.pool.cloud)]
    same = [p for p in rest if p not in other]
    return [first, *other, *same]


def route(config: RouterConfig, states: Mapping[str, PoolState], model: str, headers: Mapping[str, str],
          prompt: str, now: float, rng: random.Random, policy_override: str | None = None) -> Decision:
    """Which pools to try for one request, in order. Raises :class:`NoRoute` with the HTTP status."""
    serving = [s for s in states.values() if s.serves(model)]
    if not serving:
        raise NoRoute(404, f"The model `{model}` does not exist or is not served by this router.",
                      "model_not_found")
    live = [s for s in serving if s.available(now)]
    if not live:
        raise NoRoute(503, f"Every pool serving `{model}` is failing right now; retry shortly.",
                      "no_healthy_backend")

    tier = select_tier(config.tiers, headers)
    weights = {b.pool: float(b.weight) for b in tier.backends} if tier else {s.name: 1.0 for s in serving}
    policy = policy_override or (tier.policy if tier and tier.policy else config.policy)
    tier_name = tier.name if tier else "none"

    primary = [s for s in live if s.name in weights and weights[s.name] > 0 and not s.saturated()]
    overflow_used = False
    if not primary and tier is not None:
        primary = [s for s in live if s.name in tier.overflow and not s.saturated()]
        weights = {s.name: 1.0 for s in primary}
        overflow_used = bool(primary)
    if not primary:
        # Everything in the tier is saturated or down: the least loaded of whatever serves it.
        primary = sorted(live, key=lambda s: (s.load(), s.name))
        weights = {s.name: 1.0 for s in primary}
        overflow_used = tier is not None

    # Hashed whatever the policy: every request's blocks are remembered where it went, so a tier
    # or a request switching to prefix-affinity finds the pools' caches already known.
    blocks = prefix_blocks(prompt)
    slo_s = tier.ttft_slo_ms / 1000 if tier is not None and tier.ttft_slo_ms is not None else None
    ordered, reason = POLICY_ORDER[policy](primary, weights, rng, blocks, (slo_s, now))
    rest = [s for s in live if s not in ordered]
    attempts = _prefer_other_vendors(ordered[0], ordered[1:] + sorted(rest, key=lambda s: (s.load(), s.name)))
    return Decision(tier=tier_name, policy=policy, attempts=tuple(s.name for s in attempts),
                    reason="overflow" if overflow_used else reason, overflow=overflow_used, blocks=tuple(blocks))


# --- passive health -------------------------------------------------------------------------------

def record_failure(state: PoolState, now: float, eject_after: int, eject_seconds: float) -> bool:
    """Count a failure; eject the pool for a while after ``eject_after`` in a row. True if ejected."""
    state.failures += 1
    if state.failures >= eject_after:
        state.ejected_until = now + eject_seconds * min(4, state.failures - eject_after + 1)
        return True
    return False


def record_success(state: PoolState) -> None:
    state.failures = 0
    state.ejected_until = 0.0


def record_ttft(state: PoolState, seconds: float, now: float, alpha: float = 0.2) -> None:
    """Fold one observed time-to-first-byte into the pool's recent TTFT."""
    prev = state.recent_ttft(now)
    state.ttft_s = seconds if not state.ttft_at else prev + alpha * (seconds - prev)
    state.ttft_at = now


# --- cost -------------------------------------------------------------------------------------

def cost_savings(states: Mapping[str, PoolState], model: str, chosen: str, tokens: int) -> tuple[str, float]:
    """USD saved by serving ``tokens`` on ``chosen`` rather than the priciest pool serving the model."""
    serving = [s for s in states.values() if s.serves(model)]
    baseline = max(serving, key=lambda s: s.pool.cost_per_million_tokens)
    pick = states[chosen]
    saved = (baseline.pool.cost_per_million_tokens - pick.pool.cost_per_million_tokens) * tokens / 1e6
    return f"{baseline.pool.vendor}->{pick.pool.vendor}", max(0.0, saved)


def prompt_text(body: Mapping) -> str:
    """The text whose prefix decides cache affinity: chat messages in order, or the prompt."""
    if isinstance(body.get("messages"), list):
        parts = []
        for m in body["messages"]:
            if isinstance(m, dict):
                c = m.get("content")
                if isinstance(c, list):
                    c = "".join(p.get("text", "") for p in c if isinstance(p, dict))
                parts.append(f"<{m.get('role', '')}>{c if isinstance(c, str) else ''}")
        return "".join(parts)
    p = body.get("prompt", body.get("input", ""))
    if isinstance(p, list):
        return "".join(x for x in p if isinstance(x, str))
    return p if isinstance(p, str) else ""
