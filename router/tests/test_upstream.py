"""The router's backend client against real loopback servers that misbehave on purpose: framing,
keep-alive reuse, stale connections, silence, stalls, backends dying mid-body, clients leaving."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from fleet_router.upstream import Deadlines, Origin, UpstreamError, UpstreamPool, UpstreamTimeout, UpstreamTooLarge

HEAD_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def _d(head: float = 5, idle: float | None = None, total: float | None = 10, connect: float = 2) -> Deadlines:
    return Deadlines(connect, head, idle, total)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _serve(handler):
    """A loopback server; ``handler(reader, writer, n)`` answers the n-th request (0-based).
    ``count["closed"]`` is set when a connection's client side has gone (what vLLM aborts on)."""
    count = {"requests": 0, "connections": 0, "closed": asyncio.Event(), "tasks": set()}

    async def on_conn(reader, writer):
        count["connections"] += 1
        count["tasks"].add(asyncio.current_task())
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
            count["closed"].set()
        finally:
            writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, Origin(f"http://127.0.0.1:{port}/prefix"), count


async def _until(cond, timeout: float = 2.0) -> None:
    """Wait for ``cond()`` to hold, failing after ``timeout`` seconds (no fixed sleeps to synchronise)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"not within {timeout} s"
        await asyncio.sleep(0.005)


def _run(coro):
    # Its own loop, never installed as the thread's: asyncio.run would leave the main thread with
    # no current loop, which breaks a later test in the same worker that plans under Pulumi mocks.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, 20))
    finally:
        loop.close()


@contextlib.asynccontextmanager
async def _backend(handler):
    """(origin, request/connection counts, a client pool), all closed afterwards."""
    server, origin, count = await _serve(handler)
    pool = UpstreamPool()
    try:
        yield origin, count, pool
    finally:
        await pool.close()
        server.close()
        for t in count["tasks"]:  # handlers still lingering (a silent backend): stopped, not leaked
            t.cancel()
        await asyncio.gather(*count["tasks"], return_exceptions=True)


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
                r = await pool.request(origin, "/v1/chat/completions", [("X-Test", "yes")], b'{"n": %d}' % i, _d())
                try:
                    data = await r.read_all()
                finally:
                    r.release()
                assert r.status == 200
                assert data == (b'{"n": %d}' % i if i % 2 == 0 else b"data: one\n\ndata: two\n\n")
            return count

    count = _run(main())
    assert (count["requests"], count["connections"]) == (6, 1)  # one kept-alive connection for all six


def test_a_stale_keep_alive_connection_is_retried_on_a_fresh_one():
    async def handler(reader, writer, n, head, body):
        writer.write(HEAD_OK + b"Content-Length: 2\r\n\r\nok")
        await writer.drain()
        return False  # closes after answering, without saying `Connection: close`

    async def main():
        async with _backend(handler) as (origin, count, pool):
            for _ in range(3):
                r = await pool.request(origin, "/v1/completions", [], b"{}", _d())
                assert await r.read_all() == b"ok"
                r.release()
                # The server has closed its side while the connection sits idle in the pool.
                await asyncio.wait_for(asyncio.wait(set(count["tasks"])), 2)
            return count

    assert _run(main())["requests"] == 3


def test_a_silent_backend_times_out_before_the_first_byte():
    async def handler(reader, writer, n, head, body):
        await asyncio.sleep(5)

    async def main():
        async with _backend(handler) as (origin, count, pool):
            with pytest.raises(UpstreamTimeout):
                await pool.request(origin, "/v1/completions", [], b"{}", _d(head=0.2))

    _run(main())


@pytest.mark.parametrize("reply,linger_s,idle_s,raised", [
    # a stream's head, then silence: the first read times out (the inter-token idle bound)
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 5, 0.2, UpstreamTimeout),
    # a backend dying mid-body: an error, not a short answer
    (HEAD_OK + b"Content-Length: 100\r\n\r\n" + b"x" * 10, 0, 5, UpstreamError),
], ids=["head-then-silence", "dies-mid-body"])
def test_a_response_failing_after_its_head_raises_on_read(reply, linger_s, idle_s, raised):
    async def handler(reader, writer, n, head, body):
        writer.write(reply)
        await writer.drain()
        await asyncio.sleep(linger_s)
        return False

    async def main():
        async with _backend(handler) as (origin, count, pool):
            r = await pool.request(origin, "/v1/completions", [], b"{}", _d(idle=idle_s, total=None))
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
            r = await pool.request(origin, "/v1/completions", [], b"{}", _d())
            assert await r.read_all() == b"all of it"
            r.release()

    _run(main())


def test_nothing_listening_is_an_upstream_error():
    async def main():
        pool = UpstreamPool()
        with pytest.raises(UpstreamError) as e:
            await pool.request(Origin("http://127.0.0.1:9"), "/v1/completions", [], b"{}", _d(connect=1))
        assert e.value.phase == "connect"

    _run(main())


# --- issue 23: timeouts that match how vLLM answers, stale retries, cancellation, caps ----------

def test_a_stream_that_keeps_producing_has_no_total_cap_but_a_stall_is_cut_and_the_backend_told():
    # Issue 23 item 4: a stream longer than the old total timeout was cut; a stalled one held the
    # client for minutes. Now: chunks 0.1 s apart for ~1 s pass (idle 0.3 s, no total), then a
    # stall is an UpstreamTimeout within about the idle bound, and the backend sees the disconnect.
    async def handler(reader, writer, n, head, body):
        writer.write(SSE_HEAD)
        for i in range(10):
            writer.write(_chunk(b"data: %d\n\n" % i))
            await writer.drain()
            await asyncio.sleep(0.1)
        await reader.read()  # stalls until the client goes away
        raise ConnectionError

    async def main():
        async with _backend(handler) as (origin, count, pool):
            loop = asyncio.get_running_loop()
            r = await pool.request(origin, "/v1/chat/completions", [], b"{}", _d(head=0.3, idle=0.3, total=None))
            got = []
            with pytest.raises(UpstreamTimeout) as e:
                while chunk := await r.read():
                    got.append(chunk)
                    t_last = loop.time()
            stalled_for = loop.time() - t_last
            r.release()
            await asyncio.wait_for(count["closed"].wait(), 2)  # the backend can stop generating
            return b"".join(got), e.value, stalled_for

    data, exc, stalled_for = _run(main())
    assert data == b"".join(b"data: %d\n\n" % i for i in range(10))
    assert exc.phase == "body" and 0.2 < stalled_for < 1.5


def test_a_non_streaming_answer_slower_than_a_stream_head_bound_is_served():
    # Issue 23 item 2: vLLM sends a non-streaming answer's head with the whole answer, so its bound
    # is the time to the whole answer (total), not a first-byte timeout.
    async def handler(reader, writer, n, head, body):
        await asyncio.sleep(0.6)  # "generating"
        writer.write(HEAD_OK + b"Content-Length: 2\r\n\r\nok")

    async def main():
        async with _backend(handler) as (origin, count, pool):
            r = await pool.request(origin, "/v1/completions", [], b"{}", _d(head=3, total=3))
            assert await r.read_all() == b"ok"
            r.release()
            with pytest.raises(UpstreamTimeout) as e:
                await pool.request(origin, "/v1/completions", [], b"{}", _d(head=0.3, total=0.3))
            return e.value, count["requests"]

    exc, requests = _run(main())
    assert exc.phase == "head" and requests == 2


def test_a_timeout_on_a_kept_alive_connection_is_not_sent_again():
    # Issue 23 item 3: the stale keep-alive retry also fired on timeouts, so a silent backend got
    # the same request twice.
    async def handler(reader, writer, n, head, body):
        if n == 0:
            writer.write(HEAD_OK + b"Content-Length: 2\r\n\r\nok")
            return
        await asyncio.sleep(3)  # silent on the second request

    async def main():
        async with _backend(handler) as (origin, count, pool):
            r = await pool.request(origin, "/v1/completions", [], b"{}", _d())
            await r.read_all()
            r.release()  # kept alive
            with pytest.raises(UpstreamTimeout):
                await pool.request(origin, "/v1/completions", [], b"{}", _d(head=0.3, total=0.3))
            await asyncio.sleep(0.3)  # a wrongful resend would have arrived by now
            return count["requests"]

    assert _run(main()) == 2


def test_a_client_leaving_while_the_backend_prefills_closes_the_backend_connection():
    # Issue 23 item 5: cancelled while waiting for the head (prefill, or any non-streaming
    # request), the connection stayed open and the backend kept generating for nobody.
    async def handler(reader, writer, n, head, body):
        await reader.read()  # never answers; returns at the client's close
        raise ConnectionError

    async def main():
        async with _backend(handler) as (origin, count, pool):
            task = asyncio.ensure_future(pool.request(origin, "/v1/completions", [], b"{}", _d()))
            await _until(lambda: count["requests"] == 1)  # the backend has it and is "prefilling"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(count["closed"].wait(), 2)

    _run(main())


def test_a_buffered_answer_over_its_cap_is_an_error_not_memory():
    async def handler(reader, writer, n, head, body):
        writer.write(HEAD_OK + b"Content-Length: 5000\r\n\r\n" + b"x" * 5000)

    async def main():
        async with _backend(handler) as (origin, count, pool):
            r = await pool.request(origin, "/v1/completions", [], b"{}", _d())
            with pytest.raises(UpstreamTooLarge):
                await r.read_all(max_bytes=4096)
            r.release()

    _run(main())


# --- one timer per response (head, total and idle share it), framing read from the head --------

def test_a_total_bound_cuts_a_stream_that_never_goes_silent_and_the_head_bound_ends_with_the_head():
    # One loop timer per response serves every deadline: here the head bound (0.4 s) is met, the
    # idle bound (5 s) never trips because a chunk comes every 0.1 s, and the total (1 s) cuts it.
    async def handler(reader, writer, n, head, body):
        await asyncio.sleep(0.2)
        writer.write(SSE_HEAD)
        for i in range(100):
            writer.write(_chunk(b"data: %d\n\n" % i))
            await writer.drain()
            await asyncio.sleep(0.1)

    async def main():
        async with _backend(handler) as (origin, count, pool):
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            r = await pool.request(origin, "/v1/chat/completions", [], b"{}", _d(head=0.4, idle=5, total=1.0))
            got = 0
            with pytest.raises(UpstreamTimeout) as e:
                while await r.read():
                    got += 1
            took = loop.time() - t0
            r.release()
            await asyncio.wait_for(count["closed"].wait(), 2)  # the backend is told
            return e.value, got, took

    exc, got, took = _run(main())
    assert exc.phase == "body" and "took over 1 s" in str(exc)
    assert 3 <= got < 20 and took < 4  # cut by the total, well before the idle bound or 100 chunks


@pytest.mark.parametrize("reply,complete", [
    # "X-Request-Size" has Content-Length's length but frames nothing: the body ends with the close
    (b"HTTP/1.1 200 OK\r\nX-Request-Size: 12\r\nConnection: close\r\n\r\nall of it", True),
    # framing names in any case: a close before the length or the last chunk is a cut, not the end
    (b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 90\r\n\r\nall of it", False),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n9\r\nall of it\r\n", False),
], ids=["unframed", "length-upper-case", "chunked-mixed-case"])
def test_how_a_body_ends_is_read_from_the_head_whatever_the_case_of_its_names(reply, complete):
    async def handler(reader, writer, n, head, body):
        writer.write(reply)
        await writer.drain()
        return False  # then the server closes

    async def main():
        async with _backend(handler) as (origin, count, pool):
            r = await pool.request(origin, "/v1/completions", [], b"{}", _d())
            try:
                return await r.read_all()
            except UpstreamError as e:
                return e
            finally:
                r.release()

    got = _run(main())
    if complete:
        assert got == b"all of it"
    else:
        assert isinstance(got, UpstreamError) and got.phase == "body"


def test_read_available_gives_what_has_arrived_in_one_piece_and_waits_only_for_more():
    # Three chunks in one packet are one read; a chunk sent later is the next read (it is not
    # held back for more); then the end.
    go_on = asyncio.Event()

    async def handler(reader, writer, n, head, body):
        writer.write(SSE_HEAD + b"".join(_chunk(b"data: %d\n\n" % i) for i in range(3)))
        await writer.drain()
        await asyncio.wait_for(go_on.wait(), 5)
        writer.write(_chunk(b"data: 3\n\n") + b"0\r\n\r\n")
        await writer.drain()

    async def main():
        async with _backend(handler) as (origin, count, pool):
            r = await pool.request(origin, "/v1/chat/completions", [], b"{}", _d(idle=5, total=None))
            first = await r.read_available()
            while first.count(b"\n\n") < 3:  # the packet may still be arriving in pieces
                first += await r.read_available()
            go_on.set()
            second = await r.read_available()
            end = await r.read_available()
            r.release()
            return first, second, end

    first, second, end = _run(main())
    assert first == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert (second, end) == (b"data: 3\n\n", b"")
