"""Give KMM a push credential for the AMD driver repository that never runs out.

Run in the cluster as the refresher's ServiceAccount, federated with a user-assigned managed
identity (AKS workload identity). Each run:

1. reads the dockerconfigjson Secret KMM pushes with, to learn which of the ACR token's two passwords
   it holds now (annotation :data:`PASSWORD_ANNOTATION`);
2. trades the projected ServiceAccount token for an ARM access token at Entra ID (client credentials
   with a federated client assertion);
3. asks ARM to regenerate the *other* password of the repository-scoped token
   (``POST .../registries/{name}/generateCredentials``) with a fixed lifetime;
4. writes it into the Secret (a merge patch conditional on the resourceVersion read in 1).

Regenerating the password the Secret does not hold keeps the one it holds valid until its own
expiry, so a KMM build that read the Secret just before a run still pushes. Nothing is written
until ARM has answered: a failed run leaves the Secret as it was and exits 1 with the reason.

Why a token and not AcrPush (the alternative: exchange the identity's Entra token for an ACR refresh
token, as components/registry.py does for the deployer): AcrPush is registry-wide, so a pod that can
read this Secret could overwrite the router image every cluster runs. The token's scope map allows
the ``amdgpu-driver`` repository only, and the identity's custom role allows one action,
``Microsoft.ContainerRegistry/registries/generateCredentials/action``, on this registry only.

Upstream facts this relies on:

* ARM ``Registries_GenerateCredentials`` (azure-rest-api-specs, specification/containerregistry/
  resource-manager/Microsoft.ContainerRegistry/Combine/stable/2025-11-01/combine.json): body
  ``GenerateCredentialsParameters`` {tokenId, expiry, name: password1|password2}; answers 200 with
  ``GenerateCredentialsResult`` {username, passwords: [{name, value, expiry, creationTime}]}, or 202
  with a ``Location`` to poll (long-running, ``final-state-via: location``; examples/2025-05-01-preview/
  RegistryGenerateCredentials.json shows both).
* Workload identity (Azure/azure-workload-identity pkg/webhook/consts.go): the webhook injects
  ``AZURE_CLIENT_ID``, ``AZURE_TENANT_ID``, ``AZURE_FEDERATED_TOKEN_FILE`` and ``AZURE_AUTHORITY_HOST``
  into pods labelled ``azure.workload.identity/use: "true"`` whose ServiceAccount is annotated
  ``azure.workload.identity/client-id``; the projected token's audience is ``api://AzureADTokenExchange``.
* Entra ID client credentials with a federated credential (learn.microsoft.com/entra/identity-platform/
  v2-oauth2-client-creds-grant-flow, "access token request with a federated credential"): POST
  ``{authority}{tenant}/oauth2/v2.0/token`` with ``client_assertion_type=urn:ietf:params:oauth:
  client-assertion-type:jwt-bearer`` and the token as ``client_assertion``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Mapping, Sequence

API_VERSION = "2025-11-01"
"""Microsoft.ContainerRegistry stable api-version whose spec was read (see the module docstring)."""
ARM_ENDPOINT = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"
AUTHORITY_HOST = "https://login.microsoftonline.com/"
"""Used when the webhook injected no ``AZURE_AUTHORITY_HOST`` (it always does on AKS)."""
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PASSWORDS = ("password1", "password2")
PASSWORD_ANNOTATION = "inference-fleet.io/acr-token-password"
"""Which of the token's passwords the Secret holds (the next run regenerates the other one)."""
EXPIRY_ANNOTATION = "inference-fleet.io/acr-token-password-expiry"
DOCKERCONFIG_KEY = ".dockerconfigjson"
WORKLOAD_IDENTITY_ENV = ("AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID")
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
MAX_RETRY_AFTER = 10.0


class RefreshError(RuntimeError):
    """Why the Secret was not refreshed (it was left as it was)."""


