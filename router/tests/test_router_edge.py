"""The router's client side end to end: what reaches the backend (headers, query string, request
id) and how SIGTERM drains. The router runs as ``python -m fleet_router``; the backend is a small
asyncio server in this process that records every request."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from fleetproc import HOST, KEY, fleet, pool  # noqa: F401 - fixtures

ANSWER = json.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "m1",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                  "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()


class Backend:
    """Answers every POST with a chat completion (after ``X-Test-Delay`` seconds, if sent) and
    remembers each request's target and headers."""

    def __init__(self):
        self.seen: list[tuple[str, list[tuple[str, str]]]] = []
        self.aborted = 0  # requests whose connection the router closed before the answer
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._conn, HOST, 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                target = head[0].split(" ")[1]
                headers = [tuple(x.strip() for x in line.split(":", 1)) for line in head[1:] if line]
                length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
                await reader.readexactly(length)
                if head[0].startswith("POST"):
                    self.seen.append((target, headers))
                    delay = next((float(v) for k, v in headers if k.lower() == "x-test-delay"), 0)
                    try:  # "prefill": the router closing the connection shows up as EOF here
                        if not await asyncio.wait_for(reader.read(1), delay):
                            self.aborted += 1
                            return
                    except TimeoutError:
                        pass
                    body, status = ANSWER, "200 OK"
                else:
                    body, status = b"{}", "404 Not Found"
                writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        async def shutdown():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


@pytest.fixture
def backend():
    b = Backend()
    try:
        yield b
    finally:
        b.stop()


def post(port: int, path: str = "/v1/chat/completions", headers: dict | None = None, timeout: float = 20):
    """A POST with exactly these headers (http.client: urllib would replace ``Connection``)."""
    body = json.dumps({"model": "m1", "messages": [{"role": "user", "content": "hi"}]}).encode()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={
            "Authorization": f"Bearer {KEY}", "Content-Type": "application/json", **(headers or {})})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def sent_headers(backend: Backend) -> dict[str, str]:
    return {k.lower(): v for k, v in backend.seen[-1][1]}


def test_hop_by_hop_headers_are_stripped_and_the_peer_is_forwarded(fleet, backend):
    fleet.start_router({"pools": [pool("a", backend.url, "nvidia", 1.0)]})
    status, headers, _ = post(fleet.port, "/v1/chat/completions?api-version=2024-06-01&x=%2F", {
        "Connection": "keep-alive, X-Hop-Secret", "X-Hop-Secret": "internal", "Keep-Alive": "timeout=5",
        "TE": "trailers", "Proxy-Authorization": "Basic eDp5", "X-Custom": "kept",
        "X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6.6.6.6", "X-Forwarded-Proto": "https"})
    assert status == 200
    target, _ = backend.seen[-1]
    sent = sent_headers(backend)
    assert target == "/v1/chat/completions?api-version=2024-06-01&x=%2F"  # the query string, untouched
    assert sent["x-custom"] == "kept"
    for hop in ("x-hop-secret", "keep-alive", "te", "proxy-authorization", "authorization"):
        assert hop not in sent, hop
    # Not a trusted proxy: what the client claims is replaced by the peer address.
    assert sent["x-forwarded-for"] == "127.0.0.1"
    assert sent["forwarded"] == "for=127.0.0.1;proto=http"
    assert sent["x-forwarded-proto"] == "http"
    # One request id on the answer and at the backend.
    assert len(headers["x-request-id"]) == 24 and sent["x-request-id"] == headers["x-request-id"]


