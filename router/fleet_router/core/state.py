"""What the core knows and decides, as plain data: pool state, the request context, the decision,
and the hooks through which the I/O layer reports what happened (the only writers of pool state
besides discovery's scraped gauges)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, NamedTuple

from fleet_router.core.prefix import PrefixMemory

if TYPE_CHECKING:  # the core reads the config; it never imports it at run time (no cycle)
    from fleet_router.config import Failover, Pool, Tier

TTFT_DECAY_S = 2.0
"""How fast a pool's observed TTFT is forgotten without new samples, so a pool that was slow and
got no traffic for it is tried again."""


@dataclass(eq=False)
class PoolState:
    """What the router knows about one pool right now. Compared by identity (one per pool)."""

    pool: "Pool"
    in_flight: int = 0  # this replica's attempts at the pool
    waiting: float = 0.0  # vllm:num_requests_waiting, scraped
    kv_usage: float = 0.0  # vllm:kv_cache_usage_perc, scraped (0..1)
    running: float = 0.0  # vllm:num_requests_running, scraped: every replica's requests, not just ours
    reports_running: bool = False  # the last scrape had that gauge (see :meth:`requests`)
    sent_since_scrape: int = 0  # this replica's attempts dispatched after the last scrape, still in flight
    ended_since_scrape: int = 0  # this replica's attempts from before the last scrape that ended since
    scrape_epoch: int = 0  # counts the scrapes, so an attempt knows which side of the last one it began
    failures: int = 0
    ejected_until: float = 0.0
    discovered_models: frozenset[str] = frozenset()
    prefixes: PrefixMemory = field(default_factory=PrefixMemory)
    rr_current: float = 0.0  # smooth weighted round-robin state
    backlog: int = 0  # prompt blocks sent here, not cached, and not yet answered by a first byte
    ttft_s: float = 0.0  # observed time to first byte, exponentially weighted
    ttft_at: float = 0.0  # when ttft_s was last updated (monotonic seconds)
    #: The pool's name, read a dozen times per decision: an attribute, not a property. A state is
    #: kept per name (a reload swaps ``pool`` for the same name's new config only).
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.pool.name

    def serves(self, model: str) -> bool:
        return model in self.pool.models or model in self.discovered_models

    def available(self, now: float) -> bool:
        return now >= self.ejected_until

    def requests(self) -> float:
        """Requests at the pool from every router replica, running or queued: what the pool last
        reported (``vllm:num_requests_running`` + ``vllm:num_requests_waiting``, the same figures on
        every replica), plus what this replica sent since and minus what of its own ended since;
        never less than this replica's own in-flight. Behind N replicas that is the fleet's load,
        not the 1/N a replica sees of it. A pool that does not report its running requests: this
        replica's in-flight plus the pool's queue."""
        if not self.reports_running:
            return self.in_flight + self.waiting
        return max(float(self.in_flight),
                   self.running + self.waiting + self.sent_since_scrape - self.ended_since_scrape)

    def load(self) -> float:
        """0 = idle, 1 = at max concurrency (:meth:`requests`); queueing and a full KV cache push it past 1."""
        return self.requests() / self.pool.max_concurrency + max(0.0, self.kv_usage - 0.9) * 5

    def saturated(self) -> bool:
        return self.load() >= 1.0

    def prefill_work(self, uncached_blocks: float) -> float:
        """Relative time until a request's first token here: the prompt blocks queued ahead of it
        plus its own uncached ones, over the pool's speed. Comparable across pools, not seconds."""
        return (self.backlog + uncached_blocks) / self.pool.tokens_per_second

    def recent_ttft(self, now: float) -> float:
        """Observed TTFT, decayed toward 0 while no request reports a new one."""
        if not self.ttft_at:
            return 0.0
        return self.ttft_s * math.exp(-max(0.0, now - self.ttft_at) / TTFT_DECAY_S)


