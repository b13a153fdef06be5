"""The routing core, without sockets: tiers, filters, scorers, pickers, profiles, prefix hashing,
the hooks, failover order, ejection, cost. Plain data in, decisions out."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import xxhash

from fleet_router import core
from fleet_router.config import RouterConfig

SYSTEM = "You are a helpful assistant for the ACME fleet. " * 20


def config(**kw) -> RouterConfig:
    base = {
        "pools": [
            {"name": "nvidia", "url": "http://n", "vendor": "nvidia", "cloud": "aws", "models": ["m"],
             "cost_per_hour": 2.0, "tokens_per_second": 2500, "max_concurrency": 10},
            {"name": "amd", "url": "http://a", "vendor": "amd", "cloud": "azure", "models": ["m"],
             "cost_per_hour": 0.5, "tokens_per_second": 2100, "max_concurrency": 10},
            {"name": "tpu", "url": "http://t", "vendor": "google", "cloud": "gcp", "models": ["m", "small"],
             "cost_per_hour": 0.8, "tokens_per_second": 1600, "max_concurrency": 10},
        ],
        "tiers": [
            {"name": "premium", "match": {"X-Priority": "high"}, "overflow": ["tpu"],
             "backends": [{"pool": "nvidia", "weight": 90}, {"pool": "amd", "weight": 10}]},
            {"name": "standard", "match": {"X-Cost-Tier": "standard"}, "overflow": ["tpu"],
             "backends": [{"pool": "amd", "weight": 80}, {"pool": "nvidia", "weight": 20}]},
            {"name": "default", "backends": [{"pool": "nvidia", "weight": 50}, {"pool": "amd", "weight": 50}]},
        ],
    }
    base.update(kw)
    return RouterConfig.model_validate(base)


def states(cfg: RouterConfig) -> dict[str, core.PoolState]:
    return {p.name: core.PoolState(pool=p) for p in cfg.pools}


def chat(*contents: str, system: str = SYSTEM) -> core.Prompt:
    """A chat prompt: the system message, then user/assistant turns alternating."""
    msgs = [{"role": "system", "content": system}]
    msgs += [{"role": "user" if i % 2 == 0 else "assistant", "content": c} for i, c in enumerate(contents)]
    return core.prompt_text({"messages": msgs})


LONG_SYSTEM = SYSTEM + "A reference document follows. " + "lorem ipsum dolor sit amet " * 1000  # 28 KB


def conversation(i: int, turns: int, system: str = SYSTEM) -> list[core.Prompt]:
    """Turn t's prompt: the system prompt, then every earlier exchange, then the new question."""
    history, out = [], []
    for t in range(turns):
        history.append(f"conversation {i} asks question {t} in enough words to fill a block or two " * 2)
        out.append(chat(*history, system=system))
        history.append(f"the answer to question {t} of conversation {i}, also a few blocks long " * 2)
    return out


class Replica:
    """One router replica's core: its own pool state, learnt only from what it dispatched."""

    def __init__(self, cfg: RouterConfig, seed: int):
        self.cfg, self.states, self.rng = cfg, states(cfg), random.Random(seed)

    def send(self, prompt, headers=None, policy=None) -> str:
        d = core.route(self.cfg, self.states, "m", headers or {}, prompt, 0.0, self.rng, policy)
        attempt = core.on_dispatch(self.states[d.attempts[0]], d)
        core.on_first_byte(attempt, 0.01, 0.0)
        core.on_done(attempt)
        return d.attempts[0]


# --- tiers and the pipeline's filters -----------------------------------------------------------

def test_headers_pick_the_tier_and_fall_back_to_the_default():
    cfg = config()
    assert core.select_tier(cfg.tiers, {"x-priority": "high"}).name == "premium"
    assert core.select_tier(cfg.tiers, {"x-cost-tier": "standard"}).name == "standard"
    assert core.select_tier(cfg.tiers, {}).name == "default"


@pytest.mark.parametrize("policy", core.POLICY_NAMES)
def test_unknown_model_is_404_and_only_servers_of_the_model_are_candidates(policy):
    cfg = config(policy=policy)
    st = states(cfg)
    with pytest.raises(core.NoRoute) as e:
        core.route(cfg, st, "nope", {}, "", 0, random.Random(1))
    assert e.value.status == 404
    d = core.route(cfg, st, "small", {}, "", 0, random.Random(1))
    assert d.attempts == ("tpu",)


