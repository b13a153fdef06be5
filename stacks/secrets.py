"""The secrets a topology gets: from Pulumi secret config, never from the spec."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi


@dataclass(frozen=True)
class FleetSecrets:
    """``pulumi config set --secret hfToken hf_...``,
    ``pulumi config set --secret routerApiKeys 'key1,key2'`` and, for pools whose model servers
    want a key (vLLM ``--api-key``), ``pulumi config set --secret routerBackendKeys '{"pool": "key"}'``."""

    hf_token: pulumi.Output[str] | None
    router_api_keys: pulumi.Output[str] | None
    router_backend_keys: pulumi.Output[str] | None = None
