"""One entry point for the router benchmarks (issues 11 and 18): ``python bench/run.py [--quick]``.

Runs with the project's virtualenv (it has fleet_router, aiohttp, httptools); the peers
(vllm-router, the LiteLLM proxy) come from ``.venv-bench``. The throughput and latency phases
drive the targets with ``wrk`` (compiled; Debian's package) and its Lua scripts in ``bench/wrk/``;
the routing and failover phases keep the aiohttp client (their rates are low). Everything listens
on 127.0.0.1, every phase is bounded by request count AND wall time, and every child process is
killed on exit. With 2+ cores: wrk and the bench backend on core 0, each proxy alone on core 1.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import yaml
from report import MIN_DIRECT_RATIO, write_markdown  # bench/report.py (bench/ is sys.path[0])

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
BENCH_VENV = ROOT / ".venv-bench" / "bin"
#: The interpreter every fleet_router under test runs on (``make bench`` builds it from
#: ``ROUTER_PYTHON``): an optimised CPython, as the router image's python:3.11-slim is. The tree's
#: own router/ comes first on its path, so it runs the code checked out, not a copy.
ROUTER_VENV = ROOT / ".venv-bench-router" / "bin"
HOST = "127.0.0.1"
KEY = "sk-bench"
MODEL = "m1"
PROCS: list[subprocess.Popen] = []
NCPU = os.cpu_count() or 1
PIN = NCPU >= 2 and shutil.which("taskset") is not None
LOG = RESULTS / "logs"


# --- processes ------------------------------------------------------------------------------

def kill_all() -> None:
    for p in PROCS:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
    for p in PROCS:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    PROCS.clear()


atexit.register(kill_all)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def spawn(cmd: list[str], name: str, env: dict | None = None, core: int = 1) -> subprocess.Popen:
    if PIN:
        cmd = ["taskset", "-c", str(core), *cmd]
    LOG.mkdir(parents=True, exist_ok=True)
    out = open(LOG / f"{name}.log", "ab")
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                         env={**os.environ, "NO_PROXY": "127.0.0.1,localhost", **(env or {})})
    PROCS.append(p)
    return p


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
    p.wait(timeout=10)
    if p in PROCS:
        PROCS.remove(p)


def wait_http(url: str, procs: list[subprocess.Popen], timeout: float = 60.0, ok=(200,)) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{' '.join(map(str, p.args))} exited with {p.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status in ok:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def start_sim(profile: str, name: str, *extra: str) -> tuple[str, subprocess.Popen]:
    port = free_port()
    p = spawn([sys.executable, "-m", "fleet_router.sim", "--host", HOST, "--port", str(port), "--profile", profile,
               "--model", MODEL, *extra], f"sim-{name}")
    url = f"http://{HOST}:{port}"
    wait_http(url + "/health", [p])
    return url, p



def _stop_all(live: dict, backend) -> None:
    """Stop every proxy a phase started (None: the direct target, nothing to stop), then the backend."""
    for _, proc in live.values():
        if proc is not None:
            stop(proc)
    stop(backend)

def start_router(pools: list[dict], tiers: list[dict] | None = None, policy: str = "round-robin",
                 may_set: tuple[str, ...] = ("tier", "policy"), python: str | None = None,
                 **extra) -> tuple[str, subprocess.Popen, str]:
    """``may_set``: the routing headers the bench's key may send. The routing phase picks the policy
    under test by ``x-fleet-policy``; a router measured with one policy (throughput, latency) is
    configured as an operator running that policy would, its key allowed no policy switch: a key
    that may switch to prefix-affinity makes every request's prompt hashed (core.learns_prefixes)."""
    port, admin = free_port(), free_port()
    cfg = {"listen": {"host": HOST, "port": port, "admin_port": admin}, "policy": policy,
           "auth": {"api_key_hashes": [hashlib.sha256(KEY.encode()).hexdigest()],
                    "routing_headers": {hashlib.sha256(KEY.encode()).hexdigest(): list(may_set)}},
           # No per-key limits: the router's default (issue 19: none unless the config sets one),
           # and vllm-router and LiteLLM enforce none here either. The key is still checked.
           "discovery": {"models_refresh_s": 5, "metrics_scrape_s": 1}, "pools": pools,
           # No log line per request, as vllm-router runs here (--log-level warning).
           "server": {"access_log": False}, **extra}
    if tiers:
        cfg["tiers"] = tiers
    path = LOG / f"router-{port}.yaml"
    LOG.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    p = spawn([python or router_python(), "-m", "fleet_router", "--config", str(path)], "fleet_router",
              env={"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "router"), os.environ.get("PYTHONPATH")]))})
    wait_http(f"http://{HOST}:{admin}/readyz", [p])
    return f"http://{HOST}:{port}", p, f"http://{HOST}:{admin}"


def router_python() -> str:
    """``FLEET_BENCH_ROUTER_PYTHON``, else the bench's router interpreter if ``make bench`` built
    it, else this one."""
    chosen = os.environ.get("FLEET_BENCH_ROUTER_PYTHON")
    if chosen:
        return chosen
    built = ROUTER_VENV / "python"
    return str(built) if built.exists() else sys.executable


def start_vllm_router(workers: list[str], policy: str) -> tuple[str, subprocess.Popen]:
    exe = BENCH_VENV / "vllm-router"
    if not exe.exists():
        raise RuntimeError(f"{exe} not installed (see bench/results/logs/pip.log)")
    port = free_port()
    # --log-level warning: no log line per request, as fleet_router (which logs none) and as a
    # production deployment would run it; the default (info) costs it CPU per request.
    p = spawn([str(exe), "--host", HOST, "--port", str(port), "--worker-urls", *workers, "--policy", policy,
               "--prometheus-port", str(free_port()), "--log-level", "warning"], f"vllm-router-{policy}")
    url = f"http://{HOST}:{port}"
    wait_http(url + "/v1/models", [p], timeout=60)
    return url, p


def start_litellm(workers: list[str]) -> tuple[str, subprocess.Popen]:
    exe = BENCH_VENV / "litellm"
    if not exe.exists():
        raise RuntimeError(f"{exe} not installed (see bench/results/logs/pip.log)")
    port = free_port()
    cfg = {"model_list": [{"model_name": MODEL, "litellm_params": {
        "model": f"openai/{MODEL}", "api_base": f"{w}/v1", "api_key": "x"}} for w in workers],
        "litellm_settings": {"drop_params": True, "telemetry": False}}
    path = LOG / "litellm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    p = spawn([str(exe), "--config", str(path), "--host", HOST, "--port", str(port), "--num_workers", "1"],
              "litellm", env={"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"})
    url = f"http://{HOST}:{port}"
    wait_http(url + "/health/liveliness", [p], timeout=120)
    return url, p


# --- load generator ---------------------------------------------------------------------------

def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(q / 100 * len(s)))]