@pytest.mark.parametrize("tier,headers,expect", [
    ("premium", {"x-priority": "high"}, {"nvidia": 0.9, "amd": 0.1}),
    ("standard", {"x-cost-tier": "standard"}, {"amd": 0.8, "nvidia": 0.2}),
])
@pytest.mark.parametrize("prompt", ["unique prompt {i}", "a conversation long enough to have a key, number {i} " * 3])
def test_tier_weights_are_honoured_in_proportion(tier, headers, expect, prompt):
    """Short prompts by a weighted draw, longer ones by their rendezvous home: either way in
    proportion to the tier's weights while no pool holds a useful cache."""
    cfg, rng = config(policy="prefix-affinity"), random.Random(7)
    st = states(cfg)
    n = 4000
    first = Counter(core.route(cfg, st, "m", headers, prompt.format(i=i), 0, rng).attempts[0] for i in range(n))
    for pool, share in expect.items():
        assert first[pool] / n == pytest.approx(share, abs=0.03)
    assert first["tpu"] == 0


def test_round_robin_is_exactly_proportional():
    cfg = config(policy="round-robin")
    st = states(cfg)
    first = Counter(core.route(cfg, st, "m", {"x-priority": "high"}, "", 0, random.Random(0)).attempts[0]
                    for _ in range(100))
    assert first == {"nvidia": 90, "amd": 10}


def test_round_robin_interleaves_by_weight_and_fails_over_to_the_other_pool():
    # nginx's smooth weighted round-robin, worked by hand (ties to the greater name): 3:1 is
    # n, n, a, n — spread, not n, n, n, a — and each decision's failover order is the other tier
    # pool, then what else serves the model (the two-pool path).
    cfg = config(policy="round-robin", tiers=[
        {"name": "default", "backends": [{"pool": "nvidia", "weight": 75}, {"pool": "amd", "weight": 25}]}])
    st = states(cfg)
    seq = [core.route(cfg, st, "m", {}, "", 0, random.Random(0)).attempts for _ in range(8)]
    n, a = ("nvidia", "amd", "tpu"), ("amd", "nvidia", "tpu")
    assert seq == [n, n, a, n] * 2
    # 2:1:1 over three pools: n, t, a, n
    three = config(policy="round-robin", tiers=[{"name": "default", "backends": [
        {"pool": "nvidia", "weight": 50}, {"pool": "amd", "weight": 25}, {"pool": "tpu", "weight": 25}]}])
    st = states(three)
    firsts = [core.route(three, st, "m", {}, "", 0, random.Random(0)).attempts[0] for _ in range(8)]
    assert firsts == ["nvidia", "tpu", "amd", "nvidia"] * 2


def _placed(cfg: RouterConfig, learn: bool, headers=None, policy=None) -> list[tuple[str, str]]:
    """Eight long plain prompts sent round-robin on one replica, then each again as the next
    request's prefix through ``headers`` / ``policy``: (where round-robin sent it, where it went)."""
    st, rng = states(cfg), random.Random(3)
    prompts = [f"document {i} to summarise, long enough for several prefix blocks " * 8 for i in range(8)]

    def send(prompt, hdrs, pol):
        d = core.route(cfg, st, "m", hdrs, prompt, 0.0, rng, pol, learn)
        attempt = core.on_dispatch(st[d.attempts[0]], d)
        core.on_first_byte(attempt, 0.01, 0.0)
        core.on_done(attempt)
        return d.attempts[0]

    first = [send(p, {}, None) for p in prompts]
    return [(f, send(p + " and now the question", headers or {}, policy)) for f, p in zip(first, prompts)]


RR_AND_AFFINITY = [{"name": "affinity", "match": {"X-Priority": "high"}, "policy": "prefix-affinity",
                    "backends": [{"pool": "nvidia", "weight": 50}, {"pool": "amd", "weight": 50}]},
                   {"name": "default", "backends": [{"pool": "nvidia", "weight": 50}, {"pool": "amd", "weight": 50}]}]


@pytest.mark.parametrize("cfg,headers,policy", [
    (config(policy="round-robin", tiers=RR_AND_AFFINITY), {"x-priority": "high"}, None),
    (config(policy="round-robin", auth={"routing_headers": {"*": ["policy"]}}, tiers=RR_AND_AFFINITY[1:]), {},
     "prefix-affinity")], ids=["a prefix-affinity tier", "x-fleet-policy allowed"])
def test_round_robin_requests_teach_the_prefix_memory_when_another_policy_reads_it(cfg, headers, policy):
    """A round-robin request's blocks are remembered where it went whenever some request on the
    config may be routed by a policy that reads them (a tier's, or one a caller may ask for): the
    same prompt sent on by prefix-affinity follows it to that pool's cache. Without that memory it
    would go to its conversation's rendezvous home, which for some of the prompts is the other pool."""
    assert core.learns_prefixes(cfg)
    placed = _placed(cfg, core.learns_prefixes(cfg), headers, policy)
    assert all(rr == then for rr, then in placed)
    unlearnt = _placed(cfg, False, headers, policy)  # the memory left empty: each goes home instead
    assert any(rr != then for rr, then in unlearnt)


