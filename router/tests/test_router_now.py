"""The task-free path (issue 18): a non-streaming request that arrives whole goes to its first pool on
a kept-alive connection from the protocol callbacks (``Router.inference_now``, ``Proxy.forward_now``,
``upstream.Exchange``), with no task. Each test first warms the pool's connection with one request,
checks the next one really came on that same connection (so it took this path), then makes that
exchange fail the way backends do: everything must end as the task path ends it (test_router_backends
pins those answers on fresh connections). Real router process, scripted backends on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import time

from fleetproc import HOST, KEY, fleet, pool  # noqa: F401 - fixtures
from scripted import completion, vllm_error
from test_router_backends import (CHAT, _leave_and_see_the_backend_request_closed, _metric, _metrics,  # noqa: F401
                                  _post, _router, backends)  # backends: a fixture


def _script(*answers):
    """The n-th request (1-based) gets ``answers[n - 1]`` (the last one from there on): bytes, or None
    (silent until the router closes the connection)."""
    async def script(seen, n, w):
        return answers[min(n, len(answers)) - 1]
    return script


def _same_connection(b) -> bool:
    seen = b.requests()
    return len(seen) >= 2 and seen[0].peer == seen[1].peer


def test_a_503_on_a_kept_alive_connection_fails_over_and_counts_against_the_pool(fleet, backends):
    a, url_a = backends(_script(completion("a", 1), vllm_error(503, "restarting")))
    b, url_b = backends(_script(completion("b", 1)))
    _router(fleet, [pool("a", url_a, "nvidia", 0.1), pool("b", url_b, "amd", 5.0)], policy="cost-aware",
            failover={"eject_after_failures": 1, "eject_seconds": 30})
    assert _post(fleet, CHAT)[0] == 200  # a (the cheapest), on a new connection
    status, headers, data = _post(fleet, CHAT)
    assert _same_connection(a)
    assert status == 200 and headers["x-fleet-pool"] == "b" and json.loads(data)["choices"][0]["message"]["content"] == "b"
    text = _metrics(fleet)
    assert _metric(text, "fleet_router_ejections_total", pool="a") == 1
    assert _metric(text, "fleet_router_requests_total", status="200") == 2


def test_a_500_on_two_pools_is_the_backends_answer_and_ejects_nobody(fleet, backends):
    a, url_a = backends(_script(completion("a", 1), vllm_error(500, "bad logits_processors")))
    b, url_b = backends(_script(completion("b", 1), vllm_error(500, "bad logits_processors")))
    _router(fleet, [pool("a", url_a, "nvidia", 1.0), pool("b", url_b, "amd", 1.0)],
            failover={"eject_after_failures": 1})
    assert [_post(fleet, CHAT)[0] for _ in range(2)] == [200, 200]  # round-robin: one each, kept alive
    status, _, data = _post(fleet, CHAT)
    assert _same_connection(a) or _same_connection(b)
    assert status == 500 and "bad logits_processors" in json.loads(data)["error"]["message"]
    assert len(a.requests()) + len(b.requests()) == 4  # both pools once more, never a third time
    assert _metric(_metrics(fleet), "fleet_router_ejections_total") is None


def test_an_answer_past_response_s_is_504_not_resent_and_the_backend_connection_closes(fleet, backends):
    a, url_a = backends(_script(completion("a", 1), None))  # the second: silent until the router goes
    b, url_b = backends(_script(completion("b", 1)))
    timeouts = {"connect_s": 1, "stream_head_s": 5, "stream_idle_s": 5, "response_s": 0.6}
    _router(fleet, [pool("a", url_a, "nvidia", 0.1, timeouts=timeouts), pool("b", url_b, "amd", 5.0)],
            policy="cost-aware")
    assert _post(fleet, CHAT)[0] == 200
    t0 = time.monotonic()
    status, _, data = _post(fleet, CHAT)
    took = time.monotonic() - t0
    assert _same_connection(a)
    assert status == 504 and json.loads(data)["error"]["code"] == "upstream_timeout"
    assert 0.5 < took < 3.0
    assert not b.requests()  # sent, then silent: never resent
    assert a.wait_closed(a.requests()[1], 3) is not None  # vLLM aborts a request whose client closed


def test_a_kept_alive_connection_closed_before_any_byte_is_resent_once_without_blame(fleet, backends):
    # What a stale kept-alive connection looks like (the server closed it as the request went out):
    # sent again on a fresh connection to the same pool, as upstream.request does, and not a failure.
    a, url_a = backends(_script(completion("first", 1), b"RESET", completion("again", 1)))
    _router(fleet, [pool("a", url_a, "nvidia", 1.0)], failover={"eject_after_failures": 1})
    assert _post(fleet, CHAT)[0] == 200
    status, _, data = _post(fleet, CHAT)
    assert _same_connection(a)
    assert status == 200 and json.loads(data)["choices"][0]["message"]["content"] == "again"
    seen = a.requests()
    assert len(seen) == 3 and seen[2].peer != seen[1].peer
    assert _metric(_metrics(fleet), "fleet_router_ejections_total") is None


def test_an_answer_over_the_cap_is_a_502(fleet, backends):
    a, url_a = backends(_script(completion("a", 1), completion("x" * 5000, 1)))
    _router(fleet, [pool("a", url_a, "nvidia", 1.0)], limits={"max_response_bytes": 2048})
    assert _post(fleet, CHAT)[0] == 200
    status, _, data = _post(fleet, CHAT)
    assert _same_connection(a)
    assert status == 502 and "2048" in json.loads(data)["error"]["message"]


def _raw(body: bytes, n: int = 1) -> bytes:
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return (head + body) * n


def _read_answers(s: socket.socket, n: int, timeout: float = 10) -> list[bytes]:
    """``n`` whole HTTP answers (each with Content-Length) from ``s``."""
    s.settimeout(timeout)
    buf, out = b"", []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, f"closed after {len(out)} answers"
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        while len(rest) < length:
            chunk = s.recv(65536)
            assert chunk
            rest += chunk
        out.append(head + b"\r\n\r\n" + rest[:length])
        buf = rest[length:]
    return out


def test_a_client_leaving_during_the_exchange_closes_the_backend_request_and_counts_499(fleet, backends):
    a, url_a = backends(_script(completion("a", 1), None))  # the second: silent until the router goes
    _router(fleet, [pool("a", url_a, "nvidia", 1.0)])
    assert _post(fleet, CHAT)[0] == 200
    s = socket.create_connection((HOST, fleet.port), timeout=10)
    s.sendall(_raw(json.dumps(CHAT).encode()))
    deadline = time.monotonic() + 5
    while len(a.requests()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert _same_connection(a)
    _leave_and_see_the_backend_request_closed(fleet, s, a, a.requests()[1])


def test_pipelined_requests_are_answered_in_order_each_with_its_own_answer(fleet, backends):
    async def echo(seen, n, w):
        return completion(seen.body["messages"][0]["content"], 1)

    a, url_a = backends(echo)
    _router(fleet, [pool("a", url_a, "nvidia", 1.0)])
    assert _post(fleet, CHAT)[0] == 200
    s = socket.create_connection((HOST, fleet.port), timeout=10)
    bodies = [json.dumps({**CHAT, "messages": [{"role": "user", "content": f"q{i}"}]}).encode() for i in range(4)]
    s.sendall(b"".join(_raw(b) for b in bodies))  # four requests in one write
    answers = _read_answers(s, 4)
    s.close()
    texts = [json.loads(x.partition(b"\r\n\r\n")[2])["choices"][0]["message"]["content"] for x in answers]
    assert texts == ["q0", "q1", "q2", "q3"]
    assert all(x.startswith(b"HTTP/1.1 200") for x in answers)


def test_a_body_that_comes_after_its_head_is_still_served(fleet, backends):
    # The head alone in one read: the request is not answered task-free, the task path reads the body.
    a, url_a = backends(_script(completion("ok", 1)))
    _router(fleet, [pool("a", url_a, "nvidia", 1.0)])
    assert _post(fleet, CHAT)[0] == 200
    body = json.dumps(CHAT).encode()
    raw = _raw(body)
    s = socket.create_connection((HOST, fleet.port), timeout=10)
    s.sendall(raw[:-len(body)])
    time.sleep(0.2)
    s.sendall(body[:10])
    time.sleep(0.2)
    s.sendall(body[10:])
    answer = _read_answers(s, 1)[0]
    s.close()
    assert answer.startswith(b"HTTP/1.1 200") and b'"ok"' in answer


def test_tokens_are_counted_from_the_answers_usage_not_from_text_that_looks_like_it(fleet, backends):
    # The task-free path counts completion tokens without parsing the answer (issue 18): the last
    # "usage" key, then its completion_tokens. Generated text that spells the same keys is escaped
    # inside its JSON string, and an answer laid out with spaces still counts.
    sly = json.dumps({"usage": {"completion_tokens": 999}})
    body = json.dumps({"id": "c1", "object": "chat.completion", "created": 0, "model": "m1",
                       "usage": {"prompt_tokens": 1, "completion_tokens" : 4, "total_tokens": 5},
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": sly},
                                    "finish_reason": "stop"}]}, indent=1).encode()
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
    a, url_a = backends(_script(answer))
    _router(fleet, [pool("a", url_a, "nvidia", 1.0)])
    for _ in range(2):
        status, _, data = _post(fleet, CHAT)
        assert status == 200 and json.loads(json.loads(data)["choices"][0]["message"]["content"]) == json.loads(sly)
    assert _same_connection(a)  # the second came task-free, on the first one's connection
    assert _metric(_metrics(fleet), "fleet_router_tokens_total", pool="a") == 4 + 4
