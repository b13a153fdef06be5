"""The pipeline: tier -> filters -> a profile's filters, scorers and picker -> failover order."""

from __future__ import annotations

import random
from operator import attrgetter
from typing import TYPE_CHECKING, Mapping, Sequence

from fleet_router.core import filters as F
from fleet_router.core.filters import FILTERS
from fleet_router.core.pickers import PICKERS
from fleet_router.core.prefix import BLOCK_BYTES, Prompt, conversation_key, prefix_blocks, prompt_text
from fleet_router.core.profiles import PROFILES, Profile
from fleet_router.core.scorers import SCORERS
from fleet_router.core.state import Decision, NoRoute, PoolState, RequestContext

if TYPE_CHECKING:
    from fleet_router.config import RouterConfig, Tier


def select_tier(tiers: Sequence["Tier"], headers: Mapping[str, str]) -> "Tier | None":
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


def tier_header_names(tiers: Sequence["Tier"]) -> dict[str, set[str]]:
    """Header name (lower-case) -> the values some tier accepts; anything else is a bad header."""
    out: dict[str, set[str]] = {}
    for t in tiers:
        for k, v in t.match.items():
            out.setdefault(k.lower(), set()).add(v)
    return out


def profile_for(config: "RouterConfig", policy: str) -> Profile:
    """The built-in profile of that name, else one the config defines (validated with the config)."""
    p = PROFILES.get(policy)
    if p is not None:
        return p
    for spec in getattr(config, "profiles", ()):
        if spec.name == policy:
            return Profile(spec.name, tuple(spec.scorers.items()), spec.picker, tuple(spec.filters))
    raise KeyError(policy)


def learns_prefixes(config: "RouterConfig") -> bool:
    """Whether some request on this config may be routed by a profile that reads the prompt or the
    pools' prefix memory (:meth:`Profile.reads_prompt`): the router's policy, a tier's, or — when
    any caller may set ``x-fleet-policy`` — every policy it accepts. Then every request's blocks are
    hashed and remembered where it went, whatever its own policy, so a tier or a request that
    switches to prefix-affinity finds the pools' caches known. Otherwise nothing ever reads them,
    and a request is routed without its prompt being read at all (:func:`route`'s ``learn``)."""
    names = {config.policy, *(t.policy for t in config.tiers if t.policy)}
    if any("policy" in may for may in config.auth.routing_headers.values()):
        names |= {*PROFILES, *(p.name for p in getattr(config, "profiles", ()))}
    return any(profile_for(config, n).reads_prompt() for n in names)


_NAME = attrgetter("name")


def _prefer_other_vendors(first: PoolState, rest: list[PoolState]) -> list[PoolState]:
    """Failover order: after the chosen pool, pools of another vendor or cloud first (a spot pool
    that vanished tends to take its neighbours with it)."""
    if not rest:
        return [first]
    home = (first.pool.vendor, first.pool.cloud)
    other, same = [], []
    for p in rest:
        (same if (p.pool.vendor, p.pool.cloud) == home else other).append(p)
    return [first, *other, *same]


def _reason(profile: Profile, ctx: RequestContext, first: PoolState, scores: Sequence[float],
            pools: Sequence[PoolState]) -> str:
    if not profile.scorers:
        return profile.name if profile.picker == "smooth-round-robin" else "weight"
    if max(scores) == min(scores):  # the scorers could not tell the pools apart: the tie-break chose
        return "affinity" if ctx.key is not None else "weight"
    if any(s in ("prefill", "prefix-cache") for s, _ in profile.scorers) and ctx.blocks:
        return f"{profile.name} ({first.prefixes.matched(ctx.blocks) / len(ctx.blocks):.0%} cached)"
    return profile.name


