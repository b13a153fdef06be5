"""A backend that misbehaves on cue: a small asyncio HTTP/1.1 server on 127.0.0.1, in its own thread,
whose answer to each inference request is a script (status, headers, body, stalls, resets). It
records what reached it, and when each client connection went away (what vLLM aborts on)."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from dataclasses import dataclass, field

import orjson

HOST = "127.0.0.1"


@dataclass
class Seen:
    """What the backend saw of one request."""

    path: str
    headers: dict[str, str]
    body: dict
    closed_at: float | None = None  # monotonic time the client side of its connection went away
    peer: tuple | None = None  # the client end of the connection it came on (same peer: a kept-alive connection)


@dataclass
class Backend:
    """``script(seen, n)`` is an async function returning the raw bytes to answer with, or
    ``None`` to stay silent until the client goes; it may also ``await asyncio.sleep`` and use
    ``writer`` (``seen.writer``) to stream. GETs (discovery) are answered by ``models``."""

    script: object
    models: list[dict] | None = None
    metrics: str | None = None
    """The Prometheus text its ``GET /metrics`` answers (None: answered like any other GET); may be set
    while it runs."""
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    tls: ssl.SSLContext | None = None
    """Serve TLS with this context (the URL is then https)."""

    def start(self) -> str:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run():
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(asyncio.start_server(self._on_conn, HOST, 0,
                                                                                    ssl=self.tls))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("scripted backend did not start")
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    def stop(self) -> None:
        def shutdown():
            self._server.close()
            for t in asyncio.all_tasks(self._loop):
                t.cancel()
            self._loop.call_later(0.05, self._loop.stop)
        self._loop.call_soon_threadsafe(shutdown)
        self._thread.join(timeout=5)

    def requests(self, path_prefix: str = "/v1/c") -> list[Seen]:
        return [s for s in self.seen if s.path.startswith(path_prefix)]

    def wait_closed(self, seen: Seen, timeout: float = 5.0) -> float | None:
        deadline = time.monotonic() + timeout
        while seen.closed_at is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return seen.closed_at

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        current: list[Seen] = []
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                if method == "GET" and path == "/metrics" and self.metrics is not None:
                    data = self.metrics.encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: "
                                 + str(len(data)).encode() + b"\r\n\r\n" + data)
                    await writer.drain()
                    continue
                if method == "GET":
                    data = orjson.dumps({"object": "list", "data": self.models}) if self.models is not None else b""
                    status = b"200 OK" if self.models is not None else b"404 Not Found"
                    writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
                                 + str(len(data)).encode() + b"\r\n\r\n" + data)
                    await writer.drain()
                    continue
                seen = Seen(path, headers, orjson.loads(body) if body else {}, peer=writer.get_extra_info("peername"))
                self.seen.append(seen)
                current[:] = [seen]
                n = len(self.requests())
                answer = await self.script(seen, n, writer)
                if answer is None:
                    await reader.read()  # silent until the client goes away
                    raise ConnectionError
                if answer == b"RESET":
                    writer.transport.abort()
                    return
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            for s in current:
                if s.closed_at is None:
                    s.closed_at = time.monotonic()
        finally:
            writer.close()


def reply(status: int, body: dict | bytes, headers: dict | None = None) -> bytes:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    head = [f"HTTP/1.1 {status} X", "Content-Type: application/json", f"Content-Length: {len(data)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def completion(text: str = "ok", tokens: int = 1) -> bytes:
    return reply(200, {"id": "c1", "object": "chat.completion", "created": 0, "model": "m1",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": 1 + tokens}})


def vllm_error(status: int, message: str) -> bytes:
    # An error in OpenAI's shape, the way vLLM answers one.
    return reply(status, {"error": {"message": message, "type": "BadRequestError" if status < 500
                                    else "InternalServerError", "param": None, "code": status}})


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def sse_chunk(i: int) -> bytes:
    event = b"data: " + orjson.dumps({"id": "s1", "object": "chat.completion.chunk", "created": 0, "model": "m1",
                                       "choices": [{"index": 0, "delta": {"content": f"t{i} "},
                                                    "finish_reason": None}]}) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def sse_end() -> bytes:
    done = b"data: [DONE]\n\n"
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done)
