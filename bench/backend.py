"""The benchmark's backend: a raw asyncio + httptools OpenAI-shaped server that answers canned
replies at tens of thousands of requests per second on one core, so in the throughput phases the
proxy in front of it, not the backend, is the limit.

``python bench/backend.py --port P [--port Q ...]`` listens on each port (one process, one loop:
two "pools" for the routers to choose between). It answers:

- ``POST /v1/chat/completions`` (and ``/v1/completions``): a fixed completion; with ``"stream":
  true`` in the body, the same as server-sent events (role, content chunks, usage, ``[DONE]``) in
  one chunked response. The body is drained, never parsed as JSON: the stream flag is found with
  one byte search, so a 100 KB prompt costs the backend next to nothing.
- ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (a vLLM-style gauge, so the router's
  scraper has something to read).

Keep-alive, no pipelining assumptions beyond what httptools parses. Not a model of vLLM: the
routing phase uses ``fleet_router.sim`` for that.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal

import httptools
import orjson

MODEL = "m1"
_STREAM = re.compile(rb'\s*:\s*true')


def wants_stream(data, end: int | None = None) -> bool:
    """``"stream": true`` in ``data[:end]``. ``find`` (memchr-fast) for the key, a regex only on the
    few bytes after it: a regex over all of a 100 KB body costs ~0.5 ms."""
    end = len(data) if end is None else end
    at = data.find(b'"stream"', 0, end)
    while at >= 0:
        m = _STREAM.match(data, at + 8, end)
        if m:
            return True
        at = data.find(b'"stream"', at + 8, end)
    return False

_COMPLETION = orjson.dumps({
    "id": "cmpl-bench", "object": "chat.completion", "created": 1700000000, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 8, "completion_tokens": 9, "total_tokens": 17}})


def _sse() -> bytes:
    def chunk(delta: dict, finish=None, usage=None) -> bytes:
        obj = {"id": "cmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": MODEL,
               "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage:
            obj["usage"] = usage
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": w}) for w in ("Hello", "!", " How", " can", " I", " help", "?")]
    events += [chunk({}, "stop"), chunk({}, usage={"prompt_tokens": 8, "completion_tokens": 7, "total_tokens": 15}),
               b"data: [DONE]\n\n"]
    return b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


def _response(status: bytes, ctype: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: " + ctype + b"\r\ncontent-length: " +
            str(len(body)).encode() + b"\r\n\r\n" + body)


RESP_COMPLETION = _response(b"200 OK", b"application/json", _COMPLETION)
RESP_STREAM = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
               b"transfer-encoding: chunked\r\n\r\n" + _sse())
RESP_MODELS = _response(b"200 OK", b"application/json", orjson.dumps(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 1700000000, "owned_by": "bench",
                                 "max_model_len": 131072}]}))
RESP_HEALTH = _response(b"200 OK", b"text/plain", b"")
RESP_METRICS = _response(b"200 OK", b"text/plain; version=0.0.4",
                         b'vllm:num_requests_waiting{model_name="m1"} 0.0\n'
                         b'vllm:kv_cache_usage_perc{model_name="m1"} 0.0\n')
RESP_404 = _response(b"404 Not Found", b"application/json", b'{"error":{"message":"not found"}}')
RESP_400 = _response(b"400 Bad Request", b"text/plain", b"bad request")
GET = {b"/v1/models": RESP_MODELS, b"/health": RESP_HEALTH, b"/metrics": RESP_METRICS}
POST = (b"/v1/chat/completions", b"/v1/completions")


class Conn(asyncio.Protocol):
    """One connection. The parser gets no ``on_body`` callback, so a 100 KB body is never copied
    into more Python objects than the one read gives: each read is scanned for the stream flag
    where it lies (with the previous read's last bytes, for a key split between two reads)."""

    __slots__ = ("transport", "parser", "url", "stream", "tail")

    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.stream = False
        self.tail = b""

    def data_received(self, data):
        if not self.stream:
            self.stream = wants_stream(self.tail + data[:32]) or wants_stream(data)
            self.tail = data[-32:]
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(RESP_400)
            self.transport.close()

    # httptools callbacks
    def on_url(self, url):
        self.url += url

    def on_message_complete(self):
        path = self.url.split(b"?", 1)[0]
        self.url = b""
        if self.parser.get_method() == b"POST" and path in POST:
            self.transport.write(RESP_STREAM if self.stream else RESP_COMPLETION)
        else:
            self.transport.write(GET.get(path, RESP_404))
        self.stream, self.tail = False, b""
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(host: str, ports: list[int]) -> None:
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(Conn, host, p, backlog=4096, reuse_address=True) for p in ports]
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, action="append", required=True)
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
