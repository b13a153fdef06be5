"""Admission: who may call (API keys), how often (rate limits), and which routing headers count.

Answers are either a value or an OpenAI-shaped error response; no routing and no proxying here.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass

from fleet_router import core, httpio
from fleet_router.config import RouterConfig
from fleet_router.openai_api import error


@dataclass
class _Bucket:
    tokens: float
    updated: float


class Admission:
    """Per-key state (token buckets, key digests) survives :meth:`apply_config`."""

    def __init__(self, config: RouterConfig):
        self.buckets: dict[str, _Bucket] = {}
        self._digests: dict[str, str] = {}  # presented key -> sha256, so hashing is once per key
        self.apply_config(config)

    def apply_config(self, config: RouterConfig) -> None:
        self.config = config
        self.key_hashes = config.auth.load_hashes()
        self.tier_headers = core.tier_header_names(config.tiers)

    def authenticate(self, headers: Mapping[str, str]) -> tuple[str | None, httpio.Response | None]:
        """``(key id, None)`` for an accepted key (its sha256; ``"anonymous"`` with auth off), else
        ``(None, 401)``."""
        if not self.key_hashes:
            return "anonymous", None
        header = headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return None, error(401, "Missing API key: send `Authorization: Bearer <key>`.",
                               "invalid_request_error", "invalid_api_key")
        key = header[7:].strip()
        digest = self._digests.get(key)
        if digest is None:
            if len(self._digests) >= 4096:  # bounded: a flood of random keys cannot grow it
                self._digests.clear()
            digest = self._digests[key] = hashlib.sha256(key.encode()).hexdigest()
        if digest not in self.key_hashes:
            return None, error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return digest, None

    def wait_s(self, key: str) -> float:
        """0 if allowed; else seconds until a token is available."""
        limits = self.config.limits
        rate = limits.rate_limit_rps
        burst = limits.rate_limit_burst or max(1, int(rate * 2))
        now = time.monotonic()
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = _Bucket(tokens=float(burst), updated=now)
        b.tokens = min(burst, b.tokens + (now - b.updated) * rate)
        b.updated = now
        if b.tokens >= 1:
            b.tokens -= 1
            return 0.0
        return (1 - b.tokens) / rate

    def rate_limit(self, key: str) -> httpio.Response | None:
        """None if ``key`` may send a request now, else a 429 with ``Retry-After``."""
        wait = self.wait_s(key)
        if not wait:
            return None
        return error(429, f"Rate limit of {self.config.limits.rate_limit_rps:g} requests/s exceeded.",
                     "rate_limit_error", "rate_limit_exceeded", headers={"Retry-After": str(max(1, round(wait)))})

    def routing_headers(self, headers: Mapping[str, str]) -> tuple[dict[str, str], str | None] | httpio.Response:
        """The tier headers (only known values) and the ``x-fleet-policy`` override, or a 400."""
        chosen = {}
        for name, allowed in self.tier_headers.items():
            value = headers.get(name)
            if value is None:
                continue
            if value not in allowed:
                return error(400, f"Header `{name}` must be one of: {', '.join(sorted(allowed))} (got {value!r}).",
                             "invalid_request_error", "invalid_header", name)
            chosen[name] = value
        policy = headers.get("x-fleet-policy")
        if policy is not None and policy not in core.POLICY_ORDER:
            return error(400, f"Header `x-fleet-policy` must be one of: {', '.join(core.POLICY_ORDER)}.",
                         "invalid_request_error", "invalid_header", "x-fleet-policy")
        return chosen, policy
