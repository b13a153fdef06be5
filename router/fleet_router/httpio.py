"""The client-facing HTTP/1.1 server: asyncio protocols and the httptools (llhttp) parser.

The only module that knows how HTTP is spoken to clients. The rest of the router sees a small
surface: :class:`Request` (``method``, ``path``, ``query_string``, ``headers``, ``peer``,
``content_length``, :func:`read_body`, ``disconnected``), :class:`Response`, :func:`json_response`,
:class:`StreamResponse` (``prepare`` / ``write`` / ``write_eof``) and :func:`start_site`.

It replaced aiohttp's server, which was about half of the router's CPU per request. What it
does for an internet-facing listener:

* framing by llhttp, strict by default: ``Content-Length`` together with ``Transfer-Encoding``,
  duplicate ``Content-Length``, obs-folded or bare-LF header lines are parse errors (llhttp
  ``HPE_UNEXPECTED_CONTENT_LENGTH`` and friends; checked against httptools 0.9.0 in
  ``tests/test_httpio.py``) and answered 400, then the connection is closed;
* head size capped (431), and time to send the head, gaps in the body, and idle keep-alive all
  bounded; a cap on open connections (503 for the ones over it);
* bodies buffered up to the site's limit only: past it the handler sees ``limit + 1`` bytes at
  once (413) and the connection closes, so the rest is never read;
* pipelined requests answered in order, one at a time (reading pauses while one is queued);
  reading also pauses while the client does not read what is written (write-buffer limits);
* a client that closes its side (EOF) is treated as gone, as nginx does for proxied requests
  (``proxy_ignore_client_abort off``): the handler task is cancelled, which cancels the backend
  request; no traceback is logged for it;
* a request id (``X-Request-Id``, a safe one from the client or generated) on every response,
  and one JSON access-log line per request.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from email.utils import formatdate
from http import HTTPStatus
from random import getrandbits

import httptools
import orjson

log = logging.getLogger("fleet_router")
access_log = logging.getLogger("fleet_router.access")

Handler = Callable[["Request"], Awaitable["Response | StreamResponse"]]
#: Offered a request that arrived whole (head and body in one read), before any task exists: True
#: if it took it (it then calls ``request.reply`` or ``request.continue_with`` exactly once), False
#: (having done nothing) to have the route's handler answer it as any other request.
NowHandler = Callable[["Request"], bool]
#: ``(status, message, code)`` -> a :class:`Response` in the API's error shape (supplied by the
#: caller, so this module knows nothing of OpenAI).
ErrorFactory = Callable[[int, str, str], "Response"]

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
#: Headers the server frames itself; a handler's copies are dropped.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "date", "server",
                      "x-request-id"})
_ACCESS_FLUSH_S = 0.1
_LINGER_S = 5.0
_LINGER_GAP_S = 1.0
_SAFE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


_STATUS_LINES = {code: b"HTTP/1.1 %d %b\r\n" % (code, phrase) for code, phrase in _REASONS.items()}


class BodyError(Exception):
    """The request body could not be read: the client stopped sending or went away."""


class BodyTimeout(BodyError):
    """The client stopped sending the body for longer than the site's ``body_timeout``."""


_METHODS = {m.encode(): m for m in ("GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH")}


class Headers:
    """Request headers: case-insensitive ``get`` (first value wins), ``items()`` in arrival order.
    ``lower``: lower-case name -> first value, built as the head is parsed (one pass, no second)."""

    __slots__ = ("_items", "lower")

    def __init__(self, items: list[tuple[str, str]], lower: dict[str, str] | None = None):
        self._items = items
        if lower is None:
            lower = {}
            for k, v in items:
                lower.setdefault(k.lower(), v)
        self.lower = lower

    def get(self, name: str, default=None):
        return self.lower.get(name.lower(), default)

    def getall(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self._items if k.lower() == name]

    def __getitem__(self, name: str) -> str:
        return self.lower[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self.lower

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def key(self) -> tuple[tuple[str, str], ...]:
        """All of them as they came, hashable (to remember what was derived from them)."""
        return tuple(self._items)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)


