"""The backend side of the proxy: keep-alive HTTP/1.1 connections per pool on asyncio protocols,
responses parsed by httptools (llhttp, the parser Node.js uses).

Why not aiohttp's client: on the hot path it cost more CPU than everything else the router does
per request (``bench/``: profile of the closed-loop run). This client does only what proxying
to a vLLM server or a Gateway needs: POST a body, read the status and headers, then the body as
it arrives — chunked or by length — with back-pressure. One write per request (head and body
together).

Timeouts follow how vLLM answers (:class:`Deadlines`). For a stream, vLLM sends its head as soon
as the request is validated and scheduled, then a chunk per token — vLLM's ``serving_chat.py``
(v0.11): "This is required for the streaming case, where we return a success status before we
actually start generating text". So a stream is bounded by the time to its head and then by the
longest *silence* between body bytes (queueing and prefill included), never by its total length.
A non-streaming answer is a ``JSONResponse`` sent when the whole generation is done: head and
body arrive together, so the only meaningful bound is the time to the whole answer, much longer.
A timeout closes the connection at once, which makes vLLM abort the request (it frees the GPU on
disconnect).

A kept-alive connection the server has closed in the meantime is detected when the request fails
before any response byte; that request is sent once more on a fresh connection (it reached no
model server), never counted as a pool failure. Never after a timeout: a silent server may be
working on the request, and a second copy would double its cost.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools

from fleet_router.tls import Contexts

_HIGH_WATER = 256 * 1024  # buffered body bytes before the backend socket stops being read


class UpstreamError(Exception):
    """The backend could not be reached, or went away or silent before answering.

    ``phase``: ``"connect"`` (no connection), ``"head"`` (connected, no response byte yet: the
    request may not have reached a model server), ``"body"`` (after the head)."""

    def __init__(self, message: str, phase: str = "head"):
        super().__init__(message)
        self.phase = phase


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamTooLarge(UpstreamError):
    """A buffered answer went over its cap."""


class Deadlines(NamedTuple):
    """How long one exchange may take, in seconds (``None``: no bound).

    ``connect``: TCP (and TLS) connect. ``head``: from the request being sent to the response head.
    ``idle``: after the head, the longest gap between body bytes. ``total``: from the request being
    sent to the end of the body."""

    connect: float
    head: float
    idle: float | None = None
    total: float | None = None


class Origin:
    """Where a pool lives: scheme, host, port, path prefix, the ``Host`` header to send, and the CA
    bundle its certificate is verified against (``ca_file``; None: the default store, fleet_router.tls).
    Connections are kept per origin key, which includes the bundle: one verified under another trust
    is never reused."""

    __slots__ = ("key", "host", "port", "tls", "prefix", "host_header", "ca_file")

    def __init__(self, base_url: str, ca_file: str | None = None):
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.tls = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.tls else 80)
        self.prefix = u.path.rstrip("/")
        default = (self.tls and self.port == 443) or (not self.tls and self.port == 80)
        self.host_header = self.host if default else f"{self.host}:{self.port}"
        self.ca_file = ca_file if self.tls else None
        self.key = (u.scheme, self.host, self.port, self.ca_file)


class Response:
    """Status and headers once the head has arrived; then ``read()`` chunks until ``b""``.

    ``head_at`` / ``first_byte_at``: the loop's clock when the head and the first body byte came."""

    __slots__ = ("status", "headers", "_chunks", "_buffered", "_done", "_error", "_waiter", "_conn", "_head",
                 "_head_by", "_total_by", "_head_s", "_total_s", "_idle", "_last", "head_at",
                 "first_byte_at")

    def __init__(self, conn: "_Connection"):
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future | None = None
        self._conn = conn
        self._head = conn.loop.create_future()
        self._head_by = self._total_by = 0.0  # absolute deadlines (0: none)
        self._head_s = self._total_s = 0.0
        self._idle: float | None = None  # the longest silence allowed between body bytes
        self._last = 0.0  # when the last byte came (loop clock), for the idle check
        self.head_at = 0.0
        self.first_byte_at = 0.0

    # deadlines: checked by the connection's one timer (``_Connection._want_timer``), set for the
    # nearest deadline and re-armed from there (head, total and idle share it, and so do the
    # responses that follow on a kept-alive connection); arming and cancelling a loop timer per
    # deadline, or per response, cost more than the checks.
    def _arm(self, deadlines: Deadlines) -> None:
        now = self._conn.loop.time()
        self._head_s, self._head_by = deadlines.head, now + deadlines.head
        if deadlines.total is not None:
            self._total_s, self._total_by = deadlines.total, now + deadlines.total
        self._idle = deadlines.idle
        self._set_timer(min(self._head_by, self._total_by or self._head_by))

    def _set_timer(self, at: float) -> None:
        self._conn._want_timer(at)

    def _tick(self, now: float) -> None:
        """The connection's timer fired: time out, or ask for the next check."""
        if self._done or self._error is not None:
            return
        head_done = self._head.done()
        if not head_done and now >= self._head_by:
            self._timeout(UpstreamTimeout(f"no response from the backend within {self._head_s:g} s", "head"))
            return
        if self._total_by and now >= self._total_by:
            self._timeout(UpstreamTimeout(f"the backend's answer took over {self._total_s:g} s", "body"))
            return
        if head_done and self._idle is not None and now >= self._last + self._idle:
            self._timeout(UpstreamTimeout(f"the backend sent nothing for {self._idle:g} s", "body"))
            return
        nxt = [self._total_by] if self._total_by else []
        if not head_done:
            nxt.append(self._head_by)
        elif self._idle is not None:
            nxt.append(self._last + self._idle)
        if nxt:
            self._set_timer(max(min(nxt), now + 0.001))

    def _timeout(self, exc: UpstreamTimeout) -> None:
        # Close at once: the backend sees the disconnect and stops generating for nobody.
        if not self._done:
            self._conn._broken(exc)

    # fed by the protocol
    def _got_head(self) -> None:
        self.head_at = self._last = now = self._conn.now
        if self._idle is not None:
            self._set_timer(now + self._idle)
        if not self._head.done():
            self._head.set_result(None)

    def _feed(self, data: bytes) -> None:
        if not self.first_byte_at:
            self.first_byte_at = self._conn.now
        if self._idle is not None:
            self._last = self._conn.now
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        self._done = True  # (the connection's timer finds the response done and lets it be)
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._done or self._error is not None:
            return
        self._error = exc
        if not self._head.done():
            self._head.set_exception(exc)
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def read(self) -> bytes:
        """The next chunk of the (de-chunked) body; ``b""`` at its end."""
        while True:
            if self._chunks:
                data = self._chunks.popleft()
                self._buffered -= len(data)
                if self._buffered <= _HIGH_WATER // 4:
                    self._conn.resume()
                return data
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def read_available(self) -> bytes:
        """Every body byte that has arrived, as one piece (waiting only when none has); ``b""`` at
        the end. What a relay sends on in one write: a backend that sent ten events in one packet
        costs one read here, not ten."""
        if not self._chunks:
            return await self.read()
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join([chunks.popleft() for _ in range(len(chunks))])
        self._buffered = 0
        self._conn.resume()
        return data

    async def read_all(self, max_bytes: int | None = None) -> bytes:
        """The whole body; over ``max_bytes`` it is :class:`UpstreamTooLarge` (and the connection closed)."""
        parts = []
        size = 0
        while chunk := await self.read():
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                exc = UpstreamTooLarge(f"the backend's answer is over {max_bytes} bytes", "body")
                self._conn._broken(exc)
                raise exc
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _headed(self) -> bool:
        return self._head.done()

    def release(self) -> None:
        """Done with this response: the connection goes back to the pool if it can be reused
        (else it is closed, which tells the backend to stop)."""
        self._conn.finished(self)

    def abort(self, message: str) -> bool:
        """Give up on this response now: ``read()`` raises :class:`UpstreamError` (after what is
        already buffered) and the connection closes, which tells the backend to stop. False if it
        had already ended (complete, or failed for its own reason, which ``read()`` keeps)."""
        if self._done or self._error is not None or self._conn.response is not self:
            return False
        self._conn._broken(UpstreamError(message, "body"))
        return True


