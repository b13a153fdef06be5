"""The upstream test data (tests/upstream.py, `make upstream`): which files are fetched follows the pins
in the code, a download is kept only with its recorded checksum, the cache is verified offline, the
CRDs a chart installs are derived from the verified archive, and a run without upstream data fails
unless it is declared offline — then the summary counts what did not run.

No test here reaches the internet: the download path is exercised against a server on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import MappingProxyType

import pytest
import yaml

import schemas
import upstream
from conftest import ROOT, needs_charts, plan_of
from components import platform_versions
from fleetctl import charts


# --- which files: derived from the pins ---------------------------------------------------------------

def test_every_pinned_chart_and_bundle_is_fetched_once_and_a_pin_bump_renames_the_file(monkeypatch):
    items = upstream.artifacts()
    assert len({a.path for a in items}) == len(items)
    assert {a.path for a in items if a.pin} == {f"charts/{p.archive}" for p in charts.pinned_charts()}
    bundles = [a for a in items if a.pin is None]
    assert {a.url for a in bundles} == {b.url for b in platform_versions.BUNDLES.values()}

    # Bump one bundle and one chart where the code pins them: the fetched names and URLs follow.
    gw = platform_versions.BUNDLES["gateway-api"]
    bumped = dataclasses.replace(gw, url=gw.url.replace(gw.version, "v9.9.9"), version="v9.9.9")
    monkeypatch.setattr(platform_versions, "BUNDLES",
                        MappingProxyType({**platform_versions.BUNDLES, "gateway-api": bumped}))
    keda = platform_versions.CHARTS["keda"]
    monkeypatch.setattr(platform_versions, "CHARTS",
                        MappingProxyType({**platform_versions.CHARTS, "keda": dataclasses.replace(keda, version="9.9.9")}))
    paths = {a.path: a.url for a in upstream.artifacts()}
    assert "crds/bundle-gateway-api-v9.9.9.yaml" in paths and "v9.9.9/standard-install.yaml" in \
        paths["crds/bundle-gateway-api-v9.9.9.yaml"]
    assert f"crds/bundle-gateway-api-{gw.version}.yaml" not in paths
    assert "charts/keda-9.9.9.tgz" in paths and f"charts/keda-{keda.version}.tgz" not in paths


# --- verifying a cache offline ------------------------------------------------------------------------

def _cache(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, list[upstream.Artifact]]:
    dest = tmp_path / "cache"
    items = []
    for rel, data in files.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(data)
        items.append(upstream.Artifact(rel, f"https://example.invalid/{rel}"))
    return dest, items


def test_verify_accepts_the_recorded_bytes_and_names_each_file_that_differs_is_missing_or_unrecorded(tmp_path):
    dest, items = _cache(tmp_path, {"crds/bundle-a-v1.yaml": b"kind: A\n", "charts/b-1.0.0.tgz": b"chart b"})
    lock = tmp_path / "upstream.sha256"
    assert upstream.lock_file(dest, lock, items) == 2
    assert upstream.verify(dest, lock, items) == []
    assert upstream.read_lock(lock)["crds/bundle-a-v1.yaml"] == hashlib.sha256(b"kind: A\n").hexdigest()

    (dest / "charts/b-1.0.0.tgz").write_bytes(b"chart b, altered")
    (dest / "crds/bundle-a-v1.yaml").unlink()
    extra = upstream.Artifact("charts/c-2.0.0.tgz", "https://example.invalid/c")
    (dest / extra.path).write_bytes(b"chart c")
    problems = upstream.verify(dest, lock, [*items, extra])
    assert [p.split(":", 1)[0] for p in problems] == ["crds/bundle-a-v1.yaml", "charts/b-1.0.0.tgz",
                                                      "charts/c-2.0.0.tgz"]
    assert "missing" in problems[0]
    assert "is not the recorded" in problems[1]
    # The unrecorded file's message is the line to review and add.
    assert problems[2].endswith(f"{hashlib.sha256(b'chart c').hexdigest()}  charts/c-2.0.0.tgz")


def test_a_malformed_lock_line_is_an_error_naming_the_line(tmp_path):
    lock = tmp_path / "upstream.sha256"
    lock.write_text("# header\nnot-a-digest charts/x.tgz\n")
    with pytest.raises(ValueError, match=r"upstream.sha256:2: not `<sha256>  <path>`"):
        upstream.read_lock(lock)


def test_the_shipped_lock_parses_and_names_only_pinned_files():
    recorded = upstream.read_lock()
    assert set(recorded) <= {a.path for a in upstream.artifacts()}


# --- fetching: against a loopback server --------------------------------------------------------------

@pytest.fixture
def file_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_keeps_a_download_with_the_recorded_checksum_and_refuses_one_without(tmp_path, file_server):
    root, base = file_server
    (root / "good.yaml").write_bytes(b"kind: Good\n")
    (root / "tampered.yaml").write_bytes(b"kind: Tampered\n")
    good = upstream.Artifact("crds/bundle-good-v1.yaml", f"{base}/good.yaml")
    bad = upstream.Artifact("crds/bundle-bad-v1.yaml", f"{base}/tampered.yaml")
    gone = upstream.Artifact("crds/bundle-gone-v1.yaml", f"{base}/404.yaml")
    lock = tmp_path / "upstream.sha256"
    lock.write_text(f"{hashlib.sha256(b'kind: Good' + bytes([10])).hexdigest()}  {good.path}\n"
                    f"{hashlib.sha256(b'kind: Bad').hexdigest()}  {bad.path}\n")
    dest = tmp_path / "cache"
    problems = upstream.fetch(dest, lock, [good, bad, gone])
    assert (dest / good.path).read_bytes() == b"kind: Good\n"
    assert [p.split(":", 1)[0] for p in problems] == [bad.path, gone.path]
    assert "not the recorded" in problems[0] and "not kept" in problems[0]
    assert "404" in problems[1]
    assert sorted(p.name for p in (dest / "crds").iterdir()) == ["bundle-good-v1.yaml"]  # nothing half-kept

    # A second run downloads nothing new and verifies what is there.
    (root / "good.yaml").write_bytes(b"changed upstream\n")
    assert upstream.fetch(dest, lock, [good]) == []


# --- CRDs derived from the verified charts ------------------------------------------------------------

@needs_charts
def test_crds_derived_from_the_pinned_keda_chart_check_the_plans_scaled_objects(tmp_path):
    keda = next(a for a in upstream.artifacts() if a.pin and a.pin.chart == "keda")
    dest = tmp_path / "cache"
    (dest / "charts").mkdir(parents=True)
    shutil.copy(charts.charts_dir() / keda.pin.archive, dest / keda.path)
    [written] = upstream.derive_crds(dest, [keda])
    assert written.name == f"chart-keda-{keda.pin.version}.yaml"
    crds = {d["spec"]["names"]["kind"]: d for d in yaml.safe_load_all(written.read_text())}
    assert {"ScaledObject", "TriggerAuthentication"} <= set(crds)

    import jsonschema

    served = next(v for v in crds["ScaledObject"]["spec"]["versions"] if v.get("served", True))
    validator = jsonschema.Draft7Validator(schemas._strip_k8s_extensions(served["schema"]["openAPIV3Schema"]))
    scaled = plan_of("dev").objects("ScaledObject")
    assert scaled, "the dev plan declares no ScaledObject"
    assert [list(validator.iter_errors(o)) for o in scaled] == [[] for _ in scaled]
    bad = {**scaled[0], "spec": {**scaled[0]["spec"], "maxReplicaCount": "many"}}
    assert [e.absolute_path[-1] for e in validator.iter_errors(bad)] == ["maxReplicaCount"]


# --- one offline switch -------------------------------------------------------------------------------

def test_one_offline_switch_and_the_old_names_still_work_with_a_deprecation_notice():
    assert upstream.offline({"FLEET_UPSTREAM_OFFLINE": "1"}) and upstream.deprecation(
        {"FLEET_UPSTREAM_OFFLINE": "1"}) is None
    assert not upstream.offline({}) and not upstream.offline({"FLEET_UPSTREAM_OFFLINE": "0"})
    for old in ("FLEET_UPSTREAM_OPTIONAL", "FLEET_OFFLINE"):
        assert upstream.offline({old: "1"})
        assert upstream.deprecation({old: "1"}) == f"{old} is deprecated: set FLEET_UPSTREAM_OFFLINE=1 instead"


CRD_CHECK = "tests/test_monitoring.py::test_monitoring_objects_match_the_prometheus_operator_crds[dev]"


def _pytest_without_upstream(tmp_path, **env):
    environ = {k: v for k, v in os.environ.items()
               if k not in ("FLEET_UPSTREAM_OFFLINE", *upstream.DEPRECATED_VARS, "PYTEST_ADDOPTS")}
    environ.update(FLEET_CRDS_DIR=str(tmp_path / "no-crds"), FLEET_CHARTS_DIR=str(tmp_path / "no-charts"),
                   FLEET_RENDER_CACHE="off", **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           CRD_CHECK, "tests/test_charts.py::test_charts_pull_fails_clearly_when_a_repository_is_unreachable"],
                          cwd=ROOT, env=environ, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_a_run_without_upstream_data_fails_loudly_unless_declared_offline_and_then_counts_what_did_not_run(tmp_path):
    loud = _pytest_without_upstream(tmp_path)
    assert loud.returncode == 1, loud.stdout[-2000:]
    assert "upstream CRDs not found" in loud.stdout and "make upstream" in loud.stdout

    quiet = _pytest_without_upstream(tmp_path, FLEET_UPSTREAM_OFFLINE="1")
    assert quiet.returncode == 0, quiet.stdout[-2000:]
    assert "2 skipped" in quiet.stdout
    assert "FLEET_UPSTREAM_OFFLINE=1: 2 checks did not run for want of upstream data" in quiet.stdout
