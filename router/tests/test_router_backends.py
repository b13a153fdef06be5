"""The router against backends that misbehave the way real vLLM servers and networks do (issue 23:
timeouts, retries, cancellation, credentials, header hygiene, metrics, model lists), each through
a real router process on loopback."""

from __future__ import annotations

import urllib.request

import openai

from fleetproc import HOST, KEY, PLAIN_KEY, fleet, pool  # noqa: F401 - fixtures


def test_a_pool_started_with_an_api_key_gets_its_key_not_the_clients(fleet, tmp_path):
    # Issue 23 item 8: vLLM servers started with --api-key could not sit behind the router (the
    # client's key was stripped and no pool key sent). The sim checks keys as vLLM does.
    url = fleet.start_sim("locked", "fast", ("m1", "m-discovered"), "--api-key", "sk-pool-secret")
    key_file = tmp_path / "pool-key"
    key_file.write_text("sk-pool-secret\n")  # a Secret's file, trailing newline and all
    fleet.start_router({"pools": [pool("locked", url, "nvidia", 1.0, api_key_file=str(key_file))]})
    c = fleet.client()
    reply = c.chat.completions.create(model="m1", messages=[{"role": "user", "content": "x"}], max_tokens=2)
    assert reply.usage.completion_tokens == 2
    # discovery (/v1/models of the pool) is authenticated too: a model only the backend names
    assert "m-discovered" in {m.id for m in c.models.list()}


