"""What the router reads from its backends and reports about them, end to end: the queue and KV-cache
use each backend's ``/metrics`` reports steer ``least-load``; the SLA and cost-savings counters alerts
fire on carry the right values; ``failover.max_attempts`` bounds how many pools one request tries
before the 502; an edited config file is applied without a signal.

The router runs as ``python -m fleet_router`` (fleetproc); each backend is a scripted server on
127.0.0.1 (scripted.py). Every wait has a deadline.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from fleetproc import HOST, KEY, fleet, pool  # noqa: F401 - fixtures
from scripted import SSE_HEAD, completion, sse_chunk, sse_end, vllm_error
from test_router_backends import CHAT, _metric, _metrics, _post, backends  # noqa: F401 - fixture


def _wait(cond, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


async def _ok(seen, n, w):
    return completion("ok", 1)


def _vllm_metrics(waiting: tuple[float, ...] = (0.0,), kv: tuple[float, ...] = (0.0,),
                  running: tuple[float, ...] | None = None) -> str:
    """A vLLM v0.11.0 /metrics page (vllm/v1/metrics/loggers.py at v0.11.0): one series per engine,
    labelled engine and model_name; `vllm:num_requests_running`, `vllm:num_requests_waiting` and
    `vllm:kv_cache_usage_perc` are gauges (KV use as a fraction, 1 = full)."""
    lines = []
    if running is not None:
        lines += ["# HELP vllm:num_requests_running Number of requests in model execution batches.",
                  "# TYPE vllm:num_requests_running gauge"]
        lines += [f'vllm:num_requests_running{{engine="{i}",model_name="m1"}} {v}' for i, v in enumerate(running)]
    lines += ["# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
              "# TYPE vllm:num_requests_waiting gauge"]
    lines += [f'vllm:num_requests_waiting{{engine="{i}",model_name="m1"}} {v}' for i, v in enumerate(waiting)]
    lines += ["# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
              "# TYPE vllm:kv_cache_usage_perc gauge"]
    lines += [f'vllm:kv_cache_usage_perc{{engine="{i}",model_name="m1"}} {v}' for i, v in enumerate(kv)]
    return "\n".join(lines) + "\n"


def _served_by(fleet, n: int = 4) -> set[str]:
    pools = set()
    for _ in range(n):
        status, headers, _ = _post(fleet, CHAT)
        assert status == 200
        pools.add(headers["x-fleet-pool"])
    return pools


def _utilization(fleet, name: str) -> float:
    return _metric(_metrics(fleet), "ig_wva_pool_utilization", pool=name) or 0.0


# --- what each backend's /metrics says steers least-load ------------------------------------------

def test_least_load_follows_the_queue_and_the_kv_cache_each_vllm_reports(fleet, backends):
    a, url_a = backends(_ok, metrics=_vllm_metrics(waiting=(3, 2)))  # 5 queued over two engines
    b, url_b = backends(_ok, metrics=_vllm_metrics())
    fleet.start_router({"pools": [pool("a", url_a, "nvidia", 1.0, max_concurrency=8),
                                  pool("b", url_b, "amd", 1.0, max_concurrency=8)],
                        "policy": "least-load"})
    _wait(lambda: _utilization(fleet, "a") > _utilization(fleet, "b"), "a's queue scraped")
    assert _served_by(fleet) == {"b"}  # a has a queue: b has the room

    # No queue, but one of a's engines has its KV cache nearly full: still b.
    a.metrics = _vllm_metrics(kv=(0.98, 0.2))
    _wait(lambda: 0 < _utilization(fleet, "a") < 0.625, "a's KV use scraped")
    assert _served_by(fleet) == {"b"}

    # Now b queues more than a's cache pressure is worth: a.
    b.metrics = _vllm_metrics(waiting=(6,))
    _wait(lambda: _utilization(fleet, "b") > _utilization(fleet, "a"), "b's queue scraped")
    assert _served_by(fleet) == {"a"}


def test_requests_another_replica_runs_on_a_pool_count_as_its_load(fleet, backends):
    """Behind several router replicas a pool runs requests this one never sent: what vLLM reports
    running (summed over its engines) is the pool's load here too, for least-load and the gauge."""
    a, url_a = backends(_ok, metrics=_vllm_metrics(running=(3, 2)))  # 5 running, none sent from here
    b, url_b = backends(_ok, metrics=_vllm_metrics(running=(0,)))
    fleet.start_router({"pools": [pool("a", url_a, "nvidia", 1.0, max_concurrency=8),
                                  pool("b", url_b, "amd", 1.0, max_concurrency=8)],
                        "policy": "least-load"})
    _wait(lambda: _utilization(fleet, "a") == 5 / 8, "a's running requests scraped")
    assert _served_by(fleet) == {"b"}
    a.metrics, b.metrics = _vllm_metrics(running=(0, 0)), _vllm_metrics(running=(6,))  # the others moved
    _wait(lambda: _utilization(fleet, "b") == 6 / 8, "b's running requests scraped")
    assert _served_by(fleet) == {"a"}