def _request(method: str, url: str, *, headers: Mapping[str, str], body: bytes | None, timeout: float,
             context: ssl.SSLContext | None, what: str) -> tuple[int, Mapping[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        raise RefreshError(f"{what}: {e.code} {e.reason}: {_detail(e.read(2000))}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise RefreshError(f"{what}: no answer from {urllib.parse.urlsplit(url).netloc}: {e}") from None


def _detail(raw: bytes) -> str:
    """The error an Entra, ARM or Kubernetes answer carries, without echoing anything else."""
    try:
        doc = json.loads(raw or b"{}")
    except ValueError:
        return raw.decode(errors="replace").strip()[:300] or "(no body)"
    if isinstance(doc, dict):
        if isinstance(doc.get("error"), dict):  # ARM: {"error": {"code", "message"}}
            return f"{doc['error'].get('code', '')}: {doc['error'].get('message', '')}".strip()
        if "error_description" in doc or "error" in doc:  # Entra: {"error", "error_description"}
            return f"{doc.get('error', '')}: {doc.get('error_description', '')}".strip()
        if "message" in doc:  # Kubernetes Status
            return str(doc["message"])
    return "(no error in the answer)"


def _json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError:
        raise RefreshError(f"{what}: the answer is not JSON") from None
    if not isinstance(doc, dict):
        raise RefreshError(f"{what}: the answer is not a JSON object")
    return doc


def _tls(url: str, cafile: str | None = None) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=cafile) if url.startswith("https://") else None


def entra_token(env: Mapping[str, str], *, scope: str = ARM_SCOPE, timeout: float) -> str:
    """An access token for ``scope``, for the federated token the workload identity webhook projected."""
    missing = [k for k in WORKLOAD_IDENTITY_ENV if not env.get(k)]
    if missing:
        raise RefreshError(f"{', '.join(missing)} not set: the pod is not running with workload identity (it needs "
                           "the label azure.workload.identity/use=true and a ServiceAccount annotated "
                           "azure.workload.identity/client-id)")
    path = env["AZURE_FEDERATED_TOKEN_FILE"]
    try:
        with open(path, encoding="utf-8") as f:
            assertion = f.read().strip()
    except OSError as e:
        raise RefreshError(f"cannot read the federated token {path}: {e.strerror}") from None
    if not assertion:
        raise RefreshError(f"the federated token {path} is empty")
    authority = (env.get("AZURE_AUTHORITY_HOST") or AUTHORITY_HOST).rstrip("/") + "/"
    url = f"{authority}{urllib.parse.quote(env['AZURE_TENANT_ID'])}/oauth2/v2.0/token"
    body = urllib.parse.urlencode({
        "grant_type": "client_credentials", "client_id": env["AZURE_CLIENT_ID"], "scope": scope,
        "client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": assertion}).encode()
    _, _, raw = _request("POST", url, headers={"Content-Type": "application/x-www-form-urlencoded"}, body=body,
                         timeout=timeout, context=_tls(url), what="Entra ID refused the federated token")
    token = _json(raw, "Entra ID token").get("access_token")
    if not token:
        raise RefreshError("Entra ID answered without an access_token")
    return str(token)


def generate_password(arm: str, registry_id: str, token_name: str, password: str, expiry: dt.datetime,
                      access_token: str, *, timeout: float, deadline: float) -> tuple[str, str]:
    """(user name, password value) of ``password`` of the registry's token, regenerated by ARM."""
    url = f"{arm.rstrip('/')}{registry_id}/generateCredentials?api-version={API_VERSION}"
    body = json.dumps({"tokenId": f"{registry_id}/tokens/{token_name}", "name": password,
                       "expiry": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}).encode()
    auth = {"Authorization": f"Bearer {access_token}"}
    what = f"ARM refused generateCredentials for token {token_name}"
    status, headers, raw = _request("POST", url, headers={**auth, "Content-Type": "application/json"}, body=body,
                                    timeout=timeout, context=_tls(url), what=what)
    give_up = time.monotonic() + deadline
    while status == 202:  # long-running: poll Location until it answers with the result
        location = headers.get("Location")
        if not location:
            raise RefreshError(f"{what}: 202 without a Location to poll")
        if time.monotonic() > give_up:
            raise RefreshError(f"{what}: still running after {deadline:.0f}s")
        try:
            wait = float(headers.get("Retry-After") or 1)
        except ValueError:
            wait = 1.0
        time.sleep(min(max(wait, 0.0), MAX_RETRY_AFTER))
        status, headers, raw = _request("GET", location, headers=auth, body=None, timeout=timeout,
                                        context=_tls(location), what=what)
    result = _json(raw, "generateCredentials")
    value = next((p.get("value") for p in result.get("passwords") or []
                  if isinstance(p, dict) and p.get("name") == password), None)
    user = result.get("username")
    if not value or not user:
        raise RefreshError(f"generateCredentials answered without {password}'s value or the user name")
    return str(user), str(value)


def dockerconfigjson(login_server: str, user: str, password: str) -> str:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {login_server: {"username": user, "password": password, "auth": auth}}},
                      sort_keys=True)


