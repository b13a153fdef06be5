"""What of the client's request crosses to the backend: request headers without hop-by-hop ones,
with ``X-Forwarded-For`` / ``Forwarded`` from the peer and the request id.

RFC 9110 section 7.6.1: ``Connection`` and every header it names are hop-by-hop, as are
``Keep-Alive``, ``Proxy-Connection``, ``TE``, ``Transfer-Encoding``, ``Upgrade``, ``Trailer`` and
``Proxy-Authorization``; a proxy removes them. RFC 7239 section 4 ``Forwarded`` (``for=`` quoted
for IPv6) and the de-facto ``X-Forwarded-For`` list are appended to only when the peer is a
trusted proxy; from anyone else they are dropped, so a client cannot choose the address the
backend (or its logs) sees.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade",
                        "trailer", "proxy-authorization", "proxy-authenticate"})
#: Also never passed on: the router frames the body and sets Host, and the client's API key is ours.
NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "content-type", "expect", "authorization"}
_FORWARDING = frozenset({"x-forwarded-for", "forwarded", "x-forwarded-proto", "x-forwarded-host", "x-real-ip",
                         "x-request-id"})


class TrustedProxies:
    """Is this peer address one of the configured proxy networks? (Answers cached per address.)"""

    def __init__(self, cidrs: Iterable[str]):
        self.networks = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
        self._cache: dict[str, bool] = {}

    def __call__(self, peer: str) -> bool:
        if not self.networks:
            return False
        hit = self._cache.get(peer)
        if hit is None:
            try:
                ip = ipaddress.ip_address(peer)
                hit = any(ip in n for n in self.networks)
            except ValueError:
                hit = False
            if len(self._cache) >= 4096:
                self._cache.clear()
            self._cache[peer] = hit
        return hit


def _node(addr: str) -> str:
    return f'"[{addr}]"' if ":" in addr else addr


def request_headers(request) -> list[tuple[str, str]]:
    """The headers to send the backend for ``request`` (an :class:`fleet_router.httpio.Request`)."""
    headers = request.headers
    skip = NOT_FORWARDED
    connection = headers.get("connection")
    if connection:
        skip = skip | {t.strip().lower() for t in connection.split(",")}
    out = [(k, v) for k, v in headers.items() if (lk := k.lower()) not in skip and lk not in _FORWARDING]
    peer = request.peer
    xff, fwd, proto = peer, f"for={_node(peer)};proto=http", "http"
    if request.trusted_peer:
        prior = ", ".join(headers.getall("x-forwarded-for"))
        if prior:
            xff = f"{prior}, {peer}"
        prior = ", ".join(headers.getall("forwarded"))
        if prior:
            fwd = f"{prior}, {fwd}"
        proto = headers.get("x-forwarded-proto") or proto
    out += [("X-Forwarded-For", xff), ("Forwarded", fwd), ("X-Forwarded-Proto", proto),
            ("X-Request-Id", request.request_id)]
    return out
