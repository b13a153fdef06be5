"""Mid-stream migration (issue 20): a pool killed while it streams loses no stream. Real simulator
processes and the router on 127.0.0.1; each stream's text is checked against an uninterrupted
stream of the same request, asked of a surviving server directly."""

from __future__ import annotations

import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

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
        direct = post_stream(HOST, b_port, path, _body(api, i)) if i % 16 == 0 else reference
        assert s.text() == direct.text(), i
        assert len({c["id"] for c in s.chunks}) == 1, i  # one stream, one id
        usage = [c["usage"] for c in s.chunks if c.get("usage")]
        assert len(usage) == 1 and usage[0]["completion_tokens"] == 200, (i, usage)
        if i % 16 == 0:  # the prompt counted once, as an uninterrupted stream reports it
            (want,) = [c["usage"] for c in direct.chunks if c.get("usage")]
            assert (usage[0]["prompt_tokens"], usage[0]["total_tokens"]) == \
                (want["prompt_tokens"], want["total_tokens"]), (i, usage, want)
    migrated = _metric(f, "fleet_router_stream_migrations_total{")
    # Every one off the killed pool: cut by its reset, or — once its failures ejected it — moved
    # because it was ejected (issue 20), whichever the loop saw first for each stream.
    off_killed = sum(_metric(f, f'fleet_router_stream_migrations_total{{reason="{r}",from_vendor="nvidia"')
                     for r in ("reset", "ejected"))
    assert migrated >= 1 and off_killed == migrated
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
    # what the StreamsLostAfterCut alert reads (components/alerts.py): one stream lost
    assert _metric(fleet, 'fleet_router_stream_migrations_failed_total{') == 1



@pytest.mark.parametrize("api", ["chat", "completions"])
def test_a_migrated_streams_usage_counts_the_prompt_once_and_every_legs_completion(fleet, api):
    # Issue 20: usage summed over the legs. The continuation's server reports the original prompt
    # plus the 30 tokens already sent as its prompt (as vLLM does); the client must see the
    # original prompt once, and 30 + 50 completion tokens: what one uninterrupted stream reports.
    path = "/v1/chat/completions" if api == "chat" else "/v1/completions"
    urls = {"a": fleet.start_sim("a", "fast", ("m1",), "--die-after-tokens", "30"), "b": fleet.start_sim("b", "fast")}
    fleet.start_router({"limits": {"rate_limit_rps": 10000},
                        "pools": [pool("a", urls["a"], "nvidia", 2.0), pool("b", urls["b"], "amd", 1.0)],
                        "tiers": [{"name": "t", "backends": [{"pool": "a", "weight": 100}], "policy": "round-robin"}]})
    body = _body(api, 7, 80)
    s = post_stream(HOST, fleet.port, path, body, AUTH)
    direct = post_stream(HOST, fleet.sims["b"][0], path, body)
    assert s.done and not s.errors() and s.text() == direct.text()
    assert _metric(fleet, "fleet_router_stream_migrations_total{") == 1
    (got,) = [c["usage"] for c in s.chunks if c.get("usage")]
    (want,) = [c["usage"] for c in direct.chunks if c.get("usage")]
    assert got["completion_tokens"] == 80 and got["prompt_tokens"] == want["prompt_tokens"]
    assert got["total_tokens"] == want["total_tokens"]


def test_a_pool_ejected_mid_stream_has_its_streams_continued_elsewhere(fleet):
    # Issue 20: "the pool ejected" is a migration trigger. Pool a streams sim-identical tokens
    # slowly and answers every other request 503; two such failures eject it (eject_after 2) while
    # the stream is 20 tokens in: the stream moves to b at once instead of staying on a pool the
    # router no longer trusts, and the client still gets exactly the uninterrupted text.
    import asyncio

    import orjson

    from scripted import SSE_HEAD, Backend, vllm_error

    def chunk(obj: dict) -> bytes:
        event = b"data: " + orjson.dumps(obj) + b"\n\n"
        return b"%x\r\n%s\r\n" % (len(event), event)

    async def script(seen, n, w):
        if not seen.body.get("stream"):
            return vllm_error(503, "draining")
        w.write(SSE_HEAD)
        for i in range(seen.body["max_tokens"]):  # the sim's tokens: token i is tok{i % 97}
            w.write(chunk({"id": "a1", "object": "chat.completion.chunk", "created": 0, "model": "m1",
                           "choices": [{"index": 0, "delta": {"content": f"tok{i % 97} "}, "finish_reason": None}]}))
            await w.drain()
            await asyncio.sleep(0.02)
        done = b"data: [DONE]\n\n"
        return b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done)

    a = Backend(script)
    url_a = a.start()
    try:
        url_b = fleet.start_sim("b", "fast")
        fleet.start_router({"limits": {"rate_limit_rps": 10000},
                            "failover": {"eject_after_failures": 2, "backoff_s": 0},
                            "pools": [pool("a", url_a, "nvidia", 2.0), pool("b", url_b, "amd", 1.0)],
                            "tiers": [{"name": "t", "backends": [{"pool": "a", "weight": 100}],
                                       "policy": "round-robin"}]})
        body = {"model": "m1", "max_tokens": 200, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        twenty = threading.Event()
        result = []

        def progress(n, headers):
            if n == 20:
                twenty.set()

        t = threading.Thread(target=lambda: result.append(
            post_stream(HOST, fleet.port, "/v1/chat/completions", body, AUTH, timeout=30, on_event=progress)))
        t.start()
        assert twenty.wait(10)
        plain = {"model": "m1", "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}
        for _ in range(2):  # each: a's 503, then b serves it; the second failure ejects a
            assert post_stream(HOST, fleet.port, "/v1/chat/completions", plain, AUTH).status == 200
        t.join(30)
        (s,) = result
        direct = post_stream(HOST, fleet.sims["b"][0], "/v1/chat/completions", body)
        assert s.done and not s.errors() and s.text() == direct.text() and s.finish_reasons() == ["length"]
        assert _metric(fleet, 'fleet_router_stream_migrations_total{reason="ejected",from_vendor="nvidia"') == 1
        (streamed,) = [r for r in a.requests() if r.body.get("stream")]
        assert a.wait_closed(streamed, 3) is not None  # a was told to stop: its connection closed
    finally:
        a.stop()
