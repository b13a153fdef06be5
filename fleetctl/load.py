"""``python -m fleet load`` (and ``fleet demo --traffic``): a small mixed workload for a router.

Enough traffic for ``fleet top`` to have something to show, shaped like the fleet's real use:
conversations that share a few system prompts (so prefix affinity has something to find), every
model the router lists, each tier's headers in turn, streaming and not. Bounded by ``duration`` and
``rate``; standard library only (threads + urllib), so it runs wherever the router's client does.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Sequence

SYSTEM_PROMPTS = (
    "You are a support agent for a cloud GPU provider. Answer briefly and cite the relevant docs page. " * 8,
    "You are a code reviewer. Point out bugs first, then style, and suggest a minimal patch. " * 8,
    "You translate product release notes into plain English for customers. Keep every version number. " * 8,
)


@dataclass
class LoadResult:
    sent: int = 0
    by_status: Counter = field(default_factory=Counter)
    by_pool: Counter = field(default_factory=Counter)
    by_model_pool: Counter = field(default_factory=Counter)

    def line(self) -> str:
        ok = self.by_status.get(200, 0)
        pools = ", ".join(f"{p} {n}" for p, n in sorted(self.by_pool.items()))
        other = ", ".join(f"{s}: {n}" for s, n in sorted(self.by_status.items()) if s != 200)
        return f"load: {self.sent} sent, {ok} ok" + (f" ({other})" if other else "") + (f"; pools: {pools}" if pools else "")


def list_models(base_url: str, key: str, timeout: float = 5.0) -> list[str]:
    req = urllib.request.Request(f"{base_url.rstrip('/')}/v1/models", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return [m["id"] for m in json.loads(r.read())["data"]]


def _one(base_url: str, key: str, body: dict, headers: Mapping[str, str], timeout: float) -> tuple[int, str]:
    req = urllib.request.Request(
        f"{base_url.rstrip('/')}/v1/chat/completions", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status, r.headers.get("x-fleet-pool", "")
    except urllib.error.HTTPError as e:
        e.read()
        return e.code, e.headers.get("x-fleet-pool", "")
    except OSError:
        return 0, ""


def run_load(base_url: str, key: str, *, duration: float = 10.0, rate: float = 20.0, concurrency: int = 8,
             tier_headers: Sequence[Mapping[str, str]] = ({},), models: Sequence[str] | None = None,
             seed: int = 0, stop: threading.Event | None = None, timeout: float = 30.0) -> LoadResult:
    """Send about ``rate`` requests/s for ``duration`` seconds (or until ``stop`` is set) from
    ``concurrency`` threads; returns what came back, by status and by the pool that served it."""
    models = list(models or list_models(base_url, key))
    stop = stop or threading.Event()
    result, lock = LoadResult(), threading.Lock()
    deadline = time.monotonic() + duration
    interval = concurrency / rate  # each thread's pace, so together they offer `rate`
    counter = iter(range(10**9))

    def worker(wid: int) -> None:
        rng = random.Random(seed * 1000 + wid)
        next_at = time.monotonic() + rng.random() * interval
        while not stop.is_set() and time.monotonic() < deadline:
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            with lock:
                i = next(counter)
            model = models[i % len(models)]
            headers = tier_headers[i % len(tier_headers)]
            system = SYSTEM_PROMPTS[rng.randrange(len(SYSTEM_PROMPTS))]
            body = {"model": model, "max_tokens": rng.choice((4, 8, 16)), "stream": i % 4 == 3,
                    "messages": [{"role": "system", "content": system},
                                 {"role": "user", "content": f"question {i % 97}: what changed?"}]}
            status, pool = _one(base_url, key, body, headers, timeout)
            with lock:
                result.sent += 1
                result.by_status[status] += 1
                if status == 200 and pool:
                    result.by_pool[pool] += 1
                    result.by_model_pool[(model, pool)] += 1

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return result