async def one(session: aiohttp.ClientSession, url: str, body: dict, headers: dict, stream: bool) -> dict:
    t0 = time.perf_counter()
    r = {"t0": t0, "ok": False}
    try:
        async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
            r["status"] = resp.status
            r["pool"] = resp.headers.get("x-fleet-pool")
            if stream:
                first = None
                usage = None
                async for line in resp.content:
                    if first is None and line.strip():
                        first = time.perf_counter()
                    if line.startswith(b"data: {") and b'"usage"' in line:
                        u = json.loads(line[6:]).get("usage")
                        usage = u or usage
                r["ttft"] = (first or time.perf_counter()) - t0
                r["usage"] = usage
            else:
                data = await resp.read()
                r["usage"] = json.loads(data).get("usage") if resp.status == 200 else None
            r["ok"] = resp.status == 200
    except Exception as e:  # noqa: BLE001 - every failure counts as a lost request
        r["error"] = type(e).__name__
    r["lat"] = time.perf_counter() - t0
    return r


def session(limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, force_close=False),
                                 timeout=aiohttp.ClientTimeout(total=30),
                                 headers={"Authorization": f"Bearer {KEY}"})


SHORT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU of a process and its descendants (threads included), from /proc."""
    if pid is None:
        return None
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


def ms(x):
    return None if x is None else round(x * 1000, 3)


# --- 1. throughput: wrk against every proxy, interleaved rounds ------------------------------

WRK_DIR = HERE / "wrk"
WRK_MISSING = ("wrk (the compiled load generator) is not on PATH: install it with `apt-get install -y wrk` "
               "(Debian/Ubuntu), `dnf install wrk` (Fedora), `brew install wrk` (macOS), or build it from "
               "its source; the bench does not fall back to a Python generator, which tops out near 5 k req/s")

#: The phases, in the order a full run runs them (``--only``'s default; ``--update`` merges by them).
PHASES = ("throughput", "latency", "routing", "failover", "migration", "replicas")

# name -> (kind, stream, connections, targets). One fact in one place: report.py reads the pairs.
#: fleet_router round-robin again, on the interpreter running the bench (this machine's default
#: CPython), when that is not the router's: what the choice of interpreter alone is worth.
SAME_ON_BENCH_PYTHON = "fleet_router round-robin (bench's CPython)"
WORKLOADS = {
    "short": ("short", False, 32, ["direct", "fleet_router round-robin", "vllm-router round_robin",
                                   "fleet_router prefix-affinity", "vllm-router cache_aware", "litellm",
                                   SAME_ON_BENCH_PYTHON]),
    "short-stream": ("short", True, 32, ["direct", "fleet_router round-robin", "vllm-router round_robin",
                                         "fleet_router prefix-affinity", "vllm-router cache_aware"]),
    "long": ("long", False, 8, ["direct", "fleet_router prefix-affinity", "vllm-router cache_aware",
                                "fleet_router round-robin", "vllm-router round_robin"]),
}
LATENCY_TARGETS = ["direct", "fleet_router round-robin", "fleet_router prefix-affinity", "vllm-router round_robin",
                   "vllm-router cache_aware"]


def run_wrk(url: str, script: str, args: list[str], threads: int, conns: int, seconds: float,
            timeout_s: int = 10) -> dict:
    """One wrk run on core 0; its Lua script prints one ``BENCHJSON {...}`` line at the end."""
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError(WRK_MISSING)
    cmd = [exe, f"-t{threads}", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", f"{timeout_s}s",
           "-s", str(WRK_DIR / script), url + "/v1/chat/completions", "--", *args]
    if PIN:
        cmd = ["taskset", "-c", "0", *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + timeout_s + 60)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result (exit {r.returncode}): {(r.stderr or r.stdout)[-400:]}")
    return json.loads(line[len("BENCHJSON "):])


def closed_wrk(url: str, pid: int, kind: str, stream: bool, conns: int, seconds: float) -> dict:
    """Closed loop, ``conns`` connections on one wrk thread; CPU per request of ``pid``'s tree."""
    cpu0, gen0 = cpu_seconds(pid), _children_cpu()
    w = run_wrk(url, "load.lua", [kind, "1" if stream else "0", KEY], 1, conns, seconds)
    cpu1, gen1 = cpu_seconds(pid), _children_cpu()
    errors = w["connect_errors"] + w["read_errors"] + w["write_errors"] + w["status_errors"] + w["timeouts"]
    ok = max(0, w["requests"] - w["status_errors"])
    wall = w["duration_us"] / 1e6
    return {"requests": w["requests"], "ok": ok, "errors": errors, "wall_s": round(wall, 3),
            "rps": round(ok / wall, 1) if wall else 0.0, "p50_ms": round(w["p50_us"] / 1000, 3),
            "p99_ms": round(w["p99_us"] / 1000, 3),
            "cpu_us_per_request": round((cpu1 - cpu0) / ok * 1e6, 1) if ok and cpu0 is not None else None,
            "generator_cpu_us_per_request": round((gen1 - gen0) / ok * 1e6, 1) if ok else None}


