"""What ``fleet verify`` reads: a plan directory as clusters of node pools and rendered objects.

A plan directory (``fleet plan --out DIR``) has ``plan.json`` (every declared resource with its
inputs) and ``manifests/<cluster>/**.yaml`` (every Kubernetes object: the program's own, and each
Helm release's rendered objects in a folder of their own once the plan renders charts). Every YAML
file under a cluster's folder counts, at any depth, so chart output is read the same way as ours.

The node pools come from the cloud resources in ``plan.json`` with the labels and taints the cloud
itself adds (cited where they are defined below), the machine's accelerators and allocatable CPU
and memory from ``fleet.catalog``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from fleet import catalog

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class VerifyInputError(ValueError):
    """The plan directory cannot be read (missing, not a plan, unparsable YAML/JSON)."""


@dataclass(frozen=True)
class Obj:
    """One rendered Kubernetes object and the file it came from (relative to the plan dir)."""

    doc: Mapping[str, Any]
    file: str
    cluster: str

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.doc.get("metadata") or {}).get("name", ""))

    @property
    def namespace(self) -> str:
        return str((self.doc.get("metadata") or {}).get("namespace", "") or "")

    @property
    def spec(self) -> Mapping[str, Any]:
        return self.doc.get("spec") or {}

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.namespace or '-'}/{self.name}"

    def labels(self) -> dict[str, str]:
        return dict((self.doc.get("metadata") or {}).get("labels") or {})


def container_args(container: Mapping[str, Any]) -> list[str]:
    """A container's command line as the process sees it: ``command`` then ``args``."""
    return [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]


