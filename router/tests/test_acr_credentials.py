"""The AMD driver push credential refresher (fleet_ops.acr_credentials), run as the cluster runs it
(``python -m fleet_ops.acr_credentials``) against loopback stand-ins for the three services it talks to:

* Entra ID's token endpoint, which issues an ARM token only for the federated assertion it trusts
  (client credentials with ``client_assertion_type=...jwt-bearer``);
* ARM's ``generateCredentials`` on one registry, which holds the token's two passwords and
  regenerates the one named, answering 200 or, as a long-running operation, 202 + ``Location``
  (azure-rest-api-specs containerregistry 2025-11-01, ``final-state-via: location``);
* the Kubernetes API's Secret endpoint over TLS from a test CA, with merge patches and
  resourceVersion conflicts.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import ssl
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from testca import HOST, make_pki

ROUTER = Path(__file__).resolve().parent.parent
TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT_ID = "66666666-7777-8888-9999-000000000000"
FEDERATED_TOKEN = "eyJhbGciOiJSUzI1NiJ9.projected-service-account-token.sig"
SA_TOKEN = "kube-service-account-token"
REGISTRY_ID = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/azure-rg/providers/"
               "Microsoft.ContainerRegistry/registries/azureeast0123")
TOKEN = "fleet-driver-push"
LOGIN = "azureeast0123.azurecr.io"
NS, SECRET = "gpu-operators", "amdgpu-driver-registry"
PLACEHOLDER = base64.b64encode(b'{"auths": {}}').decode()


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None):
        self.httpd = ThreadingHTTPServer((HOST, 0), handler)
        self.httpd.state = self  # type: ignore[attr-defined]
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://{HOST}:{self.httpd.server_address[1]}"
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):  # quiet
        pass

    @property
    def state(self):
        return self.server.state  # type: ignore[attr-defined]

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)


class Entra(_Handler):
    """Issues an ARM access token for the one federated assertion it trusts."""

    def do_POST(self):
        form = dict(urllib.parse.parse_qsl(self._body().decode()))
        st = self.state
        with st.lock:
            st.requests.append({"path": self.path, "form": form})
        if self.path != f"/{TENANT}/oauth2/v2.0/token":
            return self._send(404, {"error": "invalid_request", "error_description": "AADSTS90002: no such tenant"})
        if (form.get("grant_type") != "client_credentials" or form.get("client_id") != CLIENT_ID
                or form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"):
            return self._send(400, {"error": "invalid_request", "error_description": "AADSTS900144: bad request"})
        if form.get("client_assertion") != st.trusted:
            return self._send(401, {"error": "invalid_client",
                                    "error_description": "AADSTS700213: No matching federated identity record found"})
        st.issued = f"arm-{secrets.token_hex(8)}"
        self._send(200, {"token_type": "Bearer", "expires_in": 3599, "access_token": st.issued,
                         "scope_seen": form.get("scope")})


class Arm(_Handler):
    """One registry's token with two passwords; regenerates the one asked for."""

    def _authorized(self) -> bool:
        entra = self.state.entra
        if self.headers.get("Authorization") != f"Bearer {getattr(entra, 'issued', None)}":
            self._send(401, {"error": {"code": "InvalidAuthenticationToken", "message": "The access token is invalid."}})
            return False
        return True

    def _result(self) -> dict[str, Any]:
        st = self.state
        return {"username": TOKEN, "passwords": [
            {"name": n, "value": v, "expiry": st.expiry.get(n), "creationTime": "2026-01-01T00:00:00Z"}
            for n, v in sorted(st.passwords.items())]}

    def do_POST(self):
        body = json.loads(self._body() or b"{}")
        st = self.state
        url = urllib.parse.urlsplit(self.path)
        with st.lock:
            st.requests.append({"path": url.path, "query": url.query, "body": body})
        if not self._authorized():
            return
        if url.path != f"{REGISTRY_ID}/generateCredentials" or "api-version=2025-11-01" not in url.query:
            return self._send(404, {"error": {"code": "NotFound", "message": url.path}})
        if st.mode == "forbidden":
            return self._send(403, {"error": {"code": "AuthorizationFailed", "message": (
                "The client does not have authorization to perform action "
                "'Microsoft.ContainerRegistry/registries/generateCredentials/action'")}})
        if body.get("tokenId") != f"{REGISTRY_ID}/tokens/{TOKEN}" or body.get("name") not in ("password1", "password2"):
            return self._send(400, {"error": {"code": "InvalidRequest", "message": "unknown token or password"}})
        st.passwords[body["name"]] = secrets.token_urlsafe(24)
        st.expiry[body["name"]] = body.get("expiry")
        if st.mode == "async":
            st.polls = 0
            return self._send(202, {}, {"Location": f"{st.url}{REGISTRY_ID}/operationStatuses/op1?api-version=2025-11-01",
                                        "Retry-After": "0"})
        self._send(200, self._result())

    def do_GET(self):
        st = self.state
        with st.lock:
            st.requests.append({"path": self.path, "poll": True})
        if not self._authorized():
            return
        st.polls += 1
        if st.polls < 2:
            return self._send(202, {}, {"Location": f"{st.url}{REGISTRY_ID}/operationStatuses/op1?api-version=2025-11-01",
                                        "Retry-After": "0"})
        self._send(200, self._result())


