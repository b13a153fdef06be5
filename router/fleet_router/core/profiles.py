"""Profiles: a routing policy is a name for filters, weighted scorers and one picker — data, not
code. This registry is the one list of policy names: the router config (``fleet_router.config``)
and the fleet spec (``fleet.spec``) accept exactly these, plus the profiles a router config
defines itself. A new policy is an entry here (or in the config) plus, at most, one scorer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from fleet_router.core.filters import FILTERS
from fleet_router.core.pickers import PICKERS
from fleet_router.core.scorers import SCORERS


@dataclass(frozen=True)
class Profile:
    name: str
    scorers: tuple[tuple[str, float], ...] = ()  # (scorer, weight); scores in [0, 1] are summed
    picker: str = "max-score"
    filters: tuple[str, ...] = ()  # after the pipeline's own (model, health, tier, saturation)
    summary: str = ""

    def __post_init__(self):
        problems = check(self.scorers, self.picker, self.filters)
        if problems:
            raise ValueError(f"profile {self.name!r}: " + "; ".join(problems))

    def reads_prompt(self) -> bool:
        """Whether a decision of this profile may depend on the prompt (its blocks, its conversation
        key) or on what the pools were sent (prefix memory, prefill backlog). Only the smooth
        round-robin picker alone does not: it reads the tier's weights and its own counter, and
        ``_reason`` names it without looking. Any scorer or filter is taken to read it (``prefill``,
        ``prefix-cache``, ``affinity`` and ``bounded-load`` do; ties of the others go to the key)."""
        return bool(self.scorers or self.filters) or self.picker != "smooth-round-robin"


def check(scorers, picker: str, filters) -> list[str]:
    """What is wrong with a profile's parts (empty: nothing), in words a config author can act on."""
    out = []
    for name, weight in (scorers.items() if isinstance(scorers, Mapping) else scorers):
        if name not in SCORERS:
            out.append(f"unknown scorer {name!r} (known: {', '.join(SCORERS)})")
        elif not weight >= 0:
            out.append(f"scorer {name!r} has a negative weight")
    if picker not in PICKERS:
        out.append(f"unknown picker {picker!r} (known: {', '.join(PICKERS)})")
    for f in filters:
        if f not in FILTERS:
            out.append(f"unknown filter {f!r} (known: {', '.join(FILTERS)})")
    return out


BUILTIN: tuple[Profile, ...] = (
    Profile("round-robin", (), "smooth-round-robin",
            summary="smooth weighted round-robin over the tier's weights"),
    Profile("least-load", (("load", 1.0),),
            summary="the pool with the most room; ties by affinity"),
    Profile("prefix-affinity", (("prefill", 1.0),),
            summary="the pool where the first token comes soonest given what it has cached; "
                    "ties (no useful cache) by the conversation's rendezvous home"),
    Profile("cost-aware", (("ttft-headroom", 10.0), ("cost", 1.0)),
            summary="the cheapest $/Mtok among pools within the tier's TTFT target, then the fastest"),
)
PROFILES: dict[str, Profile] = {p.name: p for p in BUILTIN}
POLICY_NAMES: tuple[str, ...] = tuple(PROFILES)
"""The policy names the router config and the fleet spec accept (in this order)."""
