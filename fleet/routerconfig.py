"""The router's configuration, generated from the fleet spec: one schema, two users.

:func:`router_config` turns the spec and the resolved endpoint of each pool into a
``fleet_router.config.RouterConfig`` — the pydantic model the router itself validates its YAML
with — so the IaC cannot write a config the router would reject. The Router component puts
``to_yaml()`` of it in a ConfigMap; ``python -m fleet demo`` writes it to a temp file.

Prices and throughput come from the catalog (:mod:`fleet.catalog`), never from the stack file:

* ``cost_per_hour`` of one replica = the pool's node price per hour (spot or on-demand, as the pool
  is) x ``tensor_parallel`` / accelerators per node — a replica pays for the accelerators it holds;
* ``tokens_per_second`` of one replica = the accelerator's aggregate decode throughput x
  ``tensor_parallel``.

A pool that serves several models is priced with the largest ``tensor_parallel`` among them (the
replica the router is most likely to be paying for).

Each pool's backend timeouts (:func:`pool_timeouts`) follow how vLLM answers: a stream's head
before generation, a chunk per token after it; a non-streaming answer whole at its end, bounded by
the spec's ``router.request_timeout_s``.

The router's shutdown (:func:`fleet.drain.router_shutdown`) fits its pod's termination grace
(:func:`fleet.drain.router_termination_grace_s`, which the Router component puts on the Deployment):
after SIGTERM it keeps serving ``pre_stop_s`` while the endpoint leaves Services and gateways, then
drains requests in flight for the rest of the grace but a margin to exit. Pure: no Pulumi, no I/O.
"""

from __future__ import annotations

from typing import Any, Mapping

from fleet import catalog, layout
from fleet.drain import router_shutdown
from fleet.spec import FleetSpec, PoolSpec


class RouterConfigError(ValueError):
    pass


def replica_tensor_parallel(spec: FleetSpec, pool: PoolSpec) -> int:
    return max((m.tensor_parallel for m in spec.models_on(pool.name)), default=1)


def replica_cost_per_hour(spec: FleetSpec, pool: PoolSpec) -> float:
    """USD per hour one model-server replica of ``pool`` costs."""
    machine = pool.machine
    return machine.price.hourly(pool.spot) * replica_tensor_parallel(spec, pool) / machine.accelerators


def replica_tokens_per_second(spec: FleetSpec, pool: PoolSpec) -> float:
    return catalog.accelerator(pool.accelerator).tokens_per_second * replica_tensor_parallel(spec, pool)


# A pool in another cluster than the router's is a TLS connect to a public load balancer across
# clouds; one in the router's cluster gets the router's default (a hop to its gateway or a pod).
CONNECT_REMOTE_S = 5.0


def pool_timeouts(spec: FleetSpec, pool: PoolSpec) -> dict[str, float]:
    """The router's defaults for streams (``fleet_router.config.BackendTimeouts``), the spec's
    request timeout for non-streaming answers, a longer connect for pools in other clusters."""
    from fleet_router.config import BackendTimeouts

    d = BackendTimeouts()
    remote = pool.cluster != spec.router_cluster().name
    return {"connect_s": CONNECT_REMOTE_S if remote else d.connect_s, "stream_head_s": d.stream_head_s,
            "stream_idle_s": d.stream_idle_s, "response_s": spec.router.request_timeout_s}


def store_url(namespace: str = layout.NS_ROUTER) -> str:
    """Where the router's replicas share their limits: the store beside them (components/router_store.py)."""
    return f"redis://{layout.ROUTER_STORE_NAME}.{namespace}.svc.cluster.local:{layout.ROUTER_STORE_PORT}/0"