class Exchange:
    """One answer read whole on a kept-alive connection and handed to ``on_end(exchange)`` from the
    protocol's callbacks: no task, no future, no timer of its own (the connection's deadline timer
    is armed once and, when it fires, re-armed for the latest exchange's deadline, so a stream of
    requests on one connection arms none). What a non-streaming proxy attempt needs and nothing
    more; :meth:`UpstreamPool.request` is the general client.

    ``error`` None: ``status``, ``headers``, ``body``. Else the :class:`UpstreamError` (a timeout
    is :class:`UpstreamTimeout`, an answer over ``max_bytes`` :class:`UpstreamTooLarge`);
    ``got_bytes``: whether any response byte came (none: the request may have reached no server)."""

    __slots__ = ("status", "headers", "body", "error", "got_bytes", "deadline", "_total_s", "_conn", "_chunks",
                 "_size", "_max", "_on_end", "_head_seen", "_ended")

    def __init__(self, conn: "_Connection", on_end, total_s: float, max_bytes: int | None):
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.error: UpstreamError | None = None
        self.got_bytes = False
        self._total_s = total_s
        self.deadline = conn.loop.time() + total_s
        self._conn = conn
        self._chunks: list[bytes] = []
        self._size = 0
        self._max = max_bytes
        self._on_end = on_end
        self._head_seen = False
        self._ended = False

    def abort(self, message: str) -> None:
        """Give up now (the client left): the connection closes, which tells the backend to stop;
        ``on_end`` gets the error."""
        if not self._ended:
            self._conn._broken(UpstreamError(message, "body" if self._head_seen else "head"))

    def client_gone(self) -> None:
        """The client left (``Request.on_gone``): give up, as :meth:`abort`."""
        self.abort("the client went away")

    # the surface _Connection's parser callbacks feed (as a Response's)
    def _headed(self) -> bool:
        return self._head_seen

    def _got_head(self) -> None:
        self._head_seen = True

    def _feed(self, data: bytes) -> None:
        self._size += len(data)
        if self._max is not None and self._size > self._max:
            self._conn._broken(UpstreamTooLarge(f"the backend's answer is over {self._max} bytes", "body"))
            return
        self._chunks.append(data)

    def _finish(self) -> None:
        if self._ended:
            return
        self._ended = True
        chunks = self._chunks
        self.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.status = self._conn.parser.get_status_code()
        self.got_bytes = True
        self._conn.finished(self)  # back to the pool first: on_end may send the next request on it
        self._on_end(self)

    def _fail(self, exc: BaseException) -> None:
        if self._ended:
            return
        self._ended = True
        self.error = exc if isinstance(exc, UpstreamError) else UpstreamError(str(exc), "body")
        self.got_bytes = self._conn.got_bytes
        self._conn.reusable = False
        self._conn.finished(self)
        self._on_end(self)

    def _tick(self, now: float) -> None:
        """The connection's timer fired: time out, or ask for the next check."""
        if self._ended:
            return
        if now < self.deadline:
            self._conn._want_timer(self.deadline)
            return
        if self._head_seen:
            exc = UpstreamTimeout(f"the backend's answer took over {self._total_s:g} s", "body")
        else:
            exc = UpstreamTimeout(f"no response from the backend within {self._total_s:g} s", "head")
        self._conn._broken(exc)


