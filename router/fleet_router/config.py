"""The router's config: a YAML file validated by this pydantic model.

The IaC (``fleet/routerconfig.py``) builds the same model from the fleet spec and writes
``to_yaml()`` into a ConfigMap, so the router can never be handed a config it would reject.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fleet_router.core import profiles as _profiles
from fleet_router.tls import TrustError, client_context


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Strict):
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    admin_port: int = Field(9091, ge=1, le=65535, description="/metrics, /healthz, /readyz")


SHA256_HEX = r"^[0-9a-f]{64}$"


class KeyLimits(_Strict):
    """One key's own limits (``limits.keys``); a field left out falls back to the default in ``limits``."""

    rate_limit_rps: float | None = Field(None, gt=0)
    rate_limit_burst: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    budget_usd: float | None = Field(None, gt=0)


class Limits(_Strict):
    # No limit unless the config sets one: a newcomer's burst is not a wall of 429s.
    rate_limit_rps: float | None = Field(None, gt=0, description="per API key requests/s (none: no limit)")
    rate_limit_burst: int | None = Field(None, ge=1, description="requests allowed at once (default: 2 x rate)")
    tokens_per_minute: int | None = Field(None, ge=1, description="per API key prompt + completion tokens/min")
    budget_usd: float | None = Field(None, gt=0, description="per API key spend per budget_period, USD")
    budget_period: Literal["day", "month", "total"] = Field("month", description="UTC day, UTC month or never")
    keys: dict[str, KeyLimits] = Field(default_factory=dict,
                                       description="sha256 hex of a key -> that key's own limits")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_response_bytes: int = Field(64 * 1024 * 1024, ge=1024,
                                    description="a non-streaming answer is buffered whole: over this it is a 502")
    pass_response_headers: tuple[str, ...] = Field((), description="backend response headers passed to clients "
                                                                   "besides the built-in allow-list")


class Server(_Strict):
    """The client-facing HTTP server, set for a listener on the internet."""

    header_timeout_s: float = Field(10.0, gt=0, description="from a request's first byte to the end of its head")
    body_timeout_s: float = Field(30.0, gt=0, description="longest gap between body bytes before a 408")
    idle_timeout_s: float = Field(75.0, gt=0, description="a kept-alive connection with no request is closed")
    max_connections: int = Field(10000, ge=1, description="open client connections; more are answered 503")
    max_header_bytes: int = Field(32768, ge=1024, description="request line and headers; more is a 431")
    trusted_proxies: tuple[str, ...] = Field(
        (), description="CIDRs whose X-Forwarded-For / Forwarded are kept (and appended to); others' are "
                        "replaced by the peer address")
    access_log: bool = Field(True, description="one JSON line per request on the fleet_router.access logger")

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in v:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"not an IP network: {cidr!r}") from None
        return v


class Shutdown(_Strict):
    """SIGTERM: readiness off at once, keep serving ``pre_stop_s`` while load balancers drop this
    endpoint, then stop listening and let requests in flight finish for up to ``drain_s``. The IaC
    sets both from the Deployment's ``terminationGracePeriodSeconds``. A second signal exits at once."""

    pre_stop_s: float = Field(0.0, ge=0)
    drain_s: float = Field(30.0, ge=0)


ROUTING_HEADERS = ("tier", "policy")
"""What a key may be allowed to choose by header: ``tier`` (the tiers' ``match`` headers, e.g.
``X-Priority``), ``policy`` (``x-fleet-policy``)."""


