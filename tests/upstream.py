"""Upstream test data, fetched at the versions the program pins and checked against recorded checksums.

The tests validate rendered objects against upstream CustomResourceDefinitions and render every Helm
release from a chart cache (tests/schemas.py, fleetctl/charts.py). This module fills both caches in
the layout ``../shared`` has, from the pins in the code — one fact in one place:

- ``<dest>/charts/<chart>-<version>.tgz``: every chart ``fleetctl.charts.pinned_charts()`` lists
  (components/platform_versions.CHARTS and the EKS cluster-autoscaler), pulled as ``fleet charts pull``
  pulls them (Helm's own client, OCI or HTTP repository);
- ``<dest>/crds/bundle-<key>-<version>.yaml``: every CRD bundle ``platform_versions.BUNDLES`` installs,
  downloaded from its release URL;
- ``<dest>/crds/chart-<chart>-<version>.yaml``: the CRDs each pinned chart installs, rendered from the
  verified archive by Helm (so custom kinds are checked against the pinned versions, not a branch).

Every downloaded file is checked against ``tests/upstream.sha256`` (``sha256sum`` format, paths
relative to ``<dest>``): a mismatch, or a file with no recorded checksum, fails naming the file, and
nothing unverified is left in the cache. The derived ``chart-*`` CRD files are rebuilt from verified
archives and carry no checksum of their own.

    python tests/upstream.py fetch  [--dest DIR]   # download what is missing, verify, derive CRDs
    python tests/upstream.py verify [--dest DIR]   # offline: the cache against the recorded checksums
    python tests/upstream.py lock   [--dest DIR]   # record the checksums of what is cached (review them)

``make upstream`` runs ``fetch`` into ``build/upstream``; it needs the internet (the test machine of
this project has none: there, ``verify`` and the derivation are what the tests exercise).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LOCK = ROOT / "tests" / "upstream.sha256"
DEFAULT_DEST = ROOT / "build" / "upstream"

# The one switch that says a test run has no upstream data (neither CRDs nor charts): the checks that
# need it are then reported skipped, and counted in pytest's summary, instead of failing.
OFFLINE_VAR = "FLEET_UPSTREAM_OFFLINE"
# The two switches it replaces (CRDs, charts), still read for one release with a deprecation notice.
DEPRECATED_VARS = ("FLEET_UPSTREAM_OPTIONAL", "FLEET_OFFLINE")

# Values that make a chart render the CRDs it ships. cert-manager v1.19.1 values.yaml: `crds.enabled`
# defaults to false (deploy/charts/cert-manager/values.yaml at v1.19.1); the others render theirs by
# default (keda 2.18.0 `crds.install: true`; istio base 1.28.5, kube-prometheus-stack 79.12.0's crds/).
CRD_VALUES: Mapping[str, Mapping] = {"cert-manager": {"crds": {"enabled": True}}}


def offline(environ: Mapping[str, str] = os.environ) -> bool:
    """True when the run declared it has no upstream data (``FLEET_UPSTREAM_OFFLINE=1``, or one of the
    deprecated names)."""
    return any(environ.get(v) == "1" for v in (OFFLINE_VAR, *DEPRECATED_VARS))


def deprecation(environ: Mapping[str, str] = os.environ) -> str | None:
    used = [v for v in DEPRECATED_VARS if environ.get(v) == "1"]
    if not used:
        return None
    return f"{' and '.join(used)} {'is' if len(used) == 1 else 'are'} deprecated: set {OFFLINE_VAR}=1 instead"


@dataclass(frozen=True)
class Artifact:
    path: str
    """Where it goes, relative to the cache root (``charts/...`` or ``crds/...``)."""
    url: str
    """Where it comes from: a release URL, or ``<repo>/<chart>@<version>`` for a Helm pull."""
    pin: object = None
    """The chart pin (fleetctl.charts.Pin) for a chart; None for a bundle."""


def artifacts() -> list[Artifact]:
    """Every upstream file the tests need, derived from the pins in the code."""
    from components import platform_versions as pins
    from fleetctl import charts

    out = [Artifact(f"crds/bundle-{key}-{b.version}.yaml", b.url) for key, b in sorted(pins.BUNDLES.items())]
    out += [Artifact(f"charts/{p.archive}", f"{p.repo}/{p.chart}@{p.version}", p) for p in charts.pinned_charts()]
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_lock(lock: Path = LOCK) -> dict[str, str]:
    """path -> sha256, from a ``sha256sum``-format file (``#`` comments)."""
    out: dict[str, str] = {}
    if not lock.exists():
        return out
    for n, line in enumerate(lock.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest, _, path = line.partition("  ")
        if len(digest) != 64 or not path:
            raise ValueError(f"{lock}:{n}: not `<sha256>  <path>`: {line!r}")
        out[path] = digest
    return out


def verify(dest: Path, lock: Path = LOCK, items: Iterable[Artifact] | None = None) -> list[str]:
    """Problems with the cache at ``dest`` (empty when every pinned file is there and matches)."""
    recorded = read_lock(lock)
    problems = []
    for a in items if items is not None else artifacts():
        f = dest / a.path
        if not f.exists():
            problems.append(f"{a.path}: missing (from {a.url}; `make upstream` where the internet is reachable)")
        elif a.path not in recorded:
            problems.append(f"{a.path}: no checksum recorded in {lock.name}; after review add: {sha256(f)}  {a.path}")
        elif sha256(f) != recorded[a.path]:
            problems.append(f"{a.path}: sha256 {sha256(f)} is not the recorded {recorded[a.path]} ({a.url})")
    return problems


def _download(url: str, to: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as r, open(to, "wb") as out:  # noqa: S310 - pinned https URLs
        while chunk := r.read(1 << 16):
            out.write(chunk)


def fetch(dest: Path, lock: Path = LOCK, items: Iterable[Artifact] | None = None) -> list[str]:
    """Download each missing artifact, keep it only if its checksum is the recorded one; problems."""
    from fleetctl import charts

    items = list(items if items is not None else artifacts())
    recorded = read_lock(lock)
    problems = []
    for a in items:
        target = dest / a.path
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            got = Path(tmp) / target.name
            try:
                if a.pin is None:
                    _download(a.url, got)
                else:
                    failed = charts.pull(Path(tmp), [a.pin])
                    if failed:
                        raise RuntimeError(failed[0][1])
            except Exception as e:  # noqa: BLE001 - each failure is reported with its file, the rest go on
                problems.append(f"{a.path}: download from {a.url} failed: {' '.join(str(e).split())}")
                continue
            digest = sha256(got)
            if recorded.get(a.path) not in (None, digest):
                problems.append(f"{a.path}: downloaded sha256 {digest} is not the recorded {recorded[a.path]} "
                                f"({a.url}); not kept")
                continue
            got.replace(target)  # unrecorded: kept, and verify() below names the line to review and add
    failed = {p.split(":", 1)[0] for p in problems}
    return problems + [p for p in verify(dest, lock, items) if p.split(":", 1)[0] not in failed]


def derive_crds(dest: Path, items: Iterable[Artifact] | None = None) -> list[Path]:
    """Write the CRDs each cached pinned chart installs to ``crds/chart-<chart>-<version>.yaml`` (a CRD a
    bundle installs stays the bundle's). Returns the files written."""
    import yaml

    from components import platform_versions as pins
    from fleetctl import charts

    bundled = {name for b in pins.BUNDLES.values() for _, kind, name in b.objects if kind == "CustomResourceDefinition"}
    written = []
    for a in items if items is not None else artifacts():
        if a.pin is None or not (dest / a.path).exists():
            continue
        p = a.pin
        rendered = charts.render(p.chart, p.version, CRD_VALUES.get(p.chart, {}), "upstream", "default",
                                 "v1.35.0", where=dest / "charts")
        crds = [i["object"] for i in rendered if i["object"].get("kind") == "CustomResourceDefinition"
                and i["object"]["metadata"]["name"] not in bundled]
        if not crds:
            continue
        out = dest / "crds" / f"chart-{p.chart}-{p.version}.yaml"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(yaml.safe_dump_all(crds, sort_keys=True))
        written.append(out)
    return written


def lock_file(dest: Path, lock: Path = LOCK, items: Iterable[Artifact] | None = None) -> int:
    """Record the checksums of every cached artifact (keeps entries for files not cached)."""
    recorded = read_lock(lock)
    for a in items if items is not None else artifacts():
        if (dest / a.path).exists():
            recorded[a.path] = sha256(dest / a.path)
    header = [line for line in (lock.read_text().splitlines() if lock.exists() else []) if line.startswith("#")]
    lock.write_text("\n".join(header + [f"{d}  {p}" for p, d in sorted(recorded.items())]) + "\n")
    return len(recorded)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tests/upstream.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("fetch", "verify", "lock", "list"))
    ap.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    args = ap.parse_args(argv)
    if args.command == "list":
        for a in artifacts():
            print(f"{a.path}\t{a.url}")
        return 0
    if args.command == "lock":
        print(f"{lock_file(args.dest)} checksums in {LOCK}")
        return 0
    problems = fetch(args.dest) if args.command == "fetch" else verify(args.dest)
    for p in problems:
        print(f"upstream: {p}", file=sys.stderr)
    if problems:
        return 1
    if args.command == "fetch":
        for f in derive_crds(args.dest):
            print(f"derived {f.relative_to(args.dest)}")
    print(f"upstream: {len(artifacts())} pinned files verified in {args.dest} "
          f"(FLEET_CRDS_DIR={args.dest / 'crds'} FLEET_CHARTS_DIR={args.dest / 'charts'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