class _Connection(asyncio.Protocol):
    def __init__(self, pool: "UpstreamPool", origin: Origin, loop: asyncio.AbstractEventLoop):
        self.pool, self.origin, self.loop = pool, origin, loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.complete = False
        self.reusable = True
        self.closed = False
        self.got_bytes = False
        self.paused = False
        self.framed = True  # the body has a length or chunks (else it ends with the connection)
        self.now = 0.0  # the loop's clock, read once per data_received for the parser's callbacks
        self._body: list[bytes] = []  # body bytes parsed from the current read, handed on at its end
        self._timer: asyncio.TimerHandle | None = None  # its responses' deadlines (see _want_timer)
        self._timer_at = 0.0

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.now = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._hand_on()
            self._broken(UpstreamError("backend tried to upgrade the connection", "body"))
            return
        except httptools.HttpParserError as e:
            self._hand_on()
            self._broken(UpstreamError(f"malformed response from the backend: {e}", "body"))
            return
        if self._body:
            self._hand_on()

    def _hand_on(self) -> None:
        """The body bytes this read carried, to the response in one piece: llhttp calls on_body once
        per HTTP chunk (a stream's every token), and feeding each cost two calls and the bookkeeping."""
        body = self._body
        if body:
            self._body = []
            r = self.response
            if r is not None:
                r._feed(body[0] if len(body) == 1 else b"".join(body))

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.pool._all.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        r = self.response
        if r is not None and not self.complete:
            if exc is None and r._headed() and not self.framed:
                self.complete = True  # HTTP/1.0 style: the body ends with the connection
                r._finish()
            else:
                r._fail(UpstreamError(f"backend closed the connection{f': {exc}' if exc else ''}",
                                      "body" if r._headed() else "head"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        # Framing is noted here, on the two names of its length (14 and 17 bytes), rather than by
        # a second pass over every header.
        if len(name) in (14, 17):
            lname = name.lower()
            if lname == b"content-length" or (lname == b"transfer-encoding" and b"chunked" in value.lower()):
                self.framed = True
        self.response.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        r = self.response
        r.status = status = self.parser.get_status_code()
        self.reusable = self.parser.should_keep_alive()
        if status == 204 or status == 304:
            self.framed = True
        r._got_head()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._hand_on()
        r = self.response
        if r is None:
            return  # failed by what it carried (over its cap): already closed
        self.complete = True
        r._finish()

    # flow control
    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def _broken(self, exc: BaseException) -> None:
        self.reusable = False
        if self.response is not None:
            self.response._fail(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # one exchange
    def send(self, head: bytes, body: bytes) -> Response:
        self.response = Response(self)
        self.complete = False
        self.got_bytes = False
        self.framed = False  # until the response's head says how its body ends
        if len(body) < 65536:
            self.transport.write(head + body)
        else:  # not copied into one buffer: one writev for both (uvloop)
            self.transport.writelines((head, body))
        return self.response

    def exchange(self, head: bytes, body: bytes, on_end, total_s: float, max_bytes: int | None) -> Exchange:
        """Send one request and read its answer whole into an :class:`Exchange` (see there)."""
        x = self.response = Exchange(self, on_end, total_s, max_bytes)
        self.complete = False
        self.got_bytes = False
        self.framed = False
        self._want_timer(x.deadline)
        if len(body) < 65536:
            self.transport.write(head + body)
        else:
            self.transport.writelines((head, body))
        return x

    def _want_timer(self, at: float) -> None:
        """Have the current response's ``_tick`` called at ``at`` or before: one loop timer per
        connection, moved only when something is due sooner; when it fires, the response asks for
        the next time (so requests one after another on a kept-alive connection arm none)."""
        t = self._timer
        if t is not None:
            if self._timer_at <= at:
                return
            t.cancel()
        self._timer_at = at
        self._timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        r = self.response
        if r is not None and not self.closed:
            r._tick(self.loop.time())

    def finished(self, response: Response) -> None:
        if response is not self.response:
            return
        self.response = None
        if self.complete and self.reusable and not self.closed:
            self.resume()
            self.pool._give_back(self)  # the parser reads the next response on this connection as is
        else:
            self.close()


def request_head(origin: Origin, path: str, headers: list[tuple[str, str]], length: int) -> bytes:
    """The head of ``POST path`` to ``origin`` with ``headers`` and a body of ``length`` bytes."""
    return request_head_block(origin, path, "".join(f"{k}: {v}\r\n" for k, v in headers).encode("latin-1"), length)


def request_head_block(origin: Origin, path: str, block: bytes, length: int) -> bytes:
    """:func:`request_head` with the headers already encoded (``block``: ``name: value`` CRLF lines)."""
    return request_head_end(request_lead(origin, path, block), length)


def request_lead(origin: Origin, path: str, block: bytes) -> bytes:
    """The head of ``POST path`` to ``origin`` up to its length: the request line, Host and
    ``block``. The same for every request with the same headers, so a caller may keep it."""
    return b"POST %b HTTP/1.1\r\nHost: %b\r\n%b" % (
        f"{origin.prefix}{path}".encode("latin-1"), origin.host_header.encode("latin-1"), block)


def request_head_end(lead: bytes, length: int, more: bytes = b"") -> bytes:
    """``lead`` (:func:`request_lead`) made a whole head: the body's length, ``more`` header lines."""
    return b"%bContent-Length: %d\r\n%b\r\n" % (lead, length, more)


class UpstreamPool:
    """Keep-alive connections per origin (LIFO: the warmest first), opened on demand."""

    def __init__(self, max_idle_per_origin: int = 256, ssl_context: ssl.SSLContext | None = None):
        self.max_idle = max_idle_per_origin
        self._idle: dict[tuple, list[_Connection]] = {}
        self._origins: dict[tuple[str, str | None], Origin] = {}
        # ``ssl_context``: what origins without a bundle are verified with (default: the system store).
        self.trust = Contexts(ssl_context)
        self._all: set[_Connection] = set()

    def origin(self, base_url: str, ca_file: str | None = None) -> Origin:
        o = self._origins.get((base_url, ca_file))
        if o is None:
            o = self._origins[(base_url, ca_file)] = Origin(base_url, ca_file)
        return o

    async def _connect(self, origin: Origin, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        kw = {"ssl": self.trust.get(origin.ca_file), "server_hostname": origin.host} if origin.tls else {}
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(lambda: _Connection(self, origin, loop),
                                                       origin.host, origin.port, **kw)
        except TimeoutError:
            raise UpstreamTimeout(f"connect to {origin.host}:{origin.port} timed out", "connect") from None
        except OSError as e:
            raise UpstreamError(f"connect to {origin.host}:{origin.port}: {e.strerror or e}", "connect") from None
        self._all.add(conn)
        return conn

    def take_idle(self, origin: Origin) -> _Connection | None:
        """A kept-alive connection to ``origin`` (the warmest), or None when there is none."""
        idle = self._idle.get(origin.key)
        while idle:
            c = idle.pop()
            if not c.closed:
                return c
        return None

    def _give_back(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.origin.key, [])
        if len(idle) < self.max_idle:
            idle.append(conn)
        else:
            conn.close()

    async def request(self, origin: Origin, path: str, headers: list[tuple[str, str]] | bytes, body: bytes,
                      deadlines: Deadlines) -> Response:
        """POST ``body`` to ``origin`` + ``path``; returns once the response head has arrived.
        ``headers``: a list of pairs, or already encoded lines (:func:`request_head_block`).

        Cancelled (the client went away) at any point, the connection is closed, so the backend
        stops working on the request."""
        head = (request_head_block(origin, path, headers, len(body)) if isinstance(headers, bytes)
                else request_head(origin, path, headers, len(body)))
        for attempt in range(2):
            conn = self.take_idle(origin)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(origin, deadlines.connect)
            response = conn.send(head, body)
            response._arm(deadlines)
            try:
                await response._head
            except UpstreamError as e:
                conn.reusable = False
                conn.finished(response)
                if (reused and not conn.got_bytes and attempt == 0 and not isinstance(e, UpstreamTimeout)):
                    continue  # a stale keep-alive connection: the request reached no server
                raise
            except BaseException:  # cancelled: close, the backend must not keep generating
                conn.reusable = False
                conn.finished(response)
                raise
            return response
        raise UpstreamError("unreachable")

    async def close(self) -> None:
        for c in list(self._all):
            c.close()
        self._all.clear()
        self._idle.clear()
