"""Per-key limits as a fleet of router replicas enforces them: three router processes sharing one
real Redis, simulated pools, clients that pick a replica at random (as a Service would)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
import yaml

from fleetproc import HOST, KEY, Fleet, fleet, free_port, pool, wait_http  # noqa: F401 - fixtures
from redisproc import redis_server  # noqa: F401 - fixture

LOAD_TIMEOUT_S = 60


class Replicas:
    """N router processes with one config (each on its own ports), logs to files."""

    def __init__(self, tmp: Path, config: dict, n: int = 3):
        self.tmp, self.procs, self.ports, self.logs = tmp, [], [], []
        keys = tmp / "keys"
        keys.write_text(hashlib.sha256(KEY.encode()).hexdigest() + "\n")
        for i in range(n):
            port, admin = free_port(), free_port()
            cfg = {"listen": {"host": HOST, "port": port, "admin_port": admin},
                   "auth": {"api_key_hashes_file": str(keys)},
                   "discovery": {"models_refresh_s": 5, "metrics_scrape_s": 5}, **config}
            path = tmp / f"router-{i}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            log = open(tmp / f"router-{i}.log", "wb")
            self.logs.append(tmp / f"router-{i}.log")
            self.procs.append(subprocess.Popen([sys.executable, "-m", "fleet_router", "--config", str(path)],
                                               stdout=log, stderr=subprocess.STDOUT))
            self.ports.append((port, admin))
        for _, admin in self.ports:
            wait_http(f"http://{HOST}:{admin}/readyz", self.procs)

    def metric(self, i: int, name: str, **labels: str) -> float:
        text = urllib.request.urlopen(f"http://{HOST}:{self.ports[i][1]}/metrics", timeout=5).read().decode()
        want = [f'{k}="{v}"' for k, v in labels.items()]
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name)] in "{ " and all(w in line for w in want):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def start_pool(fleet: Fleet) -> dict:
    url = fleet.start_sim("sim", "fast")
    # $1 per generated token (3600 $/h at 1 token/s): a request's cost is its completion tokens.
    return pool("sim", url, "nvidia", cost=3600.0, tps=1.0)


async def offer(replicas: Replicas, rate: float, seconds: float, rng: random.Random, max_tokens: int = 1,
                results: list | None = None) -> list[tuple[float, int, dict]]:
    """Open loop: ``rate`` requests/s for ``seconds`` to random replicas; every request's
    (send time, status or 0 for a lost request, headers)."""
    out = results if results is not None else []
    body = {"model": "m1", "prompt": "hello", "max_tokens": max_tokens}
    headers = {"Authorization": f"Bearer {KEY}"}

    async def one(session, port):
        t = time.monotonic()
        try:
            async with session.post(f"http://{HOST}:{port}/v1/completions", json=body, headers=headers) as r:
                await r.read()
                out.append((t, r.status, dict(r.headers)))
        except (aiohttp.ClientError, asyncio.TimeoutError):
            out.append((t, 0, {}))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        tasks, t0, n = [], time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            port = replicas.ports[rng.randrange(len(replicas.ports))][0]
            tasks.append(asyncio.create_task(one(session, port)))
            n += 1
            await asyncio.sleep(max(0.0, t0 + n / rate - time.monotonic()))
        await asyncio.gather(*tasks)
    return out


def run(coro, timeout: float = LOAD_TIMEOUT_S):
    loop = asyncio.new_event_loop()  # its own loop, never the thread's (see test_upstream.run)
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        loop.close()


@pytest.fixture
def replicas_factory(tmp_path):
    made = []

    def make(config: dict, n: int = 3) -> Replicas:
        r = Replicas(tmp_path, config, n)
        made.append(r)
        return r
    try:
        yield make
    finally:
        for r in made:
            r.stop()


def store_cfg(redis) -> dict:
    return {"url": redis.url, "password_file": redis.password_file, "retry_s": 0.25}


def test_a_request_rate_holds_within_10_percent_across_three_replicas(fleet, redis_server, replicas_factory):
    rate, burst, seconds = 20.0, 2, 5.0
    reps = replicas_factory({"pools": [start_pool(fleet)], "store": store_cfg(redis_server),
                             "limits": {"rate_limit_rps": rate, "rate_limit_burst": burst}})
    results = run(offer(reps, 3 * rate, seconds, random.Random(1)))
    statuses = Counter(s for _, s, _ in results)
    assert set(statuses) == {200, 429}, statuses
    span = max(t for t, _, _ in results) - min(t for t, _, _ in results)
    expected = burst + rate * span
    assert abs(statuses[200] - expected) <= 0.1 * expected, (statuses, expected)
    # Every answer says where the key stands; a refusal says when to come back.
    ok = next(h for _, s, h in results if s == 200)
    refused = next(h for _, s, h in results if s == 429)
    assert ok["x-ratelimit-limit-requests"] == str(burst) and "x-ratelimit-remaining-requests" in ok
    assert int(refused["Retry-After"]) >= 1 and refused["x-ratelimit-remaining-requests"] == "0"
    # Each replica counts only what it answered, so the fleet's numbers are the sum over replicas.
    for status in (200, 429):
        counted = sum(reps.metric(i, "fleet_router_requests_total", status=str(status)) for i in range(3))
        assert counted == statuses[status]
    assert sum(reps.metric(i, "fleet_router_rate_limited_total", reason="requests") for i in range(3)) \
        == statuses[429]


def test_a_budget_stops_a_key_at_its_dollar_limit_across_replicas(fleet, redis_server, replicas_factory):
    cost, budget = 50, 500.0  # 50 completion tokens at $1 each; $500 is ten answers
    reps = replicas_factory({"pools": [start_pool(fleet)], "store": store_cfg(redis_server),
                             "limits": {"budget_usd": budget, "budget_period": "day"}})

    async def until_refused():
        rng, out = random.Random(2), []
        body = {"model": "m1", "prompt": "hello", "max_tokens": cost}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            for _ in range(30):  # one at a time, each to a random replica
                port = reps.ports[rng.randrange(3)][0]
                async with session.post(f"http://{HOST}:{port}/v1/completions", json=body,
                                        headers={"Authorization": f"Bearer {KEY}"}) as r:
                    await r.read()
                    out.append((time.monotonic(), r.status, dict(r.headers)))
                if r.status != 200:
                    break
        return out
    results = run(until_refused())
    answered = [h for _, s, h in results if s == 200]
    last_status, last = results[-1][1], results[-1][2]
    # Charged when answered, in the background: the next request may start before the charge lands,
    # so at most one answer past the budget — never more.
    assert 10 <= len(answered) <= 11, len(answered)
    assert last_status == 429 and last["x-ratelimit-remaining-budget"] == "0.000000"
    assert float(answered[0]["x-ratelimit-limit-budget"]) == budget
    remaining = [float(h["x-ratelimit-remaining-budget"]) for h in answered]
    assert remaining == sorted(remaining, reverse=True) and remaining[0] == budget
    assert sum(reps.metric(i, "fleet_router_rate_limited_total", reason="budget") for i in range(3)) == 1


def test_redis_killed_mid_load_loses_no_request_and_shared_limits_resume(fleet, redis_server, replicas_factory):
    rate, burst, offered, phase = 15.0, 3, 45.0, 3.0
    reps = replicas_factory({"pools": [start_pool(fleet)], "store": store_cfg(redis_server),
                             "limits": {"rate_limit_rps": rate, "rate_limit_burst": burst}})

    def degraded() -> list[float]:
        return [reps.metric(i, "fleet_router_limits_degraded") for i in range(3)]

    async def load():
        rng = random.Random(3)
        shared = await offer(reps, offered, phase, rng)
        during: list = []
        # Kill the store while requests are in flight.
        killer = asyncio.get_running_loop().call_later(0.5, redis_server.kill)
        await offer(reps, offered, phase, rng, results=during)
        killer.cancel()
        gauges_down = degraded()
        redis_server.start()  # same port, empty
        deadline = time.monotonic() + 15
        while any(degraded()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        gauges_up = degraded()
        resumed = await offer(reps, offered, phase, rng)
        return shared, during, gauges_down, gauges_up, resumed

    shared, during, gauges_down, gauges_up, resumed = run(load(), timeout=90)

    def allowed_rate(results) -> float:
        """Answers per second beyond the burst (the bucket starts full)."""
        span = max(t for t, _, _ in results) - min(t for t, _, _ in results)
        return (sum(s == 200 for _, s, _ in results) - burst) / span

    every = shared + during + resumed
    assert {s for _, s, _ in every} <= {200, 429}, Counter(s for _, s, _ in every)  # none lost, no 5xx
    assert gauges_down == [1, 1, 1] and gauges_up == [0, 0, 0]
    assert abs(allowed_rate(shared) - rate) <= 0.15 * rate
    # While the store was away each replica held the limit on its own: more than the fleet's limit.
    assert allowed_rate(during) > 1.5 * rate
    assert abs(allowed_rate(resumed) - rate) <= 0.15 * rate
    logs = reps.log_text()
    assert len(re.findall(r'"event":"limits_degraded"', logs)) == 3
    assert len(re.findall(r'"event":"limits_restored"', logs)) == 3
    assert "test-store-password" not in logs