def _merge(target: dict, patch: dict) -> dict:
    """RFC 7386 JSON merge patch."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        else:
            target[k] = v
    return target


class Kube(_Handler):
    """The one Secret, behind the ServiceAccount's bearer token."""

    PATH = f"/api/v1/namespaces/{NS}/secrets/{SECRET}"

    def _check(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {SA_TOKEN}":
            self._send(401, {"kind": "Status", "message": "Unauthorized"})
            return False
        if self.path != self.PATH:
            self._send(403, {"kind": "Status", "message": f"forbidden: {self.path}"})
            return False
        return True

    def do_GET(self):
        self.state.requests.append({"method": "GET"})
        if self._check():
            self._send(200, self.state.secret)

    def do_PATCH(self):
        st = self.state
        patch = json.loads(self._body())
        st.requests.append({"method": "PATCH", "type": self.headers.get("Content-Type"), "patch": patch})
        if not self._check():
            return
        if self.headers.get("Content-Type") != "application/merge-patch+json":
            return self._send(415, {"kind": "Status", "message": "unsupported patch type"})
        rv = (patch.get("metadata") or {}).get("resourceVersion")
        with st.lock:
            if rv is not None and rv != st.secret["metadata"]["resourceVersion"]:
                return self._send(409, {"kind": "Status", "message": "the object has been modified"})
            _merge(st.secret, patch)
            st.secret["metadata"]["resourceVersion"] = str(int(st.secret["metadata"]["resourceVersion"]) + 1)
        self._send(200, st.secret)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def cloud(pki, tmp_path):
    entra, arm, kube = _Server(Entra), _Server(Arm), _Server(Kube, pki.server_context())
    entra.trusted = FEDERATED_TOKEN
    arm.entra, arm.mode = entra, "sync"
    arm.passwords = {"password1": "old-password-1", "password2": "old-password-2"}
    arm.expiry = {}
    kube.secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                   "metadata": {"name": SECRET, "namespace": NS, "resourceVersion": "100",
                                "labels": {"app.kubernetes.io/managed-by": "pulumi"}},
                   "data": {".dockerconfigjson": PLACEHOLDER}}
    (tmp_path / "azure-identity-token").write_text(FEDERATED_TOKEN + "\n")
    (tmp_path / "sa-token").write_text(SA_TOKEN)
    yield {"entra": entra, "arm": arm, "kube": kube, "dir": tmp_path, "ca": pki.ca}
    for s in (entra, arm, kube):
        s.close()


def run(c, *, env_drop: tuple[str, ...] = (), ca: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROUTER),
           # What the azure-workload-identity webhook injects (pkg/webhook/consts.go).
           "AZURE_CLIENT_ID": CLIENT_ID, "AZURE_TENANT_ID": TENANT,
           "AZURE_FEDERATED_TOKEN_FILE": str(c["dir"] / "azure-identity-token"),
           "AZURE_AUTHORITY_HOST": c["entra"].url + "/"}
    for k in env_drop:
        env.pop(k)
    return subprocess.run(
        [sys.executable, "-m", "fleet_ops.acr_credentials", "--registry-id", REGISTRY_ID, "--token-name", TOKEN,
         "--login-server", LOGIN, "--secret", f"{NS}/{SECRET}", "--lifetime-hours", "48",
         "--arm-endpoint", c["arm"].url, "--kube-api", c["kube"].url,
         "--kube-token-file", str(c["dir"] / "sa-token"), "--kube-ca-file", str(ca or c["ca"]),
         "--timeout", "10", "--poll-deadline", "20"],
        env=env, capture_output=True, text=True, timeout=60)


def _config(secret: dict) -> dict:
    return json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))


