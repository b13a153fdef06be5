"""How the router verifies its backends' TLS certificates: one client context per trust bundle.

A pool with ``ca_file`` is verified against that bundle and nothing else; a pool without one against
the system's default store. ``ssl.create_default_context(cafile=...)`` loads only the given file and
skips ``load_default_certs`` (CPython 3.11 ``Lib/ssl.py``: ``if cafile or capath or cadata:
context.load_verify_locations(...)`` / ``elif ...: context.load_default_certs(purpose)``), with
hostname checking and ``CERT_REQUIRED`` on, as for the default store. So a gateway's private CA is
trusted for that gateway's pools only — a CA that leaks from one cluster signs nothing the router
accepts for another — and a pool behind a publicly trusted certificate needs no bundle.
"""

from __future__ import annotations

import ssl


class TrustError(ValueError):
    """A configured bundle that cannot be read or holds no certificate."""


def client_context(ca_file: str | None) -> ssl.SSLContext:
    """The verifying client context for a pool (``ca_file`` None: the default store)."""
    if not ca_file:
        return ssl.create_default_context()
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except FileNotFoundError as e:
        raise TrustError(f"{ca_file}: {e.strerror}") from None
    except (ssl.SSLError, OSError) as e:
        raise TrustError(f"{ca_file}: not a PEM bundle of CA certificates ({getattr(e, 'reason', None) or e})") \
            from None
    if not ctx.get_ca_certs():
        raise TrustError(f"{ca_file}: holds no CA certificate")
    return ctx


class Contexts:
    """Client contexts by bundle path, built on first use; ``clear()`` (on a config reload) makes new
    connections read the bundles again, so a rotated CA is picked up without a restart."""

    def __init__(self, default: ssl.SSLContext | None = None):
        self._default = default
        self._by_file: dict[str | None, ssl.SSLContext] = {}

    def get(self, ca_file: str | None) -> ssl.SSLContext:
        ctx = self._by_file.get(ca_file)
        if ctx is None:
            ctx = self._default if (ca_file is None and self._default is not None) else client_context(ca_file)
            self._by_file[ca_file] = ctx
        return ctx

    def clear(self) -> None:
        self._by_file.clear()
