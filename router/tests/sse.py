"""A raw SSE client for the stream tests (stdlib http.client): every event as sent, and whether the
stream ended with ``[DONE]`` or was cut."""

from __future__ import annotations

import http.client
import json


class Stream:
    def __init__(self, status: int, events: list, done: bool, cut: bool, headers: dict):
        self.status, self.events, self.done, self.cut, self.headers = status, events, done, cut, headers

    @property
    def chunks(self) -> list[dict]:
        return [e for e in self.events if isinstance(e, dict)]

    def text(self) -> str:
        out = []
        for e in self.chunks:
            for c in e.get("choices") or []:
                out.append(c.get("text") or (c.get("delta") or {}).get("content") or "")
        return "".join(out)

    def finish_reasons(self) -> list:
        return [c["finish_reason"] for e in self.chunks for c in e.get("choices") or [] if c.get("finish_reason")]

    def errors(self) -> list:
        return [e["error"] for e in self.chunks if "error" in e]


def post_stream(host: str, port: int, path: str, body: dict, headers: dict | None = None,
                timeout: float = 20, on_head=None, on_event=None) -> Stream:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
        r = conn.getresponse()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        if on_head is not None:
            on_head()
        if r.status != 200:
            return Stream(r.status, [json.loads(r.read() or b"null")], False, False, hdrs)
        events, buf, done, cut = [], b"", False, False
        try:
            while True:
                data = r.read1(65536)
                if not data:
                    break
                buf += data
                while b"\n\n" in buf:
                    ev, buf = buf.split(b"\n\n", 1)
                    for line in ev.split(b"\n"):
                        if line.startswith(b"data: "):
                            payload = line[6:]
                            if payload == b"[DONE]":
                                done = True
                            else:
                                events.append(json.loads(payload))
                                if on_event is not None:
                                    on_event(len(events), hdrs)
        except (http.client.IncompleteRead, ConnectionError):
            cut = True
        return Stream(r.status, events, done, cut or not done, hdrs)
    finally:
        conn.close()
