"""The client-facing HTTP edge: the only module that knows which HTTP server framework runs.

Everything else in the router sees this small surface: a request (``method``, ``path``,
``query_string``, ``headers``, ``content_length``, :func:`read_body`), :class:`Response`,
:func:`json_response`, :class:`StreamResponse` (``prepare`` / ``write`` / ``write_eof``) and
:func:`start_site`. Today it is aiohttp's server; swapping the framework touches this file only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import aiohttp
from aiohttp import web

Request = web.Request
Response = web.Response
StreamResponse = web.StreamResponse
json_response = web.json_response
Handler = Callable[[Request], Awaitable[StreamResponse]]
#: ``(status, message, code)`` -> a response in the API's error shape (supplied by the caller, so this
#: module knows nothing of OpenAI).
ErrorFactory = Callable[[int, str, str], StreamResponse]


class BodyError(Exception):
    """The request body could not be read (the client stopped sending, or the connection broke)."""


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, however the network split it, up to ``limit + 1`` bytes (one more than allowed,
    so the caller can tell "too large" from "exactly the limit").

    ``StreamReader.read(n)`` returns whatever is buffered *now* (at most ``n`` bytes), not ``n`` bytes:
    a body that arrives in two TCP segments came back cut at the first one and failed as invalid JSON.
    Read until EOF (``b""``) or past the limit."""
    content = request.content
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= limit:
            chunk = await content.read(limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as e:
        raise BodyError(str(e)) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _error_middleware(make_error: ErrorFactory):
    @web.middleware
    async def errors(request: web.Request, handler):
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status >= 400:
                kind = {404: "not_found", 405: "method_not_allowed"}.get(e.status, "http_error")
                return make_error(e.status, f"{request.method} {request.path}: {e.reason}.", kind)
            raise
    return errors


class Site:
    """One listening socket serving a route table; :meth:`close` stops it."""

    def __init__(self, runner: web.AppRunner):
        self._runner = runner

    async def close(self) -> None:
        await self._runner.cleanup()


async def start_site(routes: Iterable[tuple[str, str, Handler]], host: str, port: int, *, make_error: ErrorFactory,
                     max_body_bytes: int | None = None, backlog: int = 128) -> Site:
    """Listen on ``host:port`` and serve ``routes`` (``(method, path, handler)``); an unknown path is a
    404 and a known path with the wrong method a 405, both through ``make_error``."""
    kwargs = {} if max_body_bytes is None else {"client_max_size": max_body_bytes + 1}
    app = web.Application(middlewares=[_error_middleware(make_error)], **kwargs)
    for method, path, handler in routes:
        if method == "GET":
            app.router.add_get(path, handler)  # and HEAD
        else:
            app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=backlog).start()
    return Site(runner)
