"""Real loopback servers for the router's end-to-end tests (fixtures imported by the test modules:
tests/conftest.py is the project's one conftest)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

HOST = "127.0.0.1"
KEY = "sk-router-test"  # may set tier and policy headers (auth.routing_headers)
PLAIN_KEY = "sk-router-plain"  # accepted, but its routing headers are ignored


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_http(url: str, procs: list[subprocess.Popen], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args} exited with {p.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout} s")


@dataclass
class Fleet:
    """Simulated pools plus a router in front of them, all on 127.0.0.1."""

    tmp: Path
    sims: dict[str, tuple[int, subprocess.Popen]] = field(default_factory=dict)
    router: subprocess.Popen | None = None
    port: int = 0
    admin_port: int = 0

    def start_sim(self, pool: str, profile: str, models=("m1",), *extra: str) -> str:
        port = free_port()
        cmd = [sys.executable, "-m", "fleet_router.sim", "--host", HOST, "--port", str(port), "--profile", profile,
               *[a for m in models for a in ("--model", m)], *extra]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.sims[pool] = (port, proc)
        wait_http(f"http://{HOST}:{port}/health", [proc])
        return f"http://{HOST}:{port}"

    def start_router(self, config: dict) -> str:
        self.port, self.admin_port = free_port(), free_port()
        keys = self.tmp / "keys"
        import hashlib

        keys.write_text("".join(hashlib.sha256(k.encode()).hexdigest() + "\n" for k in (KEY, PLAIN_KEY)))
        config = {"listen": {"host": HOST, "port": self.port, "admin_port": self.admin_port},
                  "auth": {"api_key_hashes_file": str(keys),
                           "routing_headers": {hashlib.sha256(KEY.encode()).hexdigest(): ["tier", "policy"]}},
                  "discovery": {"models_refresh_s": 0.5, "metrics_scrape_s": 0.5}, **config}
        path = self.tmp / "router.yaml"
        path.write_text(yaml.safe_dump(config))
        self.router = subprocess.Popen([sys.executable, "-m", "fleet_router", "--config", str(path)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_http(f"http://{HOST}:{self.admin_port}/readyz", [self.router])
        return f"http://{HOST}:{self.port}"

    def client(self, key: str = KEY):
        import openai

        return openai.OpenAI(base_url=f"http://{HOST}:{self.port}/v1", api_key=key, max_retries=0, timeout=20)

    def sim_metric(self, pool: str, name: str) -> float:
        port = self.sims[pool][0]
        text = urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5).read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))

    def kill_sim(self, pool: str) -> None:
        _, proc = self.sims[pool]
        proc.kill()
        proc.wait(timeout=10)

    def stop(self) -> None:
        procs = [p for _, p in self.sims.values()] + ([self.router] if self.router else [])
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def pool(name: str, url: str, vendor: str, cost: float, tps: float = 1000.0, models=("m1",), **kw) -> dict:
    return {"name": name, "url": url, "vendor": vendor, "models": list(models), "cost_per_hour": cost,
            "tokens_per_second": tps, **kw}


@pytest.fixture
def fleet(tmp_path):
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture(scope="module")
def three_vendor_fleet(tmp_path_factory):
    """NVIDIA, AMD and TPU pools with seed 000's tiers, shared by the read-only tests."""
    f = Fleet(tmp_path_factory.mktemp("fleet"))
    try:
        urls = {p: f.start_sim(p, prof, ("llama", "phi")) for p, prof in
                (("nvidia", "fast"), ("amd", "fast"), ("tpu", "fast"))}
        f.start_router({
            "pools": [pool(name, urls[name], vendor, cost, models=("llama", "phi"))
                      for name, vendor, cost in (("nvidia", "nvidia", 2.0), ("amd", "amd", 0.5),
                                                 ("tpu", "google", 0.8))],
            "tiers": [
                {"name": "premium", "match": {"X-Priority": "high"}, "policy": "round-robin",
                 "backends": [{"pool": "nvidia", "weight": 90}, {"pool": "amd", "weight": 10}], "overflow": ["tpu"],
                 "ttft_slo_ms": 500},
                {"name": "standard", "match": {"X-Cost-Tier": "standard"}, "policy": "round-robin",
                 "backends": [{"pool": "amd", "weight": 80}, {"pool": "nvidia", "weight": 20}], "overflow": ["tpu"]},
                {"name": "default", "backends": [{"pool": "nvidia", "weight": 50}, {"pool": "amd", "weight": 50}],
                 "policy": "prefix-affinity"},
            ],
            # the sim's hash of the body it received, which test_api_surface compares
            "limits": {"rate_limit_rps": 10000, "pass_response_headers": ["x-sim-body-sha256"]},
        })
        yield f
    finally:
        f.stop()


os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