def router_config_data(spec: FleetSpec, endpoints: Mapping[str, str], *,
                       api_key_hashes_file: str | None = None, backend_key_files: Mapping[str, str] | None = None,
                       ca_files: Mapping[str, str] | None = None, listen_host: str = "0.0.0.0",
                       port: int = layout.ROUTER_PORT, admin_port: int = layout.ROUTER_ADMIN_PORT,
                       store_password_file: str | None = None, store: bool = False,
                       routing_headers: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """The config as plain data, before the router's model validates it.

    ``backend_key_files``: pool -> a mounted file with the key its servers require (vLLM ``--api-key``).
    ``ca_files``: pool -> a mounted PEM of the CA its gateway's certificate chains to (the pool's
    cluster CA, components/gateway.py); the router trusts only that for the pool (fleet_router.tls).
    ``routing_headers``: key digest -> routing headers it may set, besides the spec's
    ``router.routing_headers`` (``fleet demo`` grants its own key).
    ``store``: the replicas share their per-key limits through the store beside them (the cluster);
    without it (``fleet demo``, one process) each router keeps its own."""
    served = [p for p in spec.pools if spec.models_on(p.name)]
    missing = sorted(p.name for p in served if p.name not in endpoints)
    if missing:
        raise RouterConfigError(f"no endpoint for pool(s) {', '.join(missing)}")
    r = spec.router
    pools = []
    for p in served:
        cluster = spec.cluster(p.cluster)
        pools.append({
            "name": p.name,
            "url": endpoints[p.name],
            "vendor": p.vendor,
            "cloud": cluster.cloud,
            "cluster": cluster.name,
            "accelerator": p.accelerator,
            "spot": p.spot,
            "models": [m.name for m in spec.models_on(p.name)],
            "cost_per_hour": round(replica_cost_per_hour(spec, p), 6),
            "tokens_per_second": replica_tokens_per_second(spec, p),
            "timeouts": pool_timeouts(spec, p),
            "resume": p.resume,  # a target for a cut stream's continuation (fleet_router.migration)
        })
        if backend_key_files and p.name in backend_key_files:
            pools[-1]["api_key_file"] = backend_key_files[p.name]
        if ca_files and p.name in ca_files:
            pools[-1]["ca_file"] = ca_files[p.name]
    tiers = [{
        "name": t.name,
        "match": dict(t.match),
        "backends": [{"pool": b.pool, "weight": b.weight} for b in t.backends],
        "overflow": list(t.overflow),
        "ttft_slo_ms": t.ttft_slo_ms,
        "policy": t.policy,
    } for t in spec.tiers]
    limits: dict[str, Any] = {"max_body_bytes": r.max_body_bytes}
    # Only the limits the spec sets: none means none (no default per-key limit).
    for name in ("rate_limit_rps", "rate_limit_burst", "tokens_per_minute", "budget_usd"):
        if getattr(r, name) is not None:
            limits[name] = getattr(r, name)
    if r.budget_usd is not None or any(k.budget_usd is not None for k in r.key_limits.values()):
        limits["budget_period"] = r.budget_period
    if r.key_limits:
        limits["keys"] = {digest: k.model_dump(exclude_none=True) for digest, k in sorted(r.key_limits.items())}
    data = {
        "listen": {"host": listen_host, "port": port, "admin_port": admin_port},
        "policy": r.policy,
        "limits": limits,
        "auth": {"api_key_hashes_file": api_key_hashes_file},
        "shutdown": router_shutdown(r.request_timeout_s),
        "pools": pools,
        "tiers": tiers,
    }
    # Which keys may pick their tier / policy by header (the spec's grants and the caller's, sorted);
    # none: nobody may, and the key stays out of the file.
    grants = {**{d: set(h) for d, h in r.routing_headers.items()}}
    for d, h in (routing_headers or {}).items():
        grants.setdefault(d, set()).update(h)
    if grants:
        data["auth"]["routing_headers"] = {d: sorted(grants[d]) for d in sorted(grants)}
    if store:
        data["store"] = {"url": store_url(), "password_file": store_password_file,
                         "on_unavailable": r.limits_on_store_unavailable}
    return data


def router_config(spec: FleetSpec, endpoints: Mapping[str, str], **kw: Any):
    """``fleet_router.config.RouterConfig`` for ``spec`` with each pool at ``endpoints[pool]``."""
    from fleet_router.config import RouterConfig

    return RouterConfig.model_validate(router_config_data(spec, endpoints, **kw))
