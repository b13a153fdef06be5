"""The fleet spec: one typed model of clouds, clusters, accelerator pools, models, tiers and router.

Read from the stack config key ``fleet`` (a structured value in ``Pulumi.<stack>.yaml``). Two
passes, both before any resource is declared:

1. shape — pydantic (``extra="forbid"``): unknown keys, wrong types, out-of-range numbers;
2. meaning — :meth:`FleetSpec.problems`: references between sections, the catalog (is this
   accelerator offered on that cloud? does that TPU topology exist?), tier weights, and the
   model-fit preflight (:mod:`fleet.models`).

Every problem is reported as ``<stack file>: fleet.<path>: <message>`` so a user can find it.
Secrets never live here: the Hugging Face token and router API keys are Pulumi secrets under
their own config keys (``hfToken``, ``routerApiKeys``).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator

from fleet import catalog
from fleet.models import BYTES_PER_PARAM, Architecture, Fit, model_fit
from fleet_router.core.profiles import POLICY_NAMES

Cloud = Literal["gcp", "aws", "azure", "local"]
Topology = Literal["dev", "gcp", "aws", "azure", "multicloud"]
Dtype = Literal["fp32", "bf16", "fp16", "fp8", "int8", "awq", "gptq", "int4"]
Policy = Literal[POLICY_NAMES]  # the router's profile registry: one list of policy names

Name = Annotated[str, Field(pattern=r"^[a-z]([a-z0-9-]{0,28}[a-z0-9])?$",
                            description="lowercase DNS label, 1-30 characters")]
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")
SECRET_LOOKING = re.compile(r"(token|password|passwd|secret|api[_-]?key)", re.I)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterSpec(_Strict):
    name: Name
    cloud: Cloud
    region: str | None = None
    zones: tuple[str, ...] = ()
    project: str | None = Field(None, description="GCP project (defaults to the provider's)")
    kubernetes_version: str = Field(catalog.KUBERNETES_DEFAULT, pattern=r"^1\.\d{2}$")
    kubeconfig_context: str | None = Field(None, description="local clusters: kubeconfig context")
    system_nodes: int = Field(2, ge=1, le=20)
    private_nodes: bool = True
    gateway_hostname: str | None = Field(None, description="DNS name the Gateway's certificate covers")


class PoolSpec(_Strict):
    name: Name
    cluster: str
    accelerator: str
    accelerators_per_node: int | None = Field(None, ge=1, le=16)
    tpu_topology: str | None = Field(None, pattern=r"^\d+x\d+$")
    machine_type: str | None = None
    min_nodes: int = Field(0, ge=0, le=1000)
    max_nodes: int = Field(ge=1, le=1000)
    typical_nodes: float | None = Field(None, ge=0, description="average nodes up, for cost reports")
    spot: bool = True
    resume: bool = Field(True, description="the router may continue a cut stream on this pool (every pool "
                                           "runs vLLM, whose chat API has continue_final_message); false "
                                           "for a server without it")
    reserved_reason: str | None = Field(None, min_length=10,
                                        description="why an on-demand pool keeps nodes up (policy)")
    sim_profile: str | None = Field(None, description="local pools: the simulator profile to run")

    _machine: catalog.MachineType | None = PrivateAttr(None)

    @property
    def vendor(self) -> str:
        return catalog.accelerator(self.accelerator).vendor

    @property
    def machine(self) -> catalog.MachineType:
        """The catalog machine this pool runs on (resolved during validation)."""
        if self._machine is None:
            raise RuntimeError(f"pool {self.name!r} has not been resolved against the catalog")
        return self._machine

    @property
    def accelerators(self) -> int:
        return self.machine.accelerators


class ModelSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$",
                      description="the model name clients send (OpenAI 'model')")
    hf_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
    params_b: float = Field(gt=0, le=2000, description="parameters, in billions")
    dtype: Dtype = "bf16"
    max_context: int = Field(4096, ge=128, le=1_048_576)
    concurrency: int = Field(4, ge=1, le=1024,
                             description="sequences at full context the KV cache must hold")
    pools: tuple[str, ...] = Field(min_length=1)
    tensor_parallel: int = Field(1, ge=1, le=16)
    min_replicas: int = Field(0, ge=0, le=100)
    max_replicas: int = Field(2, ge=1, le=100)
    serving: Literal["deployment", "kserve"] = "deployment"
    architecture: Architecture | None = None
    gated: bool | None = Field(None, description="the Hub repository needs an accepted licence and a token "
                                                 "(default: by organisation, fleet.secrets.GATED_HF_ORGS)")

    @property
    def slug(self) -> str:
        """A DNS-label form of the model name, for resource names."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")[:40]


