"""Routing as parts over plain data — no sockets, no framework types, no clocks read here.

The pipeline, in the manner of the Gateway API Inference Extension's scheduler:

1. **tier** — the request's headers pick a tier (``X-Priority: high`` -> premium); no match, the
   default tier; no tiers at all, every pool at equal weight;
2. **filters** (:mod:`.filters`) — pools that serve the model, are not ejected, have a weight in
   the tier and are not saturated; else the tier's overflow pools; else any pool that serves it;
3. a **profile** (:mod:`.profiles`: policy name -> its filters, weighted **scorers** and one
   **picker**) orders the survivors: each scorer (:mod:`.scorers`) rates every pool in [0, 1],
   the weighted sum goes to the picker (:mod:`.pickers`: max-score, weighted random, smooth
   round-robin); round-robin is that picker with no scorers;
4. the caller tries the first pool and fails over down the list, preferring another vendor,
   and reports back through the hooks (:func:`on_dispatch`, :func:`on_first_byte`,
   :func:`on_failure`, :func:`on_done`; discovery's :func:`on_scrape`) — the core owns every
   change to its state.

Every decision is a function of :class:`PoolState` values, the request and a ``random.Random``,
so tests replay it exactly. Prefix hashing and the prompt's bytes are in :mod:`.prefix`.
This package's names are the façade the server and the simulator use.
"""

from fleet_router.core.filters import BOUNDED_LOAD_C, FILTERS
from fleet_router.core.pickers import PICKERS
from fleet_router.core.pipeline import (cost_savings, learns_prefixes, profile_for, route, savings_rate,
                                        select_tier, tier_header_names)
from fleet_router.core.prefix import (BLOCK_BYTES, BLOCK_TOKENS, CHARS_PER_TOKEN, MAX_PREFIX_BLOCKS, PREFIX_BYTES_LIMIT,
                                      PREFIX_TOKENS_PER_POOL, PrefixMemory, Prompt, conversation_key,
                                      prefix_blocks, prompt_text)
from fleet_router.core.profiles import POLICY_NAMES, PROFILES, Profile
from fleet_router.core.scorers import AFFINITY_MIN_MATCH, COST_SLO_HEADROOM, SCORERS, rendezvous
from fleet_router.core.state import (TTFT_DECAY_S, Decision, Dispatch, NoRoute, PoolState, RequestContext,
                                     on_dispatch, on_done, on_failure, on_first_byte, on_scrape, record_failure,
                                     record_success, record_ttft)

POLICY_ORDER = PROFILES
"""Policy name -> profile (the server checks ``x-fleet-policy`` against it)."""
PREFIX_BLOCK_CHARS = BLOCK_BYTES


def cached_blocks(state: PoolState, blocks) -> int:
    """How many of the prompt's leading blocks this pool has (most likely) cached."""
    return state.prefixes.matched(blocks)


def remember_prefix(state: PoolState, blocks) -> None:
    state.prefixes.add(blocks)