class Auth(_Strict):
    api_key_hashes: tuple[str, ...] = Field((), description="sha256 hex of accepted API keys")
    api_key_hashes_file: str | None = Field(None, description="a mounted file, one sha256 hex per line")
    routing_headers: dict[str, tuple[Literal["tier", "policy"], ...]] = Field(
        default_factory=dict,
        description="sha256 hex of a key (or `*`: every caller, anonymous ones too) -> the routing headers it may "
                    "set (tier, policy); any other caller's are ignored: it gets the default tier and its policy")

    @field_validator("routing_headers")
    @classmethod
    def _grantees(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for digest in v:
            if digest != "*" and not re.match(SHA256_HEX, digest):
                raise ValueError(f"{digest!r} is neither `*` nor the sha256 hex digest of a key")
        return v

    def may_set(self, key: str) -> frozenset[str]:
        """Which of :data:`ROUTING_HEADERS` the caller with this key id (its sha256, or
        ``"anonymous"`` with auth off) may set."""
        return frozenset((*self.routing_headers.get(key, ()), *self.routing_headers.get("*", ())))

    def load_hashes(self) -> frozenset[str]:
        hashes = set(self.api_key_hashes)
        if self.api_key_hashes_file:
            text = Path(self.api_key_hashes_file).read_text()
            hashes |= {line.strip().lower() for line in text.splitlines() if line.strip()}
        return frozenset(hashes)


class Store(_Strict):
    """The shared store (Redis) that makes per-key limits hold for the fleet, not per replica."""

    url: str = Field(pattern=r"^rediss?://", description="redis://host:port/db")
    password_file: str | None = Field(None, description="a mounted file holding the password")
    timeout_s: float = Field(0.25, gt=0, le=10, description="per call; slower counts as unreachable")
    retry_s: float = Field(1.0, gt=0, le=60, description="how often an unreachable store is tried again")
    on_unavailable: Literal["open", "closed"] = Field(
        "open", description="open: per-replica limits until the store is back; closed: 503 for limited keys")

    def load_password(self) -> str | None:
        if not self.password_file:
            return None
        return Path(self.password_file).read_text().strip() or None


class Failover(_Strict):
    max_attempts: int = Field(3, ge=1, le=10)
    eject_after_failures: int = Field(3, ge=1)
    eject_seconds: float = Field(10.0, gt=0)
    backoff_s: float = Field(0.05, ge=0, description="before attempt n (n >= 2): a uniform draw in "
                                                     "[0, backoff_s x 2^(n-2)], at most backoff_max_s")
    backoff_max_s: float = Field(1.0, ge=0)
    max_migrations: int = Field(2, ge=0, le=10, description="a stream cut after its first byte is continued "
                                                             "on another pool at most this many times "
                                                             "(fleet_router.migration); 0: never")


class Discovery(_Strict):
    models_refresh_s: float = Field(10.0, gt=0)
    models_expire_s: float = Field(30.0, gt=0, description="a pool whose /v1/models cannot be read this long "
                                                           "loses the models only it reported (list and routing)")
    metrics_scrape_s: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _expiry(self) -> "Discovery":
        if self.models_expire_s < self.models_refresh_s:
            raise ValueError(f"models_expire_s ({self.models_expire_s:g}) must be at least models_refresh_s "
                             f"({self.models_refresh_s:g}): a model would expire between two refreshes")
        return self


# --- the backend side: how long to wait on a pool, and its credential -------------------------

class BackendTimeouts(_Strict):
    """Matched to how vLLM answers (see ``fleet_router.upstream``): a stream's head comes before
    generation, then a chunk per token; a non-streaming answer comes whole when it is done. No
    bound on a stream's total length while it keeps producing."""

    connect_s: float = Field(2.0, gt=0, description="TCP (and TLS) connect")
    stream_head_s: float = Field(30.0, gt=0, description="streams: until the response head")
    stream_idle_s: float = Field(60.0, gt=0,
                                 description="streams: the longest silence between chunks (queueing and prefill "
                                             "included)")
    response_s: float = Field(600.0, gt=0, description="non-streaming: until the whole answer")


class Pool(_Strict):
    name: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://", description="base URL of the pool (its gateway route)")
    vendor: str
    cloud: str = "local"
    cluster: str = ""
    accelerator: str = ""
    spot: bool = True
    models: tuple[str, ...] = Field(min_length=1)
    cost_per_hour: float = Field(ge=0, description="USD per replica-hour")
    tokens_per_second: float = Field(gt=0, description="generated tokens per second per replica")
    max_concurrency: int = Field(64, ge=1, description="in-flight requests before the pool counts as saturated")
    timeouts: BackendTimeouts = BackendTimeouts()
    resume: bool = Field(True, description="the pool's servers continue a partial answer (vLLM's "
                                           "continue_final_message): a target for a cut stream's continuation")
    api_key_file: str | None = Field(None, description="a mounted file holding the key the pool's servers require "
                                                       "(vLLM --api-key), sent as `Authorization: Bearer`; "
                                                       "empty: none")
    ca_file: str | None = Field(None, description="a mounted PEM bundle of the CAs the pool's TLS certificate must "
                                                  "chain to, and only those (fleet_router.tls); none: the system's "
                                                  "default store. Only for an https url")

    @model_validator(mode="after")
    def _ca_file_needs_tls(self) -> "Pool":
        if self.ca_file and not self.url.startswith("https://"):
            raise ValueError(f"ca_file is set but {self.url} is not https: nothing would be verified with it")
        return self

    def load_api_key(self) -> str | None:
        """The pool's key, or None (no file configured, or an empty one); a configured file that is
        missing, or holds more than one line, is an error."""
        if not self.api_key_file:
            return None
        key = Path(self.api_key_file).read_text().strip()
        if not key:
            return None
        if any(c in key for c in "\r\n"):
            raise ConfigError(f"pool {self.name!r}: {self.api_key_file} must hold one key on one line")
        return key

    @property
    def cost_per_million_tokens(self) -> float:
        return self.cost_per_hour / (self.tokens_per_second * 3600.0) * 1e6


class TierBackend(_Strict):
    pool: str
    weight: int = Field(ge=0, le=100)


class Tier(_Strict):
    name: str
    match: dict[str, str] = Field(default_factory=dict)
    backends: tuple[TierBackend, ...] = Field(min_length=1)
    overflow: tuple[str, ...] = ()
    ttft_slo_ms: int | None = Field(None, ge=1)
    policy: str | None = Field(None, description="a built-in policy or one of `profiles`")


class Profile(_Strict):
    """A routing policy of this config's own: which scorers (with weights), filters and picker
    (``fleet_router.core.profiles``; the names known there are the only ones accepted)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    scorers: dict[str, float] = Field(default_factory=dict)
    filters: tuple[str, ...] = ()
    picker: str = "max-score"

    @model_validator(mode="after")
    def _parts(self) -> "Profile":
        if self.name in _profiles.PROFILES:
            raise ValueError(f"profile {self.name!r} is a built-in policy; give yours another name")
        problems = _profiles.check(self.scorers, self.picker, self.filters)
        if problems:
            raise ValueError(f"profile {self.name!r}: " + "; ".join(problems))
        return self


class RouterConfig(_Strict):
    listen: Listen = Listen()
    policy: str = Field("prefix-affinity", description="a built-in policy or one of `profiles`")
    limits: Limits = Limits()
    store: Store | None = Field(None, description="shared limits (none: each replica keeps its own)")
    auth: Auth = Auth()
    failover: Failover = Failover()
    discovery: Discovery = Discovery()
    server: Server = Server()
    shutdown: Shutdown = Shutdown()
    pools: tuple[Pool, ...] = Field(min_length=1)
    tiers: tuple[Tier, ...] = ()
    profiles: tuple[Profile, ...] = ()

    @model_validator(mode="after")
    def _references(self) -> "RouterConfig":
        known = (*_profiles.POLICY_NAMES, *(p.name for p in self.profiles))
        for where, policy in [("policy", self.policy), *((f"tier {t.name!r} policy", t.policy) for t in self.tiers)]:
            if policy is not None and policy not in known:
                raise ValueError(f"{where} {policy!r} is not one of: {', '.join(known)}")
        if len({p.name for p in self.profiles}) != len(self.profiles):
            raise ValueError("duplicate profile names")
        names = Counter(p.name for p in self.pools)
        dup = [n for n, c in names.items() if c > 1]
        if dup:
            raise ValueError(f"duplicate pool names: {', '.join(dup)}")
        for t in self.tiers:
            total = sum(b.weight for b in t.backends)
            if total != 100:
                raise ValueError(f"tier {t.name!r}: backend weights sum to {total}, not 100")
            for ref in [b.pool for b in t.backends] + list(t.overflow):
                if ref not in names:
                    raise ValueError(f"tier {t.name!r} names pool {ref!r}, which is not in pools")
        if sum(1 for t in self.tiers if not t.match) > 1:
            raise ValueError("only one tier may have no match (the default tier)")
        for digest in self.limits.keys:
            if not re.match(SHA256_HEX, digest):
                raise ValueError(f"limits.keys: {digest!r} is not the sha256 hex digest of a key")
        return self

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json")
        if not data["profiles"]:  # absent is the default; the IaC's rendered configs stay as they were
            del data["profiles"]
        return yaml.safe_dump(data, sort_keys=True, default_flow_style=False)


class ConfigError(ValueError):
    pass


def parse_config(text: str, source: str = "config") -> RouterConfig:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}".replace("\n", " ")) from None
    try:
        return RouterConfig.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"]) or "(top)"
            lines.append(f"{source}: {loc}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | Path) -> RouterConfig:
    """Parse and validate ``path``; the files it names for backend keys and CA bundles must be readable
    too, so a missing Secret or ConfigMap mount fails the start (or the reload) with one line instead of
    401s or failed handshakes later."""
    path = Path(path)
    config = parse_config(path.read_text(), str(path))
    for p in config.pools:
        try:
            p.load_api_key()
        except OSError as e:
            raise ConfigError(f"{path}: pools.{p.name}.api_key_file: {e.strerror or e}: {p.api_key_file}") from None
        if p.ca_file:
            try:
                client_context(p.ca_file)
            except TrustError as e:
                raise ConfigError(f"{path}: pools.{p.name}.ca_file: {e}") from None
    return config