def test_round_robin_alone_routes_without_reading_the_prompt():
    """Where nothing reads the prompt (round-robin everywhere, no caller may pick a policy), it is
    not hashed, and every decision is the one the hashing router made."""
    cfg = config(policy="round-robin", profiles=[{"name": "rr-again", "picker": "smooth-round-robin"}],
                 tiers=[{"name": "default", "policy": "rr-again",
                         "backends": [{"pool": "nvidia", "weight": 75}, {"pool": "amd", "weight": 25}]}])
    assert not core.learns_prefixes(cfg)
    assert core.learns_prefixes(config(policy="round-robin", auth={"routing_headers": {"*": ["tier", "policy"]}}))
    assert core.learns_prefixes(config(policy="least-load"))  # its ties go to the conversation's key
    a, b = states(cfg), states(cfg)
    body = {"messages": [{"role": "user", "content": "a question long enough to fill a prefix block or two " * 3}]}
    lazy = [core.route(cfg, a, "m", {}, body, 0, random.Random(i), None, False) for i in range(12)]
    hashed = [core.route(cfg, b, "m", {}, core.prompt_text(body), 0, random.Random(i)) for i in range(12)]
    assert [d.attempts for d in lazy] == [d.attempts for d in hashed]
    assert [d.reason for d in lazy] == [d.reason for d in hashed] == ["rr-again"] * 12
    assert all(d.blocks == () for d in lazy) and all(d.blocks for d in hashed)


def test_round_robin_is_a_picker_with_no_scorers():
    """A config-defined profile of just the smooth round-robin picker routes exactly like the
    built-in round-robin: a new policy is configuration."""
    cfg = config(policy="round-robin", profiles=[{"name": "rr-again", "picker": "smooth-round-robin"}])
    a, b = states(cfg), states(cfg)
    seq_a = [core.route(cfg, a, "m", {"x-priority": "high"}, f"q{i}", 0, random.Random(i)).attempts[0]
             for i in range(40)]
    seq_b = [core.route(cfg, b, "m", {"x-priority": "high"}, f"q{i}", 0, random.Random(i), "rr-again").attempts[0]
             for i in range(40)]
    assert seq_a == seq_b and seq_a[:10].count("amd") == 1


def test_saturated_tier_overflows_to_its_overflow_pool():
    cfg = config()
    st = states(cfg)
    st["nvidia"].in_flight = st["amd"].in_flight = 10
    d = core.route(cfg, st, "m", {"x-priority": "high"}, "", 0, random.Random(0))
    assert d.attempts[0] == "tpu" and d.overflow and d.reason == "overflow"


def test_queued_requests_and_full_kv_cache_count_as_load():
    cfg = config()
    st = states(cfg)
    st["nvidia"].waiting = 10
    assert st["nvidia"].saturated()
    st["amd"].kv_usage = 0.99
    assert st["amd"].load() > st["tpu"].load()


# --- prefix affinity, consistent across replicas ---------------------------------------------------

def test_prefix_affinity_sends_a_repeated_prefix_where_it_is_cached():
    cfg = config(policy="prefix-affinity")
    st = states(cfg)
    core.remember_prefix(st["amd"], core.prefix_blocks(SYSTEM + "first question", "m"))
    picks = Counter(core.route(cfg, st, "m", {"x-priority": "high"}, SYSTEM + f"question {i}", 0,
                               random.Random(i)).attempts[0] for i in range(50))
    assert picks == {"amd": 50}  # despite premium's 90/10 weights toward nvidia


@pytest.mark.parametrize("policy,system", [("prefix-affinity", SYSTEM), ("least-load", SYSTEM),
                                           ("cost-aware", SYSTEM), ("prefix-affinity", LONG_SYSTEM)])
def test_the_same_conversation_goes_to_the_same_pool_from_two_independent_routers(policy, system):
    """Two replicas behind a random balancer, each knowing only what it sent: every turn of a
    conversation lands on one pool whichever replica routes it — also when the conversations
    share a system prompt longer than the blocks the router hashes (all alike to the hash)."""
    cfg = config(policy=policy)
    replicas = [Replica(cfg, 1), Replica(cfg, 2)]
    balancer = random.Random(3)
    homes = {}
    convs = [conversation(i, 6, system) for i in range(24)]
    for t in range(6):
        for i in range(24):
            pool = balancer.choice(replicas).send(convs[i][t])
            assert homes.setdefault(i, pool) == pool, f"conversation {i} moved at turn {t}"
    if policy != "cost-aware":  # which keeps everything on the cheapest pool while it is fast
        assert set(homes.values()) == {"nvidia", "amd"}  # conversations still spread


def test_a_replica_that_never_saw_a_conversation_sends_it_home():
    """A fresh replica (just scaled up) routes a conversation's next turn where the others sent it."""
    cfg = config(policy="prefix-affinity")
    old = Replica(cfg, 1)
    turns = [conversation(i, 3) for i in range(12)]
    before = {i: [old.send(t[0]), old.send(t[1])] for i, t in enumerate(turns)}
    new = Replica(cfg, 9)
    for i, t in enumerate(turns):
        assert new.send(t[2]) == before[i][1] == before[i][0]


