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
    pytest.importorskip("fleet_router.config")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleet", "demo", "--stack", "dev", "--port", str(port), "--api-key", "sk-test-demo"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
    )
    try:
        banner = _read_until_ready(proc, time.monotonic() + STARTUP_S)
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


def test_demo_rejects_a_wrong_key(demo):
    import openai

    _, port, _ = demo
    with pytest.raises(openai.AuthenticationError):
        _client(port, key="sk-wrong").models.list()


def test_demo_stops_everything_on_sigterm(demo):
    proc, port, banner = demo
    pool_ports = [int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)\s", banner)]
    assert pool_ports, banner
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not any(_port_open(p) for p in [port, *pool_ports])