def test_a_missing_backend_key_file_is_a_one_line_error_at_start(fleet, tmp_path):
    import subprocess
    import sys

    import yaml

    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump({"pools": [pool("p", "http://127.0.0.1:9", "nvidia", 1.0,
                                                   api_key_file=str(tmp_path / "absent"))]}))
    p = subprocess.run([sys.executable, "-m", "fleet_router", "--config", str(path)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 2 and "api_key_file" in p.stderr and "Traceback" not in p.stderr


# --- misbehaving backends (scripted on loopback) -------------------------------------------------

import asyncio  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from scripted import SSE_HEAD, Backend, completion, reply, sse_chunk, sse_end, vllm_error  # noqa: E402

FAST = {"connect_s": 1, "stream_head_s": 0.5, "stream_idle_s": 0.5, "response_s": 5}


@pytest.fixture
def backends():
    started: list[Backend] = []

    def start(script, models=None, metrics=None) -> tuple[Backend, str]:
        b = Backend(script, models, metrics)
        url = b.start()
        started.append(b)
        return b, url

    try:
        yield start
    finally:
        for b in started:
            b.stop()


def _router(fleet, pools: list[dict], **extra) -> None:
    fleet.start_router({"pools": pools, "policy": "round-robin",
                        "failover": {"backoff_s": 0.01, **extra.pop("failover", {})}, **extra})


def _post(fleet, body: dict, path: str = "/v1/chat/completions", headers: dict | None = None, timeout: float = 20):
    conn = http.client.HTTPConnection(HOST, fleet.port, timeout=timeout)
    conn.request("POST", path, body=json.dumps(body), headers={
        "Authorization": f"Bearer {KEY}", "Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def _metrics(fleet) -> str:
    return urllib.request.urlopen(f"http://{HOST}:{fleet.admin_port}/metrics", timeout=5).read().decode()


def _metric(text: str, name: str, **labels) -> float | None:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(w in line for w in want):
                return float(line.rsplit(" ", 1)[1])
    return None


CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def test_a_non_streaming_answer_longer_than_a_streams_head_bound_is_served_once(fleet, backends):
    # Issue 23 item 2: vLLM sends a non-streaming answer's head with the whole answer; a first-byte
    # timeout killed long generations and resent them to every pool. Now the bound is response_s.
    async def slow(seen, n, w):
        await asyncio.sleep(1.2)  # > stream_head_s and stream_idle_s
        return completion("long answer", 7)

    a, url_a = backends(slow)
    b, url_b = backends(slow)
    _router(fleet, [pool("a", url_a, "nvidia", 1.0, timeouts=FAST), pool("b", url_b, "amd", 1.0, timeouts=FAST)])
    status, _, data = _post(fleet, CHAT)
    assert status == 200 and json.loads(data)["choices"][0]["message"]["content"] == "long answer"
    assert len(a.requests()) + len(b.requests()) == 1


def test_a_non_streaming_answer_past_its_bound_is_504_and_not_resent(fleet, backends):
    async def silent(seen, n, w):
        return None

    a, url_a = backends(silent)
    b, url_b = backends(silent)
    short = {**FAST, "response_s": 0.6}
    _router(fleet, [pool("a", url_a, "nvidia", 1.0, timeouts=short), pool("b", url_b, "amd", 1.0, timeouts=short)])
    status, _, data = _post(fleet, CHAT)
    assert status == 504 and "0.6" in json.loads(data)["error"]["message"]
    sent = a.requests() + b.requests()
    assert len(sent) == 1  # never resent: the backend may have been generating
    assert (a if a.requests() else b).wait_closed(sent[0], 3)  # and it was told to stop


def test_a_stream_that_keeps_producing_has_no_total_cap(fleet, backends):
    # Issue 23 item 4: a stream longer than the total timeout was cut without an error event.
    async def steady(seen, n, w):
        w.write(SSE_HEAD)
        for i in range(15):
            w.write(sse_chunk(i))
            await w.drain()
            await asyncio.sleep(0.1)  # 1.5 s in all: longer than response_s below
        return sse_end()

    _, url = backends(steady)
    _router(fleet, [pool("a", url, "nvidia", 1.0, timeouts={**FAST, "response_s": 1.0})])
    chunks = list(fleet.client().chat.completions.create(stream=True, **CHAT))
    assert "".join(c.choices[0].delta.content for c in chunks).split() == [f"t{i}" for i in range(15)]


def test_a_stalled_stream_ends_with_an_error_event_in_openais_shape(fleet, backends):
    async def stalls(seen, n, w):
        w.write(SSE_HEAD + sse_chunk(0) + sse_chunk(1))
        await w.drain()
        return None  # then silence

    b, url = backends(stalls)
    _router(fleet, [pool("a", url, "nvidia", 1.0, timeouts=FAST)])
    got = []
    t0 = time.monotonic()
    with pytest.raises(openai.APIError) as e:
        for c in fleet.client().chat.completions.create(stream=True, **CHAT):
            got.append(c.choices[0].delta.content)
    assert got == ["t0 ", "t1 "] and "0.5" in str(e.value)
    assert time.monotonic() - t0 < 5  # cut at the idle bound, not after minutes
    assert b.wait_closed(b.requests()[0], 3)  # the backend was told to stop
    text = _metrics(fleet)
    assert _metric(text, "fleet_router_stream_errors_total", pool="a", reason="timeout") == 1
    assert _metric(text, "fleet_router_requests_total", endpoint="/v1/chat/completions", status="200") == 1


@pytest.mark.parametrize("stream,head_first", [(False, False), (True, False), (True, True)],
                         ids=["non-streaming", "stream-before-head", "stream-in-prefill"])
def test_a_client_leaving_cancels_the_backend_request_at_once(fleet, backends, stream, head_first):
    # Issue 23 item 5: a client leaving during prefill or a non-streaming request was not passed
    # on: the backend kept generating for nobody.
    async def busy(seen, n, w):
        if head_first:
            w.write(SSE_HEAD)  # vLLM sends a stream's head, then prefills
            await w.drain()
        return None

    b, url = backends(busy)
    _router(fleet, [pool("a", url, "nvidia", 1.0)])  # default timeouts: minutes
    body = json.dumps({**CHAT, "stream": stream}).encode()
    s = socket.create_connection((HOST, fleet.port), timeout=10)
    s.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
    deadline = time.monotonic() + 5
    while not b.requests() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    _leave_and_see_the_backend_request_closed(fleet, s, b, b.requests()[0])


def _leave_and_see_the_backend_request_closed(fleet, client: socket.socket, backend, seen) -> None:
    """The client closes its socket: the router closes the backend request ``seen`` within 1.5 s and
    counts the request 499, however it ended."""
    left = time.monotonic()
    client.close()
    closed = backend.wait_closed(seen, 3)
    assert closed is not None and closed - left < 1.5
    deadline = time.monotonic() + 5
    while _metric(_metrics(fleet), "fleet_router_requests_total", status="499") != 1:
        assert time.monotonic() < deadline, _metrics(fleet)
        time.sleep(0.05)


def _answer(*, status=200, message="", headers=None, body=None):
    async def script(seen, n, w):
        if status == 200:
            return completion("served", 2) if body is None else body
        return vllm_error(status, message) if headers is None else reply(
            status, {"error": {"message": message, "type": "x", "param": None, "code": status}}, headers)
    return script


def test_a_4xx_is_passed_through_and_never_retried(fleet, backends):
    # Issue 23 item 6: never retry what the client got wrong; the backend's message reaches it.
    a, url_a = backends(_answer(status=400, message="This model's maximum context length is 4096 tokens."))
    b, url_b = backends(_answer())
    _router(fleet, [pool("a", url_a, "nvidia", 0.1), pool("b", url_b, "amd", 5.0)], policy="cost-aware")
    status, _, data = _post(fleet, CHAT)
    assert status == 400 and "maximum context length" in json.loads(data)["error"]["message"]
    assert len(a.requests()) == 1 and not b.requests()


def test_a_500_the_request_causes_stops_at_the_second_pool_and_ejects_nobody(fleet, backends):
    # Issue 23 item 6: every 5xx was retried on every pool and counted against it, so three bad
    # requests ejected the whole fleet.
    pools, started = [], []
    for name in ("a", "b", "c"):
        b, url = backends(_answer(status=500, message="engine error: bad logits_processors"))
        started.append(b)
        pools.append(pool(name, url, name, 1.0))
    _router(fleet, pools, failover={"eject_after_failures": 2})
    for _ in range(4):
        status, _, data = _post(fleet, CHAT)
        assert status == 500 and "bad logits_processors" in json.loads(data)["error"]["message"]
    assert sum(len(b.requests()) for b in started) == 8  # two pools per request, never the third
    text = _metrics(fleet)
    assert _metric(text, "fleet_router_ejections_total") is None
    assert all(_metric(text, "fleet_router_pool_ejected", pool=n) == 0 for n in "abc")


def test_a_503_fails_over_and_counts_against_that_pool(fleet, backends):
    a, url_a = backends(_answer(status=503, message="restarting"))
    b, url_b = backends(_answer())
    _router(fleet, [pool("a", url_a, "nvidia", 0.1), pool("b", url_b, "amd", 5.0)], policy="cost-aware",
            failover={"eject_after_failures": 1, "eject_seconds": 30})
    status, headers, _ = _post(fleet, CHAT)
    assert status == 200 and headers["x-fleet-pool"] == "b"
    text = _metrics(fleet)
    assert _metric(text, "fleet_router_ejections_total", pool="a") == 1
    assert _metric(text, "fleet_router_pool_ejected", pool="a") == 1
    assert _metric(text, "fleet_router_pool_ejected", pool="b") == 0


def test_a_429_goes_to_another_pool_and_the_busy_pool_is_left_alone_for_its_retry_after(fleet, backends):
    a, url_a = backends(_answer(status=429, message="queue full", headers={"Retry-After": "30"}))
    b, url_b = backends(_answer())
    _router(fleet, [pool("a", url_a, "nvidia", 0.1), pool("b", url_b, "amd", 5.0)], policy="cost-aware")
    for _ in range(3):
        status, headers, _ = _post(fleet, CHAT)
        assert status == 200 and headers["x-fleet-pool"] == "b"
    assert len(a.requests()) == 1  # asked once; then left alone for 30 s
    assert _metric(_metrics(fleet), "fleet_router_ejections_total") is None  # busy is not broken


def test_a_reset_before_any_byte_fails_over(fleet, backends):
    async def reset(seen, n, w):
        return b"RESET"

    a, url_a = backends(reset)
    b, url_b = backends(_answer())
    _router(fleet, [pool("a", url_a, "nvidia", 0.1), pool("b", url_b, "amd", 5.0)], policy="cost-aware")
    status, headers, _ = _post(fleet, CHAT)
    assert status == 200 and headers["x-fleet-pool"] == "b"
    assert len(a.requests()) == 1  # the reused-connection resend never hits the same pool twice


def test_when_every_pool_fails_the_answer_carries_each_backends_message(fleet, backends):
    a, url_a = backends(_answer(status=503, message="engine overloaded on a"))
    dead = f"http://{HOST}:{_free_port()}"
    _router(fleet, [pool("a", url_a, "nvidia", 0.1), pool("dead", dead, "amd", 5.0)], policy="cost-aware")
    status, _, data = _post(fleet, CHAT)
    message = json.loads(data)["error"]["message"]
    assert status == 502 and "engine overloaded on a" in message and "dead: connect" in message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def test_backend_response_headers_are_filtered_to_an_allow_list(fleet, backends):
    # Issue 23 item 8: Set-Cookie, Server and internal headers of backends reached clients.
    body = completion("served", 2)
    head, _, payload = body.partition(b"\r\n\r\n")
    leaky = (head + b"\r\nSet-Cookie: session=abc\r\nServer: uvicorn\r\nX-Envoy-Upstream-Service-Time: 3"
             b"\r\nX-Internal-Node: gpu-17\r\nX-Request-Id: req-42\r\nConnection: keep-alive, X-Foo"
             b"\r\nX-Foo: hop\r\n\r\n" + payload)
    _, url = backends(_answer(body=leaky))
    _router(fleet, [pool("a", url, "nvidia", 1.0)])
    status, headers, _ = _post(fleet, CHAT)
    assert status == 200 and headers["x-fleet-pool"] == "a" and headers["content-type"] == "application/json"
    assert headers["x-request-id"] != "req-42"  # the router's own request id, not the backend's
    for leaked in ("set-cookie", "x-envoy-upstream-service-time", "x-internal-node", "x-foo"):
        assert leaked not in headers
    assert headers.get("server", "") != "uvicorn"


def test_streams_count_their_tokens_and_non_streaming_answers_report_no_ttft(fleet, backends):
    # Issue 23 item 7: streamed tokens were not counted; a non-streaming request's whole latency
    # was recorded as its TTFT and fed SLOs and the cost-aware policy.
    async def script(seen, n, w):
        if not seen.body.get("stream"):
            return completion("served", 4)
        w.write(SSE_HEAD)
        for i in range(6):
            w.write(sse_chunk(i))
        return sse_end()

    _, url = backends(script)
    _router(fleet, [pool("a", url, "nvidia", 1.0)])
    c = fleet.client()
    c.chat.completions.create(**CHAT)
    assert _metric(_metrics(fleet), "fleet_router_ttft_seconds_count", pool="a") is None
    assert _metric(_metrics(fleet), "fleet_router_tokens_total", pool="a") == 4
    list(c.chat.completions.create(stream=True, **CHAT))
    text = _metrics(fleet)
    assert _metric(text, "fleet_router_ttft_seconds_count", pool="a") == 1
    assert _metric(text, "fleet_router_tokens_total", pool="a") == 4 + 6


def test_in_flight_gauge_and_series_of_pools_removed_by_reload(fleet, backends, tmp_path):
    import signal

    import yaml

    async def slow(seen, n, w):
        await asyncio.sleep(1.0)
        return completion()

    _, url_a = backends(slow)
    _, url_b = backends(_answer())
    _router(fleet, [pool("a", url_a, "nvidia", 1.0, models=("m1", "only-a")), pool("gone", url_b, "amd", 1.0)])
    import threading

    t = threading.Thread(target=_post, args=(fleet, {**CHAT, "model": "only-a"}))
    t.start()
    deadline = time.monotonic() + 5
    while _metric(_metrics(fleet), "fleet_router_pool_in_flight", pool="a") != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t.join(10)
    assert _metric(_metrics(fleet), "fleet_router_pool_in_flight", pool="a") == 0
    assert _metric(_metrics(fleet), "fleet_router_pool_cost_per_hour", pool="gone") == 1.0
    cfg_path = tmp_path / "router.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["pools"] = [p for p in cfg["pools"] if p["name"] != "gone"]
    cfg_path.write_text(yaml.safe_dump(cfg))
    fleet.router.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while 'pool="gone"' in _metrics(fleet):
        assert time.monotonic() < deadline, "series of a removed pool are still exported"
        time.sleep(0.05)


def _card(model: str, **fields) -> dict:
    # A model card as vLLM's /v1/models lists it (vllm/entrypoints/openai/protocol.py ModelCard).
    return {"id": model, "object": "model", "created": 1, "owned_by": "vllm", "root": None, "parent": None,
            "max_model_len": None, "permission": [{"id": "modelperm-1", "object": "model_permission"}], **fields}


def _listed(fleet) -> dict[str, dict]:
    return {m.id: m.model_dump() for m in fleet.client().models.list()}


def test_the_model_list_keeps_vllms_card_fields_and_forgets_a_dead_backends_models(fleet, backends):
    # Issue 23 item 10: the list dropped vLLM's parent / max_model_len, and a model only a dead
    # backend had reported stayed listed (and routable) forever.
    a, url_a = backends(_answer(), [_card("m1", root="meta-llama/Llama-3.1-8B", max_model_len=8192),
                                    _card("m1-sql", root="/adapters/sql", parent="m1", max_model_len=8192)])
    _, url_b = backends(_answer(), [_card("m1", root="meta-llama/Llama-3.1-8B", max_model_len=4096)])
    _router(fleet, [pool("a", url_a, "nvidia", 1.0), pool("b", url_b, "amd", 1.0)],
            discovery={"models_refresh_s": 0.2, "models_expire_s": 1.0, "metrics_scrape_s": 0.5})
    cards = _listed(fleet)
    assert cards["m1-sql"]["parent"] == "m1" and cards["m1-sql"]["root"] == "/adapters/sql"
    assert cards["m1-sql"]["max_model_len"] == 8192
    assert cards["m1"]["max_model_len"] == 4096  # the smallest context among the pools that serve it
    assert "permission" not in cards["m1"]
    one = fleet.client().models.retrieve("m1-sql").model_dump()
    assert one["parent"] == "m1" and one["max_model_len"] == 8192
    assert _post(fleet, {**CHAT, "model": "m1-sql"})[0] == 200
    a.stop()
    deadline = time.monotonic() + 10
    while "m1-sql" in _listed(fleet):
        assert time.monotonic() < deadline, "a dead backend's model is still listed"
        time.sleep(0.1)
    status, _, data = _post(fleet, {**CHAT, "model": "m1-sql"})
    assert status == 404 and json.loads(data)["error"]["code"] == "model_not_found"
    # what the config names stays: the fleet's contract, served by the pools still up
    assert set(_listed(fleet)) == {"m1"} and _post(fleet, CHAT)[0] == 200


def test_a_model_expiry_shorter_than_the_refresh_is_refused_naming_both_fields():
    from fleet_router.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="models_expire_s.*models_refresh_s"):
        parse_config(json.dumps({"pools": [pool("p", "http://127.0.0.1:9", "nvidia", 1.0)],
                                 "discovery": {"models_refresh_s": 10, "models_expire_s": 5}}))


def _as(key: str, **headers) -> dict:
    return {"Authorization": f"Bearer {key}", **headers}


def test_routing_headers_count_only_for_keys_allowed_to_set_them(fleet, backends):
    # Issue 23 item 10: any client could choose its tier or policy by header; x-fleet-policy knew
    # the built-in policies only, not the config's own profiles.
    _, url_cheap = backends(_answer())
    _, url_dear = backends(_answer())
    _router(fleet, [pool("cheap", url_cheap, "nvidia", 0.1), pool("dear", url_dear, "amd", 5.0)],
            tiers=[{"name": "premium", "match": {"X-Priority": "high"}, "backends": [{"pool": "dear", "weight": 100}]},
                   {"name": "default", "backends": [{"pool": "cheap", "weight": 50}, {"pool": "dear", "weight": 50}]}],
            profiles=[{"name": "cheapest", "scorers": {"cost": 1}, "picker": "max-score"}])

    def served(key, n=6, **headers) -> tuple[set[str], set[str]]:
        tiers, pools = set(), set()
        for _ in range(n):
            status, h, _ = _post(fleet, CHAT, headers=_as(key, **headers))
            assert status == 200
            tiers.add(h["x-fleet-tier"])
            pools.add(h["x-fleet-pool"])
        return tiers, pools

    assert served(KEY, **{"X-Priority": "high"}) == ({"premium"}, {"dear"})
    assert served(PLAIN_KEY, **{"X-Priority": "high"}) == ({"default"}, {"cheap", "dear"})  # ignored
    assert served(KEY, **{"x-fleet-policy": "cheapest"}) == ({"default"}, {"cheap"})  # the config's profile
    assert served(PLAIN_KEY, **{"x-fleet-policy": "cheapest"}) == ({"default"}, {"cheap", "dear"})
    assert _post(fleet, CHAT, headers=_as(PLAIN_KEY, **{"x-fleet-policy": "magic"}))[0] == 200  # not read at all
    for header, value in (("x-fleet-policy", "magic"), ("X-Priority", "banana")):
        status, _, data = _post(fleet, CHAT, headers=_as(KEY, **{header: value}))
        err = json.loads(data)["error"]
        assert status == 400 and err["code"] == "invalid_header" and err["param"] == header.lower()
        assert header.lower() in err["message"].lower() and value in err["message"]
    status, _, data = _post(fleet, CHAT, headers=_as(KEY, **{"x-fleet-policy": "magic"}))
    assert "cheapest" in json.loads(data)["error"]["message"]  # the accepted names include the config's


def test_routing_header_grants_name_keys_by_digest():
    from fleet_router.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="auth.routing_headers.*sha256"):
        parse_config(json.dumps({"pools": [pool("p", "http://127.0.0.1:9", "nvidia", 1.0)],
                                 "auth": {"routing_headers": {"sk-a-raw-key": ["tier"]}}}))
    with pytest.raises(ConfigError, match="auth.routing_headers"):
        parse_config(json.dumps({"pools": [pool("p", "http://127.0.0.1:9", "nvidia", 1.0)],
                                 "auth": {"routing_headers": {"*": ["pool"]}}}))


# --- the same misbehaviours through the config the IaC generates ---------------------------------

@pytest.fixture(scope="module")
def iac_fleet(tmp_path_factory):
    """The router as the Deployment runs it (`python -m fleet_router --config ...`, the image's
    entrypoint) with the config `fleet/routerconfig.py` generates for the dev plan — backend
    timeouts, per-pool key files and all — in front of a scripted backend per pool. Only the listen
    address (loopback, free ports) and the files' directory differ from the cluster."""
    import subprocess
    import sys

    import yaml

    from fleet.routerconfig import router_config_data
    from fleet.spec import load_spec
    from fleetctl.plan import read_stack_config
    from fleetproc import free_port, wait_http

    tmp = tmp_path_factory.mktemp("iac")
    import hashlib

    cfg = read_stack_config("dev")
    spec = load_spec(cfg.fleet_raw(), cfg.source)
    # The one spec field set here: KEY may pick its tier by header (PLAIN_KEY, accepted too, may not).
    spec = spec.model_copy(update={"router": spec.router.model_copy(update={
        "routing_headers": {hashlib.sha256(KEY.encode()).hexdigest(): ("tier",)}})})
    behaviour = {}
    backends, urls = {}, {}
    for p in spec.pools:
        async def script(seen, n, w, name=p.name):
            return await behaviour[name](seen, n, w)
        # the pool's model cards as vLLM lists them; the first pool also serves a LoRA adapter
        cards = [_card(m.name, root=m.hf_id, max_model_len=m.max_context) for m in spec.models_on(p.name)]
        if p is spec.pools[0]:
            cards.append(_card("sql-lora", root="/adapters/sql", parent=cards[0]["id"], max_model_len=2048))
        backends[p.name] = Backend(script, cards)
        urls[p.name] = backends[p.name].start()
    key_files = {}
    for name in urls:
        key_files[name] = str(tmp / f"key-{name}")
        (tmp / f"key-{name}").write_text(f"sk-backend-{name}\n")
    (tmp / "hashes").write_text("".join(hashlib.sha256(k.encode()).hexdigest() + "\n" for k in (KEY, PLAIN_KEY)))
    port, admin = free_port(), free_port()
    data = router_config_data(spec, urls, api_key_hashes_file=str(tmp / "hashes"), backend_key_files=key_files,
                              listen_host=HOST, port=port, admin_port=admin)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = subprocess.Popen([sys.executable, "-m", "fleet_router", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    class F:
        pass

    f = F()
    f.port, f.admin_port, f.spec, f.backends, f.behaviour, f.router = port, admin, spec, backends, behaviour, proc
    try:
        wait_http(f"http://{HOST}:{admin}/readyz", [proc])
        yield f
    finally:
        proc.kill()  # teardown, not a drain test (the generated shutdown config waits out a pre-stop)
        proc.wait(10)
        for b in backends.values():
            b.stop()


def _iac_model(f) -> tuple[str, list[str]]:
    model = max(f.spec.models, key=lambda m: len(m.pools))  # the model most pools serve
    return model.name, list(model.pools)


def _set(f, **scripts):
    for b in f.backends.values():
        b.seen.clear()
    for name in f.backends:
        f.behaviour[name] = scripts.get(name, scripts.get("default"))


def _iac_sent(f) -> dict[str, int]:
    return {n: len(b.requests()) for n, b in f.backends.items() if b.requests()}


def test_iac_config_fails_over_on_503_with_the_pools_own_key(iac_fleet):
    f = iac_fleet
    model, pools = _iac_model(f)
    good = pools[-1]
    _set(f, default=_answer(status=503, message="restarting"), **{good: _answer()})
    status, headers, _ = _post(f, {**CHAT, "model": model})
    assert status == 200 and headers["x-fleet-pool"] == good
    for name, b in f.backends.items():
        for seen in b.requests():
            assert seen.headers["authorization"] == f"Bearer sk-backend-{name}"  # never the client's key


def test_iac_config_passes_a_400_through_and_stops_a_500_at_the_second_pool(iac_fleet):
    f = iac_fleet
    model, _ = _iac_model(f)
    _set(f, default=_answer(status=400, message="prompt too long"))
    status, _, data = _post(f, {**CHAT, "model": model})
    assert status == 400 and "prompt too long" in data.decode() and sum(_iac_sent(f).values()) == 1
    _set(f, default=_answer(status=500, message="engine choked"))
    status, _, data = _post(f, {**CHAT, "model": model})
    assert status == 500 and "engine choked" in data.decode() and sum(_iac_sent(f).values()) == 2


def test_iac_config_ends_a_stream_cut_mid_way_with_an_error_event(iac_fleet):
    # The generated config lets a cut stream migrate (issue 20); here no pool accepts the
    # continuation (a 400 to continue_final_message, as a server without it answers), so the
    # stream must end with an error event, never silently short.
    f = iac_fleet
    refuse = _answer(status=400, message="continue_final_message is not supported")

    async def dies(seen, n, w):
        if seen.body.get("continue_final_message"):
            return await refuse(seen, n, w)
        w.write(SSE_HEAD + sse_chunk(0))
        await w.drain()
        return b"RESET"

    model, _ = _iac_model(f)
    _set(f, default=dies)
    c = openai.OpenAI(base_url=f"http://{HOST}:{f.port}/v1", api_key=KEY, max_retries=0, timeout=20)
    got = []
    with pytest.raises(openai.APIError):
        for chunk in c.chat.completions.create(stream=True, **{**CHAT, "model": model}):
            got.append(chunk.choices[0].delta.content)
    assert got == ["t0 "]


def test_iac_config_a_client_leaving_cancels_the_backend_request(iac_fleet):
    f = iac_fleet

    async def busy(seen, n, w):
        return None

    model, _ = _iac_model(f)
    _set(f, default=busy)
    body = json.dumps({**CHAT, "model": model}).encode()
    s = socket.create_connection((HOST, f.port), timeout=10)
    s.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
    deadline = time.monotonic() + 5
    while not _iac_sent(f) and time.monotonic() < deadline:
        time.sleep(0.02)
    (name,) = _iac_sent(f)
    left = time.monotonic()
    s.close()
    closed = f.backends[name].wait_closed(f.backends[name].requests()[0], 3)
    assert closed is not None and closed - left < 1.5


def test_iac_config_filters_backend_response_headers(iac_fleet):
    f = iac_fleet
    body = completion("served", 2)
    head, _, payload = body.partition(b"\r\n\r\n")
    _set(f, default=_answer(body=head + b"\r\nSet-Cookie: s=1\r\nX-Internal-Node: gpu-3\r\n\r\n" + payload))
    model, _ = _iac_model(f)
    status, headers, _ = _post(f, {**CHAT, "model": model})
    assert status == 200 and "set-cookie" not in headers and "x-internal-node" not in headers


def test_iac_config_honours_tier_headers_only_for_keys_the_spec_allows(iac_fleet):
    f = iac_fleet
    model, _ = _iac_model(f)
    _set(f, default=_answer())
    premium = next(t for t in f.spec.tiers if t.match)
    status, headers, _ = _post(f, {**CHAT, "model": model}, headers=_as(KEY, **premium.match))
    assert status == 200 and headers["x-fleet-tier"] == premium.name
    status, headers, _ = _post(f, {**CHAT, "model": model}, headers=_as(PLAIN_KEY, **premium.match))
    assert status == 200 and headers["x-fleet-tier"] != premium.name
    # the spec grants KEY the tier headers, not the policy one: x-fleet-policy is not even read
    assert _post(f, {**CHAT, "model": model}, headers=_as(KEY, **{"x-fleet-policy": "magic"}))[0] == 200
    name, value = next(iter(premium.match.items()))
    status, _, data = _post(f, {**CHAT, "model": model}, headers=_as(KEY, **{name: "banana"}))
    assert status == 400 and json.loads(data)["error"]["param"] == name.lower()


def test_iac_config_lists_vllms_card_fields(iac_fleet):
    f = iac_fleet
    c = openai.OpenAI(base_url=f"http://{HOST}:{f.port}/v1", api_key=KEY, max_retries=0, timeout=20)
    cards = {m.id: m.model_dump() for m in c.models.list()}
    base = f.spec.models_on(f.spec.pools[0].name)[0]
    assert cards["sql-lora"]["parent"] == base.name and cards["sql-lora"]["max_model_len"] == 2048
    assert cards[base.name]["root"] == base.hf_id and cards[base.name]["max_model_len"] == base.max_context


def test_a_buffered_answer_over_the_cap_is_a_502_not_router_memory(fleet, backends):
    # Issue 23 item 10: non-streaming answers were buffered with no size cap.
    a, url_a = backends(_answer(body=completion("x" * 20000, 1)))
    b, url_b = backends(_answer(body=completion("x" * 20000, 1)))
    _router(fleet, [pool("a", url_a, "nvidia", 1.0), pool("b", url_b, "amd", 1.0)],
            limits={"rate_limit_rps": 1000, "max_response_bytes": 4096})
    status, _, data = _post(fleet, CHAT)
    assert status == 502 and "4096 bytes" in json.loads(data)["error"]["message"]
    assert len(a.requests()) + len(b.requests()) == 1  # the same answer elsewhere would be as large