def test_long_prompts_alike_in_their_hashed_blocks_still_go_home():
    """Conversations sharing a document longer than the 256 hashed blocks look alike to the hash;
    the one whose history is at home goes home over a short queue there, on any replica."""
    cfg = config(policy="prefix-affinity")
    conv = conversation(3, 4, LONG_SYSTEM)
    a = Replica(cfg, 1)
    home = a.send(conv[0])
    assert a.send(conv[1]) == home
    b = Replica(cfg, 2)
    for s in b.states.values():  # b sent the document everywhere (other conversations)
        core.remember_prefix(s, core.prefix_blocks(conv[2], "m"))
    b.states[home].backlog = 20
    assert core.route(cfg, b.states, "m", {}, conv[2], 0, random.Random(0)).attempts[0] == home


def test_a_busy_pool_stops_getting_affinity_traffic():
    cfg = config(policy="prefix-affinity")
    r = Replica(cfg, 1)
    conv = conversation(5, 4)
    home = r.send(conv[0])
    assert r.send(conv[1]) == home
    other = ({"nvidia", "amd"} - {home}).pop()
    uncached_elsewhere = len(core.prefix_blocks(conv[2], "m"))
    r.states[home].backlog = 3 * uncached_elsewhere  # a long queue of prefill work at home
    d = core.route(cfg, r.states, "m", {}, conv[2], 0, random.Random(0))
    assert d.attempts[0] == other
    r.states[home].backlog = 0  # the queue drained: the conversation goes home again
    assert core.route(cfg, r.states, "m", {}, conv[2], 0, random.Random(0)).attempts[0] == home


def test_affinity_keeps_a_conversation_home_until_its_queue_costs_more_than_recomputing():
    cfg = config(policy="prefix-affinity")
    st = states(cfg)
    system = "You are a helpful assistant for the ACME fleet. " * 40  # shared by every conversation
    history = system + "<user>turn one of conversation 7, with enough words to fill blocks " * 6
    core.remember_prefix(st["nvidia"], core.prefix_blocks(system, "m"))
    core.remember_prefix(st["amd"], core.prefix_blocks(history, "m"))  # this conversation lives on amd
    prompt = history + "<user>the next turn"
    uncached_elsewhere = len(core.prefix_blocks(prompt, "m")) - len(core.prefix_blocks(system, "m"))

    def first() -> core.Decision:
        return core.route(cfg, st, "m", {}, prompt, 0, random.Random(1))

    assert first().attempts[0] == "amd" and "cached" in first().reason
    st["amd"].backlog = uncached_elsewhere // 2  # a modest queue: still cheaper than recomputing
    assert first().attempts[0] == "amd"
    st["amd"].backlog = uncached_elsewhere * 3  # a long queue: the first token comes sooner on nvidia
    assert first().attempts[0] == "nvidia"


def test_affinity_spreads_conversations_sharing_a_system_prompt_by_queued_work():
    """Every pool caches the shared system prompt: new conversations do not pile onto one pool."""
    cfg = config(policy="prefix-affinity")
    st = states(cfg)
    for s in st.values():
        core.remember_prefix(s, core.prefix_blocks(chat(""), "m"))
    picks = []
    for i in range(30):
        d = core.route(cfg, st, "m", {}, chat(f"new conversation {i:03d} " * 8), 0, random.Random(i))
        picks.append(d.attempts[0])
        st[d.attempts[0]].backlog += 10  # its uncached turn queues there
    counts = Counter(picks)
    assert set(counts) == {"nvidia", "amd"}  # the default tier's pools, both used
    assert abs(counts["nvidia"] - counts["amd"]) <= 6


def test_a_consistent_hash_policy_is_configuration():
    """Rendezvous hashing with bounded load, written in the config from the registry's parts:
    a conversation keeps one pool on any replica until that pool's queue is well above the rest."""
    cfg = config(policy="ch", profiles=[{"name": "ch", "filters": ["bounded-load"], "scorers": {"affinity": 1}}])
    a, b = Replica(cfg, 1), Replica(cfg, 2)
    conv = conversation(2, 3)
    home = a.send(conv[0])
    assert b.send(conv[1]) == home == a.send(conv[2])
    b.states[home].backlog = 500
    moved = core.route(cfg, b.states, "m", {}, conv[2], 0, random.Random(0))
    assert moved.attempts[0] != home


# --- replicas see the fleet's load, not their share of it ------------------------------------------

