"""``python -m fleet demo --stack dev``: the stack's fleet on loopback, for a newcomer to point the
``openai`` client at.

One simulated vLLM server (``fleet_router.sim``) per pool of the stack, with the vendor latency
profile the dev cluster's pods use, then the router with the config the IaC generates for the stack
(:func:`fleet.routerconfig.router_config`) — the only difference from the cluster is that each
pool's endpoint is a loopback port instead of a Service. Prints the base URL and API key when
everything answers, and stops every process it started on Ctrl-C or SIGTERM.

No Pulumi here: this runs in a second even on a laptop without the Pulumi CLI.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fleet.spec import FleetSpec

HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SimPlan:
    pool: str
    port: int
    profile: str
    models: tuple[str, ...]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def sim_plans(spec: FleetSpec) -> list[SimPlan]:
    """One simulator per pool that serves a model, with the profile the dev pods use."""
    from components.inference_data import sim_profile  # data only, no Pulumi

    return [
        SimPlan(pool=p.name, port=free_port(), profile=sim_profile(p.vendor, p.accelerator, p.sim_profile),
                models=tuple(m.name for m in spec.models_on(p.name)))
        for p in spec.pools if spec.models_on(p.name)
    ]


def _get(url: str, timeout: float = 1.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def _wait_ready(urls: list[str], procs: list[subprocess.Popen], deadline: float) -> None:
    pending = list(urls)
    while pending:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"`{' '.join(map(str, p.args))}` exited with {p.returncode} before it was ready")
        pending = [u for u in pending if _get(u) != 200]
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {READY_TIMEOUT_S:.0f} s: {', '.join(pending)}")
        if pending:
            time.sleep(0.1)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def tier_headers(spec: FleetSpec) -> list[dict[str, str]]:
    """One header set per tier of the spec (the default tier matches no header)."""
    return [dict(t.match) for t in spec.tiers] or [{}]


def run_demo(spec: FleetSpec, port: int, api_key: str | None, out=sys.stdout, traffic: bool = False) -> int:
    from fleet.routerconfig import router_config

    key = api_key or f"sk-fleet-demo-{secrets.token_urlsafe(12)}"
    sims = sim_plans(spec)
    workdir = Path(tempfile.mkdtemp(prefix="fleet-demo-"))
    keys_file = workdir / "api-key-hashes"
    keys_file.write_text(hashlib.sha256(key.encode()).hexdigest() + "\n")
    admin_port = free_port()
    # the demo's key is the operator's: it may pick tiers and policies by header
    config = router_config(spec, {s.pool: s.url for s in sims}, api_key_hashes_file=str(keys_file),
                           listen_host=HOST, port=port, admin_port=admin_port,
                           routing_headers={hashlib.sha256(key.encode()).hexdigest(): ["tier", "policy"]})
    config_path = workdir / "config.yaml"
    config_path.write_text(config.to_yaml())

    stopping = False

    def on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    procs: list[subprocess.Popen] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        for s in sims:
            cmd = [sys.executable, "-m", "fleet_router.sim", "--host", HOST, "--port", str(s.port),
                   "--profile", s.profile]
            for m in s.models:
                cmd += ["--model", m]
            procs.append(subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + READY_TIMEOUT_S
        _wait_ready([f"{s.url}/health" for s in sims], procs, deadline)
        # WARNING: the router's access log (a JSON line per request, at INFO) would drown this
        # output, and block the router once a pipe that nobody reads fills up.
        procs.append(subprocess.Popen([sys.executable, "-m", "fleet_router", "--config", str(config_path),
                                       "--log-level", "WARNING"], env=env, stdin=subprocess.DEVNULL))
        base = f"http://{HOST}:{port}"
        _wait_ready([f"http://{HOST}:{admin_port}/readyz"], procs, deadline)

        print(f"fleet demo ({spec.topology}): {len(sims)} simulated pools behind the router", file=out)
        for s in sims:
            print(f"  pool {s.pool:<16} {s.profile:<18} {s.url}  models: {', '.join(s.models)}", file=out)
        print(f"  router metrics   http://{HOST}:{admin_port}/metrics", file=out)
        print(f"\nOPENAI_BASE_URL={base}/v1", file=out)
        print(f"OPENAI_API_KEY={key}", file=out)
        print(f"\nwatch it: python -m fleet top --url http://{HOST}:{admin_port}", file=out)
        print("ready: try the openai client; responses carry x-fleet-pool / x-fleet-vendor. Ctrl-C stops.",
              file=out, flush=True)
        if traffic:
            load_stop = threading.Event()
            threading.Thread(target=_traffic, args=(base, key, tier_headers(spec), load_stop, out),
                             daemon=True).start()
        while not stopping:
            if any(p.poll() is not None for p in procs):
                dead = next(p for p in procs if p.poll() is not None)
                print(f"error: `{' '.join(map(str, dead.args))}` exited with {dead.returncode}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        if traffic:
            load_stop.set()
        print("stopping", file=out, flush=True)
        return 0
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        _stop(list(reversed(procs)))
        for s, handler in previous.items():
            signal.signal(s, handler)
        for f in workdir.iterdir():
            f.unlink()
        workdir.rmdir()


def _traffic(base: str, key: str, headers: list[dict[str, str]], stop: threading.Event, out) -> None:
    """``--traffic``: a small mixed workload (every tier, shared prefixes, every model) in rounds
    of ten seconds until the demo stops, one summary line per round."""
    from fleetctl.load import run_load

    while not stop.is_set():
        result = run_load(base, key, duration=10, rate=10, concurrency=4, tier_headers=headers, stop=stop)
        print(result.line(), file=out, flush=True)