def route(config: "RouterConfig", states: Mapping[str, PoolState], model: str, headers: Mapping[str, str],
          prompt: Prompt | str | Mapping, now: float, rng: random.Random, policy_override: str | None = None,
          learn: bool = True) -> Decision:
    """Which pools to try for one request, in order. Raises :class:`NoRoute` with the HTTP status.

    ``prompt``: a :class:`Prompt`, a plain prompt's text, or the parsed OpenAI body (its prompt is
    then read only if needed). ``learn``: remember every request's blocks (:func:`learns_prefixes`
    of the config); False, and a profile that does not read the prompt leaves it unread and
    unhashed (the decision has no blocks: its dispatch teaches the pools' memory nothing)."""
    # The pipeline's own filters (serves the model, not ejected, in the tier and not saturated) in
    # one pass over the pools, not a list per step (issue 18: a short request's routing).
    serving = 0
    tier = select_tier(config.tiers, headers) if config.tiers else None
    weights = {b.pool: float(b.weight) for b in tier.backends} if tier else None
    primary: list[PoolState] = []
    live: list[PoolState] = []
    for s in states.values():
        if s.serves(model):
            serving += 1
            if s.available(now):
                live.append(s)
                if (weights is None or weights.get(s.name, 0) > 0) and not s.saturated():
                    primary.append(s)
    if not serving:
        raise NoRoute(404, f"The model `{model}` does not exist or is not served by this router.",
                      "model_not_found")
    if not live:
        raise NoRoute(503, f"Every pool serving `{model}` is failing right now; retry shortly.",
                      "no_healthy_backend")
    policy = policy_override or (tier.policy if tier and tier.policy else config.policy)
    profile = PROFILES.get(policy) or profile_for(config, policy)

    overflow_used = False
    if not primary and tier is not None:
        primary = F.overflow(tier.overflow, live)
        weights = None
        overflow_used = bool(primary)
    if not primary:
        # Everything in the tier is saturated or down: the least loaded of whatever serves it.
        primary = sorted(live, key=lambda s: (s.load(), s.name))
        weights = None
        overflow_used = tier is not None
    if weights is None:  # no tier, or its overflow: every candidate weighs the same
        weights = {s.name: 1.0 for s in primary}

    slo = tier.ttft_slo_ms / 1000 if tier is not None and tier.ttft_slo_ms is not None else None
    if learn or profile.reads_prompt():
        # Hashed whatever the policy when ``learn``: every request's blocks are remembered where it
        # went, so a tier or a request switching to prefix-affinity finds the pools' caches known.
        if isinstance(prompt, (str, bytes)):
            prompt = Prompt.of(prompt)
        elif not isinstance(prompt, Prompt):
            prompt = prompt_text(prompt)
        blocks = tuple(prefix_blocks(prompt, model))
        ctx = RequestContext(model, tier, weights, blocks, conversation_key(prompt, model),
                             prompt.key_end // BLOCK_BYTES, prompt.history_end // BLOCK_BYTES,
                             max(len(blocks), prompt.total // BLOCK_BYTES), now, slo)
    else:  # nothing on this config reads the prompt: not even extracted
        blocks = ()
        ctx = RequestContext(model, tier, weights, blocks, None, 0, 0, 0, now, slo)

    pools = primary
    for name in profile.filters:
        pools = FILTERS[name](ctx, pools) or pools
    if profile.scorers:
        scores = [0.0] * len(pools)
        for name, weight in profile.scorers:
            for i, s in enumerate(SCORERS[name](ctx, pools)):
                scores[i] += weight * min(1.0, max(0.0, s))
    else:
        scores = [1.0] * len(pools)
    ordered = PICKERS[profile.picker](ctx, pools, scores, rng)
    reason = _reason(profile, ctx, ordered[0], scores, pools)
    if len(ordered) < len(live):
        rest = [s for s in live if s not in ordered]
        rest.sort(key=lambda s: (s.load(), s.name))
        ordered = ordered + rest
    # (two pools or fewer: the other one is the failover whatever its vendor)
    attempts = ordered if len(ordered) <= 2 else _prefer_other_vendors(ordered[0], ordered[1:])
    # positional: a NamedTuple built from keywords costs twice as much
    return Decision(tier.name if tier else "none", policy, tuple(map(_NAME, attempts)),
                    "overflow" if overflow_used else reason, overflow_used, blocks, ctx.total_blocks)


def savings_rate(states: Mapping[str, PoolState], model: str, chosen: str) -> tuple[str, float]:
    """The vendor pair and the USD per million tokens saved (never below 0) by serving on ``chosen``
    rather than the priciest pool serving the model: a function of the pools' config and the
    models they serve alone, so a caller may keep it while those stay the same."""
    serving = [s for s in states.values() if s.serves(model)]
    baseline = max(serving, key=lambda s: s.pool.cost_per_million_tokens)
    pick = states[chosen]
    return (f"{baseline.pool.vendor}->{pick.pool.vendor}",
            max(0.0, baseline.pool.cost_per_million_tokens - pick.pool.cost_per_million_tokens))


def cost_savings(states: Mapping[str, PoolState], model: str, chosen: str, tokens: int) -> tuple[str, float]:
    """USD saved by serving ``tokens`` on ``chosen`` rather than the priciest pool serving the model."""
    pair, rate = savings_rate(states, model, chosen)
    return pair, rate * tokens / 1e6