def _scrape(*replicas: Replica, waiting: float = 0.0) -> None:
    """Every pool's /metrics read by every replica: it runs what all of them have in flight there."""
    for name in replicas[0].states:
        running = sum(r.states[name].in_flight for r in replicas)
        for r in replicas:
            core.on_scrape(r.states[name], waiting=waiting, kv_usage=0.0, running=running)


def _hold(r: Replica, pool: str, n: int, prompt="") -> list[core.Dispatch]:
    """``n`` attempts this replica sends to ``pool`` and that stay in flight."""
    d = core.route(r.cfg, r.states, "m", {}, prompt, 0.0, r.rng)
    d = d._replace(attempts=(pool,))
    return [core.on_dispatch(r.states[pool], d) for _ in range(n)]


def test_a_pools_requests_are_what_it_reported_plus_this_replicas_own_since():
    cfg = config()
    r = Replica(cfg, 1)
    nv = r.states["nvidia"]
    early = _hold(r, "nvidia", 2)
    core.on_scrape(nv, waiting=3.0, kv_usage=0.0, running=9.0)  # 2 of the 9 are ours
    assert nv.requests() == 12
    late = _hold(r, "nvidia", 2)  # after the scrape: in no count the pool gave
    assert nv.requests() == 14
    core.on_done(early[0])  # counted by the scrape, now over
    assert nv.requests() == 13
    core.on_done(late[0])  # never counted, now over
    assert nv.requests() == 12
    core.on_scrape(nv, waiting=0.0, kv_usage=0.0, running=1.0)  # the pool may lag: never below ours
    assert nv.in_flight == 2 and nv.requests() == 2
    # A server that does not report its running requests: this replica's in-flight and its queue.
    core.on_scrape(nv, waiting=4.0, kv_usage=0.0, running=None)
    assert nv.requests() == 6 and nv.load() == pytest.approx(0.6)


def test_three_replicas_overflow_a_full_tier_as_one_router_would():
    """Premium's pools hold 12 requests each (max 10), 4 from each of three replicas: every replica
    sends the next premium request to the overflow pool; seeing only its own 4, none did."""
    cfg = config()
    replicas = [Replica(cfg, i) for i in range(3)]
    for r in replicas:
        _hold(r, "nvidia", 4)
        _hold(r, "amd", 4)
    premium = {"x-priority": "high"}
    for r in replicas:  # before any scrape each sees its share: room left
        assert core.route(cfg, r.states, "m", premium, "", 0, r.rng).attempts[0] in {"nvidia", "amd"}
    _scrape(*replicas)
    for r in replicas:
        d = core.route(cfg, r.states, "m", premium, "", 0, r.rng)
        assert d.attempts[0] == "tpu" and d.overflow
        assert r.states["nvidia"].load() == pytest.approx(1.2)


def test_one_router_routes_alike_with_or_without_the_pools_reported_counts():
    """Behind one replica the pools report only its own requests (fewer, while some are on the
    wire): a router that reads them decides every turn as one that never scrapes."""
    cfg = config(policy="prefix-affinity")
    scraped, blind = Replica(cfg, 1), Replica(cfg, 1)
    convs = [conversation(i, 4) for i in range(16)]
    rng = random.Random(5)
    held: dict[str, list] = {"scraped": [], "blind": []}
    picks = {"scraped": [], "blind": []}
    for t in range(4):
        for i, c in enumerate(convs):
            for name, r in (("scraped", scraped), ("blind", blind)):
                d = core.route(cfg, r.states, "m", {}, c[t], 0.0, r.rng)
                picks[name].append(d.attempts[0])
                held[name].append(core.on_dispatch(r.states[d.attempts[0]], d))
            if rng.random() < 0.5:  # some answers come back, in the same order on both
                k = rng.randrange(len(held["scraped"]))
                for name in held:
                    a = held[name].pop(k)
                    core.on_first_byte(a, 0.01, 0.0)
                    core.on_done(a)
            if i % 5 == 0:  # the pools report, missing the newest request (still on the wire)
                newest = held["scraped"][-1].state.name if held["scraped"] else None
                for name, s in scraped.states.items():
                    core.on_scrape(s, waiting=0.0, kv_usage=0.0, running=s.in_flight - (name == newest))
    assert picks["scraped"] == picks["blind"]
    assert {"nvidia", "amd"} <= set(picks["scraped"])  # the default tier's pools (tpu once both are full)


# --- the other policies -----------------------------------------------------------------------------

