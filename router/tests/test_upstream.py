"""The router's backend client against real loopback servers that misbehave on purpose: framing,
keep-alive reuse, stale connections, silence and backends dying mid-body."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from fleet_router.upstream import Origin, UpstreamError, UpstreamPool, UpstreamTimeout

HEAD_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"


async def _serve(handler):
    """A loopback server; ``handler(reader, writer, n)`` answers the n-th request (0-based)."""
    count = {"requests": 0, "connections": 0}

    async def on_conn(reader, writer):
        count["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                body = await reader.readexactly(length)
                n = count["requests"]
                count["requests"] += 1
                if await handler(reader, writer, n, head, body) is False:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, Origin(f"http://127.0.0.1:{port}/prefix"), count


def _run(coro):
    # Its own loop, never installed as the thread's: asyncio.run would leave the main thread with
    # no current loop, which breaks a later test in the same worker that plans under Pulumi mocks.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, 20))
    finally:
        loop.close()


@contextlib.asynccontextmanager
async def _backend(handler, connect_timeout: float = 2.0):
    """(origin, request/connection counts, a client pool), all closed afterwards."""
    server, origin, count = await _serve(handler)
    pool = UpstreamPool(connect_timeout=connect_timeout)
    try:
        yield origin, count, pool
    finally:
        await pool.close()
        server.close()


def test_length_and_chunked_bodies_and_connection_reuse():
    async def handler(reader, writer, n, head, body):
        assert head.startswith(b"POST /prefix/v1/chat/completions HTTP/1.1\r\n")
        assert b"\r\nHost: 127.0.0.1:" in head and b"\r\nX-Test: yes\r\n" in head
        if n % 2 == 0:
            writer.write(HEAD_OK + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in (b"data: one\n\n", b"data: two\n\n"):
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b"0\r\n\r\n")

    async def main():
        async with _backend(handler) as (origin, count, pool):
            for i in range(6):
                r = await pool.request(origin, "/v1/chat/completions", [("X-Test", "yes")], b'{"n": %d}' % i, 5, 10)
                try:
                    data = await r.read_all()
                finally:
                    r.release()
                assert r.status == 200
                assert data == (b'{"n": %d}' % i if i % 2 == 0 else b"data: one\n\ndata: two\n\n")
            return count

    count = _run(main())
    assert count == {"requests": 6, "connections": 1}  # one kept-alive connection for all six


def test_a_stale_keep_alive_connection_is_retried_on_a_fresh_one():
    async def handler(reader, writer, n, head, body):
        writer.write(HEAD_OK + b"Content-Length: 2\r\n\r\nok")
        await writer.drain()
        return False  # closes after answering, without saying `Connection: close`

    async def main():
        async with _backend(handler) as (origin, count, pool):
            for _ in range(3):
                r = await pool.request(origin, "/v1/completions", [], b"{}", 5, 10)
                assert await r.read_all() == b"ok"
                r.release()
                await asyncio.sleep(0.05)  # the server's close arrives while the connection is idle
            return count

    assert _run(main())["requests"] == 3


def test_a_silent_backend_times_out_before_the_first_byte():
    async def handler(reader, writer, n, head, body):
        await asyncio.sleep(5)

    async def main():
        async with _backend(handler) as (origin, count, pool):
            with pytest.raises(UpstreamTimeout):
                await pool.request(origin, "/v1/completions", [], b"{}", 0.2, 10)

    _run(main())


@pytest.mark.parametrize("reply,linger_s,first_byte_s,raised", [
    # a head, then silence: the first read times out
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 5, 0.2, UpstreamTimeout),
    # a backend dying mid-body: an error, not a short answer
    (HEAD_OK + b"Content-Length: 100\r\n\r\n" + b"x" * 10, 0, 5, UpstreamError),
], ids=["head-then-silence", "dies-mid-body"])
def test_a_response_failing_after_its_head_raises_on_read(reply, linger_s, first_byte_s, raised):
    async def handler(reader, writer, n, head, body):
        writer.write(reply)
        await writer.drain()
        await asyncio.sleep(linger_s)
        return False

    async def main():
        async with _backend(handler) as (origin, count, pool):
            r = await pool.request(origin, "/v1/completions", [], b"{}", first_byte_s, 10)
            with pytest.raises(raised):
                await r.read_all()
            r.release()

    _run(main())


def test_a_body_ended_by_closing_the_connection_is_complete():
    async def handler(reader, writer, n, head, body):
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()
        return False

    async def main():
        async with _backend(handler) as (origin, count, pool):
            r = await pool.request(origin, "/v1/completions", [], b"{}", 5, 10)
            assert await r.read_all() == b"all of it"
            r.release()

    _run(main())


def test_nothing_listening_is_an_upstream_error():
    async def main():
        pool = UpstreamPool(connect_timeout=1)
        with pytest.raises(UpstreamError):
            await pool.request(Origin("http://127.0.0.1:9"), "/v1/completions", [], b"{}", 1, 1)

    _run(main())
