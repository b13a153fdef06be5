"""The secrets a topology gets: from Pulumi secret config, never from the spec."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi


@dataclass(frozen=True)
class FleetSecrets:
    """``pulumi config set --secret hfToken hf_...`` and
    ``pulumi config set --secret routerApiKeys 'key1,key2'``."""

    hf_token: pulumi.Output[str] | None
    router_api_keys: pulumi.Output[str] | None