def test_first_run_writes_a_dockerconfigjson_for_the_registry_with_a_new_password(cloud):
    done = run(cloud)
    assert done.returncode == 0, done.stderr
    secret, arm = cloud["kube"].secret, cloud["arm"]
    # The password ARM now has for the token is the one KMM's Secret holds, for this registry only.
    [(user, entry)] = [(e["username"], e) for e in _config(secret)["auths"].values()]
    assert list(_config(secret)["auths"]) == [LOGIN]
    assert user == TOKEN and entry["password"] == arm.passwords["password1"] != "old-password-1"
    assert base64.b64decode(entry["auth"]).decode() == f"{TOKEN}:{arm.passwords['password1']}"
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "pulumi"}  # Pulumi's, kept
    assert secret["metadata"]["annotations"]["inference-fleet.io/acr-token-password"] == "password1"
    # Asked for the token's password with a 48-hour expiry, and said so on the Secret.
    [call] = [r for r in arm.requests if "body" in r]
    expiry = dt.datetime.strptime(call["body"]["expiry"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert abs((expiry - dt.datetime.now(dt.timezone.utc)) - dt.timedelta(hours=48)) < dt.timedelta(minutes=5)
    assert secret["metadata"]["annotations"]["inference-fleet.io/acr-token-password-expiry"] == call["body"]["expiry"]
    assert entry["password"] not in done.stdout + done.stderr  # never logged


def test_it_sends_the_federated_token_as_the_client_assertion_for_an_arm_token(cloud):
    assert run(cloud).returncode == 0
    [req] = cloud["entra"].requests
    assert req["path"] == f"/{TENANT}/oauth2/v2.0/token"
    form = req["form"]
    assert form["client_assertion"] == FEDERATED_TOKEN  # the projected token file, not a secret of ours
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert (form["grant_type"], form["client_id"]) == ("client_credentials", CLIENT_ID)
    assert form["scope"] == "https://management.azure.com/.default"


def test_the_next_run_regenerates_the_other_password_so_the_one_in_use_stays_valid(cloud):
    assert run(cloud).returncode == 0
    first = _config(cloud["kube"].secret)["auths"][LOGIN]["password"]
    assert run(cloud).returncode == 0
    arm, secret = cloud["arm"], cloud["kube"].secret
    assert arm.passwords["password1"] == first  # untouched: a KMM build that read it still pushes
    assert _config(secret)["auths"][LOGIN]["password"] == arm.passwords["password2"] != "old-password-2"
    assert secret["metadata"]["annotations"]["inference-fleet.io/acr-token-password"] == "password2"
    assert run(cloud).returncode == 0
    assert secret["metadata"]["annotations"]["inference-fleet.io/acr-token-password"] == "password1"
    assert arm.passwords["password1"] != first


def test_a_long_running_answer_is_polled_at_its_location(cloud):
    cloud["arm"].mode = "async"
    done = run(cloud)
    assert done.returncode == 0, done.stderr
    assert sum(1 for r in cloud["arm"].requests if r.get("poll")) == 2
    assert _config(cloud["kube"].secret)["auths"][LOGIN]["password"] == cloud["arm"].passwords["password1"]


def _untouched(kube) -> None:
    assert kube.secret["data"][".dockerconfigjson"] == PLACEHOLDER
    assert kube.secret["metadata"]["resourceVersion"] == "100"
    assert "annotations" not in kube.secret["metadata"]
    assert not [r for r in kube.requests if r["method"] == "PATCH"]


def test_a_refused_generate_credentials_leaves_the_secret_as_it_was_and_fails_saying_why(cloud):
    cloud["arm"].mode = "forbidden"
    done = run(cloud)
    assert done.returncode == 1
    assert "the Secret was left unchanged" in done.stderr
    assert "AuthorizationFailed" in done.stderr and "generateCredentials/action" in done.stderr
    _untouched(cloud["kube"])


def test_a_federated_token_entra_does_not_trust_fails_before_arm_and_leaves_the_secret(cloud):
    cloud["entra"].trusted = "a-token-from-another-cluster"
    done = run(cloud)
    assert done.returncode == 1
    assert "Entra ID refused the federated token" in done.stderr and "AADSTS700213" in done.stderr
    assert not cloud["arm"].requests
    _untouched(cloud["kube"])


def test_without_workload_identity_it_names_what_is_missing(cloud):
    done = run(cloud, env_drop=("AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID"))
    assert done.returncode == 1
    assert "AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID not set" in done.stderr
    assert "azure.workload.identity/use=true" in done.stderr
    assert not cloud["entra"].requests and not cloud["arm"].requests
    _untouched(cloud["kube"])


def test_a_concurrent_writer_wins_and_this_run_fails_instead_of_overwriting(cloud):
    kube = cloud["kube"]
    real_get = Kube.do_GET

    def get_then_someone_writes(self):
        real_get(self)
        with kube.lock:  # another writer between this run's read and its patch
            kube.secret["metadata"]["resourceVersion"] = "101"
    Kube.do_GET = get_then_someone_writes
    try:
        done = run(cloud)
    finally:
        Kube.do_GET = real_get
    assert done.returncode == 1
    assert "cannot write Secret gpu-operators/amdgpu-driver-registry: 409" in done.stderr
    assert kube.secret["data"][".dockerconfigjson"] == PLACEHOLDER


def test_an_api_server_ca_that_is_missing_or_another_clusters_is_refused_before_anything_is_asked(cloud, pki):
    done = run(cloud, ca=cloud["dir"] / "no-such-ca.crt")
    assert done.returncode == 1 and "cannot load the API server's CA" in done.stderr
    done = run(cloud, ca=pki.other_ca)  # a CA that did not sign the API server's certificate
    assert done.returncode == 1 and "cannot read Secret gpu-operators/amdgpu-driver-registry" in done.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr
    assert not cloud["entra"].requests and not cloud["arm"].requests
    _untouched(cloud["kube"])