class TierBackend(_Strict):
    pool: str
    weight: int = Field(ge=0, le=100)


class TierSpec(_Strict):
    name: Name
    match: dict[str, str] = Field(default_factory=dict,
                                  description="request headers that select this tier; empty = default")
    backends: tuple[TierBackend, ...] = Field(min_length=1)
    overflow: tuple[str, ...] = ()
    ttft_slo_ms: int | None = Field(None, ge=1, le=600_000)
    policy: Policy = "prefix-affinity"

    @field_validator("match")
    @classmethod
    def _header_names(cls, v: dict[str, str]) -> dict[str, str]:
        for header, value in v.items():
            if not HEADER_NAME.match(header):
                raise ValueError(f"{header!r} is not a valid HTTP header name")
            if not value or len(value) > 128 or any(c in value for c in "\r\n"):
                raise ValueError(f"header {header!r} needs a 1-128 character single-line value")
        return v


class KeyLimitSpec(_Strict):
    """One API key's own limits; a field left out takes the router-wide default."""

    rate_limit_rps: float | None = Field(None, gt=0)
    rate_limit_burst: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    budget_usd: float | None = Field(None, gt=0)


class RouterSpec(_Strict):
    enabled: bool = True
    cluster: str | None = Field(None, description="cluster that hosts the router (default: the first)")
    replicas: int = Field(2, ge=1, le=50)
    max_replicas: int = Field(6, ge=1, le=200)
    policy: Policy = "prefix-affinity"
    # Per-key limits, held for the whole fleet through the router's store (components/router_store.py).
    # None: no limit, so a newcomer's burst is served, not refused.
    rate_limit_rps: float | None = Field(None, gt=0, description="per API key requests/s")
    rate_limit_burst: int | None = Field(None, ge=1, description="requests at once (default 2 x rate)")
    tokens_per_minute: int | None = Field(None, ge=1, description="per API key prompt + completion tokens/min")
    budget_usd: float | None = Field(None, gt=0, description="per API key spend per budget_period, USD")
    budget_period: Literal["day", "month", "total"] = "month"
    key_limits: dict[str, KeyLimitSpec] = Field(default_factory=dict,
                                                description="sha256 hex of an API key -> that key's own limits")
    routing_headers: dict[str, tuple[Literal["tier", "policy"], ...]] = Field(
        default_factory=dict,
        description="sha256 hex of an API key (or `*`: every caller) -> the routing headers it may set: tier "
                    "(the tiers' match headers), policy (x-fleet-policy); other callers' are ignored")
    limits_on_store_unavailable: Literal["open", "closed"] = Field(
        "open", description="open: per-replica limits while the store is down; closed: 503 for limited keys")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    request_timeout_s: float = Field(300.0, gt=0, le=3600)
    hostname: str | None = None

    @field_validator("key_limits", "routing_headers")
    @classmethod
    def _key_hashes(cls, v: dict, info: ValidationInfo) -> dict:
        for digest in v:
            if not re.fullmatch(r"[0-9a-f]{64}", digest) and not (digest == "*" and info.field_name == "routing_headers"):
                raise ValueError(f"{digest!r} is not a sha256 hex digest (never put a key itself in a stack file)")
        return v


class PlatformSpec(_Strict):
    cert_manager: bool = True
    istio: bool = True
    kserve: bool = True
    keda: bool = True
    monitoring: bool = True


class BudgetSpec(_Strict):
    monthly_max_usd: float | None = Field(None, gt=0, description="ceiling for the whole stack at max scale")
    pool_monthly_max_usd: float | None = Field(None, gt=0, description="ceiling for any one pool at max scale")