def flag(args: list[str], name: str, default: str | None = None) -> str | None:
    """The value of ``--name value`` / ``--name=value`` (``"true"`` for a bare ``--name``), else ``default``."""
    for i, a in enumerate(args):
        if a == f"--{name}":
            return args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else "true"
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return default


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Does this Kubernetes label selector (``matchLabels`` and ``matchExpressions``) select ``labels``?

    None selects nothing; ``{}`` selects everything (metav1.LabelSelector). Operators as
    apimachinery's labels.Selector reads them: ``In``/``NotIn`` against ``values``, ``Exists``,
    ``DoesNotExist``. A malformed expression (no key, unknown operator) selects nothing: the API
    server would have rejected the object, so it cannot be what makes a flow pass.
    """
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if key is None:
            return False
        present = key in labels
        if op == "In":
            ok = present and labels[key] in values
        elif op == "NotIn":
            ok = not present or labels[key] not in values
        elif op == "Exists":
            ok = present
        elif op == "DoesNotExist":
            ok = not present
        else:
            return False
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str
    added_by_cloud: bool = False

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}"


@dataclass
class NodePool:
    name: str
    cloud: str
    machine_type: str
    labels: dict[str, str]
    taints: list[Taint]
    resource_name: str
    """The plan.json resource name that declares the pool (the object a finding names)."""
    accelerators: int = 0
    extended_resource: str | None = None
    """``nvidia.com/gpu`` / ``amd.com/gpu`` / ``google.com/tpu`` when the machine carries accelerators."""
    cloud_device_plugin: bool = False
    """The cloud runs the device plugin for this pool itself (GKE GPU with driver install, GKE TPU)."""
    driver_installed_by_cloud: bool = True
    vcpus: float | None = None
    memory_gib: float | None = None

    @property
    def ref(self) -> str:
        return f"NodePool/{self.cloud}/{self.name}"

    def allocatable(self) -> tuple[float, float] | None:
        """(CPU cores, memory GiB) a pod may request: capacity minus the kubelet's reservation.

        GKE's documented reservation (cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes,
        "Memory and CPU reservations", read 2026-11): memory 25 % of the first 4 GiB, 20 % of the next
        4, 10 % of the next 8, 6 % of the next 112, 2 % above 128 GiB, plus a 100 MiB eviction
        threshold; CPU 6 % of the first core, 1 % of the next, 0.5 % of the next 2, 0.25 % above 4.
        EKS and AKS reserve at least as much, so this is an upper bound on every cloud.
        """
        if self.vcpus is None or self.memory_gib is None:
            return None
        m, reserved_mem = self.memory_gib, 0.0
        for size, share in ((4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06), (float("inf"), 0.02)):
            part = min(m, size)
            reserved_mem += part * share
            m -= part
            if m <= 0:
                break
        c, reserved_cpu = self.vcpus, 0.0
        for size, share in ((1, 0.06), (1, 0.01), (2, 0.005), (float("inf"), 0.0025)):
            part = min(c, size)
            reserved_cpu += part * share
            c -= part
            if c <= 0:
                break
        return self.vcpus - reserved_cpu, self.memory_gib - reserved_mem - 100 / 1024


@dataclass
class Cluster:
    name: str
    """The manifests folder (the cluster's Kubernetes provider name in the plan)."""
    cloud: str
    component_urn: str
    pools: list[NodePool] = field(default_factory=list)
    objects: list[Obj] = field(default_factory=list)
    releases: list[dict[str, Any]] = field(default_factory=list)
    """Helm releases declared on this cluster (plan.json resources)."""
    cloud_resources: list[dict[str, Any]] = field(default_factory=list)
    """Every cloud resource under the cluster component (cluster, pools, add-ons, firewalls)."""
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def _by_kind(self) -> dict[str, list[Obj]]:
        if "by_kind" not in self.cache:
            idx: dict[str, list[Obj]] = {}
            for o in self.objects:
                idx.setdefault(o.kind, []).append(o)
            self.cache["by_kind"] = idx
        return self.cache["by_kind"]

    def of_kind(self, *kinds: str) -> list[Obj]:
        idx = self._by_kind()
        return [o for k in kinds for o in idx.get(k, [])]

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        for o in self._by_kind().get(kind, []):
            if o.name == name and (o.namespace == namespace or not namespace):
                return o
        return None

    def namespace_labels(self) -> dict[str, dict[str, str]]:
        if "ns_labels" in self.cache:
            return self.cache["ns_labels"]
        out = self.cache["ns_labels"] = {o.name: {"kubernetes.io/metadata.name": o.name, **o.labels()} for o in self.of_kind("Namespace")}
        for ns in ("kube-system", "default"):
            out.setdefault(ns, {"kubernetes.io/metadata.name": ns})
        return out

    def release(self, chart: str) -> dict[str, Any] | None:
        """The Helm release of ``chart`` (matched on the chart name's last path segment)."""
        for r in self.releases:
            if chart_name(r) == chart:
                return r
        return None

    def unrendered_releases(self) -> list[dict[str, Any]]:
        """Helm releases with no rendered object here (their pods are invisible to the checks)."""
        seen_dirs = {Path(o.file).parts[2] for o in self.objects if len(Path(o.file).parts) > 3}
        instances = {o.labels().get("app.kubernetes.io/instance") for o in self.objects}
        return [r for r in self.releases
                if r["name"] not in seen_dirs and str(r["inputs"].get("name", r["name"])) not in seen_dirs
                and str(r["inputs"].get("name", "")) not in instances]

    def cloud_resource(self, typ: str) -> list[dict[str, Any]]:
        return [r for r in self.cloud_resources if r["type"] == typ]


def chart_name(release: Mapping[str, Any]) -> str:
    return str(release["inputs"].get("chart", "")).rstrip("/").rsplit("/", 1)[-1]


@dataclass
class Topology:
    plan_dir: Path
    stack: str
    clusters: dict[str, Cluster]
    resources: list[dict[str, Any]]

    def all_objects(self) -> Iterator[Obj]:
        for c in self.clusters.values():
            yield from c.objects


# --- loading -------------------------------------------------------------------------------------

_CLUSTER_TYPES = {
    "fleet:gke:GkeCluster": "gcp",
    "fleet:eks:EksCluster": "aws",
    "fleet:aks:AksCluster": "azure",
    "fleet:local:LocalCluster": "local",
}


def _machine(cloud: str, name: str) -> catalog.MachineType | None:
    for acc in catalog.ACCELERATORS.values():
        for m in acc.machines_on(cloud):
            if m.name == name:
                return m
    return None


def _accelerator_of(cloud: str, name: str) -> catalog.Accelerator | None:
    for acc in catalog.ACCELERATORS.values():
        if any(m.name == name for m in acc.machines_on(cloud)):
            return acc
    return None


# System (CPU) machine shapes, from each cloud's machine-type page (read 2026-11):
# e2-standard-4 4 vCPU / 16 GB (cloud.google.com/compute/docs/general-purpose-machines#e2_machine_types),
# m6i.xlarge 4 vCPU / 16 GiB (aws.amazon.com/ec2/instance-types/m6i), Standard_D4s_v5 4 vCPU / 16 GiB
# (learn.microsoft.com/azure/virtual-machines/dv5-dsv5-series).
SYSTEM_SHAPES: Mapping[str, tuple[int, float]] = {
    "e2-standard-4": (4, 16.0), "m6i.xlarge": (4, 16.0), "Standard_D4s_v5": (4, 16.0),
}


def _taint_effect(e: str) -> str:
    return {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}.get(e, e)


def _pool(cloud: str, name: str, machine_type: str, labels: Mapping[str, str], taints: list[Taint],
          resource_name: str, spot: bool, gke_gpu_driver: str | None = None, aks_driver: str | None = None,
          ) -> NodePool:
    labels = {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "node.kubernetes.io/instance-type": machine_type, **labels}
    taints = list(taints)
    m, acc = _machine(cloud, machine_type), _accelerator_of(cloud, machine_type)
    pool = NodePool(name, cloud, machine_type, labels, taints, resource_name)
    if m is not None and acc is not None:
        pool.accelerators, pool.vcpus, pool.memory_gib = m.accelerators, m.vcpus, m.memory_gib
        pool.extended_resource = catalog.VENDORS[acc.vendor].resource_name
    elif machine_type in SYSTEM_SHAPES:
        pool.vcpus, pool.memory_gib = SYSTEM_SHAPES[machine_type]

    def add_taint(key: str, value: str, effect: str) -> None:
        if not any(t.key == key and t.effect == effect for t in taints):
            taints.append(Taint(key, value, effect, added_by_cloud=True))

    if cloud == "gcp":
        # Labels GKE puts on every node (cloud.google.com/kubernetes-engine/docs/concepts/node-pools,
        # "Node labels"; spot: .../concepts/spot-vms "cloud.google.com/gke-spot=true").
        labels["cloud.google.com/gke-nodepool"] = name
        if spot:
            labels["cloud.google.com/gke-spot"] = "true"
        if acc is not None and acc.is_tpu:
            # GKE taints TPU nodes google.com/tpu=present:NoSchedule and runs the TPU device plugin
            # itself (cloud.google.com/kubernetes-engine/docs/concepts/tpus, "TPU node taints").
            labels["cloud.google.com/gke-tpu-accelerator"] = acc.gke_accelerator or ""
            if m is not None and m.tpu_topology:
                labels["cloud.google.com/gke-tpu-topology"] = m.tpu_topology
            add_taint("google.com/tpu", "present", "NoSchedule")
            pool.cloud_device_plugin = True
        elif acc is not None:
            # GKE taints GPU nodes nvidia.com/gpu=present:NoSchedule and, when asked to install the
            # driver (gpuDriverInstallationConfig), runs its own NVIDIA device plugin DaemonSet
            # (cloud.google.com/kubernetes-engine/docs/how-to/gpus, "GKE-managed driver installation").
            labels["cloud.google.com/gke-accelerator"] = acc.gke_accelerator or ""
            add_taint("nvidia.com/gpu", "present", "NoSchedule")
            installs = bool(gke_gpu_driver) and gke_gpu_driver != "INSTALLATION_DISABLED"
            pool.cloud_device_plugin = pool.driver_installed_by_cloud = installs
    elif cloud == "aws":
        # EKS managed node groups label eks.amazonaws.com/nodegroup and eks.amazonaws.com/capacityType
        # (docs.aws.amazon.com/eks/latest/userguide/managed-node-groups.html); no taint is added.
        # The AL2023 NVIDIA AMI ships the driver but no device plugin (catalog.NODE_IMAGES).
        labels["eks.amazonaws.com/nodegroup"] = name
        labels["eks.amazonaws.com/capacityType"] = "SPOT" if spot else "ON_DEMAND"
    elif cloud == "azure":
        # AKS labels kubernetes.azure.com/agentpool; Spot pools get the label and the taint
        # kubernetes.azure.com/scalesetpriority=spot:NoSchedule whether declared or not
        # (learn.microsoft.com/azure/aks/spot-node-pool, catalog.CLOUD_TRAITS["azure"]).
        labels["kubernetes.azure.com/agentpool"] = name
        if spot:
            labels["kubernetes.azure.com/scalesetpriority"] = "spot"
            add_taint("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule")
        # gpuProfile.driver "None" leaves the node without a GPU driver (learn.microsoft.com/azure/aks/
        # gpu-cluster, "Skip GPU driver installation"); the device plugin is never AKS's.
        pool.driver_installed_by_cloud = (aks_driver or "Install") != "None"
    pool.taints = taints
    return pool


def _aks_taint(s: str) -> Taint:
    kv, _, effect = s.rpartition(":")
    key, _, value = kv.partition("=")
    return Taint(key, value, effect)


def _pools_of(cloud: str, resources: list[dict[str, Any]]) -> list[NodePool]:
    pools: list[NodePool] = []
    for r in resources:
        i, t = r["inputs"], r["type"]
        if t == "gcp:container/nodePool:NodePool":
            nc = i.get("nodeConfig") or {}
            guest = (nc.get("guestAccelerators") or [{}])[0]
            driver = (guest.get("gpuDriverInstallationConfig") or {}).get("gpuDriverVersion")
            pools.append(_pool(cloud, i.get("name", r["name"]), nc.get("machineType", ""), nc.get("labels") or {},
                               [Taint(x["key"], x.get("value", ""), _taint_effect(x["effect"]))
                                for x in nc.get("taints") or []],
                               r["name"], bool(nc.get("spot") or nc.get("preemptible")), gke_gpu_driver=driver))
        elif t == "aws:eks/nodeGroup:NodeGroup":
            pools.append(_pool(cloud, i.get("nodeGroupName", r["name"]), (i.get("instanceTypes") or [""])[0],
                               i.get("labels") or {},
                               [Taint(x["key"], x.get("value", ""), _taint_effect(x["effect"]))
                                for x in i.get("taints") or []],
                               r["name"], i.get("capacityType") == "SPOT"))
        elif t == "azure-native:containerservice:AgentPool":
            pools.append(_pool(cloud, i.get("agentPoolName", r["name"]), i.get("vmSize", ""), i.get("nodeLabels") or {},
                               [_aks_taint(x) for x in i.get("nodeTaints") or []], r["name"],
                               i.get("scaleSetPriority") == "Spot", aks_driver=(i.get("gpuProfile") or {}).get("driver")))
        elif t == "azure-native:containerservice:ManagedCluster":
            for p in i.get("agentPoolProfiles") or []:
                pools.append(_pool(cloud, p.get("name", "system"), p.get("vmSize", ""), p.get("nodeLabels") or {},
                                   [_aks_taint(x) for x in p.get("nodeTaints") or []], r["name"],
                                   p.get("scaleSetPriority") == "Spot"))
    return pools


_CRD_HEAD = re.compile(r"\Aapiversion: apiextensions\.k8s\.io/\S+\nkind: CustomResourceDefinition\nmetadata:\n"
                       r"(?:  .*\n)*?  name: (\S+)\n", re.IGNORECASE)


def _read_yaml_docs(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    m = _CRD_HEAD.match(text)
    if m and "\n---" not in text:
        # A CRD (charts ship megabytes of them): no check reads past its name, so skip the schema.
        return [{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                 "metadata": {"name": m.group(1).strip("'\"")}}]
    try:
        docs = list(yaml.load_all(text, Loader=_LOADER))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise VerifyInputError(f"{path}: not valid YAML: {e}".replace("\n", " ")) from None
    out = []
    for d in docs:
        if d is None:
            continue
        if not isinstance(d, dict) or "kind" not in d:
            raise VerifyInputError(f"{path}: not a Kubernetes object (no 'kind')")
        if d.get("kind") == "List":
            out.extend(x for x in d.get("items") or [] if isinstance(x, dict))
        else:
            out.append(d)
    return out


def load(plan_dir: str | Path, manifests: Mapping[str, Mapping[str, Any]] | None = None) -> Topology:
    """The topology of a plan directory.

    ``manifests`` (path under ``manifests/`` -> object), when given, are the objects the plan just
    wrote there, taken as they are instead of parsed back from the YAML (``fleet plan`` and ``fleet
    verify --stack`` hold them in memory; the result is the same, without reading a thousand files).
    """
    plan_dir = Path(plan_dir)
    plan_json = plan_dir / "plan.json"
    if not plan_json.is_file():
        raise VerifyInputError(f"{plan_dir}: no plan.json (write one with `python -m fleet plan --stack NAME --out DIR`)")
    try:
        plan = json.loads(plan_json.read_text())
        resources = list(plan["resources"])
    except (ValueError, KeyError, TypeError) as e:
        raise VerifyInputError(f"{plan_json}: not a plan written by `fleet plan` ({e})") from None
    by_urn = {r["urn"]: r for r in resources}

    def cluster_component(urn: str) -> dict[str, Any] | None:
        r = by_urn.get(urn)
        while r is not None:
            if r["type"] in _CLUSTER_TYPES:
                return r
            r = by_urn.get(r.get("parent", ""))
        return None

    clusters: dict[str, Cluster] = {}
    comp_of_cluster: dict[str, str] = {}
    for r in resources:
        if r["type"] == "pulumi:providers:kubernetes":
            comp = cluster_component(r["urn"])
            if comp is None and r["name"] in clusters:
                # Another stack's provider on a cluster this plan builds (a stack set's router part
                # reaches its cluster through the cluster part's kubeconfig): the same cluster.
                continue
            cloud = _CLUSTER_TYPES[comp["type"]] if comp else "local"
            clusters[r["name"]] = Cluster(r["name"], cloud, comp["urn"] if comp else "")
            comp_of_cluster[r["name"]] = comp["urn"] if comp else ""
    provider_name = {r["urn"]: r["name"] for r in resources if r["type"] == "pulumi:providers:kubernetes"}
    for r in resources:
        if r["type"] == "kubernetes:helm.sh/v3:Release" or r["type"] == "kubernetes:helm.sh/v4:Chart":
            c = clusters.get(provider_name.get(r.get("provider", ""), ""))
            if c is not None:
                c.releases.append(r)
        elif not r["type"].startswith(("kubernetes:", "fleet:", "pulumi:")):
            comp = cluster_component(r["urn"])
            for c in clusters.values():
                if comp is not None and c.component_urn == comp["urn"]:
                    c.cloud_resources.append(r)
    for c in clusters.values():
        c.pools = _pools_of(c.cloud, c.cloud_resources)

    mdir = plan_dir / "manifests"
    if manifests is not None:
        for rel in sorted(manifests, key=lambda r: Path(r).parts):
            parts = Path(rel).parts
            if len(parts) < 2 or not rel.endswith((".yaml", ".yml")):
                continue
            cluster = clusters.setdefault(parts[0], Cluster(parts[0], "local", ""))
            doc = manifests[rel]
            docs = [x for x in doc.get("items") or [] if isinstance(x, dict)] if doc.get("kind") == "List" else [doc]
            cluster.objects.extend(Obj(d, f"manifests/{rel}", parts[0]) for d in docs)
    elif mdir.is_dir():
        for sub in sorted(p for p in mdir.iterdir() if p.is_dir()):
            cluster = clusters.setdefault(sub.name, Cluster(sub.name, "local", ""))
            for path in sorted(sub.rglob("*")):
                if path.suffix in (".yaml", ".yml") and path.is_file():
                    rel = str(path.relative_to(plan_dir))
                    cluster.objects.extend(Obj(d, rel, sub.name) for d in _read_yaml_docs(path))
    return Topology(plan_dir, str(plan.get("stack", plan_dir.name)), clusters, resources)


# --- pod templates ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PodTemplate:
    """A pod spec some object makes pods from: a workload's template, or one a controller creates."""

    owner: Obj
    spec: Mapping[str, Any]
    labels: Mapping[str, str]
    namespace: str
    what: str = ""
    """How the pod comes about when the owner is not the workload itself (e.g. 'Istio gateway')."""

    @property
    def ref(self) -> str:
        return self.owner.ref + (f" ({self.what})" if self.what else "")


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


def workload_templates(cluster: Cluster) -> list[PodTemplate]:
    if "workloads" in cluster.cache:
        return cluster.cache["workloads"]
    out = cluster.cache["workloads"] = []
    for o in cluster.of_kind(*WORKLOAD_KINDS, "CronJob"):
        spec = o.spec
        if o.kind == "CronJob":
            spec = (spec.get("jobTemplate") or {}).get("spec") or {}
        tpl = spec.get("template") or {}
        out.append(PodTemplate(o, tpl.get("spec") or {}, dict((tpl.get("metadata") or {}).get("labels") or {}),
                               o.namespace or "default"))
    return out
