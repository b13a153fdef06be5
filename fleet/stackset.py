"""Stack sets: one fleet spec deployed as several Pulumi stacks a platform team can run apart.

The ``multicloud`` fleet spans three clouds. As one stack, one ``up`` touched every cloud, built one
router image for every registry, stopped every cloud on the first one's failure and previewed a
Kubernetes provider against clusters that did not exist yet (issue 22). As a *set* it is:

* ``fleets/<set>.yaml`` — the fleet spec, once (the ``fleet:`` key, the value a stack file would
  hold under ``inference-fleet:fleet``): the topology is one fact in one place;
* one stack per cluster, ``<set>.<cluster>`` (``Pulumi.multicloud.aws-east.yaml``): that cluster,
  its platform and its inference layer — the same slice of the spec the single stack gives it
  (:func:`fleet.clusterplan.plan_cluster`) — exporting :data:`CLUSTER_EXPORT`, a versioned record of
  what the router needs to reach and trust it, and :data:`KUBECONFIG_EXPORT` (secret);
* one router stack, ``<set>.router``, that reads those records through ``pulumi.StackReference``
  and deploys the router onto its cluster.

Each part's stack file names the set and its part with two config keys (:data:`SET_KEY`,
:data:`PART_KEY`); a part stack's name is fixed by the set and the part (:func:`part_stack`), since
the router part finds the cluster parts by name. Why a file and not a "topology stack" the parts
reference: the spec must be read before any resource is declared (it decides what is declared),
offline with no backend, and reviewed in the PR that changes it; a StackReference gives none of
that. Pulumi stack names allow ``.``, so ``Pulumi.<set>.<part>.yaml`` sorts the parts beside each
other. Pure: no Pulumi, no I/O but reading the fleet file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from fleet.spec import FleetSpec, SpecError

SET_KEY = "stackSet"
"""Stack config key: the stack set this stack is a part of (its spec is ``fleets/<set>.yaml``)."""
PART_KEY = "part"
"""Stack config key: which part of the set this stack is, ``cluster <name>`` or ``router``."""
FLEETS_DIR = "fleets"

CLUSTER_EXPORT = "fleet_cluster"
"""A cluster part's stack output: :func:`cluster_record`'s shape, read by the router part."""
KUBECONFIG_EXPORT = "kubeconfig"
"""A cluster part's kubeconfig (a secret output): the router part's Kubernetes provider on its cluster."""
RECORD_VERSION = 1
"""Bumped when :data:`CLUSTER_EXPORT` changes shape; the router refuses a record of another version."""


class StackSetError(SpecError):
    """A stack set or part that cannot be planned or deployed as its files say; names the file."""

    def __init__(self, source: str, message: str):
        ValueError.__init__(self, f"{source}: {message}")
        self.source = source
        self.problems = [("", message)]


@dataclass(frozen=True)
class Part:
    kind: str
    """``cluster`` or ``router``."""
    cluster: str | None = None
    """The cluster a ``cluster`` part deploys."""

    def __str__(self) -> str:
        return f"cluster {self.cluster}" if self.kind == "cluster" else "router"


ROUTER = Part("router")


def parse_part(text: Any, source: str) -> Part:
    words = str(text or "").split()
    if words == ["router"]:
        return ROUTER
    if len(words) == 2 and words[0] == "cluster":
        return Part("cluster", words[1])
    raise StackSetError(source, f"{PART_KEY}: {text!r} is not a part of a stack set: "
                                "write `cluster <cluster name>` or `router`")


def part_stack(set_name: str, part: Part) -> str:
    """The stack name of ``part`` of ``set_name``: ``multicloud.aws-east``, ``multicloud.router``."""
    return f"{set_name}.{part.cluster if part.kind == 'cluster' else 'router'}"


def fleet_file(root: Path, set_name: str) -> Path:
    return root / FLEETS_DIR / f"{set_name}.yaml"


def read_fleet_file(path: Path) -> Any:
    """The raw fleet spec a set's file holds (validated by :func:`fleet.spec.load_spec`)."""
    source = f"{FLEETS_DIR}/{path.name}"
    if not path.is_file():
        raise StackSetError(source, f"the stack set's fleet file {path} is not there")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise StackSetError(source, f"not valid YAML: {e}".replace("\n", " ")) from None
    if not isinstance(doc, Mapping) or set(doc) != {"fleet"}:
        raise StackSetError(source, "a fleet file holds one key, `fleet:` (the fleet spec)")
    return doc["fleet"]