def _children_cpu() -> float:
    """User + system CPU of this process's finished, waited-for children: around one wrk run, wrk's."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def start_backend() -> tuple[list[str], subprocess.Popen]:
    """bench/backend.py on two ports (two pools), on the load generator's core: each proxy has
    core 1 to itself. ``direct`` measures generator + backend on that one core: their CPU per request
    gives core 0's capacity, and a capacity >= 5x a proxy's req/s means core 0 was at most a fifth
    busy while that proxy was measured (bench/report.py, pair_ratio)."""
    ports = [free_port(), free_port()]
    p = spawn([sys.executable, str(HERE / "backend.py"), "--host", HOST, *[a for q in ports for a in ("--port", str(q))]],
              "backend", core=0)
    urls = [f"http://{HOST}:{q}" for q in ports]
    for u in urls:
        wait_http(u + "/health", [p])
    return urls, p


def check_answers(url: str) -> None:
    """One short chat completion, streaming and not, must come back 200: a target that answers
    errors fast would otherwise look fast (wrk counts non-2xx separately, but fail early)."""
    for stream in (False, True):
        req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps({**SHORT, "stream": stream}).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
            if r.status != 200 or (b"[DONE]" not in body if stream else b'"choices"' not in body):
                raise RuntimeError(f"{url}: unexpected answer {r.status} {body[:200]!r}")


def start_targets(urls: list[str], names: set[str], failures: dict) -> dict[str, tuple[str, subprocess.Popen]]:
    pools = [{"name": n, "url": u, "vendor": v, "models": [MODEL], "cost_per_hour": 1.0, "tokens_per_second": 1000.0,
              "max_concurrency": 100000} for n, u, v in zip(("a", "b"), urls, ("nvidia", "amd"))]
    starters = {
        "fleet_router round-robin": lambda: start_router(pools, policy="round-robin", may_set=("tier",))[:2],
        "fleet_router prefix-affinity": lambda: start_router(pools, policy="prefix-affinity", may_set=("tier",))[:2],
        SAME_ON_BENCH_PYTHON: lambda: start_router(pools, policy="round-robin", may_set=("tier",),
                                                   python=sys.executable)[:2],
        "vllm-router round_robin": lambda: start_vllm_router(urls, "round_robin"),
        "vllm-router cache_aware": lambda: start_vllm_router(urls, "cache_aware"),
        "litellm": lambda: start_litellm(urls),
    }
    live = {}
    for name, starter in starters.items():
        if name not in names:
            continue
        try:
            live[name] = starter()
            check_answers(live[name][0])
        except Exception as e:  # noqa: BLE001 - reported as not measured, the rest still run
            failures[name] = f"{type(e).__name__}: {e}"
            print(f"[bench] {name}: could not start: {e}", flush=True)
    return live


def _median_rows(rows: list[dict], keys: tuple[str, ...]) -> dict:
    out = dict(rows[0])
    for key in keys:
        vals = [r[key] for r in rows if r.get(key) is not None]
        out[key] = statistics.median(vals) if vals else None
    for key in ("requests", "ok", "errors"):
        if key in out:
            out[key] = sum(r.get(key, 0) for r in rows)
    out["per_round"] = {key: [r.get(key) for r in rows] for key in keys}
    return out


def throughput(cfg) -> dict:
    """Every workload x target in ``cfg.rounds`` interleaved rounds (workload by workload, the
    target order rotated each round); each figure the median over rounds. Every target stays up
    for the whole phase, idle but for its own background work while others are measured."""
    out: dict = {"workloads": {}, "failures": {}, "rounds": cfg.rounds, "seconds": cfg.seconds,
                 "min_direct_ratio": MIN_DIRECT_RATIO}
    urls, backend = start_backend()
    wanted = {t for w in WORKLOADS.values() for t in w[3]} - {"direct"}
    if router_python() == sys.executable:
        wanted.discard(SAME_ON_BENCH_PYTHON)  # one interpreter: the row would repeat round-robin's
    live = start_targets(urls, wanted, out["failures"])
    live["direct"] = (urls[0], None)
    rows: dict[str, dict[str, list[dict]]] = {w: {t: [] for t in spec[3]} for w, spec in WORKLOADS.items()}
    try:
        for k in range(cfg.rounds):
            for wname, (kind, stream, conns, targets) in WORKLOADS.items():
                order = targets[k % len(targets):] + targets[:k % len(targets)]
                for name in order:
                    if name not in live or name in out["failures"]:
                        continue
                    url, proc = live[name]
                    try:
                        row = closed_wrk(url, (proc or backend).pid, kind, stream, conns, cfg.seconds)
                    except Exception as e:  # noqa: BLE001
                        out["failures"][name] = f"{type(e).__name__}: {e}"
                        print(f"[throughput] {name}: failed: {e}", flush=True)
                        continue
                    rows[wname][name].append(row)
                    print(f"[throughput] round {k + 1} {wname} {name}: {row['rps']} req/s, "
                          f"{row['cpu_us_per_request']} µs CPU/req, errors {row['errors']}", flush=True)
    finally:
        _stop_all(live, backend)
    for wname, (kind, stream, conns, _) in WORKLOADS.items():
        targets = {name: _median_rows(rs, ("rps", "cpu_us_per_request", "generator_cpu_us_per_request", "p50_ms",
                                           "p99_ms"))
                   for name, rs in rows[wname].items() if rs and name not in out["failures"]}
        out["workloads"][wname] = {"kind": kind, "stream": stream, "connections": conns, "targets": targets}
    return out


def latency(cfg) -> dict:
    """Added latency at a fixed arrival rate (bench/wrk/rate.lua: wrk2's constant-rate,
    coordinated-omission-corrected method on Debian's wrk), streaming and not, in interleaved
    rounds; *added* = target minus direct at the same percentile, from the medians over rounds."""
    out: dict = {"rate": cfg.latency_rate, "connections": cfg.latency_connections, "seconds": cfg.latency_seconds,
                 "rounds": cfg.rounds, "modes": {}, "failures": {}}
    urls, backend = start_backend()
    live = start_targets(urls, set(LATENCY_TARGETS) - {"direct"}, out["failures"])
    live["direct"] = (urls[0], None)
    modes = {"non-streaming": False, "streaming": True}
    rows: dict[str, dict[str, list[dict]]] = {m: {t: [] for t in LATENCY_TARGETS} for m in modes}
    n = cfg.latency_connections
    try:
        for k in range(cfg.rounds):
            for mode, stream in modes.items():
                order = LATENCY_TARGETS[k % len(LATENCY_TARGETS):] + LATENCY_TARGETS[:k % len(LATENCY_TARGETS)]
                for name in order:
                    if name not in live or name in out["failures"]:
                        continue
                    pid = (live[name][1] or backend).pid
                    try:
                        cpu0 = cpu_seconds(pid)
                        w = run_wrk(live[name][0], "rate.lua", [str(cfg.latency_rate), "1" if stream else "0", KEY,
                                                                str(n)], n, n, cfg.latency_seconds)
                        cpu1 = cpu_seconds(pid)
                    except Exception as e:  # noqa: BLE001
                        out["failures"][name] = f"{type(e).__name__}: {e}"
                        print(f"[latency] {name}: failed: {e}", flush=True)
                        continue
                    wall = w["duration_us"] / 1e6
                    row = {"requests": w["requests"], "errors": w["non200"] + w["socket_errors"] + w["timeouts"],
                           "achieved_rps": round(w["requests"] / wall, 1) if wall else 0.0,
                           "core_used": round((cpu1 - cpu0) / wall, 3) if wall and cpu0 is not None else None,
                           **{f"{q}_ms": round(w[f"{q}_us"] / 1000, 3) for q in ("p50", "p90", "p99", "p999", "max")}}
                    rows[mode][name].append(row)
                    print(f"[latency] round {k + 1} {mode} {name}: p50/p99 {row['p50_ms']}/{row['p99_ms']} ms at "
                          f"{row['achieved_rps']} req/s, errors {row['errors']}", flush=True)
    finally:
        _stop_all(live, backend)
    for mode in modes:
        targets = {name: _median_rows(rs, ("achieved_rps", "core_used", "p50_ms", "p90_ms", "p99_ms", "p999_ms",
                                           "max_ms"))
                   for name, rs in rows[mode].items() if rs and name not in out["failures"]}
        d = targets.get("direct")
        for row in targets.values():
            if d:
                row["added_p50_ms"] = round(row["p50_ms"] - d["p50_ms"], 3)
                row["added_p99_ms"] = round(row["p99_ms"] - d["p99_ms"], 3)
        out["modes"][mode] = {"stream": modes[mode], "targets": targets}
    return out


# --- 2. routing quality ---------------------------------------------------------------------

# Profiles' per-replica generated tokens/s = max_seqs / s_per_output_token (fleet_router.sim.PROFILES).
VENDOR_POOLS = [  # name, profile, vendor, $/h
    ("nvidia-h100", "nvidia-h100", "nvidia", 2.0),
    ("amd-mi300x", "amd-mi300x", "amd", 0.5),
    ("google-tpu-v6e", "google-tpu-v6e", "google", 0.8),
]
TIERS = {"premium": ({"X-Priority": "high"}, 50), "standard": ({"X-Cost-Tier": "standard"}, 100),
         "default": ({}, 250)}  # headers, TTFT p95 target ms (the sims' prefill is scaled to tens of ms)


def _base(name: str) -> str:
    """The vendor pool a bench pool copies (``nvidia-h100-b`` is a second ``nvidia-h100``)."""
    return name[:-2] if name.endswith(("-b", "-c")) else name


def pool_facts():
    from fleet_router.sim import PROFILES

    out = {}
    for name, prof, vendor, cost in VENDOR_POOLS:
        p = PROFILES[prof]
        tps = p.max_seqs / (p.ms_per_output_token / 1000)
        out[name] = {"profile": prof, "vendor": vendor, "cost_per_hour": cost, "tokens_per_second": round(tps, 1),
                     "max_concurrency": p.max_seqs, "usd_per_mtok": cost / (tps * 3600) * 1e6}
    return out


def workload(cfg) -> list[list[tuple[str, list[dict]]]]:
    """Conversations: each a list of (tier, messages) turns sharing a system prompt and history."""
    rng = random.Random(7)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho".split()
    systems = [f"You are assistant #{k}. " + " ".join(rng.choice(words) for _ in range(700)) for k in range(4)]
    # Long prompts, the shape of RAG and agentic traffic: one system prompt carries a document of
    # --long-context-kb, longer than the router's cap on hashed prefix blocks (256 x 64 bytes).
    doc = " ".join(rng.choice(words) for _ in range(cfg.long_context_kb * 1024 // 6))
    systems[0] = systems[0] + " Reference document: " + doc[:cfg.long_context_kb * 1024]
    convs = []
    for c in range(cfg.conversations):
        tier = ("premium", "standard", "default")[c % 3]
        msgs = [{"role": "system", "content": systems[c % len(systems)]}]
        turns = []
        for t in range(cfg.turns):
            msgs = msgs + [{"role": "user", "content": f"conv {c} turn {t}: " +
                            " ".join(rng.choice(words) for _ in range(40))}]
            turns.append((tier, list(msgs)))
            msgs = msgs + [{"role": "assistant", "content": " ".join(f"tok{i % 97}" for i in range(32))}]
        convs.append(turns)
    return convs


def best_hit_rate(convs) -> float:
    """Prefix hits with one infinite cache, requests in the order the bench sends them (turn-major)."""
    from fleet_router.core import prefix_blocks, prompt_text
    from fleet_router.sim import BLOCK_TOKENS, tokens_of

    seen: set[str] = set()
    hit = total = 0
    for t in range(max(len(c) for c in convs)):
        for c in convs:
            if t < len(c):
                text = prompt_text({"messages": c[t][1]}, limit=None)
                blocks = prefix_blocks(text, MODEL, max_blocks=None)  # as the sims cache them
                n = 0
                for b in blocks:
                    if b not in seen:
                        break
                    n += 1
                seen.update(blocks)
                hit += min(n * BLOCK_TOKENS, tokens_of(text))
                total += tokens_of(text)
    return hit / total


async def run_workload(url: str | list[str], convs, policy_header: str | None, max_tokens: int, rate: float,
                       think_s: float, deadline_s: float, seed: int = 0) -> list[dict]:
    """Open loop, the same offered load for every policy: conversations arrive as a Poisson process
    (seeded) at ``rate / turns`` per second; a user sends the next turn ``think_s`` (exponential
    mean) after the previous answer ends. Bounded by the deadline and the conversation count.
    A list of URLs is a fleet of replicas: each request goes to a random one, as a Service sends it.
    ``seed`` shifts the arrival, think-time and balancer draws (one workload, another schedule)."""
    res: list[dict] = []
    rng = random.Random(11 + seed)
    urls = [url] if isinstance(url, str) else list(url)
    balancer = random.Random(13 + seed)
    turns = max(1, max(len(c) for c in convs))
    starts, t = [], 0.0
    for _ in convs:
        starts.append(t)
        t += rng.expovariate(rate / turns)
    thinks = [[rng.expovariate(1 / think_s) for _ in c] for c in convs]
    deadline = time.perf_counter() + deadline_s
    async with session(512) as s:
        t0 = time.perf_counter()

        async def conv(i, turns_):
            await asyncio.sleep(max(0.0, t0 + starts[i] - time.perf_counter()))
            for k, (tier, msgs) in enumerate(turns_):
                if time.perf_counter() > deadline:
                    return
                h = dict(TIERS[tier][0])
                if policy_header:
                    h["x-fleet-policy"] = policy_header
                r = await one(s, balancer.choice(urls), {"model": MODEL, "messages": msgs, "max_tokens": max_tokens, "stream": True,
                                       "stream_options": {"include_usage": True}}, h, True)
                r["tier"], r["conv"], r["turn"] = tier, i, k
                res.append(r)
                await asyncio.sleep(thinks[i][k])

        await asyncio.wait_for(asyncio.gather(*(conv(i, c) for i, c in enumerate(convs))), deadline_s + 35)
    return res


def sim_counters(url: str) -> dict:
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        for k in ("vllm:generation_tokens_total", "vllm:prompt_tokens_total", "vllm:prefix_cache_hits_total"):
            if line.startswith(k + "{"):
                out[k.split(":")[1]] = float(line.rsplit(" ", 1)[1])
    return out


async def routing(cfg) -> dict:
    facts = pool_facts()
    convs = workload(cfg)
    best = best_hit_rate(convs)
    nv_cost = facts["nvidia-h100"]["usd_per_mtok"]
    out = {"pools": facts, "best_possible_hit_rate": round(best, 4), "requests": sum(map(len, convs)),
           "tier_ttft_targets_ms": {k: v[1] for k, v in TIERS.items()}, "rows": {}, "failures": {}}
    variants = [("fleet_router round-robin", "round-robin"), ("fleet_router least-load", "least-load"),
                ("fleet_router prefix-affinity", "prefix-affinity"), ("fleet_router cost-aware", "cost-aware"),
                ("vllm-router cache_aware", "vllm:cache_aware"), ("vllm-router round_robin", "vllm:round_robin"),
                ("NVIDIA-only fleet (3x H100, fleet_router prefix-affinity)", "nvidia-only")]
    if cfg.routing_variants:
        keep = set(cfg.routing_variants.split(","))
        variants = [(label, policy) for label, policy in variants if policy in keep]
    for label, policy in variants:
        # The NVIDIA-only fleet has as many pools as the mixed one, all H100: same size, one vendor.
        names = ["nvidia-h100", "nvidia-h100-b", "nvidia-h100-c"] if policy == "nvidia-only" else list(facts)
        sims = {n: start_sim(facts[_base(n)]["profile"], n) for n in names}
        proc = None
        try:
            if policy.startswith("vllm:"):
                url, proc = start_vllm_router([sims[n][0] for n in names], policy[5:])
                header = None
            else:
                pools = [{"name": n, "url": sims[n][0], "vendor": facts[_base(n)]["vendor"], "models": [MODEL],
                          "cost_per_hour": facts[_base(n)]["cost_per_hour"],
                          "tokens_per_second": facts[_base(n)]["tokens_per_second"],
                          "max_concurrency": facts[_base(n)]["max_concurrency"]} for n in names]
                w = 100 // len(names)
                backends = [{"pool": n, "weight": w + (100 - w * len(names) if i == 0 else 0)}
                            for i, n in enumerate(names)]
                tiers = [{"name": t, "match": h, "ttft_slo_ms": slo, "backends": backends}
                         for t, (h, slo) in TIERS.items()]
                url, proc, _ = start_router(pools, tiers, policy="prefix-affinity")
                header = "prefix-affinity" if policy == "nvidia-only" else policy
            t0 = time.perf_counter()
            res = await run_workload(url, convs, header, cfg.max_tokens, cfg.routing_rate, cfg.think_s,
                                     cfg.routing_seconds)
            wall = time.perf_counter() - t0
            counters = {n: sim_counters(sims[n][0]) for n in names}
        except Exception as e:  # noqa: BLE001
            out["failures"][label] = f"{type(e).__name__}: {e}"
            print(f"[routing] {label}: failed: {e}", flush=True)
            continue
        finally:
            if proc is not None:
                stop(proc)
            for _, p in sims.values():
                stop(p)
        ok = [r for r in res if r["ok"]]
        ttft = [r["ttft"] for r in ok]
        prompt = sum(c.get("prompt_tokens_total", 0) for c in counters.values())
        hits = sum(c.get("prefix_cache_hits_total", 0) for c in counters.values())
        gen = {n: c.get("generation_tokens_total", 0) for n, c in counters.items()}
        usd = sum(gen[n] * facts[_base(n)]["usd_per_mtok"] for n in gen) / max(1.0, sum(gen.values()))
        sla = [r for r in ok if r["ttft"] * 1000 <= TIERS[r["tier"]][1]]
        cached_client = sum(((r.get("usage") or {}).get("prompt_tokens_details") or {}).get("cached_tokens", 0)
                            for r in ok)
        prompt_client = sum((r.get("usage") or {}).get("prompt_tokens", 0) for r in ok)
        row = {"requests": len(res), "ok": len(ok), "errors": len(res) - len(ok), "wall_s": round(wall, 2),
               "rps": round(len(ok) / wall, 1), "tokens_per_s": round(sum(gen.values()) / wall, 1),
               "hit_rate": round(hits / prompt, 4) if prompt else None,
               "hit_rate_from_usage": round(cached_client / prompt_client, 4) if prompt_client else None,
               "hit_rate_vs_best": round(hits / prompt / best, 4) if prompt else None,
               "ttft_p50_ms": ms(pct(ttft, 50)), "ttft_p95_ms": ms(pct(ttft, 95)),
               "sla_compliance": round(len(sla) / len(res), 4) if res else None,
               "usd_per_mtok": round(usd, 6), "cost_vs_nvidia_only": round(usd / nv_cost - 1, 4),
               "generated_tokens_by_pool": gen}
        out["rows"][label] = row
        print(f"[routing] {label}: hit {row['hit_rate']} ttft p95 {row['ttft_p95_ms']} sla {row['sla_compliance']} "
              f"$/Mtok {row['usd_per_mtok']:.5f} errors {row['errors']}", flush=True)
    return out


# --- 3. failover ----------------------------------------------------------------------------

async def failover(cfg) -> dict:
    a_url, a = start_sim("fast", "failover-a")
    b_url, b = start_sim("fast", "failover-b")
    pools = [{"name": "a", "url": a_url, "vendor": "nvidia", "models": [MODEL], "cost_per_hour": 1.0,
              "tokens_per_second": 1000.0}, {"name": "b", "url": b_url, "vendor": "amd", "models": [MODEL],
                                             "cost_per_hour": 1.0, "tokens_per_second": 1000.0}]
    url, r, _ = start_router(pools, policy="round-robin")
    res: list[dict] = []
    kill_at = None
    try:
        async with session(cfg.workers) as s:
            deadline = time.perf_counter() + cfg.failover_seconds
            start = time.perf_counter()

            async def worker():
                while time.perf_counter() < deadline and len(res) < cfg.max_requests:
                    res.append(await one(s, url, SHORT, {}, False))

            async def killer():
                nonlocal kill_at
                await asyncio.sleep(cfg.failover_seconds / 2)
                kill_at = time.perf_counter()
                os.killpg(b.pid, signal.SIGKILL)

            await asyncio.wait_for(asyncio.gather(killer(), *(worker() for _ in range(cfg.workers))),
                                   cfg.failover_seconds + 35)
    finally:
        for p in (r, a, b):
            stop(p)
    lost = [x for x in res if not x["ok"]]
    during = [x["lat"] for x in res if kill_at and kill_at - 0.1 <= x["t0"] <= kill_at + 1.0]
    before = [x["lat"] for x in res if kill_at and x["t0"] < kill_at - 0.1]
    return {"requests": len(res), "lost": len(lost), "lost_detail": sorted({str(x.get("status", x.get("error")))
                                                                           for x in lost}),
            "kill_at_s": round(kill_at - start, 3) if kill_at else None,
            "p99_before_ms": ms(pct(before, 99)), "p99_during_ms": ms(pct(during, 99)),
            "p99_all_ms": ms(pct([x["lat"] for x in res], 99)), "requests_during_window": len(during),
            "timeline": [[round(x["t0"] - start, 4), round(x["lat"] * 1000, 3), x["ok"]]
                         for x in sorted(res, key=lambda x: x["t0"])][:: max(1, len(res) // 3000)]}


# --- report ---------------------------------------------------------------------------------

def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    vers = {"python": platform.python_version(), "aiohttp": aiohttp.__version__}
    rp = router_python()
    try:
        vers["fleet_router python"] = f"{rp} " + subprocess.run(
            [rp, "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True,
            timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        vers["fleet_router python"] = rp
    for pkg, py in (("fleet_router", sys.executable), ("vllm-router", str(BENCH_VENV / "python")),
                    ("litellm", str(BENCH_VENV / "python")), ("uvloop", sys.executable)):
        try:
            vers[pkg] = subprocess.run([py, "-c", f"import importlib.metadata as m; print(m.version({pkg!r}))"],
                                       capture_output=True, text=True, timeout=30).stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            vers[pkg] = None
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    vers["wrk"] = _wrk_version()
    return {"nproc": NCPU, "cpu": cpu, "kernel": platform.release(), "commit": commit, "loadavg_start": _loadavg(),
            "pinning": ("taskset: load generator and bench backend core 0, each proxy core 1 (routing and "
                        "failover phases: every server core 1)") if PIN else "none (fewer than 2 cores)",
            "versions": vers}


def _loadavg() -> str | None:
    """The machine's load (others' work on a shared machine shows here)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return None