class Kube:
    """The one Secret, through the API server, as the pod's ServiceAccount."""

    def __init__(self, api: str, token_file: str, ca_file: str | None, timeout: float):
        self.api, self.timeout = api.rstrip("/"), timeout
        try:
            with open(token_file, encoding="utf-8") as f:
                self.token = f.read().strip()
        except OSError as e:
            raise RefreshError(f"cannot read the ServiceAccount token {token_file}: {e.strerror}") from None
        try:
            self.context = _tls(self.api, ca_file)
        except (OSError, ssl.SSLError) as e:
            raise RefreshError(f"cannot load the API server's CA {ca_file}: {e}") from None

    def _url(self, namespace: str, name: str) -> str:
        return f"{self.api}/api/v1/namespaces/{urllib.parse.quote(namespace)}/secrets/{urllib.parse.quote(name)}"

    def get_secret(self, namespace: str, name: str) -> dict[str, Any]:
        _, _, raw = _request("GET", self._url(namespace, name), headers={"Authorization": f"Bearer {self.token}"},
                             body=None, timeout=self.timeout, context=self.context,
                             what=f"cannot read Secret {namespace}/{name}")
        return _json(raw, f"Secret {namespace}/{name}")

    def patch_secret(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        _request("PATCH", self._url(namespace, name),
                 headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/merge-patch+json"},
                 body=json.dumps(patch).encode(), timeout=self.timeout, context=self.context,
                 what=f"cannot write Secret {namespace}/{name}")


def refresh(args: argparse.Namespace, env: Mapping[str, str]) -> str:
    """One rotation; returns what was done. Raises :class:`RefreshError` before touching the Secret."""
    namespace, _, name = args.secret.partition("/")
    if not namespace or not name:
        raise RefreshError(f"--secret {args.secret!r}: expected <namespace>/<name>")
    kube = Kube(args.kube_api or _in_cluster_api(env), args.kube_token_file, args.kube_ca_file, args.timeout)
    secret = kube.get_secret(namespace, name)
    meta = secret.get("metadata") or {}
    held = (meta.get("annotations") or {}).get(PASSWORD_ANNOTATION)
    password = PASSWORDS[1] if held == PASSWORDS[0] else PASSWORDS[0]
    expiry = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(hours=args.lifetime_hours)
    access = entra_token(env, timeout=args.timeout)
    user, value = generate_password(args.arm_endpoint, args.registry_id, args.token_name, password, expiry, access,
                                    timeout=args.timeout, deadline=args.poll_deadline)
    config = dockerconfigjson(args.login_server, user, value)
    stamp = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    metadata: dict[str, Any] = {"annotations": {PASSWORD_ANNOTATION: password, EXPIRY_ANNOTATION: stamp}}
    if meta.get("resourceVersion"):
        # Makes the patch conditional: a concurrent writer gets a 409, not a lost update.
        metadata["resourceVersion"] = meta["resourceVersion"]
    kube.patch_secret(namespace, name, {
        "metadata": metadata, "data": {DOCKERCONFIG_KEY: base64.b64encode(config.encode()).decode()}})
    return f"{namespace}/{name} now holds {user}'s {password} for {args.login_server}, valid until {stamp}"


def _in_cluster_api(env: Mapping[str, str]) -> str:
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise RefreshError("KUBERNETES_SERVICE_HOST not set and no --kube-api given")
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fleet_ops.acr_credentials", description=__doc__.split("\n")[0])
    p.add_argument("--registry-id", required=True, help="ARM id of the registry (/subscriptions/.../registries/<name>)")
    p.add_argument("--token-name", required=True, help="the repository-scoped ACR token whose password is rotated")
    p.add_argument("--login-server", required=True, help="<name>.azurecr.io, the dockerconfigjson's key")
    p.add_argument("--secret", required=True, help="<namespace>/<name> of the dockerconfigjson Secret")
    p.add_argument("--lifetime-hours", type=float, required=True, help="how long a new password stays valid")
    p.add_argument("--arm-endpoint", default=ARM_ENDPOINT)
    p.add_argument("--kube-api", default=None, help="default: the in-cluster API server")
    p.add_argument("--kube-token-file", default=f"{SA_DIR}/token")
    p.add_argument("--kube-ca-file", default=f"{SA_DIR}/ca.crt")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP call")
    p.add_argument("--poll-deadline", type=float, default=120.0, help="seconds to wait for ARM's long-running answer")
    return p


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.registry_id.startswith("/subscriptions/") or "/registries/" not in args.registry_id:
        print(f"acr-credentials: --registry-id {args.registry_id!r} is not a registry's ARM id", file=sys.stderr)
        return 2
    try:
        done = refresh(args, os.environ if env is None else env)
    except RefreshError as e:
        print(f"acr-credentials: the Secret was left unchanged: {e}", file=sys.stderr)
        return 1
    print(f"acr-credentials: {done}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
