"""The client-facing HTTP server against hostile and unusual clients: real sockets on 127.0.0.1,
raw bytes, every wait bounded."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest

from fleet_router import httpio
from fleet_router.openai_api import http_error

HOST = "127.0.0.1"


async def until(cond, timeout: float = 2.0) -> None:
    """Wait for ``cond()`` to hold, failing after ``timeout`` seconds (instead of a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"not within {timeout} s"
        await asyncio.sleep(0.005)


def run(coro, timeout: float = 20.0):
    """Each case on its own loop, bounded (as test_upstream does)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        loop.close()


class App:
    """Handlers that record what they saw."""

    def __init__(self):
        self.seen: list[httpio.Request] = []
        self.cancelled = 0
        self.streamed = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def echo(self, r: httpio.Request):
        self.seen.append(r)
        body = await httpio.read_body(r, 1 << 20)
        return httpio.json_response({"path": r.path, "query": r.query_string, "len": len(body),
                                     "id": r.request_id, "headers": r.headers.items()})

    async def body(self, r: httpio.Request):
        self.seen.append(r)
        raw = await httpio.read_body(r, 4096)
        if len(raw) > 4096:
            return httpio.Response(413, b"too large")
        return httpio.Response(200, raw)

    async def body_errors(self, r: httpio.Request):
        try:
            await httpio.read_body(r, 4096)
        except httpio.BodyTimeout:
            return httpio.Response(408, b"slow body")
        return httpio.Response(200, b"ok")

    async def slow(self, r: httpio.Request):
        self.seen.append(r)
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return httpio.Response(200, f"slow {r.path}".encode())

    async def stream(self, r: httpio.Request):
        resp = httpio.StreamResponse(200, {"Content-Type": "text/event-stream"})
        await resp.prepare(r)
        self.started.set()
        chunk = b"x" * 65536
        try:
            for _ in range(800):  # 50 MB if nobody stops it
                await resp.write(chunk)
                self.streamed += len(chunk)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        await resp.write_eof()
        return resp

    async def headers(self, r: httpio.Request):
        # A handler's framing header is dropped; its own headers go out as given, value by value.
        return httpio.Response(int(r.headers.get("x-status", "200")), b"hi",
                               headers={"X-Echo": r.headers.get("x-echo", ""), "Content-Length": "999"})

    async def events(self, r: httpio.Request):
        # Three events in one go, then one more once the test has read the first three.
        resp = httpio.StreamResponse(200, {"Content-Type": "text/event-stream"})
        await resp.prepare(r)
        for i in range(3):
            await resp.write(b"data: %d\n\n" % i)
        self.started.set()
        await asyncio.wait_for(self.release.wait(), 10)
        await resp.write(b"data: 3\n\n")
        return resp

    def routes(self):
        return [("GET", "/headers", self.headers), ("GET", "/events", self.events), ("POST", "/echo", self.echo), ("GET", "/echo", self.echo), ("POST", "/body", self.body),
                ("POST", "/body-errors", self.body_errors), ("GET", "/slow", self.slow),
                ("GET", "/stream", self.stream)]


async def site(app: App, **kw) -> tuple[httpio.Site, int]:
    kw.setdefault("max_body_bytes", 4096)
    s = await httpio.start_site(app.routes(), HOST, 0, make_error=http_error, **kw)
    return s, s.server.sockets[0].getsockname()[1]


async def connect(port: int):
    return await asyncio.open_connection(HOST, port)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response (Content-Length or chunked framing)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if not size:
                break
            parts.append(data[:-2])
        body = b"".join(parts)
    else:
        body = await reader.read()
    return status, headers, body


async def closed(reader: asyncio.StreamReader, within: float = 5.0) -> bool:
    """The server closed the connection (EOF or reset) within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


def access_lines(caplog) -> list[dict]:
    """The access log's JSON lines (a record may carry several, one per line)."""
    return [json.loads(line) for r in caplog.records if r.name == "fleet_router.access"
            for line in r.getMessage().splitlines()]


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


# --- request smuggling and malformed heads -----------------------------------------------------


@pytest.mark.parametrize("framing", [
    "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    "Content-Length: 5\r\nContent-Length: 6\r\n",
    "Transfer-Encoding: chunked, identity\r\n",
    " Content-Length: 5\r\n",  # obs-fold
])
def test_ambiguous_framing_is_400_and_closes_without_reaching_the_handler(framing):
    # llhttp (httptools 0.9.0) rejects these by default: "Content-Length can't be present with
    # Transfer-Encoding", "Duplicate Content-Length", "Invalid `Transfer-Encoding` header value",
    # "Unexpected whitespace after header value" -- no lenient flags are set.
    async def case():
        app = App()
        s, port = await site(app)
        reader, writer = await connect(port)
        writer.write(f"POST /echo HTTP/1.1\r\nHost: x\r\n{framing}\r\n0\r\n\r\nGET /echo HTTP/1.1\r\n\r\n".encode())
        status, headers, body = await read_response(reader)
        assert status == 400 and headers["connection"] == "close"
        assert json.loads(body)["error"]["code"] == "bad_request"
        assert await closed(reader)
        assert app.seen == []  # neither the smuggled nor the outer request was served
        writer.close()
        await s.close()
    run(case())


@pytest.mark.parametrize("pieces", [1, 50])
def test_100_kb_of_headers_is_431_and_a_clean_close(pieces):
    async def case():
        app = App()
        s, port = await site(app, max_header_bytes=32768)
        reader, writer = await connect(port)
        head = get("/echo", "".join(f"X-Pad-{i}: {'a' * 1000}\r\n" for i in range(100))).rstrip(b"\r\n")
        step = len(head) // pieces + 1
        for i in range(0, len(head), step):
            writer.write(head[i:i + step])
            await writer.drain()
        status, headers, body = await read_response(reader)
        assert status == 431 and json.loads(body)["error"]["code"] == "headers_too_large"
        assert await closed(reader)
        assert app.seen == []
        writer.close()
        await s.close()
    run(case())


def test_one_endless_header_line_is_cut_off_not_buffered():
    async def case():
        app = App()
        s, port = await site(app, max_header_bytes=32768)
        reader, writer = await connect(port)
        writer.write(b"GET /echo HTTP/1.1\r\nX-Long: ")
        for _ in range(20):  # 200 KB and never a line end
            writer.write(b"a" * 10240)
            await asyncio.sleep(0.005)
        status, _, _ = await read_response(reader)
        assert status == 431
        assert await closed(reader)
        writer.close()
        await s.close()
    run(case())


def test_garbage_is_400_never_500():
    async def case():
        app = App()
        s, port = await site(app)
        for junk in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS hello
                     b"GET / HTTP/9.9\r\n\r\n", b"NOTAMETHOD / HTTP/1.1\r\n\r\n"):
            reader, writer = await connect(port)
            writer.write(junk)
            status, _, _ = await read_response(reader)
            assert status == 400
            assert await closed(reader)
            writer.close()
        await s.close()
    run(case())