class Request:
    """One request as the handler sees it. The body is read with :func:`read_body`."""

    __slots__ = ("method", "path", "query_string", "version", "headers", "peer", "trusted_peer", "request_id",
                 "content_length", "chunked", "keep_alive", "upgrade", "started", "expect_continue", "_conn", "_chunks", "_size",
                 "_done", "_error", "_waiter", "_disconnected", "_task", "_status", "_sent", "_on_gone")

    def __init__(self, conn: "_Connection", method: str, path: str, query_string: str, version: str,
                 headers: Headers):
        self._conn = conn
        self.method, self.path, self.query_string, self.version = method, path, query_string, version
        self.headers = headers
        self.peer: str = conn.peer
        self.trusted_peer: bool = conn.trusted_peer
        self.request_id = ""
        self.content_length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.upgrade = False
        self.expect_continue = False
        self.started = conn.now  # the loop's clock when its head was parsed
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False
        self._error: BodyError | None = None
        self._waiter: asyncio.Future | None = None
        self._disconnected: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._status = 0
        self._sent = 0
        self._on_gone: Callable[[], None] | None = None

    @property
    def target(self) -> str:
        """The path with its query string, as the client sent them."""
        return f"{self.path}?{self.query_string}" if self.query_string else self.path

    @property
    def disconnected(self) -> asyncio.Event:
        """Set when the client has gone (the handler task is also cancelled then)."""
        if self._disconnected is None:
            self._disconnected = asyncio.Event()
            if self._conn.closed:
                self._disconnected.set()
        return self._disconnected

    @property
    def gone(self) -> bool:
        """The client has gone."""
        return self._conn.closed

    # for a NowHandler (see start_site's ``now``): a request answered without a task
    def body_now(self) -> bytes | None:
        """The whole body, when it is all here (a request offered to a NowHandler), else None."""
        if not self._done or self._error is not None or self.expect_continue:
            return None
        chunks = self._chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def on_gone(self, fn: Callable[[], None]) -> None:
        """``fn()`` once if the client leaves before the answer (to stop the work for it)."""
        self._on_gone = fn

    def reply(self, resp: "Response | None") -> None:
        """Answer now (``None``: the client has gone, nothing to send); the connection goes on."""
        self._on_gone = None
        conn = self._conn
        if resp is not None:
            conn.write_response(self, resp)
        conn._finished(self)

    def continue_with(self, handler: Awaitable) -> None:
        """Answer with what ``handler`` (an awaitable, as a route's handler returns) gives, in a task."""
        self._on_gone = None
        conn = self._conn
        if conn.closed:
            close = getattr(handler, "close", None)
            if close is not None:
                close()  # a coroutine never started
            self._status = self._status or 499
            conn._finished(self)
            return
        self._task = conn.loop.create_task(conn._run(self, handler))

    # fed by the connection
    def _feed(self, data: bytes, limit: int) -> None:
        if self._size <= limit:
            self._chunks.append(data)
        self._size += len(data)
        self._wake()

    def _finish(self, error: BodyError | None = None) -> None:
        if error is not None and not self._done:
            self._error = error
        self._done = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, however the network split it, up to ``limit + 1`` bytes (one more than allowed,
    so the caller can tell "too large" from "exactly the limit"; the rest is never read).

    A client that sent ``Expect: 100-continue`` (curl does for bodies over 1 KB) is told to go on
    now, when the body is wanted: an answer sent without reading it (401, 429) spares the upload."""
    if request.expect_continue:
        request.expect_continue = False
        if not request._done and not request._conn.closed:
            request._conn.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    while not request._done and request._size <= limit:
        request._waiter = asyncio.get_running_loop().create_future()
        try:
            await request._waiter
        finally:
            request._waiter = None
    if request._error is not None and request._size <= limit:
        raise request._error
    chunks = request._chunks
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return body[:limit + 1]


class Response:
    """A whole response: status, headers and body, written in one go. ``block``: more header lines,
    already encoded (:func:`header_block`), for headers a caller sends on answer after answer."""

    __slots__ = ("status", "body", "headers", "block")

    def __init__(self, status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None,
                 content_type: str | None = None, text: str | None = None, charset: str | None = None,
                 block: bytes = b""):
        self.status = status
        self.block = block
        self.headers = dict(headers) if headers else {}
        if text is not None:
            body = text.encode(charset or "utf-8")
            if content_type and charset:
                content_type = f"{content_type}; charset={charset}"
        if content_type:
            self.headers["Content-Type"] = content_type
        self.body = body


def header_block(headers: dict[str, str]) -> bytes:
    """``headers`` as a :class:`Response` ``block``: one ``name: value`` line each, without the
    headers the server frames itself (as for ``Response.headers``)."""
    return b"".join(b"" if k.lower() in _FRAMING else f"{k}: {v}\r\n".encode("latin-1", "replace")
                    for k, v in headers.items())


def json_response(data, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status=status, body=orjson.dumps(data), headers=headers, content_type="application/json")


class StreamResponse:
    """A response whose body is written as it is produced (chunked on HTTP/1.1).

    Writes are corked for the rest of the loop iteration that made them: the head, the events a
    proxy relays from one backend read and the end of the stream go out in one system call, not
    one each (a send is the dearest thing a stream does per event). Never more than
    ``_CORK_BYTES`` wait, the flush is at the end of the same iteration (nothing waits on a later
    read), :meth:`write_eof` sends at once, and back-pressure holds: a writer the client does not
    keep up with waits in :meth:`write` as before."""

    _CORK_BYTES = 65536

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None, block: bytes = b""):
        self.status = status
        self.headers = dict(headers) if headers else {}
        self.block = block  # more header lines, encoded (as Response.block)
        self._request: Request | None = None
        self._chunked = True
        self._eof = False
        self._out: list[bytes] = []  # written, not yet sent
        self._out_bytes = 0
        self._flush_soon = False

    @property
    def prepared(self) -> bool:
        return self._request is not None

    async def prepare(self, request: Request) -> None:
        if self._request is not None:
            return
        self._request = request
        conn = request._conn
        self._chunked = request.version == "1.1"
        self._queue(conn, conn.head(request, self.status, self.headers, None if self._chunked else -1, self.block))
        await conn.drain()

    async def write(self, data: bytes) -> None:
        if not data:
            return
        request = self._request
        conn = request._conn
        if conn.closed:
            raise ConnectionResetError("the client has gone")
        request._sent += len(data)
        if request.method != "HEAD":
            self._queue(conn, b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data)
        if conn._write_paused:
            await conn.drain()

    async def write_eof(self) -> None:
        if self._eof or self._request is None:
            return
        self._eof = True
        conn = self._request._conn
        if self._chunked and not conn.closed and self._request.method != "HEAD":
            self._out.append(b"0\r\n\r\n")
        self._flush()  # now: the connection's next answer (pipelining) must come after it
        await conn.drain()

    def _queue(self, conn: "_Connection", data: bytes) -> None:
        self._out.append(data)
        self._out_bytes += len(data)
        if self._out_bytes >= self._CORK_BYTES:
            self._flush()
        elif not self._flush_soon:
            self._flush_soon = True
            conn.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        out = self._out
        if not out:
            return
        self._out, self._out_bytes = [], 0
        conn = self._request._conn
        if not conn.closed and not conn.transport.is_closing():  # closed by a failed handler: dropped
            conn.transport.write(out[0] if len(out) == 1 else b"".join(out))


class _Date:
    """The ``Date`` header, formatted once a second."""

    def __init__(self):
        self._second = 0
        self._value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode()
        return self._value


class _Limits:
    __slots__ = ("max_body_bytes", "max_header_bytes", "header_timeout", "body_timeout", "idle_timeout",
                 "max_connections", "write_buffer_high")

    def __init__(self, max_body_bytes: int, max_header_bytes: int, header_timeout: float, body_timeout: float,
                 idle_timeout: float, max_connections: int, write_buffer_high: int):
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.write_buffer_high = write_buffer_high


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, runs one handler at a time, writes responses."""

    def __init__(self, site: "Site"):
        self.site = site
        self.limits = site.limits
        self.loop = site.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = ""
        self.trusted_peer = False
        self.closed = False
        self.parsing: Request | None = None  # the request whose bytes are arriving
        self.active: Request | None = None  # the request being answered
        self.queue: deque[Request] = deque()  # pipelined requests waiting their turn
        self.pending: Request | None = None  # active, not started: offered to the site's NowHandler if it arrives whole
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._lower: dict[str, str] = {}
        self._head_bytes = 0  # the current head, counted by the parser callbacks
        self._raw_head = 0  # bytes fed while inside one head (a header line not yet complete)
        self._begun = 0  # requests begun, to tell whether a feed started a new one
        self._in_head = False
        # One deadline at a time (head, body gap, idle, linger), checked by the site's sweep: setting
        # a float per state change is far cheaper than a loop timer armed and cancelled per request.
        self._deadline = 0.0
        self._on_deadline: Callable[[], None] | None = None
        # The loop's clock, read once per data_received for every parser callback it runs (a clock
        # read costs about as much as a callback here; deadlines are checked at sweep precision).
        self.now = 0.0
        self._last_body = 0.0
        self._read_paused = False
        self._write_paused = False
        self._drain: asyncio.Future | None = None
        self._after_queue: tuple[int, str, str] | None = None  # an error to answer once the queue is done
        self._linger_until = 0.0

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""
        self.trusted_peer = self.site.is_trusted(self.peer)
        transport.set_write_buffer_limits(high=self.limits.write_buffer_high)
        site = self.site
        if len(site.connections) >= self.limits.max_connections or site.closing:
            self._reject(503, "The router is at its connection limit; retry.", "too_many_connections")
            return
        site.connections.add(self)
        self._arm(self.limits.header_timeout, self._on_head_timeout)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.site.connections.discard(self)
        self._cancel_timer()
        self.pending = None  # (only between a head and the end of its read: a callback failed)
        for r in (self.parsing, self.active, *self.queue):
            if r is None:
                continue
            r._finish(BodyError("the client went away"))
            if r._disconnected is not None:
                r._disconnected.set()
            if r._task is not None and not r._task.done():
                r._task.cancel()
            elif r._on_gone is not None:
                gone, r._on_gone = r._on_gone, None
                gone()
        self.queue.clear()
        d = self._drain
        if d is not None and not d.done():
            d.set_result(None)

    def eof_received(self):
        return None  # the client's FIN: close (see the module docstring)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        d = self._drain
        if d is not None and not d.done():
            d.set_result(None)
        if not self.queue:
            self._resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._linger_until:
            self._lingered(len(data))
            return
        begun, in_head = self._begun, self._in_head
        self.now = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._start_pending()
            self._on_upgrade()
            return
        except httptools.HttpParserCallbackError as e:
            if not self.closed and not isinstance(e.__context__, _Abort):
                log.error("HTTP parser callback failed: %r", e.__context__)
                self.transport.close()
            return  # else a callback already answered and closed
        except httptools.HttpParserError as e:
            self._start_pending()
            self._protocol_error(400, f"Malformed HTTP request: {e}.", "bad_request")
            return
        if self.pending is not None:  # its body did not come with its head: the task path reads it
            self._start_pending()
        if self._in_head and in_head and begun == self._begun:
            # Still inside the same head: httptools buffers an incomplete header line itself, so
            # count what it holds (a 1 MB header without a line end must not be buffered).
            self._raw_head += len(data)
            if self._raw_head > self.limits.max_header_bytes:
                self._protocol_error(431, "Request headers are too large.", "headers_too_large")

    # --- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._lower = {}
        self._head_bytes = 0
        self._raw_head = 0
        self._begun += 1
        self._in_head = True
        if self.active is None:
            self._arm(self.limits.header_timeout, self._on_head_timeout, self.now)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        self._check_head()

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a chunked body's trailer: never merged into the request's headers
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.limits.max_header_bytes:
            self._check_head()
        k, v = name.decode("latin-1"), value.decode("latin-1")
        self._headers.append((k, v))
        self._lower.setdefault(k.lower(), v)

    def _check_head(self) -> None:
        if self._head_bytes > self.limits.max_header_bytes:
            self._protocol_error(431, "Request headers are too large.", "headers_too_large")
            raise _Abort

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self.parser
        url = self._url
        if url[:1] == b"/":
            path, _, query = url.partition(b"?")
            path = path.partition(b"#")[0]
        else:  # absolute-form (a client talking to a proxy) or garbage
            try:
                u = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                self._protocol_error(400, "Malformed request target.", "bad_request")
                raise _Abort from None
            path, query = u.path or b"/", u.query or b""
        headers = Headers(self._headers, self._lower)
        lower = self._lower
        method = parser.get_method()
        r = Request(self, _METHODS.get(method) or method.decode("latin-1"), path.decode("utf-8", "replace"),
                    query.decode("latin-1") if query else "", parser.get_http_version(), headers)
        r.keep_alive = parser.should_keep_alive()
        cl = lower.get("content-length")
        r.content_length = int(cl) if cl is not None else None  # llhttp allows digits only
        r.chunked = "transfer-encoding" in lower
        if (r.content_length or r.chunked) and r.version == "1.1":
            expect = lower.get("expect")
            r.expect_continue = expect is not None and expect.lower() == "100-continue"
        rid = lower.get("x-request-id")
        r.request_id = rid if rid is not None and _SAFE_ID.fullmatch(rid) else f"{getrandbits(96):024x}"
        self.parsing = r
        self._cancel_timer()
        if r.content_length or r.chunked:
            self._last_body = self.now
            self._arm(self.limits.body_timeout, self._on_body_timeout, self.now)
        if self.active is None:
            if (r.content_length and not r.chunked and not r.expect_continue and r.method == "POST"
                    and r.path in self.site.now and r.content_length <= self.limits.max_body_bytes):
                self.active = self.pending = r  # offered to the NowHandler if its body is in this read
            else:
                self._start(r)
        else:
            self.queue.append(r)
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        r = self.parsing
        self._last_body = self.now
        r._feed(body, self.limits.max_body_bytes)
        if r._size > self.limits.max_body_bytes:
            self._pause_reading()  # the handler answers 413 and the connection closes: read no more

    def on_message_complete(self) -> None:
        r = self.parsing
        if r is None:
            return
        self.parsing = None
        r._finish()
        self._cancel_timer()  # the body timer (the head timer ended with the head)
        if r is self.pending:
            self.pending = None
            try:
                taken = self.site.now[r.path](r)
            except Exception:  # noqa: BLE001 - a bug in the handler: the task path answers (a 500 at worst)
                log.exception("handler failed: %s %s", r.method, r.path)
                taken = False
            if not taken:
                self._run_task(r)

    # --- running handlers ---------------------------------------------------------------------

    def _start(self, r: Request) -> None:
        self.active = r
        self._run_task(r)

    def _run_task(self, r: Request) -> None:
        r._task = self.loop.create_task(self._run(r))

    def _start_pending(self) -> None:
        r, self.pending = self.pending, None
        if r is not None:
            self._run_task(r)

    async def _run(self, r: Request, handler: Awaitable | None = None) -> None:
        site = self.site
        try:
            if r.upgrade and (r.content_length or r.chunked):
                resp = site.make_error(400, "Protocol upgrades are not supported with a request body.",
                                       "bad_request")
            elif handler is not None:
                resp = await handler
            else:
                resp = await site.dispatch(r)
            if isinstance(resp, StreamResponse):
                if not resp.prepared:
                    await resp.prepare(r)
                await resp.write_eof()
                r._status = resp.status
            else:
                self.write_response(r, resp)
        except asyncio.CancelledError:
            if not self.closed:
                raise
            r._status = r._status or 499  # the client went away: nothing to answer, nothing to log as an error
        except (ConnectionError, BodyError):
            r._status = r._status or 499
        except Exception:  # noqa: BLE001 - a bug in a handler: one 500, one logged traceback
            log.exception("handler failed: %s %s", r.method, r.path)
            if r._status == 0 and not self.closed:
                self.write_response(r, site.make_error(500, "Internal error in the router.", "internal_error"))
                r.keep_alive = False
            else:
                r.keep_alive = False
        finally:
            self._finished(r)

    def _finished(self, r: Request) -> None:
        self.site.log_access(r)
        if self.active is r:
            self.active = None
        if self.closed:
            return
        if not (r.keep_alive and r._done and r._error is None and not r.upgrade):
            if r._done or r.upgrade:
                self.transport.close()
            else:
                self._linger()
            return
        if self.queue:
            self._start(self.queue.popleft())
            return
        if self._after_queue is not None:
            self._protocol_error(*self._after_queue)
            return
        if not self._write_paused:
            self._resume_reading()
        if self._in_head:  # the next request's head started arriving during this one's answer
            self._arm(self.limits.header_timeout, self._on_head_timeout)
        elif self.parsing is None:
            self._arm(self.limits.idle_timeout, self._on_idle_timeout)

    # --- writing ------------------------------------------------------------------------------

    def head(self, r: Request, status: int, headers: dict[str, str], length: int | None, block: bytes = b"") -> bytes:
        """The status line and headers; ``length`` None: chunked, -1: until close, else Content-Length."""
        r._status = status
        # While the site closes, a connection stays open only to answer requests already queued on it.
        keep = (r.keep_alive and r._done and not r.upgrade and length != -1
                and not (self.site.closing and not self.queue))
        if not keep:
            r.keep_alive = False
        own = b""  # the answer's own headers (a proxied one has none: its lines are all in block)
        if headers:
            lines = self.site.header_lines
            own = b"".join([lines.get(kv) or self.site.header_line(kv) for kv in headers.items()])
        framing = (b"transfer-encoding: chunked\r\n" if length is None else
                   b"content-length: %d\r\n" % length if length >= 0 else b"")
        return b"%b%b%bdate: %b\r\nx-request-id: %b\r\n%b%b\r\n" % (
            _STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status, own, block, self.site.date.get(),
            r.request_id.encode(), framing, b"" if keep else b"connection: close\r\n")

    def write_response(self, r: Request, resp: Response) -> None:
        if self.closed:
            return
        body = resp.body
        head = self.head(r, resp.status, resp.headers, len(body), resp.block)
        # One write, so one system call for small answers.
        if not body or r.method == "HEAD":
            self.transport.write(head)
        elif len(body) < 65536:
            self.transport.write(head + body)
        else:
            self.transport.writelines((head, body))
        r._sent = len(body)

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("the client has gone")
        if not self._write_paused:
            return
        self._drain = self.loop.create_future()
        try:
            await self._drain
        finally:
            self._drain = None
        if self.closed:
            raise ConnectionResetError("the client has gone")

    # --- errors, timers, flow control ---------------------------------------------------------

    def _reject(self, status: int, message: str, code: str) -> None:
        """Answer without a request (over the connection cap) and close."""
        resp = self.site.make_error(status, message, code)
        head = [b"HTTP/1.1 %d %b\r\n" % (status, _REASONS[status]), b"connection: close\r\nretry-after: 1\r\n"]
        head += [f"{k}: {v}\r\n".encode("latin-1") for k, v in resp.headers.items()]
        head.append(b"content-length: %d\r\n\r\n" % len(resp.body))
        self.transport.write(b"".join(head) + resp.body)
        self.transport.close()

    def _protocol_error(self, status: int, message: str, code: str) -> None:
        """The client broke HTTP: stop reading, answer once the requests before it are, then close."""
        self._in_head = False
        self._cancel_timer()
        self._pause_reading()
        if self.closed:
            return
        if self.parsing is not None:
            self.parsing._finish(BodyError(message))  # a body that broke half way
        if self.active is not None or self.queue:
            self._after_queue = (status, message, code)
            return
        r = Request(self, "-", self._url.decode("latin-1", "replace")[:200], "", "1.1", Headers([]))
        r.request_id = f"{getrandbits(96):024x}"
        r.keep_alive = False
        self.write_response(r, self.site.make_error(status, message, code))
        self.site.log_access(r)
        self._linger()

    def _on_upgrade(self) -> None:
        # llhttp stops at an Upgrade (or CONNECT): what follows is not HTTP/1.1 and is never read.
        # The request (already dispatched by on_headers_complete) is answered, then the connection closes.
        self._pause_reading()
        for r in (self.active, *self.queue):
            if r is not None:
                r.upgrade = True
        if self.active is None and not self.queue:
            self.transport.close()

    def _linger(self) -> None:
        """Close after an answer sent before the request was read to its end (413, 431, 400 ...).
        Closing at once with unread bytes in the socket makes the kernel send a reset, which can
        destroy the answer before the client reads it; like nginx's lingering close, read and
        discard for a bounded time first (``_LINGER_S`` in all, ``_LINGER_GAP_S`` of silence)."""
        if self.closed:
            return
        self._cancel_timer()
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client sees the end of the answer at once (nginx does the same)
        self._linger_until = self.loop.time() + _LINGER_S
        self._read_paused = True  # so that resume_reading below really resumes
        self._resume_reading()
        self._arm(_LINGER_GAP_S, self._lingered_enough)

    def _lingered(self, n: int) -> None:
        if self.loop.time() >= self._linger_until:
            self.transport.close()
        else:
            self._arm(_LINGER_GAP_S, self._lingered_enough)

    def _lingered_enough(self) -> None:
        if not self.closed:
            self.transport.close()

    def _arm(self, delay: float, fn: Callable[[], None], now: float | None = None) -> None:
        self._deadline = (self.loop.time() if now is None else now) + delay
        self._on_deadline = fn

    def _cancel_timer(self) -> None:
        self._deadline = 0.0

    def _on_head_timeout(self) -> None:
        if self.active is None and not self.queue:
            if self._in_head:
                self._protocol_error(408, "Request headers took too long.", "request_timeout")
            else:
                self.transport.close()  # connected and never sent a byte

    def _on_idle_timeout(self) -> None:
        if self.active is None and self.parsing is None and not self.queue:
            self.transport.close()

    def _on_body_timeout(self) -> None:
        r = self.parsing
        if r is None or r._done:
            return
        left = self._last_body + self.limits.body_timeout - self.loop.time()
        if left > 0:
            self._arm(left, self._on_body_timeout)
            return
        r._finish(BodyTimeout(f"no body bytes for {self.limits.body_timeout:g} s"))
        r.keep_alive = False
        self._pause_reading()
        if r._task is None:  # queued behind another request: nobody is waiting; drop the connection
            self.transport.close()

    def _pause_reading(self) -> None:
        if not self._read_paused and not self.closed:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and not self.closed:
            self._read_paused = False
            self.transport.resume_reading()

    def close_if_idle(self) -> None:
        if self.active is None and self.parsing is None and not self.queue and not self.closed:
            self.transport.close()