# --- the values of the metrics alerts fire on -------------------------------------------------------

def _stream_after(delay_s: float):
    async def script(seen, n, w):
        import asyncio

        await asyncio.sleep(delay_s)  # time to first byte
        w.write(SSE_HEAD)
        w.write(sse_chunk(0))
        return sse_end()
    return script


def test_sla_counters_count_each_streams_first_token_against_its_tiers_objective(fleet, backends):
    _, fast = backends(_stream_after(0.0))
    _, slow = backends(_stream_after(1.5))
    fleet.start_router({"pools": [pool("fast", fast, "nvidia", 1.0), pool("slow", slow, "amd", 1.0)],
                        "policy": "round-robin",
                        "tiers": [{"name": "interactive", "ttft_slo_ms": 700,
                                   "backends": [{"pool": "fast", "weight": 50}, {"pool": "slow", "weight": 50}]}]})
    c = fleet.client()
    served = [c.chat.completions.with_raw_response.create(stream=True, **CHAT) for _ in range(4)]
    for r in served:
        list(r.parse())  # read each stream to its end
    assert sorted(r.headers["x-fleet-pool"] for r in served) == ["fast", "fast", "slow", "slow"]
    text = _metrics(fleet)
    assert _metric(text, "ig_wva_sla_compliance_total", tier="interactive", pool="fast") == 2
    assert _metric(text, "ig_wva_sla_violations_total", tier="interactive", pool="slow") == 2
    assert _metric(text, "ig_wva_sla_compliance_total", pool="slow") is None
    assert _metric(text, "ig_wva_sla_violations_total", pool="fast") is None


def test_cost_savings_count_the_dollars_saved_against_the_priciest_pool_serving_the_model(fleet, backends):
    async def big(seen, n, w):
        return completion("ok", 400_000)

    _, h100 = backends(big)
    _, mi300x = backends(big)
    # $/Mtok = cost_per_hour / (tokens_per_second x 3600) x 1e6: h100 9.0 / 3.6 = 2.5, mi300x 3.6 / 3.6 = 1.0.
    fleet.start_router({"pools": [pool("h100", h100, "nvidia", 9.0, tps=1000.0),
                                  pool("mi300x", mi300x, "amd", 3.6, tps=1000.0)],
                        "tiers": [{"name": "batch", "backends": [{"pool": "mi300x", "weight": 100}]}]})
    status, headers, _ = _post(fleet, CHAT)
    assert status == 200 and headers["x-fleet-pool"] == "mi300x"
    # 400 000 tokens at 1.0 instead of 2.5 $/Mtok: 0.6 USD saved.
    assert _metric(_metrics(fleet), "ig_wva_cost_savings_total", vendor_pair="nvidia->amd") == pytest.approx(0.6)
    _post(fleet, CHAT)
    assert _metric(_metrics(fleet), "ig_wva_cost_savings_total", vendor_pair="nvidia->amd") == pytest.approx(1.2)
    # A reload that doubles the priciest pool's price (5.0 $/Mtok): the next answer saves 1.6 USD, not
    # the 0.6 of the rate the router remembered before (Proxy._savings_rate).
    import signal

    path = fleet.tmp / "router.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["pools"][0]["cost_per_hour"] = 18.0
    path.write_text(yaml.safe_dump(cfg))
    fleet.router.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while _metric(_metrics(fleet), "fleet_router_pool_cost_per_hour", pool="h100") != 18.0:
        assert time.monotonic() < deadline, "the reload was not applied"
        time.sleep(0.05)
    _post(fleet, CHAT)
    assert _metric(_metrics(fleet), "ig_wva_cost_savings_total", vendor_pair="nvidia->amd") == pytest.approx(2.8)



