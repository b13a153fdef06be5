"""``python -m fleet demo --stack dev`` as a newcomer uses it: start it, point the official ``openai``
client at the printed URL and key, see which pool served each request, stop it with SIGTERM."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, plan_of

STARTUP_S = 90.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_until_ready(proc: subprocess.Popen, deadline: float) -> str:
    out = ""
    while "ready:" not in out:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise AssertionError(f"demo not ready (exit {proc.poll()}):\n{out}")
        readable, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
        if readable:
            # The raw fd, not readline(): a buffered read would hide lines from select().
            out += os.read(proc.stdout.fileno(), 65536).decode(errors="replace")
    return out


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def demo():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleet", "demo", "--stack", "dev", "--port", str(port), "--api-key", "sk-test-demo"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
    )
    try:
        banner = _read_until_ready(proc, time.monotonic() + STARTUP_S)
        # Keep reading what the demo and its router print (the router logs every request): an
        # unread pipe fills after a few hundred requests and the router blocks on its next log line.
        import threading

        def drain():
            try:
                while os.read(proc.stdout.fileno(), 65536):
                    pass
            except OSError:
                pass
        threading.Thread(target=drain, daemon=True).start()
        yield proc, port, banner
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _client(port: int, key: str = "sk-test-demo"):
    import openai

    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=30)


def test_demo_prints_the_base_url_and_key(demo):
    _, port, banner = demo
    assert f"OPENAI_BASE_URL=http://127.0.0.1:{port}/v1" in banner
    assert "OPENAI_API_KEY=sk-test-demo" in banner


def test_demo_serves_every_model_of_the_stack(demo):
    _, port, _ = demo
    served = {m.id for m in _client(port).models.list()}
    assert {m.name for m in plan_of("dev").spec.models} <= served


def test_demo_routes_tiers_to_their_pools_and_says_where(demo):
    _, port, _ = demo
    spec = plan_of("dev").spec
    client = _client(port)
    model = spec.models[0].name
    for tier in spec.tiers:
        allowed = {b.pool for b in tier.backends} | set(tier.overflow)
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": f"hello from {tier.name}"}], max_tokens=8,
            extra_headers=dict(tier.match))
        assert raw.headers["x-fleet-pool"] in allowed, (tier.name, raw.headers["x-fleet-pool"])
        assert raw.headers.get("x-fleet-vendor") == spec.pool(raw.headers["x-fleet-pool"]).vendor
        assert raw.parse().choices[0].message.content


def test_demo_streams(demo):
    _, port, _ = demo
    stream = _client(port).chat.completions.create(
        model=plan_of("dev").spec.models[0].name, messages=[{"role": "user", "content": "count"}],
        max_tokens=8, stream=True)
    chunks = [c for c in stream]
    assert len(chunks) >= 2


def test_demo_serves_a_burst_of_300_concurrent_requests_from_one_key_without_a_429(demo):
    """Issue 21's newcomer: the printed key, 300 requests at once. The dev stack sets no per-key
    limit, so there is none (issue 19: no limit unless the config sets one)."""
    import asyncio

    import openai

    _, port, _ = demo
    model = plan_of("dev").spec.models[0].name

    async def burst():
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test-demo",
                                    max_retries=0, timeout=60)

        async def one(i):
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model=model, messages=[{"role": "user", "content": f"burst {i}"}], max_tokens=2)
                return raw.status_code, raw.headers.get("x-ratelimit-remaining-requests")
            except openai.APIStatusError as e:
                return e.status_code, None
        try:
            return await asyncio.gather(*(one(i) for i in range(300)))
        finally:
            await client.close()

    loop = asyncio.new_event_loop()  # its own loop, never the thread's (see router/tests/test_upstream.py)
    try:
        results = loop.run_until_complete(asyncio.wait_for(burst(), 120))
    finally:
        loop.close()
    statuses = sorted({s for s, _ in results})
    assert statuses == [200], statuses
    assert all(h is None for _, h in results), "no limit configured, so no rate-limit headers"


def test_demo_rejects_a_wrong_key(demo):
    import openai

    _, port, _ = demo
    with pytest.raises(openai.AuthenticationError):
        _client(port, key="sk-wrong").models.list()


def test_the_dev_fleet_serves_two_models_on_different_pool_sets():
    # Seed 001's pattern made visible locally: several models behind one entry point.
    spec = plan_of("dev").spec
    pool_sets = {m.name: frozenset(m.pools) for m in spec.models}
    assert len(pool_sets) >= 2 and len(set(pool_sets.values())) >= 2, pool_sets


def test_demo_routes_each_model_only_to_pools_that_serve_it(demo):
    _, port, _ = demo
    spec = plan_of("dev").spec
    client = _client(port)
    listed = {m.id for m in client.models.list()}
    for model in spec.models:
        assert model.name in listed
        for i, tier in enumerate([*spec.tiers] * 4):
            raw = client.chat.completions.with_raw_response.create(
                model=model.name, messages=[{"role": "user", "content": f"{model.name} {tier.name} {i}"}],
                max_tokens=2, extra_headers=dict(tier.match))
            assert raw.headers["x-fleet-pool"] in model.pools, (model.name, tier.name, raw.headers["x-fleet-pool"])


def _every_pool_served(admin: str, pools: set[str]) -> bool:
    import urllib.request

    with urllib.request.urlopen(f"{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    served = {m.group(1) for m in re.finditer(r'^fleet_router_tokens_total\{[^}]*pool="([^"]+)"[^}]*\} ([0-9.e+]+)$',
                                                text, re.M) if float(m.group(2)) > 0}
    return pools <= served


def test_fleet_top_once_shows_every_pool_serving_during_a_short_load(demo):
    import threading

    from fleetctl.demo import tier_headers
    from fleetctl.load import run_load

    _, port, banner = demo
    admin = re.search(r"python -m fleet top --url (http://127\.0\.0\.1:\d+)", banner).group(1)
    spec = plan_of("dev").spec
    results, stop = [], threading.Event()
    # The load lasts until `top` has printed its frame (however long a loaded machine takes to start
    # it), so its one-second window always falls inside the load.
    loader = threading.Thread(target=lambda: results.append(run_load(
        f"http://127.0.0.1:{port}", "sk-test-demo", duration=120, rate=60, concurrency=8,
        tier_headers=tier_headers(spec), stop=stop)))
    loader.start()
    try:
        # Traffic has reached every pool before the window opens (the router's own counters), not "1.5 s".
        deadline = time.monotonic() + 60
        while not _every_pool_served(admin, {p.name for p in spec.pools}):
            assert time.monotonic() < deadline, "the load reached not every pool within 60 s"
            time.sleep(0.1)
        top = subprocess.run([sys.executable, "-m", "fleet", "top", "--once", "--interval", "2", "--url", admin], cwd=ROOT,
                             capture_output=True, text=True, timeout=90)
    finally:
        stop.set()
        loader.join(timeout=60)
    assert top.returncode == 0, top.stderr
    rows = {line.split()[0]: line.split() for line in top.stdout.splitlines()[3:] if line.strip()
            and not line.startswith("tier") and line.split()[0] in {p.name for p in spec.pools}}
    assert set(rows) == {p.name for p in spec.pools}, top.stdout
    for name, cells in rows.items():
        assert float(cells[3]) > 0, f"{name} shows no req/s:\n{top.stdout}"
        assert cells[1] == spec.pool(name).vendor
    assert results and results[0].by_status.get(200, 0) == results[0].sent, results[0].line() if results else ""


# Last: it stops the module's demo.
def test_demo_stops_everything_on_sigterm(demo):
    proc, port, banner = demo
    pool_ports = [int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)\s", banner)]
    assert pool_ports, banner
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not any(_port_open(p) for p in [port, *pool_ports])