# --- timeouts ----------------------------------------------------------------------------------


def test_a_head_that_never_ends_is_408_after_the_header_timeout():
    async def case():
        s, port = await site(App(), header_timeout=0.3)
        reader, writer = await connect(port)
        writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        t0 = asyncio.get_running_loop().time()
        status, _, _ = await read_response(reader)
        assert status == 408 and asyncio.get_running_loop().time() - t0 < 3
        assert await closed(reader)
        writer.close()
        await s.close()
    run(case())


def test_a_silent_connection_and_an_idle_keep_alive_are_closed():
    async def case():
        s, port = await site(App(), header_timeout=0.3, idle_timeout=0.5)
        silent_reader, silent = await connect(port)  # connects, never sends a byte
        reader, writer = await connect(port)
        writer.write(get("/echo"))
        status, headers, _ = await read_response(reader)
        assert status == 200 and "connection" not in headers  # kept alive ...
        assert await closed(reader, within=3)  # ... until idle
        assert await closed(silent_reader, within=3)
        assert len(s.connections) == 0
        writer.close()
        silent.close()
        await s.close()
    run(case())


def test_a_body_that_stops_half_way_is_408_after_the_body_timeout():
    async def case():
        s, port = await site(App(), body_timeout=0.3)
        reader, writer = await connect(port)
        writer.write(b"POST /body-errors HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 40)
        status, headers, body = await read_response(reader)
        assert (status, body) == (408, b"slow body") and headers["connection"] == "close"
        assert await closed(reader)
        writer.close()
        await s.close()
    run(case())


def test_a_slow_but_steady_body_is_not_cut():
    async def case():
        s, port = await site(App(), body_timeout=0.3)
        reader, writer = await connect(port)
        writer.write(b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        for _ in range(10):  # 1 s in all, never 0.3 s of silence
            await asyncio.sleep(0.1)
            writer.write(b"y")
        status, _, body = await read_response(reader)
        assert (status, body) == (200, b"y" * 10)
        writer.close()
        await s.close()
    run(case())


# --- bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
def test_an_oversized_body_is_413_and_the_client_reads_it(chunked):
    async def case():
        app = App()
        s, port = await site(app, max_body_bytes=4096)
        reader, writer = await connect(port)
        big = b"z" * 200_000
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(big)}"
        writer.write(f"POST /body HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n".encode())
        writer.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(big), big) if chunked else big)
        status, headers, _ = await read_response(reader)
        assert status == 413 and headers["connection"] == "close"
        assert await closed(reader)
        writer.close()
        await s.close()
    run(case())


