"""What a cluster's image registry gives the rest of the program: where to push, how to log in.

Each cloud cluster component (``gke.py``, ``eks.py``, ``aks.py``) creates its own registry
(Artifact Registry, ECR, ACR) as a child, grants its nodes pull rights, and hands back a
:class:`RegistryAccess`. ``components/router_image.py`` pushes the router image with it; pods pull
``<url>/<repository>@<digest>`` with the node identity, so no pull secret is ever declared.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi


@dataclass(frozen=True)
class DriverPushIdentity:
    """ACR: the user-assigned identity the in-cluster refresher runs as, federated with its
    ServiceAccount, allowed only to regenerate ``token_name``'s passwords (components/aks.py)."""

    client_id: pulumi.Output[str]
    registry_id: pulumi.Output[str]
    token_name: pulumi.Output[str]
    ready: tuple[pulumi.Resource, ...]
    """Role assignment and federated credential: the refresher's first run needs both."""


@dataclass(frozen=True)
class RegistryAccess:
    url: pulumi.Output[str]
    """Repository base images are pushed under, e.g. ``us-central1-docker.pkg.dev/<project>/<repo>``,
    ``<account>.dkr.ecr.<region>.amazonaws.com/<repo>``, ``<name>.azurecr.io``."""
    address: pulumi.Output[str]
    """Registry host to log in to (the part of ``url`` before the first ``/``)."""
    username: pulumi.Output[str]
    password: pulumi.Output[str]
    """Short-lived push credential for the program's own image builds, always a secret."""
    resource: pulumi.Resource
    """The registry (or repository) resource itself, for dependencies."""
    driver_push: DriverPushIdentity | None = None
    """How pods that push long after ``up`` (KMM, the AMD driver image) get a credential that stays
    valid: an identity the cluster refreshes it with (components/driver_credentials.py). None:
    ``username``/``password`` are the only ones."""


# --- ACR: the deployer's own Entra identity, exchanged for a registry refresh token ---------------------
#
# pulumi-azure-native 3.29.0 returns an ACR password from one function only, listRegistryCredentials,
# and only for the admin user (which the registries-private policy forbids). Token passwords come from
# ACR's `generateCredentials`, which it exposes neither as a resource nor as a function. What it does
# give is the Entra access token of the identity the provider runs as (authorization.getClientToken,
# ARM audience), and ACR trades exactly that for a refresh token `docker login` accepts with the null
# GUID as user name (Azure/acr docs/AAD-OAuth.md: POST /oauth2/exchange, grant_type=access_token,
# service, tenant, access_token; "the null GUID tells the container registry that this is an ACR
# refresh token"). The token is short-lived and new on every run; pulumi-docker-build v0.0.22 ignores
# registry password changes in its diff (provider/internal/image.go: "we ignore 'password' changes to
# not introduce unnecessary changes"), as it must for ECR's 12-hour tokens too. The identity needs push
# rights on the registry: Owner or Contributor on it (or AcrPush), which a deploy role already has.
ACR_REFRESH_TOKEN_USER = "00000000-0000-0000-0000-000000000000"


class RegistryLoginError(RuntimeError):
    pass


def acr_refresh_token(login_server: str, tenant: str, aad_access_token: str, *,
                      endpoint: str | None = None, timeout: float = 30.0) -> str:
    """ACR's refresh token for an Entra access token (``POST https://<login_server>/oauth2/exchange``).

    ``endpoint`` replaces ``https://<login_server>`` (tests point it at a loopback server)."""
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    url = f"{endpoint or 'https://' + login_server}/oauth2/exchange"
    body = urllib.parse.urlencode({"grant_type": "access_token", "service": login_server, "tenant": tenant,
                                   "access_token": aad_access_token}).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        detail = e.read(300).decode(errors="replace").strip()
        raise RegistryLoginError(f"{login_server}: ACR refused the Entra token ({e.code} {e.reason}): {detail}. "
                                 "The identity Pulumi runs as needs push rights on the registry "
                                 "(Owner, Contributor or AcrPush)") from None
    except (urllib.error.URLError, TimeoutError, ValueError) as e:
        raise RegistryLoginError(f"{login_server}: no refresh token from {url}: {e}") from None
    token = answer.get("refresh_token") if isinstance(answer, dict) else None
    if not token:
        raise RegistryLoginError(f"{login_server}: {url} answered without a refresh_token")
    return token
