"""The router against backends that misbehave the way real vLLM servers and networks do (issue 23:
timeouts, retries, cancellation, credentials, header hygiene, metrics, model lists), each through
a real router process on loopback."""

from __future__ import annotations

import urllib.request

import openai

from fleetproc import HOST, KEY, fleet, pool  # noqa: F401 - fixtures


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
