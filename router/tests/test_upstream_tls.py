"""The router verifies a pool's TLS against the CA bundle its config names, and only that bundle
(fleet_router.tls): real TLS on loopback, a backend serving a certificate from a test CA."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
import yaml

from fleet_router.config import ConfigError, load_config
from fleet_router.upstream import Deadlines, UpstreamError, UpstreamPool
from testca import HOST, make_pki

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
D = Deadlines(connect=5, head=5, idle=None, total=5)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _run(coro):
    loop = asyncio.new_event_loop()  # never installed as the thread's (see test_upstream._run)
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, 20))
    finally:
        loop.close()


async def _tls_backend(pki):
    async def on_conn(reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            writer.write(OK)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass  # the client refused our certificate
        finally:
            writer.close()

    server = await asyncio.start_server(on_conn, HOST, 0, ssl=pki.server_context())
    return server, f"https://{HOST}:{server.sockets[0].getsockname()[1]}"


def _post(pki, ca_file):
    async def go():
        server, url = await _tls_backend(pki)
        pool = UpstreamPool()
        try:
            r = await pool.request(pool.origin(url, ca_file), "/v1/chat/completions", [], b"{}", D)
            body = await r.read_all(1024)
            r.release()
            return r.status, body
        finally:
            await pool.close()
            server.close()
    return _run(go())


def test_a_pool_is_reached_through_the_ca_bundle_its_config_names(pki):
    assert _post(pki, str(pki.ca)) == (200, b"{}")


def test_without_the_bundle_the_default_store_refuses_the_private_ca(pki):
    with pytest.raises(UpstreamError) as e:
        _post(pki, None)
    assert e.value.phase == "connect" and "certificate verify failed" in str(e.value)


def test_another_clusters_ca_does_not_vouch_for_this_gateway(pki):
    with pytest.raises(UpstreamError) as e:
        _post(pki, str(pki.other_ca))
    assert "certificate verify failed" in str(e.value)


def test_a_ca_renewed_with_its_own_key_still_vouches_for_certificates_issued_before(pki):
    # components/gateway.py renews a cluster CA by re-signing the same key: the router's bundle gets
    # the new CA certificate while the gateway still serves one the old certificate signed. OpenSSL
    # builds the chain by subject and key identifier, not by the anchor's serial or validity.
    assert _post(pki, str(pki.renewed_ca)) == (200, b"{}")


def _config(tmp_path, **pool):
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({"pools": [{"name": "p", "url": "https://127.0.0.1:9", "vendor": "nvidia",
                                               "models": ["m1"], "cost_per_hour": 1.0, "tokens_per_second": 100.0,
                                               **pool}]}))
    return path


def test_a_missing_or_unreadable_bundle_is_a_one_line_config_error(tmp_path, pki):
    with pytest.raises(ConfigError, match=r"pools\.p\.ca_file: .*absent\.pem: No such file"):
        load_config(_config(tmp_path, ca_file=str(tmp_path / "absent.pem")))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"pools\.p\.ca_file: .*junk\.pem"):
        load_config(_config(tmp_path, ca_file=str(junk)))
    with pytest.raises(ConfigError, match="not https"):
        load_config(_config(tmp_path, url="http://127.0.0.1:9", ca_file=str(pki.ca)))
    assert load_config(_config(tmp_path, ca_file=str(pki.ca))).pools[0].ca_file == str(pki.ca)


def test_the_router_process_serves_a_tls_pool_it_trusts_only_by_its_bundle(tmp_path, pki):
    # Through a real router process: the chat completion and the discovery of the pool's models both
    # go over TLS verified by the configured bundle; the same pool without it answers nothing.
    from fleetproc import Fleet, pool
    from scripted import Backend, completion

    async def answer(seen, n, writer):
        return completion("over tls")

    backend = Backend(answer, models=[{"id": "m-tls", "object": "model"}], tls=pki.server_context())
    url = backend.start()
    assert url.startswith("https://")
    fleet = Fleet(tmp_path)
    try:
        fleet.start_router({"pools": [pool("tls", url, "nvidia", 1.0, models=("m1",), ca_file=str(pki.ca))]})
        c = fleet.client()
        reply = c.chat.completions.create(model="m1", messages=[{"role": "user", "content": "x"}], max_tokens=1)
        assert reply.choices[0].message.content == "over tls"
        assert "m-tls" in {m.id for m in c.models.list()}
        fleet.stop()
        fleet.start_router({"pools": [pool("tls", url, "nvidia", 1.0, models=("m1",))]})
        import openai
        with pytest.raises(openai.APIStatusError) as e:
            fleet.client().chat.completions.create(model="m1", messages=[{"role": "user", "content": "x"}],
                                                   max_tokens=1)
        assert e.value.status_code in (502, 503)
    finally:
        fleet.stop()
        backend.stop()


def test_a_bad_bundle_stops_the_router_at_start_with_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "fleet_router", "--config",
                        str(_config(tmp_path, ca_file=str(tmp_path / "absent.pem")))],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "ca_file" in p.stderr and "Traceback" not in p.stderr