def test_cost_aware_stays_cheap_while_within_the_tiers_ttft_target():
    tiers = [{"name": "all", "ttft_slo_ms": 400,
              "backends": [{"pool": "nvidia", "weight": 34}, {"pool": "amd", "weight": 33}, {"pool": "tpu", "weight": 33}]}]
    cfg = config(policy="cost-aware", tiers=tiers)
    st = states(cfg)

    def first(now: float) -> str:
        return core.route(cfg, st, "m", {}, "", now, random.Random(0)).attempts[0]

    assert first(0.0) == "amd"  # cheapest $/Mtok
    core.record_ttft(st["amd"], 0.150, now=10.0)  # within half of 400 ms
    assert first(10.0) == "amd"
    for _ in range(5):
        core.record_ttft(st["amd"], 0.600, now=10.0)  # amd's queue grew: over the target
    assert st["amd"].recent_ttft(10.0) > 0.2
    assert first(10.0) == "tpu"  # next cheapest
    d = core.route(cfg, st, "m", {}, "", 10.0, random.Random(0))
    assert d.attempts[-1] == "amd"  # the slow pool is tried last, not dropped
    # No traffic reports back from amd: its slow TTFT fades and it is tried again.
    assert first(10.0 + 5 * core.TTFT_DECAY_S) == "amd"


def test_cost_aware_prefers_the_cheapest_per_million_tokens():
    cfg = config(policy="cost-aware")
    st = states(cfg)
    assert core.route(cfg, st, "m", {}, "", 0, random.Random(0)).attempts[0] == "amd"


def test_least_load_prefers_the_idle_pool():
    cfg = config(policy="least-load")
    st = states(cfg)
    st["nvidia"].in_flight = 5
    assert core.route(cfg, st, "m", {}, "", 0, random.Random(0)).attempts[0] == "amd"


# --- scorers, filters and pickers, one by one ------------------------------------------------------

def ctx(cfg: RouterConfig, prompt=None, slo_s=None, now=0.0) -> core.RequestContext:
    prompt = prompt or chat("a question long enough to fill a block of its own, and then some more")
    blocks = tuple(core.prefix_blocks(prompt, "m"))
    return core.RequestContext(model="m", tier=None, weights={"nvidia": 60.0, "amd": 30.0, "tpu": 10.0},
                               blocks=blocks, key=core.conversation_key(prompt, "m"),
                               key_blocks=len(blocks), history_blocks=0, total_blocks=len(blocks), now=now,
                               ttft_slo_s=slo_s)


@pytest.mark.parametrize("name", sorted(core.SCORERS))
def test_every_scorer_rates_every_pool_within_0_and_1(name):
    cfg = config()
    st = list(states(cfg).values())
    rng = random.Random(5)
    for _ in range(50):
        for s in st:
            s.in_flight, s.waiting, s.kv_usage = rng.randint(0, 30), rng.random() * 5, rng.random()
            s.backlog = rng.randint(0, 400)
            core.record_ttft(s, rng.random(), 0.0)
        scores = core.SCORERS[name](ctx(cfg, slo_s=0.3), st)
        assert len(scores) == 3 and all(0.0 <= x <= 1.0 for x in scores)


def test_scorers_rate_what_their_names_say():
    cfg = config()
    st = states(cfg)
    nv, amd, tpu = st["nvidia"], st["amd"], st["tpu"]
    pools = [nv, amd, tpu]
    nv.in_flight = 8
    assert core.SCORERS["load"](ctx(cfg), pools) == pytest.approx([0.2, 1.0, 1.0])
    assert core.SCORERS["cost"](ctx(cfg), pools).index(1.0) == 1  # amd: cheapest $/Mtok
    assert core.SCORERS["tier-weight"](ctx(cfg), pools) == pytest.approx([1.0, 0.5, 1 / 6])
    core.record_ttft(tpu, 0.9, 1.0)
    head = core.SCORERS["ttft-headroom"](ctx(cfg, slo_s=0.4, now=1.0), pools)
    assert head[:2] == [1.0, 1.0] and head[2] < 0.5
    c = ctx(cfg)
    core.remember_prefix(amd, c.blocks[:2])
    assert core.SCORERS["prefix-cache"](c, pools) == pytest.approx([0.0, 2 / len(c.blocks), 0.0])
    aff = core.SCORERS["affinity"](c, pools)
    assert max(aff) == 1.0 and aff == core.SCORERS["affinity"](c, list(states(cfg).values()))


def test_bounded_load_drops_the_busy_pool_and_keeps_the_least_busy():
    cfg = config()
    st = states(cfg)
    pools = list(st.values())
    st["nvidia"].backlog = 1000
    kept = core.FILTERS["bounded-load"](ctx(cfg), pools)
    assert [p.name for p in kept] == ["amd", "tpu"]
    for p in pools:
        p.backlog = int(p.pool.tokens_per_second)  # the same queue in time everywhere
    assert len(core.FILTERS["bounded-load"](ctx(cfg), pools)) == 3


