"""Which secrets a fleet cannot be deployed without, and why: a rule of the domain, read by the
program (which fails closed under ``pulumi preview``/``up``) and by the offline plan (which lists
what is missing, with the command that sets it).

Secrets never live in the spec: each is a Pulumi secret under its own config key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection

from fleet.spec import FleetSpec

# Hugging Face organisations whose model repositories are gated (a download needs an accepted
# licence and a token). Meta's Llama repositories and Google's Gemma ones are gated on the Hub;
# Qwen's, Mistral's Apache-2.0 releases and Microsoft's Phi ones are not. A spec says otherwise per
# model with `gated: true|false`.
GATED_HF_ORGS = frozenset({"meta-llama", "google"})


@dataclass(frozen=True)
class RequiredSecret:
    key: str
    """The Pulumi config key (in this project's namespace)."""
    why: str

    @property
    def command(self) -> str:
        return f"pulumi config set --secret {self.key} <value>"


HF_TOKEN = "hfToken"
ROUTER_API_KEYS = "routerApiKeys"
ROUTER_BACKEND_KEYS = "routerBackendKeys"  # optional: JSON pool -> key, for pools whose servers run --api-key


def model_is_gated(hf_id: str, gated: bool | None) -> bool:
    return gated if gated is not None else hf_id.split("/", 1)[0] in GATED_HF_ORGS


def required_secrets(spec: FleetSpec, *, router: bool = True,
                     clusters: Collection[str] | None = None) -> list[RequiredSecret]:
    """What a deploy of ``spec`` cannot work without: API keys when the router faces the internet
    (it runs on a cloud cluster behind a public Gateway), a Hugging Face token when a real model
    server (not a local simulator) must download a gated model.

    A part of a stack set (fleet/stackset.py) deploys some of that: ``router`` says whether it holds
    the router, ``clusters`` which clusters' model servers (None: every cluster)."""
    out: list[RequiredSecret] = []
    if router and spec.router.enabled and spec.router_cluster().cloud != "local":
        out.append(RequiredSecret(ROUTER_API_KEYS, f"the router on {spec.router_cluster().name!r} faces the "
                                                   "internet; without keys anyone can spend the fleet's GPUs"))

    def downloads_here(pool: str) -> bool:
        cluster = spec.cluster(spec.pool(pool).cluster)
        return cluster.cloud != "local" and (clusters is None or cluster.name in clusters)

    gated = sorted({m.name for m in spec.models if model_is_gated(m.hf_id, m.gated)
                    and any(downloads_here(p) for p in m.pools)})
    if gated:
        out.append(RequiredSecret(HF_TOKEN, f"gated model(s) {', '.join(gated)} cannot be downloaded without a "
                                            "Hugging Face token that accepted their licence"))
    return out