def _wrk_version() -> str | None:
    exe = shutil.which("wrk")
    if exe is None:
        return None
    r = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10)
    first = (r.stdout or r.stderr).strip().splitlines()
    return first[0] if first else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny durations, for development")
    ap.add_argument("--seconds", type=float, default=5.0, help="per throughput measurement, per round (whole s)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of throughput and latency (medians)")
    ap.add_argument("--latency-rate", type=int, default=1000, help="fixed arrival rate of the latency phase, req/s")
    ap.add_argument("--latency-seconds", type=float, default=8.0)
    ap.add_argument("--latency-connections", type=int, default=16)
    ap.add_argument("--workers", type=int, default=32, help="concurrent requests in the failover phase")
    ap.add_argument("--max-requests", type=int, default=200_000)
    ap.add_argument("--conversations", type=int, default=192)
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--routing-seconds", type=float, default=40.0)
    ap.add_argument("--routing-rate", type=float, default=110.0, help="offered requests/s in the routing phase")
    ap.add_argument("--think-s", type=float, default=0.5, help="mean pause between a conversation's turns")
    ap.add_argument("--long-context-kb", type=int, default=24,
                    help="a document in one of the routing phase's four system prompts")
    ap.add_argument("--routing-variants", default="",
                    help="comma list of the routing phase's policies to run (default all), e.g. round-robin,prefix-affinity")
    ap.add_argument("--failover-seconds", type=float, default=6.0)
    ap.add_argument("--replica-conversations", type=int, default=48, help="replicas phase (issue 19's workload)")
    ap.add_argument("--replica-turns", type=int, default=6)
    ap.add_argument("--replica-rounds", type=int, default=4,
                    help="replicas phase: interleaved rounds of 1 and 3 replicas (median of their p95 ratios)")
    ap.add_argument("--replica-time-scale", type=float, default=3.0,
                    help="replicas phase: the sims' modelled times x this (rate and think time scaled to match)")
    ap.add_argument("--migration-workers", type=int, default=24, help="concurrent streams in the migration phase")
    ap.add_argument("--migration-tokens", type=int, default=200, help="tokens per stream (migration phase)")
    ap.add_argument("--migration-seconds", type=float, default=8.0, help="load per run (migration phase)")
    ap.add_argument("--only", default=",".join(PHASES))
    ap.add_argument("--update", action="store_true",
                    help="keep the phases not run from the last results.json (each phase says which run it is from)")
    cfg = ap.parse_args()
    if cfg.quick:
        cfg.seconds, cfg.rounds, cfg.conversations, cfg.turns, cfg.failover_seconds = 1.0, 1, 12, 3, 2.0
        cfg.latency_seconds, cfg.routing_seconds, cfg.migration_seconds = 2.0, 10.0, 3.0
        cfg.replica_rounds = min(cfg.replica_rounds, 2)  # one 1-3 and one 3-1 round (~2 min, not ~5)
    if {"throughput", "latency"} & set(cfg.only.split(",")) and shutil.which("wrk") is None:
        print(f"bench: {WRK_MISSING}", file=sys.stderr)
        return 2
    if PIN:
        os.sched_setaffinity(0, {0})
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    RESULTS.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    out = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
           "settings": {k: v for k, v in vars(cfg).items()}}
    only = cfg.only.split(",")
    try:
        if "throughput" in only:
            out["throughput"] = throughput(cfg)
        if "latency" in only:
            out["latency"] = latency(cfg)
        if "routing" in only:
            out["routing"] = asyncio.run(routing(cfg))
        if "failover" in only:
            out["failover"] = asyncio.run(failover(cfg))
        if "migration" in only:
            from migration import migration  # bench/migration.py (issue 20)

            out["migration"] = asyncio.run(migration(cfg, sys.modules[__name__]))
        if "replicas" in only:
            from replicas import replicas  # bench/replicas.py (issue 19)

            out["replicas"] = asyncio.run(replicas(cfg, sys.modules[__name__]))
    finally:
        kill_all()
    out["duration_s"] = round(time.time() - t0, 1)
    out["machine"]["loadavg_end"] = _loadavg()
    run_info = {"started": out["started"], "commit": out["machine"]["commit"],
                "loadavg_start": out["machine"]["loadavg_start"], "loadavg_end": out["machine"]["loadavg_end"]}
    out["phases"] = {phase: run_info for phase in PHASES if phase in out}
    if cfg.update:
        out = _merged(out, RESULTS / "results.json")
    (RESULTS / "results.json").write_text(json.dumps(out, indent=1) + "\n")
    write_markdown(out, RESULTS / "results.md")
    plotter = BENCH_VENV / "python"
    if plotter.exists():
        subprocess.run([str(plotter), str(HERE / "plots.py"), str(RESULTS / "results.json")], timeout=120)
    print((RESULTS / "results.md").read_text())
    return 0


def _merged(out: dict, previous: Path) -> dict:
    """``out`` with the phases it did not run taken from ``previous`` (``--update``), each phase's
    run (start, commit, load) kept beside it under ``phases``: a phase re-run on a quieter machine
    replaces only itself, and the report says which figures come from which run."""
    try:
        old = json.loads(previous.read_text())
    except FileNotFoundError:
        return out  # no earlier run: nothing to keep
    except (OSError, ValueError) as e:
        print(f"bench: --update: {previous} unreadable ({e}); only the phases run now are reported",
              file=sys.stderr)
        return out
    before = old.get("phases") or {p: {k: old.get("machine", {}).get(k) for k in ("commit", "loadavg_start", "loadavg_end")}
                                    | {"started": old.get("started")} for p in PHASES if p in old}
    for phase in PHASES:
        if phase not in out and phase in old:
            out[phase] = old[phase]
            out["phases"][phase] = before.get(phase)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