def test_a_trusted_proxy_chain_is_appended_to(fleet, backend):
    fleet.start_router({"pools": [pool("a", backend.url, "nvidia", 1.0)],
                        "server": {"trusted_proxies": ["127.0.0.0/8"]}})
    status, headers, _ = post(fleet.port, headers={"X-Forwarded-For": "203.0.113.7", "X-Request-Id": "req-42",
                                                    "Forwarded": "for=203.0.113.7;proto=https",
                                                    "X-Forwarded-Proto": "https"})
    assert status == 200
    sent = sent_headers(backend)
    assert sent["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert sent["forwarded"] == "for=203.0.113.7;proto=https, for=127.0.0.1;proto=http"
    assert sent["x-forwarded-proto"] == "https"
    assert sent["x-request-id"] == headers["x-request-id"] == "req-42"


def test_bad_trusted_proxy_is_a_config_error(fleet, tmp_path):
    import subprocess
    import sys

    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"server": {"trusted_proxies": ["10.0.0.0/33"]},
                                "pools": [pool("a", "http://127.0.0.1:1", "nvidia", 1.0)]}))
    p = subprocess.run([sys.executable, "-m", "fleet_router", "--config", str(path)], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 2 and "server.trusted_proxies" in p.stderr and "10.0.0.0/33" in p.stderr


def readyz(fleet) -> int:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{fleet.admin_port}/readyz", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def in_background(fn, *args, **kw):
    out = {}

    def run():
        try:
            out["result"] = fn(*args, **kw)
        except Exception as e:  # noqa: BLE001 - reported by the test
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    return t, out


def wait_for(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_sigterm_stops_readiness_serves_through_pre_stop_then_drains(fleet, backend):
    fleet.start_router({"pools": [pool("a", backend.url, "nvidia", 1.0)],
                        "shutdown": {"pre_stop_s": 1.5, "drain_s": 20}})
    slow, slow_out = in_background(post, fleet.port, headers={"X-Test-Delay": "3"})
    assert wait_for(lambda: len(backend.seen) == 1)
    t0 = time.monotonic()
    fleet.router.send_signal(signal.SIGTERM)
    assert wait_for(lambda: readyz(fleet) == 503, timeout=1)  # at once
    status, _, _ = post(fleet.port)  # during the pre-stop grace: still served, on a new connection
    assert status == 200 and time.monotonic() - t0 < 1.5
    assert wait_for(lambda: time.monotonic() - t0 > 1.5)

    def refused() -> bool:
        try:
            with socket.create_connection((HOST, fleet.port), timeout=0.5):
                return False
        except OSError:
            return True
    assert wait_for(refused, timeout=2)  # listeners closed after the grace
    slow.join(timeout=20)
    assert slow_out["result"][0] == 200  # the request in flight finished
    assert fleet.router.wait(timeout=20) == 0


def test_a_second_signal_forces_exit(fleet, backend):
    fleet.start_router({"pools": [pool("a", backend.url, "nvidia", 1.0)],
                        "shutdown": {"pre_stop_s": 0, "drain_s": 60}})
    slow, _ = in_background(post, fleet.port, headers={"X-Test-Delay": "30"}, timeout=40)
    assert wait_for(lambda: len(backend.seen) == 1)
    fleet.router.send_signal(signal.SIGTERM)
    assert wait_for(lambda: readyz(fleet) == 503)  # the first signal is being handled: draining
    assert fleet.router.poll() is None  # ... and waits for the request in flight
    fleet.router.send_signal(signal.SIGTERM)
    assert fleet.router.wait(timeout=5) == 1
    slow.join(timeout=40)


def test_requests_on_a_kept_alive_connection_during_drain_are_503_with_retry_after(fleet, backend):
    fleet.start_router({"pools": [pool("a", backend.url, "nvidia", 1.0)],
                        "shutdown": {"pre_stop_s": 0, "drain_s": 20}})
    slow, _ = in_background(post, fleet.port, headers={"X-Test-Delay": "2"})
    assert wait_for(lambda: len(backend.seen) == 1)
    body = json.dumps({"model": "m1", "messages": []}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nX-Test-Delay: 1\r\n\r\n").encode()
    with socket.create_connection((HOST, fleet.port), timeout=10) as s:
        # Two pipelined requests: the first starts before SIGTERM, the second arrives while draining.
        s.sendall(head + body)
        assert wait_for(lambda: len(backend.seen) == 2)
        fleet.router.send_signal(signal.SIGTERM)
        assert wait_for(lambda: readyz(fleet) == 503)  # draining before the second request is sent
        s.sendall(head + body)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    first, _, second = out.partition(b"HTTP/1.1 503")
    assert first.startswith(b"HTTP/1.1 200") and second, out[:600]
    assert b"retry-after: 1" in second.lower() and b"connection: close" in second.lower()
    slow.join(timeout=20)
    assert fleet.router.wait(timeout=20) == 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_during_prefill_cancels_the_backend_request(fleet, backend, stream):
    fleet.start_router({"pools": [pool("a", backend.url, "nvidia", 1.0)]})
    body = json.dumps({"model": "m1", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}).encode()
    with socket.create_connection((HOST, fleet.port), timeout=10) as s:
        s.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nX-Test-Delay: 20\r\n\r\n"
                   ).encode() + body)
        assert wait_for(lambda: len(backend.seen) == 1)
    t0 = time.monotonic()
    assert wait_for(lambda: backend.aborted == 1, timeout=5)  # not after the 20 s "generation"
    assert time.monotonic() - t0 < 5
