"""The backend side of the proxy: keep-alive HTTP/1.1 connections per pool on asyncio protocols,
responses parsed by httptools (llhttp, the parser Node.js uses).

Why not aiohttp's client: on the hot path it cost more CPU than everything else the router does
per request (``bench/``: profile of the closed-loop run). This client does only what proxying
to a vLLM server or a Gateway needs: POST a body, read the status and headers, then the body as
it arrives — chunked or by length — with back-pressure, a connect timeout, a first-byte
timeout and a total timeout. One write per request (head and body together).

A kept-alive connection the server has closed in the meantime is detected when the request fails
before any response byte; that request is sent once more on a fresh connection (it reached no
model server), never counted as a pool failure.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from urllib.parse import urlsplit

import httptools

_HIGH_WATER = 256 * 1024  # buffered body bytes before the backend socket stops being read


class UpstreamError(Exception):
    """The backend could not be reached, or went away or silent before answering."""


class UpstreamTimeout(UpstreamError):
    pass


class Origin:
    """Where a pool lives: scheme, host, port, path prefix, and the ``Host`` header to send."""

    __slots__ = ("key", "host", "port", "tls", "prefix", "host_header")

    def __init__(self, base_url: str):
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.tls = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.tls else 80)
        self.prefix = u.path.rstrip("/")
        default = (self.tls and self.port == 443) or (not self.tls and self.port == 80)
        self.host_header = self.host if default else f"{self.host}:{self.port}"
        self.key = (u.scheme, self.host, self.port)


class Response:
    """Status and headers once the head has arrived; then ``read()`` chunks until ``b""``."""

    __slots__ = ("status", "headers", "_chunks", "_buffered", "_done", "_error", "_waiter", "_conn", "_head",
                 "_first_timer", "_total_timer")

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
        self._first_timer: asyncio.TimerHandle | None = None  # until the first body byte
        self._total_timer: asyncio.TimerHandle | None = None  # until the end of the body

    # fed by the protocol
    def _feed(self, data: bytes) -> None:
        if self._first_timer is not None:
            self._first_timer.cancel()
            self._first_timer = None
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        self._done = True
        self._cancel_timers()
        self._wake()

    def _cancel_timers(self) -> None:
        for t in (self._first_timer, self._total_timer):
            if t is not None:
                t.cancel()
        self._first_timer = self._total_timer = None

    def _fail(self, exc: BaseException) -> None:
        if self._done:
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

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Done with this response: the connection goes back to the pool if it can be reused."""
        self._conn.finished(self)


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

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._broken(UpstreamError("backend tried to upgrade the connection"))
        except httptools.HttpParserError as e:
            self._broken(UpstreamError(f"malformed response from the backend: {e}"))

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.pool._all.discard(self)
        r = self.response
        if r is not None and not self.complete:
            if exc is None and r._head.done() and not self.framed:
                self.complete = True  # HTTP/1.0 style: the body ends with the connection
                r._finish()
            else:
                r._fail(UpstreamError(f"backend closed the connection{f': {exc}' if exc else ''}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.response.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        r = self.response
        r.status = self.parser.get_status_code()
        self.reusable = self.parser.should_keep_alive()
        self.framed = r.status in (204, 304) or any(
            k.lower() == "content-length" or (k.lower() == "transfer-encoding" and "chunked" in v.lower())
            for k, v in r.headers)
        if not r._head.done():
            r._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.response._feed(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.response._finish()

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
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        return self.response

    def finished(self, response: Response) -> None:
        response._cancel_timers()
        if response is not self.response:
            return
        self.response = None
        if self.complete and self.reusable and not self.closed:
            self.resume()
            self.pool._give_back(self)  # the parser reads the next response on this connection as is
        else:
            self.close()


class UpstreamPool:
    """Keep-alive connections per origin (LIFO: the warmest first), opened on demand."""

    def __init__(self, connect_timeout: float = 2.0, max_idle_per_origin: int = 256,
                 ssl_context: ssl.SSLContext | None = None):
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle_per_origin
        self._idle: dict[tuple, list[_Connection]] = {}
        self._origins: dict[str, Origin] = {}
        self._ssl = ssl_context
        self._all: set[_Connection] = set()

    def origin(self, base_url: str) -> Origin:
        o = self._origins.get(base_url)
        if o is None:
            o = self._origins[base_url] = Origin(base_url)
        return o

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()  # honours SSL_CERT_FILE (a mounted cluster CA)
        return self._ssl

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        kw = {"ssl": self._ssl_context(), "server_hostname": origin.host} if origin.tls else {}
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: _Connection(self, origin, loop),
                                                       origin.host, origin.port, **kw)
        except TimeoutError:
            raise UpstreamTimeout(f"connect to {origin.host}:{origin.port} timed out") from None
        except OSError as e:
            raise UpstreamError(f"connect to {origin.host}:{origin.port}: {e.strerror or e}") from None
        self._all.add(conn)
        return conn

    def _give_back(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.origin.key, [])
        if len(idle) < self.max_idle:
            idle.append(conn)
        else:
            conn.close()

    async def request(self, origin: Origin, path: str, headers: list[tuple[str, str]], body: bytes,
                      first_byte_timeout: float, total_timeout: float) -> Response:
        """POST ``body`` to ``origin`` + ``path``; returns once the response head has arrived."""
        lines = [f"POST {origin.prefix}{path} HTTP/1.1\r\nHost: {origin.host_header}\r\n"
                 f"Content-Length: {len(body)}\r\n"]
        lines += [f"{k}: {v}\r\n" for k, v in headers]
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        idle = self._idle.get(origin.key)
        for attempt in range(2):
            reused = False
            conn = None
            while idle:
                c = idle.pop()
                if not c.closed:
                    conn, reused = c, True
                    break
            if conn is None:
                conn = await self._connect(origin)
            response = conn.send(head, body)
            loop = conn.loop
            # Silence until the first body byte (a vLLM server sends its head at once, then
            # prefills) and the whole exchange are bounded; a backend that trickles is cut off.
            response._first_timer = loop.call_later(first_byte_timeout, response._fail, UpstreamTimeout(
                f"no response within {first_byte_timeout:g} s"))
            response._total_timer = loop.call_later(total_timeout, response._fail, UpstreamTimeout(
                f"response took over {total_timeout:g} s"))
            try:
                await response._head
            except UpstreamError:
                conn.reusable = False
                conn.finished(response)
                if reused and not conn.got_bytes and attempt == 0:
                    continue  # a stale keep-alive connection: the request reached no server
                raise
            return response
        raise UpstreamError("unreachable")

    async def close(self) -> None:
        for c in list(self._all):
            c.close()
        self._all.clear()
        self._idle.clear()
