"""The routing core, without sockets: tiers, filters, policies, failover order, ejection, cost."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from fleet_router import core
from fleet_router.config import RouterConfig


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


def test_headers_pick_the_tier_and_fall_back_to_the_default():
    cfg = config()
    assert core.select_tier(cfg.tiers, {"x-priority": "high"}).name == "premium"
    assert core.select_tier(cfg.tiers, {"x-cost-tier": "standard"}).name == "standard"
    assert core.select_tier(cfg.tiers, {}).name == "default"


@pytest.mark.parametrize("policy", ["round-robin", "prefix-affinity", "least-load", "cost-aware"])
def test_unknown_model_is_404_and_only_servers_of_the_model_are_candidates(policy):
    cfg, st = config(policy=policy), None
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
def test_tier_weights_are_honoured_in_proportion(tier, headers, expect):
    cfg, rng = config(policy="prefix-affinity"), random.Random(7)
    st = states(cfg)
    n = 4000
    first = Counter(core.route(cfg, st, "m", headers, f"unique prompt {i}", 0, rng).attempts[0] for i in range(n))
    for pool, share in expect.items():
        assert first[pool] / n == pytest.approx(share, abs=0.03)
    assert first["tpu"] == 0


def test_round_robin_is_exactly_proportional():
    cfg = config(policy="round-robin")
    st = states(cfg)
    first = Counter(core.route(cfg, st, "m", {"x-priority": "high"}, "", 0, random.Random(0)).attempts[0]
                    for _ in range(100))
    assert first == {"nvidia": 90, "amd": 10}


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


def test_prefix_affinity_sends_a_repeated_prefix_where_it_is_cached():
    cfg = config(policy="prefix-affinity")
    st = states(cfg)
    system = "You are a helpful assistant for the ACME fleet. " * 20
    core.remember_prefix(st["amd"], core.prefix_blocks(system + "first question"))
    picks = Counter(core.route(cfg, st, "m", {"x-priority": "high"}, system + f"question {i}", 0,
                               random.Random(i)).attempts[0] for i in range(50))
    assert picks == {"amd": 50}  # despite premium's 90/10 weights toward nvidia


def test_affinity_keeps_a_conversation_home_until_its_queue_costs_more_than_recomputing():
    cfg = config(policy="prefix-affinity")
    st = states(cfg)
    system = "You are a helpful assistant for the ACME fleet. " * 40  # shared by every conversation
    history = system + "<user>turn one of conversation 7, with enough words to fill blocks " * 6
    core.remember_prefix(st["nvidia"], core.prefix_blocks(system))
    core.remember_prefix(st["amd"], core.prefix_blocks(history))  # this conversation lives on amd
    prompt = history + "<user>the next turn"
    uncached_elsewhere = len(core.prefix_blocks(prompt)) - len(core.prefix_blocks(system))

    def first() -> core.Decision:
        return core.route(cfg, st, "m", {}, prompt, 0, random.Random(1))

    assert first().attempts[0] == "amd" and "cached" in first().reason
    # A modest queue on amd: still cheaper than recomputing the history on nvidia.
    st["amd"].backlog = uncached_elsewhere // 2
    assert first().attempts[0] == "amd"
    # A long queue of uncached prompts on amd: the first token comes sooner on nvidia.
    st["amd"].backlog = uncached_elsewhere * 3
    assert first().attempts[0] == "nvidia"


def test_affinity_spreads_conversations_sharing_a_system_prompt_by_queued_work():
    """Every pool caches the shared system prompt: the pool with the least queued prefill work,
    per unit of its speed, takes the next new conversation (not always the same pool)."""
    cfg = config(policy="prefix-affinity")
    st = states(cfg)
    system = "You are a helpful assistant for the ACME fleet. " * 40
    for s in st.values():
        core.remember_prefix(s, core.prefix_blocks(system))
    picks = []
    for i in range(30):
        d = core.route(cfg, st, "m", {}, system + f"<user>new conversation {i:03d} " * 8, 0, random.Random(i))
        picks.append(d.attempts[0])
        st[d.attempts[0]].backlog += 10  # its uncached turn queues there
    counts = Counter(picks)
    assert set(counts) == {"nvidia", "amd"}  # the default tier's pools, both used
    assert abs(counts["nvidia"] - counts["amd"]) <= 3  # balanced by speed (2500 vs 2100 tok/s)


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


def test_prefix_blocks_chain_so_a_block_names_its_whole_prefix():
    a = core.prefix_blocks("x" * 64 + "y" * 64)
    b = core.prefix_blocks("z" * 64 + "y" * 64)
    assert len(a) == 2 and a[1] != b[1]
    assert core.prefix_blocks("short") == []


def test_lru_forgets_the_oldest_prefixes():
    st = states(config())["nvidia"]
    core.remember_prefix(st, ["a", "b", "c"], capacity=2)
    assert list(st.prefixes) == ["b", "c"]


def test_cost_aware_prefers_the_cheapest_per_million_tokens():
    cfg = config(policy="cost-aware")
    st = states(cfg)
    d = core.route(cfg, st, "m", {}, "", 0, random.Random(0))
    assert d.attempts[0] == "amd"


def test_least_load_prefers_the_idle_pool():
    cfg = config(policy="least-load")
    st = states(cfg)
    st["nvidia"].in_flight = 5
    assert core.route(cfg, st, "m", {}, "", 0, random.Random(0)).attempts[0] == "amd"


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
        ejected = core.record_failure(st["nvidia"], now=100.0, eject_after=3, eject_seconds=10)
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


def test_prompt_text_reads_chat_and_completions():
    assert core.prompt_text({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]}) \
        == "<system>S<user>U"
    assert core.prompt_text({"prompt": ["a", "b"]}) == "ab"
    assert core.prompt_text({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}) \
        == "<user>hi"


@pytest.mark.parametrize("bad,words", [
    ({"tiers": [{"name": "t", "backends": [{"pool": "nvidia", "weight": 50}]}]}, "sum to 50"),
    ({"tiers": [{"name": "t", "backends": [{"pool": "h100", "weight": 100}]}]}, "not in pools"),
    ({"policy": "random"}, "policy"),
    ({"pools": []}, "at least 1"),
])
def test_bad_config_is_rejected_with_the_reason(bad, words):
    with pytest.raises(Exception, match=words):
        config(**bad)