def test_pickers():
    cfg = config()
    st = list(states(cfg).values())
    c = ctx(cfg, prompt=core.Prompt.of("short"))  # no key: ties are a weighted draw
    assert core.PICKERS["max-score"](c, st, [0.1, 0.9, 0.5], random.Random(0))[0].name == "amd"
    rng = random.Random(1)
    drawn = Counter(core.PICKERS["weighted-random"](c, st, [1.0, 1.0, 1.0], rng)[0].name for _ in range(6000))
    assert drawn["nvidia"] / 6000 == pytest.approx(0.6, abs=0.03)
    assert drawn["tpu"] / 6000 == pytest.approx(0.1, abs=0.02)
    seq = [core.PICKERS["smooth-round-robin"](c, st, [1.0] * 3, rng)[0].name for _ in range(10)]
    assert Counter(seq) == {"nvidia": 6, "amd": 3, "tpu": 1} and seq[:2] != ["nvidia", "nvidia"]


# --- prefix hashing and memory ------------------------------------------------------------------------

def test_prefix_blocks_chain_so_a_block_names_its_whole_prefix():
    a = core.prefix_blocks("x" * 64 + "y" * 64)
    b = core.prefix_blocks("z" * 64 + "y" * 64)
    assert len(a) == 2 and a[1] != b[1]
    assert core.prefix_blocks("short") == []


def test_the_same_prompt_for_another_model_shares_no_block():
    assert set(core.prefix_blocks("x" * 640, "llama")).isdisjoint(core.prefix_blocks("x" * 640, "phi"))


def test_only_the_leading_blocks_count_and_hashing_is_over_bytes():
    long = "é" * 100_000  # 200 KB of UTF-8
    blocks = core.prefix_blocks(long, "m")
    assert len(blocks) == core.MAX_PREFIX_BLOCKS
    assert blocks == core.prefix_blocks(long.encode()[:core.PREFIX_BYTES_LIMIT], "m")
    assert len(core.prefix_blocks(long, "m", max_blocks=None)) == 200_000 // core.BLOCK_BYTES


def test_a_cut_prompt_hashes_like_the_whole_one():
    """The router reads at most the leading bytes it hashes: a 100 KB history is not copied."""
    body = {"messages": [{"role": "system", "content": "s" * 30_000}, {"role": "user", "content": "u" * 70_000},
                         {"role": "assistant", "content": "a" * 5000}, {"role": "user", "content": "q"}]}
    cut, whole = core.prompt_text(body), core.prompt_text(body, limit=None)
    assert len(cut.data) < len(whole.data) and whole.data.startswith(cut.data)
    assert core.prefix_blocks(cut, "m") == core.prefix_blocks(whole, "m")
    assert core.conversation_key(cut, "m") == core.conversation_key(whole, "m")
    assert (cut.total, cut.history_end, cut.key_end) == (whole.total, whole.history_end, whole.key_end)


def test_prompt_text_reads_chat_and_completions():
    p = core.prompt_text({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                                       {"role": "assistant", "content": "A"}]})
    assert p.data == b"<system>S<user>U<assistant>A"
    assert p.key_end == len(b"<system>S<user>U") and p.history_end == p.key_end
    assert core.prompt_text({"prompt": ["a", "b"]}).data == b"ab"
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"},
                                                        {"type": "text", "text": 7}]}]}
    assert core.prompt_text(parts).data == b"<user>hi"


def test_conversations_sharing_a_system_prompt_have_different_keys_and_turns_the_same():
    a, b = conversation(1, 3), conversation(2, 3)
    assert core.conversation_key(a[0], "m") != core.conversation_key(b[0], "m")
    assert len({core.conversation_key(t, "m") for t in a}) == 1


def test_prefix_memory_is_sized_in_tokens_and_forgets_the_oldest():
    mem = core.PrefixMemory(capacity_tokens=4 * core.BLOCK_TOKENS)
    for prompt in ([1, 2], [3, 4], [5, 6]):
        mem.add(prompt)
    assert sorted(mem) == [3, 4, 5, 6] and mem.tokens == 4 * core.BLOCK_TOKENS
    assert mem.matched([3, 4, 7]) == 2 and mem.matched([1, 2]) == 0
    mem.add([3, 4])  # used again: now the newest
    mem.add([8, 9])
    assert mem.matched([3, 4]) == 2 and mem.matched([5, 6]) == 0


def test_a_long_prompts_blocks_match_as_far_as_the_pool_holds_them():
    mem = core.PrefixMemory()
    blocks = core.prefix_blocks("lorem ipsum dolor sit amet " * 1000, "m")
    mem.add(blocks[:100])
    assert mem.matched(blocks) == 100 and mem.matched(blocks[:40]) == 40
    assert mem.matched(core.prefix_blocks("other text " * 1000, "m")) == 0


# --- hooks, failover, ejection, cost -----------------------------------------------------------------