def test_a_pricier_pool_discovered_serving_the_model_becomes_the_cost_savings_baseline(fleet, backends):
    # The saving is measured against the priciest pool *serving* the model, and discovery can change
    # which pools do: the rate the router remembers per (model, pool) (Proxy._cost_savings) must
    # follow what each pool's /v1/models lists, not only the config.
    async def big(seen, n, w):
        return completion("ok", 400_000)

    listed: list[dict] = []  # what the h100 server's /v1/models answers (read at each request)
    _, h100 = backends(big, listed)
    _, mi300x = backends(big)
    fleet.start_router({"pools": [pool("h100", h100, "nvidia", 9.0, tps=1000.0, models=("m-other",)),
                                  pool("mi300x", mi300x, "amd", 3.6, tps=1000.0)],
                        "tiers": [{"name": "batch", "backends": [{"pool": "mi300x", "weight": 100}]}],
                        "discovery": {"models_refresh_s": 0.2}})
    assert _post(fleet, CHAT)[0] == 200
    # only mi300x serves m1: nothing pricier to save against
    assert _metric(_metrics(fleet), "ig_wva_cost_savings_total", vendor_pair="nvidia->amd") is None
    listed.append({"id": CHAT["model"], "object": "model", "created": 1, "owned_by": "vllm"})
    deadline = time.monotonic() + 10
    while (saved := _metric(_metrics(fleet), "ig_wva_cost_savings_total", vendor_pair="nvidia->amd")) is None:
        assert time.monotonic() < deadline, "the discovered pool never became the baseline"
        assert _post(fleet, CHAT)[1]["x-fleet-pool"] == "mi300x"
        time.sleep(0.1)
    # the first answer after discovery: 400 000 tokens at 1.0 instead of 2.5 $/Mtok
    assert saved == pytest.approx(0.6)


# --- failover.max_attempts and the all-failed 502 ---------------------------------------------------

def test_max_attempts_bounds_the_pools_one_request_tries_and_then_it_is_a_502_naming_each(fleet, backends):
    def failing(name):
        async def script(seen, n, w):
            return vllm_error(503, f"engine on {name} is restarting")
        return script

    started = {name: backends(failing(name)) for name in ("p1", "p2", "p3")}
    fleet.start_router({"pools": [pool(name, url, "nvidia", 1.0) for name, (_, url) in started.items()],
                        "policy": "round-robin", "failover": {"max_attempts": 2, "backoff_s": 0.01,
                                                              "eject_after_failures": 10}})
    status, _, data = _post(fleet, CHAT)
    assert status == 502
    tried = [name for name, (b, _) in started.items() if b.requests()]
    assert len(tried) == 2  # not the third
    message = json.loads(data)["error"]["message"]
    assert all(f"engine on {name} is restarting" in message for name in tried)
    assert _metric(_metrics(fleet), "fleet_router_failovers_total") == 1  # one move, from the first to the second


# --- the config file, edited in place -----------------------------------------------------------------

def test_an_edited_config_file_is_applied_without_a_signal(fleet, backends, tmp_path):
    _, url_a = backends(_ok)
    _, url_b = backends(_ok, models=[{"id": "m1"}, {"id": "m2"}])
    fleet.start_router({"pools": [pool("a", url_a, "nvidia", 1.0)]})
    assert _post(fleet, {**CHAT, "model": "m2"})[0] == 404
    path = tmp_path / "router.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["pools"].append(pool("b", url_b, "amd", 1.0, models=("m1", "m2")))
    path.write_text(yaml.safe_dump(cfg))
    _wait(lambda: _post(fleet, {**CHAT, "model": "m2"})[0] == 200, "the edited file applied", timeout=20)
    status, headers, _ = _post(fleet, {**CHAT, "model": "m2"})
    assert status == 200 and headers["x-fleet-pool"] == "b"
    assert fleet.router.poll() is None

    # A broken edit is refused and loses nothing: the router keeps serving with what it had.
    path.write_text("pools: [this is not a pool]\n")
    time.sleep(2.5)  # two of the router's 1 s file checks: a negative, so a bounded wait, not a condition
    assert fleet.router.poll() is None
    assert _post(fleet, {**CHAT, "model": "m2"})[0] == 200