class _Abort(Exception):
    """Raised in a parser callback after the connection was answered and closed."""


class Site:
    """One listening socket serving a route table."""

    def __init__(self, routes: Iterable[tuple[str, str, Handler]], make_error: ErrorFactory, limits: _Limits,
                 trusted: Callable[[str], bool], access_log_on: bool, now: Mapping[str, NowHandler] | None = None):
        self.routes: dict[str, dict[str, Handler]] = {}
        self.prefixes: list[tuple[str, dict[str, Handler]]] = []  # ("/v1/models/", methods), longest first
        for method, path, handler in routes:
            if path.endswith("/*"):
                methods = next((m for p, m in self.prefixes if p == path[:-1]), None)
                if methods is None:
                    methods = {}
                    self.prefixes.append((path[:-1], methods))
                    self.prefixes.sort(key=lambda pm: -len(pm[0]))
            else:
                methods = self.routes.setdefault(path, {})
            methods[method] = handler
            if method == "GET":
                methods.setdefault("HEAD", handler)
        #: POST path -> its NowHandler (the path must also be a POST route: the handler of every
        #: request the NowHandler does not take)
        self.now: dict[str, NowHandler] = {p: h for p, h in (now or {}).items() if "POST" in self.routes.get(p, {})}
        self.make_error = make_error
        self.limits = limits
        self.is_trusted = trusted
        self.access_log_on = access_log_on
        self.connections: set[_Connection] = set()
        self._access: list[bytes] = []
        self._access_flush: asyncio.TimerHandle | None = None
        self.closing = False
        self.date = _Date()
        #: Encoded response header lines by (name, value): most repeat on every answer (content
        #: type, pool, vendor, tier), so each is encoded once. Bounded: cleared when full.
        self.header_lines: dict[tuple[str, str], bytes] = {}
        self.loop = asyncio.get_running_loop()
        self.server: asyncio.AbstractServer | None = None
        shortest = min(limits.header_timeout, limits.body_timeout, limits.idle_timeout, _LINGER_GAP_S)
        self._sweep_every = min(1.0, max(0.05, shortest / 4))
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    def header_line(self, kv: tuple[str, str]) -> bytes:
        """``name: value`` and CRLF, encoded (b"" for a header the server frames itself), remembered."""
        k, v = kv
        line = b"" if k.lower() in _FRAMING else f"{k}: {v}\r\n".encode("latin-1", "replace")
        if len(self.header_lines) >= 4096:
            self.header_lines.clear()
        self.header_lines[kv] = line
        return line

    def _sweep(self) -> None:
        """Fire the connections' deadlines that have passed (precision: ``_sweep_every``)."""
        now = self.loop.time()
        for c in [c for c in self.connections if c._deadline and c._deadline <= now]:
            if c._deadline and c._deadline <= now and not c.closed:
                c._deadline = 0.0
                try:
                    c._on_deadline()
                except Exception:  # noqa: BLE001 - one connection's bug must not stop the sweep
                    log.exception("connection deadline failed")
                    c.transport.close()
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    async def dispatch(self, r: Request):
        methods = self.routes.get(r.path)
        if methods is None:
            methods = next((m for p, m in self.prefixes if r.path.startswith(p) and len(r.path) > len(p)), None)
        if methods is None:
            return self.make_error(404, f"{r.method} {r.path}: Not Found.", "not_found")
        handler = methods.get(r.method)
        if handler is None:
            resp = self.make_error(405, f"{r.method} {r.path}: Method Not Allowed.", "method_not_allowed")
            resp.headers["Allow"] = ", ".join(sorted(methods))
            return resp
        return await handler(r)

    def log_access(self, r: Request) -> None:
        """One JSON line per request. Lines are batched into one log record per ``_ACCESS_FLUSH_S``
        (one line each in the output): a record and a write per request cost about 20 us."""
        if not self.access_log_on or not access_log.isEnabledFor(logging.INFO):
            return
        self._access.append(orjson.dumps({
            "ts": round(time.time(), 3), "event": "access", "id": r.request_id, "peer": r.peer,
            "method": r.method, "path": r.path, "status": r._status or 499, "bytes": r._sent,
            "ms": round((self.loop.time() - r.started) * 1000, 3)}))
        if self._access_flush is None:
            self._access_flush = self.loop.call_later(_ACCESS_FLUSH_S, self.flush_access_log)

    def flush_access_log(self) -> None:
        self._access_flush = None
        if self._access:
            lines, self._access = self._access, []
            access_log.info(b"\n".join(lines).decode())

    @property
    def busy(self) -> int:
        """Connections with a request being answered or queued."""
        return sum(1 for c in self.connections if c.active is not None or c.queue)

    async def stop_listening(self) -> None:
        """Close the listening socket and the idle connections; requests in flight go on (without
        keep-alive)."""
        self.closing = True
        if self.server is not None:
            self.server.close()
        for c in list(self.connections):
            c.close_if_idle()

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        self._sweeper.cancel()
        await self.stop_listening()
        for c in list(self.connections):
            if not c.closed:
                c.transport.close()
        if self._access_flush is not None:
            self._access_flush.cancel()
        self.flush_access_log()
        if self.server is not None:
            await self.server.wait_closed()