def test_hooks_track_backlog_in_flight_and_memory():
    cfg = config(policy="prefix-affinity")
    st = states(cfg)
    prompt = chat("a question of a few blocks " * 10)
    d = core.route(cfg, st, "m", {}, prompt, 0, random.Random(0))
    pool = st[d.attempts[0]]
    a = core.on_dispatch(pool, d)
    assert pool.in_flight == 1 and pool.backlog == len(d.blocks) and core.cached_blocks(pool, d.blocks) == len(d.blocks)
    b = core.on_dispatch(pool, d)  # the same prompt again: nothing new to prefill
    assert pool.backlog == len(d.blocks) and b.uncached == 0
    core.on_first_byte(a, 0.05, 1.0)
    assert pool.backlog == 0 and pool.recent_ttft(1.0) == pytest.approx(0.05)
    core.on_done(a)
    core.on_done(b)
    assert pool.in_flight == 0 and pool.backlog == 0


def test_failover_order_prefers_another_vendor_and_cloud():
    cfg = config(policy="round-robin")
    st = states(cfg)
    d = core.route(cfg, st, "m", {"x-priority": "high"}, "", 0, random.Random(0))
    assert d.attempts[0] == "nvidia" and set(d.attempts) == {"nvidia", "amd", "tpu"}
    assert st[d.attempts[1]].pool.vendor != "nvidia"


def test_ejected_pool_is_skipped_until_it_recovers():
    cfg = config()
    st = states(cfg)
    for _ in range(3):
        ejected = core.on_failure(core.Dispatch(st["nvidia"], 0), now=100.0, failover=cfg.failover)
    assert ejected
    d = core.route(cfg, st, "m", {"x-priority": "high"}, "", 105.0, random.Random(0))
    assert "nvidia" not in d.attempts
    d = core.route(cfg, st, "m", {"x-priority": "high"}, "", 111.0, random.Random(0))
    assert "nvidia" in d.attempts
    core.record_success(st["nvidia"])
    assert st["nvidia"].failures == 0


def test_everything_ejected_is_503():
    cfg = config()
    st = states(cfg)
    for s in st.values():
        s.ejected_until = 50
    with pytest.raises(core.NoRoute) as e:
        core.route(cfg, st, "m", {}, "", 0, random.Random(0))
    assert e.value.status == 503


def test_cost_savings_against_the_priciest_pool():
    cfg = config()
    st = states(cfg)
    pair, saved = core.cost_savings(st, "m", "amd", 1_000_000)
    nvidia = 2.0 / (2500 * 3600) * 1e6
    amd = 0.5 / (2100 * 3600) * 1e6
    assert pair == "nvidia->amd" and saved == pytest.approx(nvidia - amd)


# --- config -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad,words", [
    ({"tiers": [{"name": "t", "backends": [{"pool": "nvidia", "weight": 50}]}]}, "sum to 50"),
    ({"tiers": [{"name": "t", "backends": [{"pool": "h100", "weight": 100}]}]}, "not in pools"),
    ({"policy": "random"}, "policy 'random' is not one of: round-robin, least-load"),
    ({"tiers": [{"name": "t", "policy": "fastest", "backends": [{"pool": "nvidia", "weight": 100}]}]},
     "tier 't' policy 'fastest'"),
    ({"profiles": [{"name": "mine", "scorers": {"vibes": 1}}]}, "unknown scorer 'vibes'"),
    ({"profiles": [{"name": "mine", "picker": "coin"}]}, "unknown picker 'coin'"),
    ({"profiles": [{"name": "round-robin"}]}, "is a built-in policy"),
    ({"pools": []}, "at least 1"),
])
def test_bad_config_is_rejected_with_the_reason(bad, words):
    with pytest.raises(Exception, match=words):
        config(**bad)


def test_the_fleet_spec_accepts_the_registrys_policies_and_nothing_else():
    from pydantic import TypeAdapter, ValidationError

    from fleet.spec import Policy

    adapter = TypeAdapter(Policy)
    for name in core.POLICY_NAMES:
        assert adapter.validate_python(name) == name
    with pytest.raises(ValidationError):
        adapter.validate_python("random")


def test_prefix_blocks_are_the_chained_hash_of_each_64_byte_block_seeded_with_the_model():
    # The chaining GAIE v1.5.0 hashing.go describes (block i = hash(block i's bytes, block i-1's
    # hash), the first seeded with the model), over xxh3-64, stopped at MAX_PREFIX_BLOCKS full
    # blocks; a partial last block is not a block. Computed here with xxhash directly.
    text = ("0123456789abcdef" * 4 * 300) + "tail"  # 300 full blocks and a partial one
    h, want = xxhash.xxh3_64_intdigest(b"m"), []
    for i in range(core.MAX_PREFIX_BLOCKS):
        h = xxhash.xxh3_64_intdigest(text[i * 64:(i + 1) * 64].encode(), h)
        want.append(h)
    assert core.prefix_blocks(text, "m") == want
    assert core.prefix_blocks(text[:64 * 3 + 10], "m") == want[:3]
    assert core.prefix_blocks("short", "m") == [] and core.prefix_blocks(text, "other")[0] != want[0]