class FleetSpec(_Strict):
    topology: Topology
    clusters: tuple[ClusterSpec, ...] = Field(min_length=1)
    pools: tuple[PoolSpec, ...] = ()
    models: tuple[ModelSpec, ...] = ()
    tiers: tuple[TierSpec, ...] = ()
    router: RouterSpec = RouterSpec()
    platform: PlatformSpec = PlatformSpec()
    budget: BudgetSpec = BudgetSpec()

    # --- lookups -------------------------------------------------------------------------------

    def cluster(self, name: str) -> ClusterSpec:
        return next(c for c in self.clusters if c.name == name)

    def pool(self, name: str) -> PoolSpec:
        return next(p for p in self.pools if p.name == name)

    def pools_in(self, cluster: str) -> list[PoolSpec]:
        return [p for p in self.pools if p.cluster == cluster]

    def models_on(self, pool: str) -> list[ModelSpec]:
        return [m for m in self.models if pool in m.pools]

    def router_cluster(self) -> ClusterSpec:
        return self.cluster(self.router.cluster) if self.router.cluster else self.clusters[0]

    def fit(self, model: ModelSpec, pool: PoolSpec) -> Fit:
        acc = catalog.accelerator(pool.accelerator)
        return model_fit(hf_id=model.hf_id, params_b=model.params_b, dtype=model.dtype,
                         max_context=model.max_context, concurrency=model.concurrency,
                         usable_memory_gib=acc.usable_memory_gib,
                         tensor_parallel=model.tensor_parallel, arch=model.architecture)

    # --- meaning -------------------------------------------------------------------------------

    def problems(self) -> list[tuple[str, str]]:
        """Every cross-section problem as ``(field path, message)``; resolves pool machines."""
        out: list[tuple[str, str]] = []
        for section in ("clusters", "pools", "models", "tiers"):
            seen = Counter(x.name for x in getattr(self, section))
            for i, item in enumerate(getattr(self, section)):
                if seen[item.name] > 1:
                    out.append((f"{section}[{i}].name", f"duplicate name {item.name!r} in {section}"))
        clusters = {c.name: c for c in self.clusters}
        pools = {p.name: p for p in self.pools}

        for i, c in enumerate(self.clusters):
            if self.topology == "dev" and c.cloud != "local":
                out.append((f"clusters[{i}].cloud", f"the dev topology runs on a local cluster, not {c.cloud}"))
            if self.topology in ("gcp", "aws", "azure") and c.cloud != self.topology:
                out.append((f"clusters[{i}].cloud",
                            f"the {self.topology} topology only has {self.topology} clusters, not {c.cloud}"))
            support = catalog.KUBERNETES_SUPPORT.get(c.cloud)
            if support is not None and c.kubernetes_version not in support.offered:
                newer = max(support.offered, key=lambda v: int(v.split(".")[1]))
                why = (support.older if int(c.kubernetes_version.split(".")[1]) < int(newer.split(".")[1])
                       else "the cloud does not offer it yet")
                out.append((f"clusters[{i}].kubernetes_version",
                            f"Kubernetes {c.kubernetes_version} on {c.cloud}: {why}; use one of "
                            f"{', '.join(sorted(support.offered))} (re-check: {support.check})"))
            if c.cloud != "local" and not c.region:
                out.append((f"clusters[{i}].region", f"{c.cloud} cluster {c.name!r} needs a region"))
            if c.cloud == "local" and not c.kubeconfig_context:
                out.append((f"clusters[{i}].kubeconfig_context",
                            f"local cluster {c.name!r} needs the kubeconfig context of a kind/k3d cluster"))

        for i, p in enumerate(self.pools):
            at = f"pools[{i}]"
            if p.cluster not in clusters:
                out.append((f"{at}.cluster", f"pool {p.name!r} names cluster {p.cluster!r}, which is not in clusters "
                                             f"({', '.join(clusters) or 'none'})"))
                continue
            if p.accelerator not in catalog.ACCELERATORS:
                out.append((f"{at}.accelerator", f"unknown accelerator {p.accelerator!r}; the catalog has "
                                                 f"{', '.join(sorted(catalog.ACCELERATORS))}"))
                continue
            if p.min_nodes > p.max_nodes:
                out.append((f"{at}.min_nodes", f"pool {p.name!r}: min_nodes ({p.min_nodes}) > max_nodes ({p.max_nodes})"))
            if p.typical_nodes is not None and not p.min_nodes <= p.typical_nodes <= p.max_nodes:
                out.append((f"{at}.typical_nodes", f"pool {p.name!r}: typical_nodes ({p.typical_nodes}) must lie "
                                                   f"between min_nodes ({p.min_nodes}) and max_nodes ({p.max_nodes})"))
            acc = catalog.accelerator(p.accelerator)
            cloud = clusters[p.cluster].cloud
            if p.tpu_topology is not None and not acc.is_tpu:
                out.append((f"{at}.tpu_topology", f"pool {p.name!r}: tpu_topology is only for TPU pools, "
                                                  f"not {acc.display}"))
                continue
            if acc.is_tpu and p.tpu_topology is None:
                out.append((f"{at}.tpu_topology", f"TPU pool {p.name!r} needs a tpu_topology, one of "
                                                  f"{', '.join(acc.tpu_topologies)}"))
                continue
            if acc.is_tpu and p.tpu_topology not in acc.tpu_topologies:
                out.append((f"{at}.tpu_topology", f"{acc.display} does not support topology {p.tpu_topology!r}; "
                                                  f"supported: {', '.join(acc.tpu_topologies)}"))
                continue
            if cloud == "local":
                # Local pools run the simulator; they emulate the accelerator's smallest machine.
                p._machine = min(acc.machines, key=lambda m: m.accelerators)
                if p.tpu_topology:
                    p._machine = next(m for m in acc.machines if m.tpu_topology == p.tpu_topology)
                continue  # nothing is billed locally: no spot-or-reason rule here
            if p.sim_profile is not None:
                out.append((f"{at}.sim_profile", f"pool {p.name!r}: sim_profile is only for local pools"))
            try:
                p._machine = catalog.machine(p.accelerator, cloud, p.machine_type,
                                             p.accelerators_per_node, p.tpu_topology)
            except catalog.CatalogError as e:
                field = "machine_type" if p.machine_type else (
                    "accelerator" if not acc.machines_on(cloud) else "accelerators_per_node")
                out.append((f"{at}.{field}", f"pool {p.name!r} on {cloud}: {e}"))
                continue
            if p.accelerators_per_node is not None and p._machine.accelerators != p.accelerators_per_node:
                out.append((f"{at}.accelerators_per_node",
                            f"pool {p.name!r}: {p._machine.name} carries {p._machine.accelerators} accelerators, "
                            f"not {p.accelerators_per_node}"))
            if p.tpu_topology is not None and p._machine.tpu_topology != p.tpu_topology:
                out.append((f"{at}.tpu_topology", f"pool {p.name!r}: {p._machine.name} is a "
                                                  f"{p._machine.tpu_topology} slice, not {p.tpu_topology}"))
            traits = catalog.CLOUD_TRAITS[cloud]
            if len(p.name) > traits.max_name_length:
                out.append((f"{at}.name", f"pool name {p.name!r} is longer than {cloud} allows "
                                          f"({traits.max_name_length} characters)"))
            elif not re.fullmatch(f"[{traits.name_charset}]+", p.name):
                out.append((f"{at}.name", f"pool name {p.name!r} has characters {cloud} does not allow "
                                          f"(allowed: {traits.name_charset})"))

        for i, m in enumerate(self.models):
            at = f"models[{i}]"
            if m.min_replicas > m.max_replicas:
                out.append((f"{at}.min_replicas", f"model {m.name!r}: min_replicas ({m.min_replicas}) > "
                                                  f"max_replicas ({m.max_replicas})"))
            for j, pool_name in enumerate(m.pools):
                pool = pools.get(pool_name)
                if pool is None:
                    out.append((f"{at}.pools[{j}]", f"model {m.name!r} is routed to pool {pool_name!r}, which is "
                                                    f"not in pools ({', '.join(pools) or 'none'})"))
                    continue
                if pool._machine is None:
                    continue  # the pool's own error is already reported
                if m.tensor_parallel > pool.accelerators:
                    out.append((f"{at}.tensor_parallel",
                                f"model {m.name!r}: tensor_parallel {m.tensor_parallel} exceeds the "
                                f"{pool.accelerators} accelerators per node of pool {pool_name!r}"))
                    continue
                fit = self.fit(m, pool)
                if not fit.fits:
                    acc = catalog.accelerator(pool.accelerator)
                    out.append((f"{at}.pools[{j}]", (
                        f"model {m.name!r} ({m.params_b:g}B, {m.dtype}, context {m.max_context} x "
                        f"{m.concurrency}) does not fit pool {pool_name!r} ({m.tensor_parallel} x "
                        f"{acc.display}, {acc.usable_memory_gib:g} GiB usable each): {fit.explain()}; "
                        f"{_fit_hint(m, pool)}")))

        for i, t in enumerate(self.tiers):
            at = f"tiers[{i}]"
            total = sum(b.weight for b in t.backends)
            if total != 100:
                out.append((f"{at}.backends", f"tier {t.name!r}: backend weights sum to {total}, not 100"))
            for j, b in enumerate(t.backends):
                if b.pool not in pools:
                    out.append((f"{at}.backends[{j}].pool", f"tier {t.name!r} sends traffic to pool {b.pool!r}, "
                                                            f"which is not in pools"))
            for j, o in enumerate(t.overflow):
                if o not in pools:
                    out.append((f"{at}.overflow[{j}]", f"tier {t.name!r} overflows to pool {o!r}, which is not in pools"))
                elif o in {b.pool for b in t.backends}:
                    out.append((f"{at}.overflow[{j}]", f"tier {t.name!r}: pool {o!r} is both a backend and an overflow"))
        defaults = [i for i, t in enumerate(self.tiers) if not t.match]
        if len(defaults) > 1:
            out.append((f"tiers[{defaults[1]}].match", "only one tier may have no match (the default tier)"))
        matches = Counter(tuple(sorted((k.lower(), v) for k, v in t.match.items())) for t in self.tiers if t.match)
        for i, t in enumerate(self.tiers):
            key = tuple(sorted((k.lower(), v) for k, v in t.match.items()))
            if t.match and matches[key] > 1:
                out.append((f"tiers[{i}].match", f"tier {t.name!r} has the same match as another tier"))

        if self.router.cluster is not None and self.router.cluster not in clusters:
            out.append(("router.cluster", f"router cluster {self.router.cluster!r} is not in clusters"))
        if self.router.replicas > self.router.max_replicas:
            out.append(("router.replicas", f"router replicas ({self.router.replicas}) > max_replicas "
                                           f"({self.router.max_replicas})"))
        if self.platform.kserve and not self.platform.cert_manager:
            out.append(("platform.kserve", "KServe needs cert-manager for its webhooks; enable platform.cert_manager"))
        if self.platform.istio and not self.platform.cert_manager:
            out.append(("platform.istio", "the Gateway's TLS certificate comes from cert-manager; "
                                          "enable platform.cert_manager"))
        if any(m.serving == "kserve" for m in self.models) and not self.platform.kserve:
            i = next(i for i, m in enumerate(self.models) if m.serving == "kserve")
            out.append((f"models[{i}].serving", "serving: kserve needs platform.kserve enabled"))
        # KServe v0.19.0's LLMInferenceService CRD (kserve-llmisvc-crd chart): spec.scaling has
        # minReplicas, maxReplicas and wva only — it autoscales through the Workload Variant Autoscaler,
        # which the platform does not install, and takes no KEDA triggers.
        for i, m in enumerate(self.models):
            if m.serving == "kserve" and m.min_replicas != m.max_replicas:
                out.append((f"models[{i}].max_replicas",
                             f"model {m.name!r}: serving: kserve runs a fixed replica count (KServe's "
                             "LLMInferenceService autoscales only through the Workload Variant Autoscaler, "
                             f"not installed here); set min_replicas == max_replicas ({m.min_replicas} vs "
                             f"{m.max_replicas}), or serving: deployment for queue-depth autoscaling"))
        return out


