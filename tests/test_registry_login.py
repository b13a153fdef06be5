"""The router image's ACR login: the deployer's Entra access token traded for an ACR refresh token
(components/registry.py), against a real HTTP server on loopback that answers as ACR's
``POST /oauth2/exchange`` does (Azure/acr docs/AAD-OAuth.md: form fields grant_type=access_token,
service, tenant, access_token; a JSON body with refresh_token)."""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from components.registry import RegistryLoginError, acr_refresh_token


@pytest.fixture
def acr():
    seen: list[tuple[str, dict[str, list[str]], str]] = []
    answer = {"status": 200, "body": b'{"refresh_token": "acr-refresh"}'}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            seen.append((self.path, urllib.parse.parse_qs(body), self.headers["Content-Type"]))
            self.send_response(answer["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer["body"])))
            self.end_headers()
            self.wfile.write(answer["body"])

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", seen, answer
    finally:
        server.shutdown()
        server.server_close()


def test_the_entra_token_is_exchanged_for_the_registry_refresh_token(acr):
    endpoint, seen, _ = acr
    token = acr_refresh_token("fleetabc.azurecr.io", "tenant-1", "entra-token", endpoint=endpoint, timeout=5)
    assert token == "acr-refresh"
    [(path, form, content_type)] = seen
    assert path == "/oauth2/exchange" and content_type == "application/x-www-form-urlencoded"
    assert form == {"grant_type": ["access_token"], "service": ["fleetabc.azurecr.io"],
                    "tenant": ["tenant-1"], "access_token": ["entra-token"]}


def test_a_refusal_names_the_registry_and_the_rights_the_identity_needs(acr):
    endpoint, _, answer = acr
    answer.update(status=401, body=b'{"errors":[{"code":"UNAUTHORIZED"}]}')
    with pytest.raises(RegistryLoginError) as e:
        acr_refresh_token("fleetabc.azurecr.io", "tenant-1", "entra-token", endpoint=endpoint, timeout=5)
    assert "fleetabc.azurecr.io" in str(e.value) and "401" in str(e.value) and "AcrPush" in str(e.value)
    assert "entra-token" not in str(e.value)  # the credential never reaches a log


def test_an_answer_without_a_refresh_token_is_an_error_not_an_empty_password(acr):
    endpoint, _, answer = acr
    answer.update(body=json.dumps({"access_token": "x"}).encode())
    with pytest.raises(RegistryLoginError, match="without a refresh_token"):
        acr_refresh_token("fleetabc.azurecr.io", "tenant-1", "entra-token", endpoint=endpoint, timeout=5)


def test_an_unreachable_registry_is_a_clear_error():
    with pytest.raises(RegistryLoginError, match="no refresh token"):
        acr_refresh_token("fleetabc.azurecr.io", "t", "e", endpoint="http://127.0.0.1:9", timeout=2)