def parts_of(spec: FleetSpec) -> list[Part]:
    """The set's parts in deploy order: every cluster (spec order), then the router."""
    return [Part("cluster", c.name) for c in spec.clusters] + ([ROUTER] if spec.router.enabled else [])


def check_part(spec: FleetSpec, set_name: str, part: Part, stack: str, source: str) -> None:
    """What a part stack must be for the set to hold together: a cluster the spec has, a router the
    spec enables, and the stack name the router part looks for."""
    if part.kind == "cluster" and part.cluster not in {c.name for c in spec.clusters}:
        raise StackSetError(source, f"{PART_KEY}: no cluster {part.cluster!r} in {FLEETS_DIR}/{set_name}.yaml "
                                    f"(clusters: {', '.join(c.name for c in spec.clusters)})")
    if part.kind == "router" and not spec.router.enabled:
        raise StackSetError(source, f"{PART_KEY}: router, but {FLEETS_DIR}/{set_name}.yaml disables the router")
    want = part_stack(set_name, part)
    if stack != want:
        raise StackSetError(source, f"stack {stack!r} is part `{part}` of set {set_name!r}: the router part "
                                    f"finds that part as stack {want!r}; name the stack so")


# --- what a cluster part exports, and what the router part accepts --------------------------------

def cluster_record(spec: FleetSpec, cluster: str, *, gateway_url: str, pool_urls: Mapping[str, str],
                   ca_certificate: str | None, router_image: str) -> dict[str, Any]:
    """The record a cluster part exports (:data:`CLUSTER_EXPORT`): its gateway (URL, public hostname,
    the CA the router pins for its pools — components/gateway.py), each served pool's endpoint and
    models, and the router image in its registry."""
    c = spec.cluster(cluster)
    return {
        "version": RECORD_VERSION,
        "cluster": c.name,
        "cloud": c.cloud,
        "gateway": {"url": gateway_url, "hostname": c.gateway_hostname, "ca_certificate": ca_certificate},
        "pools": {p.name: {"url": pool_urls[p.name], "models": [m.name for m in spec.models_on(p.name)]}
                  for p in spec.pools_in(cluster) if spec.models_on(p.name)},
        "router_image": router_image,
    }


def record_problems(spec: FleetSpec, cluster: str, record: Any) -> list[str]:
    """Why ``record`` (a cluster part's export) cannot feed the router for ``cluster`` of ``spec``:
    another version, another cluster, or pools and models other than the spec puts there (the
    cluster stack was last deployed from another spec)."""
    if not isinstance(record, Mapping):
        return [f"is not a record (got {type(record).__name__})"]
    version = record.get("version")
    if version != RECORD_VERSION:
        # Numbers cross the engine as protobuf doubles: 2.0 is version 2.
        shown = int(version) if isinstance(version, float) and version.is_integer() else repr(version)
        return [f"is version {shown}; this program reads version {RECORD_VERSION}"]
    out = []
    if record.get("cluster") != cluster:
        out.append(f"is cluster {record.get('cluster')!r}'s, not {cluster!r}'s")
    want = {p.name: [m.name for m in spec.models_on(p.name)] for p in spec.pools_in(cluster) if spec.models_on(p.name)}
    pools = record.get("pools")
    got = {k: list(v.get("models") or []) for k, v in pools.items()} if isinstance(pools, Mapping) else None
    if got != want:
        out.append(f"serves {got}, the spec puts {want} there")
    gateway = record.get("gateway")
    if not isinstance(gateway, Mapping) or not gateway.get("url"):
        out.append("has no gateway url")
    if not record.get("router_image"):
        out.append("has no router_image")
    return out