async def start_site(routes: Iterable[tuple[str, str, Handler]], host: str, port: int, *, make_error: ErrorFactory,
                     max_body_bytes: int = 1 << 20, max_header_bytes: int = 32768, header_timeout: float = 10.0,
                     body_timeout: float = 30.0, idle_timeout: float = 75.0, max_connections: int = 10000,
                     trusted: Callable[[str], bool] = lambda peer: False, access_log: bool = True,
                     backlog: int = 1024, write_buffer_high: int = 256 * 1024,
                     now: Mapping[str, NowHandler] | None = None) -> Site:
    """Listen on ``host:port`` and serve ``routes`` (``(method, path, handler)``; GET routes answer HEAD
    too; a path ending in ``/*`` serves every path below it, the handler reading ``request.path``);
    an unknown path is a 404 and a known path with the wrong method a 405, both through
    ``make_error``. ``now``: POST path -> a :data:`NowHandler`, offered each request to that path
    whose head and body arrive in one read (the common case), before a task is made for it."""
    limits = _Limits(max_body_bytes, max_header_bytes, header_timeout, body_timeout, idle_timeout,
                     max_connections, write_buffer_high)
    site = Site(routes, make_error, limits, trusted, access_log, now)
    site.server = await site.loop.create_server(lambda: _Connection(site), host, port, backlog=backlog)
    return site