def test_chunked_trailers_never_become_request_headers():
    async def case():
        app = App()
        s, port = await site(app)
        reader, writer = await connect(port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n0\r\nAuthorization: Bearer smuggled\r\n\r\n")
        status, _, body = await read_response(reader)
        seen = dict((k.lower(), v) for k, v in json.loads(body)["headers"])
        assert status == 200 and json.loads(body)["len"] == 3 and "authorization" not in seen
        writer.close()
        await s.close()
    run(case())


# --- pipelining, half-close, disconnects -------------------------------------------------------


def test_pipelined_requests_are_answered_in_order():
    async def case():
        app = App()
        s, port = await site(app)
        reader, writer = await connect(port)
        post = b"POST /echo?n=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
        writer.write(get("/slow") + post + get("/echo?n=3"))  # one segment, the first answer is slow
        await asyncio.wait_for(app.started.wait(), 5)
        await asyncio.sleep(0.1)
        assert [r.path for r in app.seen] == ["/slow"]  # the others wait their turn
        app.release.set()
        answers = [await read_response(reader) for _ in range(3)]
        assert answers[0][2] == b"slow /slow"
        assert [json.loads(a[2])["query"] for a in answers[1:]] == ["n=2", "n=3"]
        assert json.loads(answers[1][2])["len"] == 4
        writer.close()
        await s.close()
    run(case())


def test_a_client_that_half_closes_is_treated_as_gone():
    # Like nginx with proxy_ignore_client_abort off: EOF from the client ends the request, so a
    # backend request is not kept running for a client that will never read the answer.
    async def case():
        app = App()
        s, port = await site(app)
        reader, writer = await connect(port)
        writer.write(get("/slow"))
        await asyncio.wait_for(app.started.wait(), 5)
        writer.write_eof()
        assert await closed(reader)
        for _ in range(100):
            if app.cancelled:
                break
            await asyncio.sleep(0.01)
        assert app.cancelled == 1 and app.seen[0].disconnected.is_set()
        assert len(s.connections) == 0
        writer.close()
        await s.close()
    run(case())


def test_a_client_leaving_mid_stream_cancels_the_handler_without_a_traceback(caplog):
    async def case():
        app = App()
        s, port = await site(app)
        reader, writer = await connect(port)
        writer.write(get("/stream"))
        await reader.readuntil(b"\r\n\r\n")
        await reader.read(10000)
        writer.transport.abort()  # a reset
        await until(lambda: not s.connections)  # the reset closes the connection, within a deadline
        assert app.streamed < 50 * 1024 * 1024
        assert not s.connections
        await s.close()
    with caplog.at_level(logging.INFO, logger="fleet_router"):
        run(case())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    access = access_lines(caplog)
    assert [a["status"] for a in access] == [200]  # the head went out; the log line still comes


def test_a_client_that_does_not_read_stops_the_writer():
    async def case():
        app = App()
        s, port = await site(app, write_buffer_high=64 * 1024)
        reader, writer = await connect(port)
        writer.transport.pause_reading()
        writer.write(get("/stream"))
        await asyncio.wait_for(app.started.wait(), 5)
        await asyncio.sleep(0.5)
        # The handler is held at write(): what it produced is bounded by the socket buffers plus the
        # write-buffer limit, not the 50 MB it would write.
        assert app.streamed < 16 * 1024 * 1024
        writer.transport.resume_reading()
        status, _, body = await read_response(reader)
        assert status == 200 and len(body) == 800 * 65536
        writer.close()
        await s.close()
    run(case(), timeout=60)


def test_an_h2c_upgrade_is_answered_as_http_1_1_then_closed():
    async def case():
        app = App()
        s, port = await site(app)
        reader, writer = await connect(port)
        writer.write(get("/echo", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"))
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await closed(reader)
        writer.close()
        await s.close()
    run(case())


# --- connection cap, request ids, access log ---------------------------------------------------


def test_connections_over_the_cap_get_503():
    async def case():
        s, port = await site(App(), max_connections=2)
        held = [await connect(port) for _ in range(2)]
        await until(lambda: len(s.connections) == 2)  # the server holds both before the third arrives
        reader, writer = await connect(port)
        status, headers, _ = await read_response(reader)
        assert status == 503 and headers["retry-after"] == "1"
        assert await closed(reader)
        held[0][1].write(get("/echo"))  # the ones under the cap are served
        assert (await read_response(held[0][0]))[0] == 200
        for _, w in [*held, (reader, writer)]:
            w.close()
        await s.close()
    run(case())


def test_request_id_is_kept_when_safe_and_generated_otherwise(caplog):
    async def case():
        s, port = await site(App())
        reader, writer = await connect(port)
        ids = []
        for extra in ("X-Request-Id: abc-123\r\n", "", "X-Request-Id: bad id\r\n\r\n".rstrip("\r\n") + "\r\n"):
            writer.write(get("/echo", extra))
            _, headers, body = await read_response(reader)
            assert headers["x-request-id"] == json.loads(body)["id"]
            ids.append(headers["x-request-id"])
        writer.close()
        await s.close()
        return ids
    with caplog.at_level(logging.INFO, logger="fleet_router.access"):
        ids = run(case())
    assert ids[0] == "abc-123"
    assert len(ids[1]) == 24 and len(ids[2]) == 24 and ids[1] != ids[2]
    access = access_lines(caplog)
    assert [(a["id"], a["method"], a["path"], a["status"]) for a in access] == [
        (i, "GET", "/echo", 200) for i in ids]


def test_unknown_path_404_and_wrong_method_405_with_allow():
    async def case():
        s, port = await site(App())
        reader, writer = await connect(port)
        writer.write(get("/nope") + b"DELETE /body HTTP/1.1\r\nHost: x\r\n\r\n")
        (s1, _, b1), (s2, h2, _) = [await read_response(reader) for _ in range(2)]
        assert (s1, json.loads(b1)["error"]["code"]) == (404, "not_found")
        assert s2 == 405 and h2["allow"] == "POST"
        writer.close()
        await s.close()
    run(case())


def test_stop_listening_refuses_new_connections_and_closes_idle_ones():
    async def case():
        app = App()
        s, port = await site(app)
        idle_reader, idle = await connect(port)
        reader, writer = await connect(port)
        writer.write(get("/slow"))
        await asyncio.wait_for(app.started.wait(), 5)
        await s.stop_listening()
        assert await closed(idle_reader)
        with pytest.raises(OSError):
            with socket.create_connection((HOST, port), timeout=1):
                pass
        assert s.busy == 1
        app.release.set()
        status, headers, _ = await read_response(reader)  # the one in flight finishes
        assert status == 200 and headers["connection"] == "close"
        writer.close()
        idle.close()
        await s.close()
    run(case())


def test_expect_100_continue_is_answered_when_the_body_is_wanted():
    # curl sends `Expect: 100-continue` for bodies over 1 KB and waits (1 s) for the go-ahead.
    async def case():
        s, port = await site(App())
        reader, writer = await connect(port)
        writer.write(b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        status, _, body = await read_response(reader)
        assert (status, body) == (200, b"hello")
        # Not wanted (no such path): the final answer comes without a 100, and the body is never sent.
        writer.write(b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        status, headers, _ = await read_response(reader)
        assert status == 404 and headers["connection"] == "close"
        writer.close()
        await s.close()
    run(case())


def test_response_headers_carry_each_answer_s_own_values_and_the_server_s_framing():
    # Header lines are encoded once per (name, value) and reused: each answer must still carry
    # its own value, a handler's Content-Length never replaces the server's, and a status the
    # standard library does not name still gets a status line.
    async def case():
        s, port = await site(App())
        reader, writer = await connect(port)
        got = []
        for value, status in (("a", 200), ("b", 200), ("a", 299), ("é", 200)):
            writer.write(get("/headers", f"X-Echo: {value}\r\nX-Status: {status}\r\n").replace(
                "é".encode(), "é".encode("latin-1")))
            st, headers, body = await read_response(reader)
            got.append((st, headers["x-echo"], headers["content-length"], body))
        writer.close()
        await s.close()
        return got
    got = run(case())
    assert got == [(200, "a", "2", b"hi"), (200, "b", "2", b"hi"), (299, "a", "2", b"hi"),
                   (200, "é", "2", b"hi")]  # a Latin-1 value, as sent


def test_stream_writes_reach_the_client_without_waiting_for_the_end_and_pipelining_stays_in_order():
    # Writes are corked until the loop iteration ends (one send for the head and three events),
    # never until the stream ends: the client reads the first events while the handler still
    # waits. A request pipelined behind the stream is answered after the stream's last byte.
    async def case():
        app = App()
        s, port = await site(app)
        reader, writer = await connect(port)
        writer.write(get("/events") + get("/echo?n=2"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
        first = b""
        while first.count(b"\n\n") < 3:  # the handler is blocked on release until these arrive
            first += await asyncio.wait_for(reader.read(65536), 5)
        app.release.set()
        rest = b""
        while b"0\r\n\r\n" not in rest:
            rest += await asyncio.wait_for(reader.read(65536), 5)
        stream, _, after = (first + rest).partition(b"0\r\n\r\n")
        events = [line for line in stream.split(b"\r\n") if line.startswith(b"data:")]
        status, _, body = await read_response(asyncio_reader_with(after, reader))
        writer.close()
        await s.close()
        return events, status, json.loads(body)["query"]

    events, status, query = run(case())
    assert events == [b"data: %d\n\n" % i for i in range(4)]
    assert (status, query) == (200, "n=2")


def asyncio_reader_with(prefix: bytes, reader: asyncio.StreamReader) -> asyncio.StreamReader:
    """A reader that yields ``prefix`` (bytes already read past a stream's end), then ``reader``'s."""
    merged = asyncio.StreamReader()
    merged.feed_data(prefix)

    async def pump():
        while data := await reader.read(65536):
            merged.feed_data(data)
        merged.feed_eof()
    asyncio.get_running_loop().create_task(pump())
    return merged