class RequestContext(NamedTuple):
    """Everything a filter, scorer or picker may read about the request (typed, no raw HTTP).
    Immutable; a NamedTuple rather than a frozen dataclass, which costs ~5x as much to build
    (one ``object.__setattr__`` per field) on every request."""

    model: str
    tier: "Tier | None"
    weights: Mapping[str, float]  # pool -> the tier's weight (1.0 each without tiers, on overflow)
    blocks: tuple[int, ...]  # the prompt's leading prefix blocks (hashed, at most MAX_PREFIX_BLOCKS)
    key: int | None  # the conversation's hash (None: shorter than a block)
    key_blocks: int  # blocks within the conversation's key (its opening); these three are not capped
    history_blocks: int  # blocks an earlier turn of this conversation already sent
    total_blocks: int  # the whole prompt, in blocks
    now: float
    ttft_slo_s: float | None


class Decision(NamedTuple):
    """Where a request goes (immutable; a NamedTuple for the reason RequestContext is)."""

    tier: str
    policy: str
    attempts: tuple[str, ...]  # pool names, in the order to try
    reason: str  # why the first pool (affinity, weight, cost, overflow, ...)
    overflow: bool = False
    blocks: tuple[int, ...] = ()  # the prompt's prefix blocks, for the dispatch hook
    total_blocks: int = 0  # the whole prompt in blocks, past the hashed ones (0: just those)


class NoRoute(Exception):
    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


# --- hooks: the I/O layer reports, the core updates its state ------------------------------------

@dataclass
class Dispatch:
    """One attempt on one pool, from :func:`on_dispatch` to :func:`on_done`."""

    state: PoolState
    uncached: int  # blocks this attempt added to the pool's backlog, until its first byte
    epoch: int = 0  # the pool's scrape_epoch when the attempt began


def on_dispatch(state: PoolState, decision: Decision) -> Dispatch:
    """A request leaves for ``state``'s pool. Its uncached blocks queue for prefill there until the
    first byte; its blocks are remembered now, not at the first byte, so the next turn of a
    conversation already follows (GAIE also updates its index after the pick, not in the scorer)."""
    blocks = decision.blocks
    matched = state.prefixes.matched(blocks)
    uncached = len(blocks) - matched
    if matched < len(blocks):  # past the hashed blocks, a pool that lacks them lacks the rest too
        uncached += max(0, decision.total_blocks - len(blocks))
    state.backlog += uncached
    state.prefixes.add(blocks)
    state.in_flight += 1
    state.sent_since_scrape += 1
    return Dispatch(state, uncached, state.scrape_epoch)


def on_first_byte(d: Dispatch, ttft_s: float | None, now: float) -> None:
    """The pool answered: its prefill of this prompt is done, and it is healthy. ``ttft_s`` None: the
    answer came whole (non-streaming), so it tells nothing of the time to the first token."""
    d.state.backlog -= d.uncached
    d.uncached = 0
    record_success(d.state)
    if ttft_s is not None:
        record_ttft(d.state, ttft_s, now)


def on_failure(d: Dispatch, now: float, failover: "Failover") -> bool:
    """The attempt failed before any byte reached the client. True if the pool is now ejected."""
    return record_failure(d.state, now, failover.eject_after_failures, failover.eject_seconds)


def on_done(d: Dispatch) -> None:
    """The attempt is over, however it ended (call exactly once, after the others)."""
    s = d.state
    s.in_flight -= 1
    s.backlog -= d.uncached
    d.uncached = 0
    if d.epoch == s.scrape_epoch:
        s.sent_since_scrape -= 1  # begun and ended since the last scrape: in no count
    else:
        s.ended_since_scrape += 1  # the last scrape counted it (as it would have on the pool)


def on_scrape(state: PoolState, waiting: float, kv_usage: float, running: float | None) -> None:
    """The pool's ``/metrics`` was read: its queue, its KV-cache use and, if it reports it, how many
    requests it runs (``running`` None: the gauge is absent, only this replica's in-flight counts)."""
    state.waiting, state.kv_usage = waiting, kv_usage
    state.running, state.reports_running = running or 0.0, running is not None
    state.scrape_epoch += 1
    state.sent_since_scrape = state.ended_since_scrape = 0


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