def _fit_hint(model: ModelSpec, pool: PoolSpec) -> str:
    hints = []
    if BYTES_PER_PARAM[model.dtype] > 0.5:
        hints.append("quantize (dtype awq/gptq/int8/fp8)")
    hints.append("use a larger accelerator")
    if model.tensor_parallel < pool.accelerators:
        hints.append(f"raise tensor_parallel (pool has {pool.accelerators} per node)")
    else:
        hints.append("use a machine with more accelerators and raise tensor_parallel")
    hints.append("or lower max_context / concurrency")
    return "try: " + ", ".join(hints)


class SpecError(ValueError):
    """A bad fleet spec: every line names the stack file and the field."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: fleet.{path}: {msg}" for path, msg in problems))


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _secret_literals(raw: Any, path: str = "") -> list[tuple[str, str]]:
    """Plain strings under secret-looking keys: they belong in Pulumi secrets, not the spec."""
    found = []
    if isinstance(raw, Mapping):
        for k, v in raw.items():
            p = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and SECRET_LOOKING.search(k) and isinstance(v, str):
                found.append((p, "looks like a secret in plain config; store it with "
                                 "`pulumi config set --secret` under its own key (hfToken, routerApiKeys)"))
            else:
                found.extend(_secret_literals(v, p))
    elif isinstance(raw, list):
        for i, v in enumerate(raw):
            found.extend(_secret_literals(v, f"{path}[{i}]"))
    return found


def load_spec(raw: Any, source: str = "Pulumi.<stack>.yaml") -> FleetSpec:
    """Validate a raw ``fleet`` config value; raise :class:`SpecError` naming every bad field."""
    if raw is None:
        raise SpecError(source, [("", "missing: set the structured config key `fleet` (see README)")])
    secrets = _secret_literals(raw)
    if secrets:
        raise SpecError(source, secrets)
    try:
        spec = FleetSpec.model_validate(raw)
    except ValidationError as e:
        problems = []
        for err in e.errors(include_url=False):
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (not part of the fleet spec)"
            elif err["type"] == "missing":
                msg = "required key is missing"
            problems.append((_loc(err["loc"]), msg))
        raise SpecError(source, problems) from None
    problems = spec.problems()
    if problems:
        raise SpecError(source, problems)
    return spec
