"""Mid-stream migration when the first leg's SSE events reach the router split across TCP reads at
arbitrary bytes (an HTTP chunk ending mid-event, several events in one read): the router forwards
the first leg's events without parsing them (``Relay`` defers that until a migration needs it), so
this checks that a cut after N events still continues with exactly the text of those N events and
that the client sees each token once. Real scripted backends on 127.0.0.1, the router as a process."""

from __future__ import annotations

import asyncio
import random
import urllib.request

import orjson
import pytest

from fleetproc import HOST, KEY, fleet, pool  # noqa: F401 - fixtures
from scripted import SSE_HEAD, Backend
from sse import post_stream

AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = "/v1/chat/completions"
# Tokens a user could send that look like the stream's own syntax once inside a JSON string.
WORDS = [f"w{i} " for i in range(40)]
WORDS[3], WORDS[7], WORDS[11], WORDS[19] = '"content":"x" ', "[DONE] ", "a\n\nb ", "é✓ "
FULL = "".join(WORDS)


def _event(obj: dict) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _chunk(i: int | None, content: str | None = None, finish: str | None = None) -> bytes:
    delta = {"role": "assistant", "content": ""} if i is None else {} if content is None else {"content": content}
    return _event({"id": "first-leg", "object": "chat.completion.chunk", "created": 7, "model": "m1",
                   "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})


def _metric(f, name: str) -> float:
    text = urllib.request.urlopen(f"http://{HOST}:{f.admin_port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def _script(cut_after: int | None, seed: int, usage: bool = False):
    """Answer a fresh request with WORDS streamed in randomly sized HTTP chunks (cut, when
    ``cut_after`` is set, after that many content events and half of the next one), and a
    continuation with the words after the text it was given, as vLLM would."""

    async def script(seen, n, writer):
        msgs = seen.body["messages"]
        if seen.body.get("continue_final_message"):
            given = msgs[-1]["content"]
            rest = FULL[len(given):]
            words = WORDS[len([w for w in WORDS if FULL.find(w) < len(given)]):]
            assert "".join(words) == rest, "the continuation must start on a token boundary"
            body = _chunk(None) + b"".join(_chunk(0, w) for w in words) + _chunk(0, None, "stop") \
                + b"data: [DONE]\n\n"
            return SSE_HEAD + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        rng = random.Random(seed)
        events = [_chunk(None)] + [_chunk(0, w) for w in WORDS] + [_chunk(0, None, "stop"), b"data: [DONE]\n\n"]
        if usage:  # vLLM's final usage chunk (stream_options.include_usage): no choices
            events.insert(-1, _event({"id": "first-leg", "object": "chat.completion.chunk", "created": 7,
                                      "model": "m1", "choices": [], "usage": {
                                          "prompt_tokens": 5, "completion_tokens": 40, "total_tokens": 45}}))
        if cut_after is not None:
            events = events[:1 + cut_after] + [events[1 + cut_after][:rng.randrange(1, len(events[1 + cut_after]))]]
        data = b"".join(events)
        writer.write(SSE_HEAD)
        at = 0
        while at < len(data):  # 1..300-byte HTTP chunks, each its own TCP write: mid-event and multi-event reads
            size = rng.choice((1, 2, 5, 17, 60, 150, 300))
            piece, at = data[at:at + size], at + size
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.002)
        if cut_after is not None:
            return b"RESET"
        return b"0\r\n\r\n"

    return script


@pytest.mark.parametrize("cut_after,seed", [(0, 1), (1, 2), (4, 3), (12, 4), (25, 5), (39, 6)])
def test_a_stream_cut_after_n_split_events_continues_with_exactly_the_delivered_text(fleet, cut_after, seed):
    a, b = Backend(_script(cut_after, seed)), Backend(_script(None, seed))
    urls = a.start(), b.start()
    try:
        fleet.start_router({"limits": {"rate_limit_rps": 10000},
                            "pools": [pool("a", urls[0], "nvidia", 2.0), pool("b", urls[1], "amd", 1.0)],
                            "tiers": [{"name": "t", "backends": [{"pool": "a", "weight": 100}],
                                       "policy": "round-robin"}]})
        body = {"model": "m1", "max_tokens": 100, "stream": True,
                "messages": [{"role": "user", "content": "count"}]}
        s = post_stream(HOST, fleet.port, CHAT, body, AUTH, timeout=30)
        assert s.done and not s.errors() and s.text() == FULL and s.finish_reasons() == ["stop"]
        assert {c["id"] for c in s.chunks} == {"first-leg"}  # the continuation speaks as the first leg
        roles = [c for c in s.chunks if "role" in (c["choices"][0].get("delta") or {})]
        assert len(roles) == 1  # the continuation's opening role chunk is not repeated
        (cont,) = b.requests()
        if cut_after:
            assert cont.body["messages"][-1] == {"role": "assistant", "content": "".join(WORDS[:cut_after])}
        else:  # nothing delivered but the role chunk: the request as it was
            assert cont.body["messages"] == body["messages"] and "continue_final_message" not in cont.body
        assert cont.body["max_tokens"] == 100 - cut_after
        assert _metric(fleet, 'fleet_router_tokens_total{pool="a"') == cut_after
        assert _metric(fleet, 'fleet_router_tokens_total{pool="b"') == len(WORDS) - cut_after
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("backend_usage", [True, False])
def test_an_uncut_stream_split_at_arbitrary_bytes_is_relayed_whole_and_its_tokens_counted(fleet, backend_usage):
    # The first leg's events are forwarded unparsed, and its content chunks counted by a scan of
    # the bytes: text that looks like the stream's syntax must count as one token, like any other.
    # With stream_options.include_usage the client gets exactly one usage chunk: the backend's, or
    # (a backend that sent none) the router's, counting the 40 content chunks.
    a = Backend(_script(None, 9, usage=backend_usage))
    url = a.start()
    try:
        fleet.start_router({"limits": {"rate_limit_rps": 10000}, "pools": [pool("a", url, "nvidia", 2.0)]})
        body = {"model": "m1", "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "x"}],
                "stream_options": {"include_usage": True}}
        s = post_stream(HOST, fleet.port, CHAT, body, AUTH, timeout=30)
        assert s.done and not s.errors() and s.text() == FULL and s.finish_reasons() == ["stop"]
        assert len(s.chunks) == len(WORDS) + 3  # each event once: role, 40 tokens, finish, usage
        (usage,) = [c["usage"] for c in s.chunks if c.get("usage")]
        assert usage["completion_tokens"] == len(WORDS) and usage["prompt_tokens"] == (5 if backend_usage else 0)
        assert _metric(fleet, 'fleet_router_tokens_total{pool="a"') == len(WORDS)
    finally:
        a.stop()
