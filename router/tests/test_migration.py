"""Mid-stream migration (issue 20): a pool killed while it streams loses no stream. Real simulator
processes and the router on 127.0.0.1; each stream's text is checked against an uninterrupted
stream of the same request, asked of a surviving server directly."""

from __future__ import annotations

import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from fleetproc import HOST, KEY, fleet, pool  # noqa: F401 - fixtures
from sse import post_stream

AUTH = {"Authorization": f"Bearer {KEY}"}


def _metric(f, name: str) -> float:
    text = urllib.request.urlopen(f"http://{HOST}:{f.admin_port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def _body(api: str, i: int, tokens: int = 200) -> dict:
    b = {"model": "m1", "max_tokens": tokens, "stream": True, "stream_options": {"include_usage": True}}
    if api == "chat":
        return {**b, "messages": [{"role": "user", "content": f"stream number {i}"}]}
    return {**b, "prompt": f"stream number {i}: "}


def _three_pools(f, *extra_a: str) -> None:
    urls = {"a": f.start_sim("a", "nvidia-h100", ("m1",), *extra_a), "b": f.start_sim("b", "amd-mi300x"),
            "c": f.start_sim("c", "google-tpu-v6e")}
    f.start_router({"policy": "round-robin", "limits": {"rate_limit_rps": 10000},
                    "pools": [pool("a", urls["a"], "nvidia", 2.0), pool("b", urls["b"], "amd", 1.0),
                              pool("c", urls["c"], "google", 1.0)]})


def _run_with_kill(f, api: str) -> None:
    path = "/v1/chat/completions" if api == "chat" else "/v1/completions"
    _three_pools(f)
    halfway = threading.Event()
    killed = threading.Event()

    def killer():
        # SIGKILL pool a once one of its streams is 60 tokens in.
        if halfway.wait(timeout=30):
            f.kill_sim("a")
            killed.set()

    def progress(n, headers):
        if n == 60 and headers.get("x-fleet-pool") == "a":
            halfway.set()

    def one(i):
        return post_stream(HOST, f.port, path, _body(api, i), AUTH, timeout=30, on_event=progress)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    with ThreadPoolExecutor(64) as ex:
        streams = list(ex.map(one, range(64)))
    t.join(timeout=30)
    assert killed.is_set()
    b_port = f.sims["b"][0]
    reference = post_stream(HOST, b_port, path, _body(api, 0))
    assert reference.done and len(reference.text().split()) == 200
    on_a = [s for s in streams if s.headers.get("x-fleet-pool") == "a"]
    assert on_a, "no stream started on the killed pool"
    for i, s in enumerate(streams):
        assert s.done and not s.errors(), (i, s.errors())
        assert s.finish_reasons() == ["length"], i
        expected = post_stream(HOST, b_port, path, _body(api, i)).text() if i % 16 == 0 else reference.text()
        assert s.text() == expected, i
        assert len({c["id"] for c in s.chunks}) == 1, i  # one stream, one id
        usage = [c["usage"] for c in s.chunks if c.get("usage")]
        assert len(usage) == 1 and usage[0]["completion_tokens"] == 200, (i, usage)
    migrated = _metric(f, "fleet_router_stream_migrations_total{")
    assert migrated >= 1 and _metric(f, 'fleet_router_stream_migrations_total{reason="reset",from_vendor="nvidia"') \
        == migrated
    # every continuation sent text: each has the gap its client saw, and re-prefilled what was sent
    assert _metric(f, "fleet_router_stream_migration_gap_seconds_count") == migrated
    assert _metric(f, "fleet_router_stream_migration_recomputed_tokens_total{") >= 60


def test_chat_streams_survive_a_pool_killed_mid_run(fleet):
    _run_with_kill(fleet, "chat")


def test_completions_streams_survive_a_pool_killed_mid_run(fleet):
    _run_with_kill(fleet, "completions")


def test_a_pool_refusing_continue_final_message_is_skipped_for_the_next(fleet):
    # a dies after 30 tokens; amd (another vendor, tried first) cannot continue: 400; c, also
    # nvidia, continues the stream.
    urls = {"a": fleet.start_sim("a", "fast", ("m1",), "--die-after-tokens", "30"),
            "old": fleet.start_sim("old", "fast", ("m1",), "--no-continue"), "c": fleet.start_sim("c", "fast")}
    fleet.start_router({"limits": {"rate_limit_rps": 10000},
                        "pools": [pool("a", urls["a"], "nvidia", 2.0), pool("old", urls["old"], "amd", 1.0),
                                  pool("c", urls["c"], "nvidia", 1.0)],
                        "tiers": [{"name": "t", "backends": [{"pool": "a", "weight": 100}], "policy": "round-robin"}]})
    s = post_stream(HOST, fleet.port, "/v1/chat/completions", _body("chat", 1, 80), AUTH)
    direct = post_stream(HOST, fleet.sims["c"][0], "/v1/chat/completions", _body("chat", 1, 80))
    assert s.done and not s.errors() and s.text() == direct.text() and s.finish_reasons() == ["length"]
    assert _metric(fleet, 'fleet_router_stream_migrations_total{reason="reset",from_vendor="nvidia",'
                          'to_vendor="nvidia"}') == 1


def test_after_max_migrations_the_stream_ends_with_an_error_not_short(fleet):
    # every pool dies after 20 tokens; one continuation allowed: the client gets an error event
    urls = {p: fleet.start_sim(p, "fast", ("m1",), "--die-after-tokens", "20") for p in ("a", "b", "c")}
    fleet.start_router({"limits": {"rate_limit_rps": 10000}, "failover": {"max_migrations": 1},
                        "pools": [pool(p, urls[p], v, 1.0) for p, v in (("a", "nvidia"), ("b", "amd"),
                                                                         ("c", "google"))]})
    s = post_stream(HOST, fleet.port, "/v1/completions", _body("completions", 2, 100), AUTH)
    assert not s.finish_reasons() and len(s.errors()) == 1
    assert "could not be continued" in s.errors()[0]["message"] and s.errors()[0]["type"] == "server_error"
    assert len(s.text().split()) == 40  # what two legs sent, nothing lost before the error
