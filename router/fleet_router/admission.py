"""Admission: who may call (API keys), how often and how much (per-key limits and budgets, shared
across replicas by :mod:`fleet_router.limits`), and which routing headers count.

Answers are either a value or an OpenAI-shaped error response; no routing and no proxying here.
"""

from __future__ import annotations

import hashlib
import math
from types import MappingProxyType
from collections.abc import Mapping

from fleet_router import core, httpio
from fleet_router.config import RouterConfig
from fleet_router.limits import Limiter, Verdict
from fleet_router.openai_api import error


_NOTHING_CHOSEN: tuple[Mapping[str, str], None] = (MappingProxyType({}), None)  # a key that may set none
PERIOD_TEXT = {"day": "per UTC day", "month": "per UTC month", "total": "in total"}


class Admission:
    """Per-key state (limit buckets, key digests) survives :meth:`apply_config`."""

    def __init__(self, config: RouterConfig, metrics):
        self._digests: dict[str, str] = {}  # presented Authorization header -> its key's sha256, hashed once
        self._may: dict[str, frozenset[str]] = {}  # key id -> the routing headers it may set (this config's)
        self.limiter = Limiter(config.limits, config.store, metrics)
        self.apply_config(config)

    async def start(self) -> None:
        await self.limiter.start()

    async def close(self) -> None:
        await self.limiter.close()

    def apply_config(self, config: RouterConfig) -> None:
        self.config = config
        self.limiter.update(config.limits)
        self.key_hashes = config.auth.load_hashes()
        self.tier_headers = core.tier_header_names(config.tiers)
        # the built-in policies and the config's own profiles (core.profile_for resolves both)
        self.policies = (*core.POLICY_NAMES, *(p.name for p in config.profiles))
        self._may = {}

    def authenticate(self, headers: Mapping[str, str]) -> tuple[str | None, httpio.Response | None]:
        """``(key id, None)`` for an accepted key (its sha256; ``"anonymous"`` with auth off), else
        ``(None, 401)``."""
        if not self.key_hashes:
            return "anonymous", None
        header = headers.get("Authorization", "")
        digest = self._digests.get(header)  # the same header, request after request: one look-up
        if digest is None:
            if not header.startswith("Bearer ") or not header[7:].strip():
                return None, error(401, "Missing API key: send `Authorization: Bearer <key>`.",
                                   "invalid_request_error", "invalid_api_key")
            if len(self._digests) >= 4096:  # bounded: a flood of random keys cannot grow it
                self._digests.clear()
            digest = self._digests[header] = hashlib.sha256(header[7:].strip().encode()).hexdigest()
        if digest not in self.key_hashes:
            return None, error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return digest, None

    async def rate_limit(self, key: str) -> tuple[Verdict | None, httpio.Response | None]:
        """``(verdict, None)`` if ``key`` may send a request now (the verdict is None when the key has
        no limits; else it carries the ``x-ratelimit-*`` headers and what to charge), else ``(verdict,
        429)`` with ``Retry-After`` — or 503 while a fail-closed store is unreachable."""
        v = await self.limiter.admit(key)
        if v is None or v.allowed:
            return v, None
        retry = {"Retry-After": str(max(1, math.ceil(v.retry_after))) if math.isfinite(v.retry_after) else "86400"}
        if v.reason == "store_unavailable":
            return v, error(503, "The rate-limit store is unavailable and limits fail closed; retry.", "server_error",
                            "limits_unavailable", headers=retry)
        p = v.policy
        if v.reason == "requests":
            message, code = f"Rate limit of {p.rps:g} requests/s exceeded.", "rate_limit_exceeded"
        elif v.reason == "tokens":
            message, code = f"Rate limit of {p.tpm} tokens/min exceeded.", "rate_limit_exceeded"
        else:
            message, code = f"Budget of ${p.budget_usd:g} {PERIOD_TEXT[p.period]} spent.", "budget_exceeded"
        return v, error(429, message, "rate_limit_error", code, headers={**v.headers, **retry})

    def routing_headers(self, headers: Mapping[str, str],
                        key: str) -> tuple[Mapping[str, str], str | None] | httpio.Response:
        """The tier headers (only known values) and the ``x-fleet-policy`` override, or a 400 naming
        the header. Only the headers ``key`` is allowed to set (``auth.routing_headers``) count;
        anyone else's are ignored, so the caller gets the default tier and its policy."""
        may = self._may.get(key)
        if may is None:
            if len(self._may) >= 4096:
                self._may.clear()
            may = self._may[key] = self.config.auth.may_set(key)
        if not may:
            return _NOTHING_CHOSEN
        chosen = {}
        if "tier" in may:
            for name, allowed in self.tier_headers.items():
                value = headers.get(name)
                if value is None:
                    continue
                if value not in allowed:
                    return error(400, f"Header `{name}` must be one of: {', '.join(sorted(allowed))} "
                                      f"(got {value!r}).", "invalid_request_error", "invalid_header", name)
                chosen[name] = value
        policy = headers.get("x-fleet-policy") if "policy" in may else None
        if policy is not None and policy not in self.policies:
            return error(400, f"Header `x-fleet-policy` must be one of: {', '.join(self.policies)} (got {policy!r}).",
                         "invalid_request_error", "invalid_header", "x-fleet-policy")
        return chosen, policy
