"""Helm charts offline: the chart cache, and every Helm release of a plan rendered by Helm itself.

``pulumi up`` installs each ``kubernetes:helm.sh/v3:Release`` with Helm's Go SDK embedded in the
Kubernetes provider. The offline plan renders the same releases with the same engine —
``helm-python-sdk`` binds Helm v4.2.3's Go SDK through a C ABI — from the same inputs the
program declares (chart, version, values, release name, namespace) and the cluster's
Kubernetes version as the capabilities, so what the plan shows is what the provider would
install, and every object a chart installs is checked like the program's own.

The chart cache is a directory of ``<chart>-<version>.tgz`` files, named as ``helm pull`` names
them. It is ``$FLEET_CHARTS_DIR``, else ``../shared/charts`` beside the checkout when present, else
a per-user cache directory (``$XDG_CACHE_HOME/inference-fleet/charts``). ``python -m fleet charts
pull`` fills it with exactly the pinned versions; ``python -m fleet charts list`` shows pinned vs
cached.

Rendering follows ``helm install``: templates rendered with ``.Release.IsInstall``, manifests split
as Helm splits them (``releaseutil.SplitManifests``), ``NOTES.txt`` and partials left out, test
hooks left out (``helm install`` never creates them; only ``helm test`` does), other hooks kept
(an install creates them), and the chart's ``crds/`` installed too (the provider's Release does
not set ``skipCrds``). A namespaced object with no namespace gets the release's, as Helm's client
does when it applies it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHARTS_ENV = "FLEET_CHARTS_DIR"
RENDER_CACHE_ENV = "FLEET_RENDER_CACHE"
"""Where rendered charts are cached by (chart digest, values, release, capabilities); ``off`` disables."""

RELEASE_TYPES = ("kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart")
BUNDLE_TYPES = ("kubernetes:yaml/v2:ConfigFile",)
HOOK = "helm.sh/hook"
TEST_HOOKS = {"test", "test-success", "test-failure"}
_RENDERER = "3"  # bump when the cached form of a render (or of a values check) changes

# Helm's releaseutil.SplitManifests separator (helm v4.2.3 pkg/release/v1/util/manifest.go).
_SPLIT = re.compile(r"(?:^|\s*\n)---\s*")


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml's safe loader, reading a bare ``=`` as the string it is to Kubernetes (YAML 1.1's
    ``!!value`` tag has no constructor; prometheus-operator's CRDs list ``=`` in enums)."""


_Loader.add_constructor("tag:yaml.org,2002:value", yaml.SafeLoader.construct_yaml_str)
_LOADER = _Loader
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# Built-in kinds that are not namespaced (Kubernetes API discovery, `kubectl api-resources
# --namespaced=false`); custom kinds take their scope from the CRDs the cluster gets.
CLUSTER_SCOPED = frozenset({
    "APIService", "CertificateSigningRequest", "ClusterRole", "ClusterRoleBinding", "ComponentStatus",
    "CSIDriver", "CSINode", "CustomResourceDefinition", "FlowSchema", "IngressClass",
    "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding", "MutatingWebhookConfiguration", "Namespace",
    "Node", "PersistentVolume", "PriorityClass", "PriorityLevelConfiguration", "RuntimeClass", "StorageClass",
    "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ValidatingWebhookConfiguration",
    "VolumeAttachment", "GatewayClass", "ClusterIssuer",
})


class ChartError(RuntimeError):
    """A chart cannot be found, loaded or rendered; the message is one line a user can act on."""


# --- the chart cache ----------------------------------------------------------------------------------

def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "inference-fleet"


def charts_dir(root: Path = ROOT) -> Path:
    """The chart cache: ``$FLEET_CHARTS_DIR``, else ``../shared/charts`` beside the checkout, else per user."""
    env = os.environ.get(CHARTS_ENV)
    if env:
        return Path(env)
    shared = root.parent / "shared" / "charts"
    if shared.is_dir():
        return shared
    return user_cache_dir() / "charts"


def archive_name(chart: str, version: str) -> str:
    return f"{chart}-{version}.tgz"


@dataclass(frozen=True)
class Pin:
    key: str
    chart: str
    repo: str
    version: str

    @property
    def archive(self) -> str:
        return archive_name(self.chart, self.version)

    @property
    def ref(self) -> str:
        return f"{self.repo}/{self.chart}" if self.repo.startswith("oci://") else self.chart


def pinned_charts() -> list[Pin]:
    """Every chart version the program pins: all of them in components/platform_versions.py."""
    from components import platform_versions as pins

    out = [Pin(key, c.chart, c.repo, c.version) for key, c in pins.CHARTS.items()]
    return sorted(out, key=lambda p: p.key)


def missing_message(chart: str, version: str, where: Path) -> str:
    return (f"chart {chart} {version} is not in the chart cache {where}: run `python -m fleet charts pull` "
            f"(or set {CHARTS_ENV}; `fleet plan --no-charts` skips rendering)")


def pull(dest: Path | None = None, pins: Iterable[Pin] | None = None) -> list[tuple[Pin, str]]:
    """Download each pinned chart that is not cached yet; returns (pin, error) for those that failed."""
    import helm_python as helm

    dest = dest or charts_dir()
    dest.mkdir(parents=True, exist_ok=True)
    failed: list[tuple[Pin, str]] = []
    for pin in pins if pins is not None else pinned_charts():
        if (dest / pin.archive).exists():
            continue
        try:
            with tempfile.TemporaryDirectory(dir=dest) as tmp:
                kwargs: dict[str, Any] = {"destination": tmp, "version": pin.version}
                if not pin.repo.startswith("oci://"):
                    kwargs["repo_url"] = pin.repo
                helm.pull(pin.ref, **kwargs)
                got = Path(tmp) / pin.archive
                if not got.exists():
                    names = sorted(p.name for p in Path(tmp).iterdir())
                    raise ChartError(f"the repository sent {names}, not {pin.archive}")
                got.replace(dest / pin.archive)
        except Exception as e:  # noqa: BLE001 - each failure is reported with its chart, the rest go on
            failed.append((pin, " ".join(str(e).split())))
    return failed


# --- loading and rendering ----------------------------------------------------------------------------

_CHARTS: dict[Path, Any] = {}


def load_chart(chart: str, version: str, where: Path | None = None):
    import helm_python as helm

    where = where or charts_dir()
    path = where / archive_name(chart, version)
    if not path.exists():
        raise ChartError(missing_message(chart, version, where))
    if path not in _CHARTS:
        try:
            _CHARTS[path] = helm.Chart.load(path)
        except helm.HelmError as e:
            raise ChartError(f"chart {chart} {version} ({path}) does not load: {' '.join(str(e).split())}") from None
    return _CHARTS[path]


def kube_version(minor: str) -> str:
    """Helm's capabilities version for a cluster spec's ``kubernetes_version`` (``1.33`` -> ``v1.33.0``)."""
    return f"v{minor}.0" if minor.count(".") == 1 else f"v{minor.lstrip('v')}"


def _render_native(chart, values: Mapping[str, Any], name: str, namespace: str, kube: str) -> dict[str, str]:
    # helm-python-sdk 0.2.2's Chart.render() forwards name/namespace/revision/is_install/is_upgrade
    # only; its C ABI's render options also take kube_version (libhelm_c 0.2.2 wrapper.decodeOptions),
    # which sets .Capabilities.KubeVersion as `helm template --kube-version` does. Pinned exactly.
    from helm_python import _native

    opts = {"name": name, "namespace": namespace, "kube_version": kube, "is_install": True}
    return json.loads(_native.call_string("helm_render", chart._raw(), json.dumps(dict(values)), json.dumps(opts)))


def _masked(obj: dict[str, Any]) -> dict[str, Any]:
    """A Secret a chart renders, its values masked as the plan masks the program's: they can be
    generated per render (grafana 10.3.0 templates/_helpers.tpl: `randAlphaNum 40` for the admin
    password when none is set), which would make plans differ run to run and put credentials in
    build/."""
    from fleetctl.plan import SECRET

    if obj.get("kind") != "Secret" or str(obj.get("apiVersion")) != "v1":
        return obj
    return {k: (SECRET if k in ("data", "stringData") and v else v) for k, v in obj.items()}


def split_manifests(rendered: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """(template, object) for every object Helm would send, in template order."""
    out = []
    for template in sorted(rendered):
        base = template.rsplit("/", 1)[-1]
        if base == "NOTES.txt" or base.startswith("_"):
            continue
        for doc in _SPLIT.split(rendered[template]):
            if not doc.strip():
                continue
            obj = yaml.load(doc, Loader=_LOADER)
            if obj:
                out.append((template, obj))
    return out


_DIGESTS: dict[tuple[Path, int, int], str] = {}


def _digest(path: Path) -> str:
    """sha256 of a chart archive, once per file version (size and mtime) in a process."""
    st = path.stat()
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _DIGESTS[key]


def _cached(key: str) -> Any:
    """A result cached in this process or in the render cache (None when absent or torn)."""
    if key in _MEMO:
        return _MEMO[key]
    cache = _render_cache()
    hit = cache / f"{key}.json" if cache else None
    if hit is not None and hit.exists():
        try:
            _MEMO[key] = json.loads(hit.read_text())
            return _MEMO[key]
        except ValueError:
            pass  # a torn write: compute again
    return None


def _store(key: str, value: Any) -> None:
    _MEMO[key] = value
    cache = _render_cache()
    if cache is not None:
        hit = cache / f"{key}.json"
        hit.parent.mkdir(parents=True, exist_ok=True)
        tmp = hit.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(value))
        tmp.replace(hit)


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([_RENDERER, *parts], sort_keys=True).encode()).hexdigest()


def _render_cache() -> Path | None:
    env = os.environ.get(RENDER_CACHE_ENV)
    if env == "off":
        return None
    return Path(env) if env else user_cache_dir() / "rendered"


_MEMO: dict[str, list] = {}


def render(chart: str, version: str, values: Mapping[str, Any], name: str, namespace: str, kube: str,
           where: Path | None = None) -> list[dict[str, Any]]:
    """Every object a ``helm install`` of this release creates: ``crds/`` first, then templates,
    each ``{"template", "hook", "object"}``. Cached by the chart's digest and every input."""
    where = where or charts_dir()
    path = where / archive_name(chart, version)
    if not path.exists():
        raise ChartError(missing_message(chart, version, where))
    # Keyed by the archive's digest, not its name: a chart re-pulled with other bytes renders again.
    # A hit needs no chart loaded at all (loading is most of a warm plan's chart time).
    key = _key(_digest(path), values, name, namespace, kube)
    found = _cached(key)
    if found is not None:
        return found
    c = load_chart(chart, version, where)
    import helm_python as helm

    try:
        rendered = _render_native(c, values, name, namespace, kube)
    except helm.HelmError as e:
        raise ChartError(f"chart {chart} {version} (release {name}) does not render: {' '.join(str(e).split())}") \
            from None
    items = []
    for crd in c.crds:
        for _, obj in split_manifests({crd.get("filename") or crd["name"]: crd["data"]}):
            items.append({"template": f"crds/{(crd.get('filename') or crd['name']).rsplit('/', 1)[-1]}",
                          "hook": "", "object": obj})
    for template, obj in split_manifests(rendered):
        hook = str(((obj.get("metadata") or {}).get("annotations") or {}).get(HOOK, ""))
        if hook and {h.strip() for h in hook.split(",")} <= TEST_HOOKS:
            continue
        items.append({"template": template, "hook": hook, "object": _masked(obj)})
    for item in items:  # YAML out is the slow part (the CRDs are megabytes): once per render, cached
        item["yaml"] = dump(item["object"])
    _store(key, items)
    return items


# --- values the program sets, against the values the chart has ---------------------------------------

def _schema_allows(schema: Mapping[str, Any] | None, path: list[str]) -> bool:
    """Whether the chart's values.schema.json declares ``path`` (resolving local $refs)."""
    if not schema:
        return False
    root = schema
    node: Any = schema
    for key in path:
        for _ in range(20):
            if isinstance(node, Mapping) and "$ref" in node and str(node["$ref"]).startswith("#/"):
                target: Any = root
                for part in str(node["$ref"])[2:].split("/"):
                    target = target.get(part, {}) if isinstance(target, Mapping) else {}
                node = target
            else:
                break
        if not isinstance(node, Mapping):
            return False
        props = node.get("properties") or {}
        if key in props:
            node = props[key]
        elif isinstance(node.get("additionalProperties"), Mapping) or node.get("additionalProperties") is True:
            return True
        elif any(re.search(p, key) for p in (node.get("patternProperties") or {})):
            return True
        else:
            return False
    return True


# A map the templates iterate over or write out whole takes any key: `range $k, $v := .Values.x`,
# `toYaml .Values.x` (e.g. cluster-autoscaler 9.46.6's extraArgs, templates/deployment.yaml), and
# `with .Values.x` whose block writes `toYaml .` (prometheus-node-exporter 4.49.2's securityContext
# and containerSecurityContext, templates/daemonset.yaml).
_FREE_FORM = re.compile(r"(?:range\s+(?:\$\w+\s*,\s*)?\$\w+\s*:=|toYaml)\s*\(?\s*\$?\.Values\.([A-Za-z0-9_.]+)")
_WITH_TOYAML = re.compile(r"with\s+\$?\.Values\.([A-Za-z0-9_.]+)\s*-?}}((?:(?!{{-?\s*end\b).)*?)toYaml\s+\.\s*[|}-]",
                          re.DOTALL)


def free_form_paths(templates: Iterable[Mapping[str, str]]) -> frozenset[str]:
    """Dotted values paths the templates write out whole; a template named under
    ``charts/<subchart>/`` (:func:`subchart_templates`) reads its values under ``<subchart>.``."""
    out = set()
    for t in templates:
        data, name = t.get("data", ""), t.get("name", "")
        prefix = ".".join(re.findall(r"(?:^|/)charts/([^/]+)/", name))
        for m in [*_FREE_FORM.finditer(data), *_WITH_TOYAML.finditer(data)]:
            out.add(f"{prefix}.{m.group(1)}" if prefix else m.group(1))
    return frozenset(out)


def subchart_templates(chart: str, version: str, where: Path | None = None) -> list[dict[str, str]]:
    """The templates of the subcharts a chart archive carries as directories (``charts/<name>/templates``,
    as ``helm package`` stores them), named ``charts/<values key>/templates/...``: the SDK's
    ``Chart.templates`` lists the parent's only. The values key is the dependency's alias where
    Chart.yaml gives one."""
    import tarfile

    path = (where or charts_dir()) / archive_name(chart, version)
    if path in _SUBCHART_TEMPLATES:
        return _SUBCHART_TEMPLATES[path]
    aliases = {d.get("name"): d.get("alias") or d.get("name")
               for d in (load_chart(chart, version, where).metadata.get("dependencies") or [])}
    out = []
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            parts = m.name.split("/")
            if m.isfile() and len(parts) >= 5 and parts[1] == "charts" and parts[3] == "templates":
                key = aliases.get(parts[2], parts[2])
                data = tar.extractfile(m).read().decode(errors="replace")  # type: ignore[union-attr]
                out.append({"name": f"charts/{key}/{'/'.join(parts[3:])}", "data": data})
    _SUBCHART_TEMPLATES[path] = out
    return out


_SUBCHART_TEMPLATES: dict[Path, list[dict[str, str]]] = {}


def unknown_values(values: Any, defaults: Any, schema: Mapping[str, Any] | None = None,
                   path: tuple[str, ...] = (), free: frozenset[str] = frozenset()) -> list[str]:
    """Dotted paths of values set that the chart does not have: not in its values.yaml (its
    subcharts' under their key) nor declared by its values.schema.json. A default that is an empty
    map (``nodeSelector: {}``), null or not a map takes anything below it, and so does a map in
    ``free`` (one the templates iterate over or write out whole)."""
    if not isinstance(values, Mapping) or not isinstance(defaults, Mapping) or not defaults \
            or ".".join(path) in free:
        return []
    out = []
    for key in sorted(values):
        here = (*path, str(key))
        if key in defaults:
            out += unknown_values(values[key], defaults[key], schema, here, free)
        elif not _schema_allows(schema, list(here)):
            out.append(".".join(here))
    return out


def _deep_merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(out.get(k), Mapping) and isinstance(v, Mapping) else v
    return out


_VALUE_FACTS: dict[Any, tuple[Any, dict[str, Any], frozenset[str]]] = {}


def _chart_value_facts(c: Any, key: Any) -> tuple[Any, dict[str, Any], frozenset[str]]:
    """(schema, defaults, free-form paths) of a loaded chart: the same for every release of it, so
    read once (each is a call into Helm; the templates' scan was the plan's slowest chart step)."""
    if key not in _VALUE_FACTS:
        # Coalesced values carry the subcharts' under their keys but drop keys whose default is null
        # (cluster-autoscaler's `autoDiscovery.clusterName:`), which values.yaml itself has.
        defaults = _deep_merge(c.merge_values({}), c.values)
        # Istio's charts keep their defaults under `_internal_defaults_do_not_set`, which
        # templates/zzz_profile.yaml merges under the user's values (istio 1.28.5, base and istiod).
        defaults = {**defaults, **(defaults.get("_internal_defaults_do_not_set") or {})}
        chart, version, where = key
        _VALUE_FACTS[key] = (c.schema, defaults,
                             free_form_paths([*c.templates, *subchart_templates(chart, version, where)]))
    return _VALUE_FACTS[key]


def values_problems(record: Mapping[str, Any], where: Path | None = None) -> list[str]:
    """Every value a release sets that its chart does not have, and its schema's complaints. Cached
    like a render, by the chart archive's digest and the values."""
    import helm_python as helm

    chart, version = release_chart(record)
    inputs = record["inputs"]
    values = inputs.get("values") or {}
    where = where or charts_dir()
    path = where / archive_name(chart, version)
    if not path.exists():
        raise ChartError(missing_message(chart, version, where))
    key = _key("values-problems", _digest(path), values)
    found = _cached(key)
    if found is not None:
        return list(found)
    c = load_chart(chart, version, where)
    schema, defaults, free = _chart_value_facts(c, (chart, version, where))
    problems = [f"{key}: not a value of chart {chart} {version} (values.yaml"
                f"{' or values.schema.json' if schema else ''})"
                for key in unknown_values(values, defaults, schema, free=free)]
    if schema:
        try:
            c.validate_schema(values)
        except helm.HelmValuesError as e:
            problems.append(f"values.schema.json of {chart} {version}: {' '.join(str(e).split())}")
    _store(key, problems)
    return list(problems)


# --- one plan's releases --------------------------------------------------------------------------------

def release_chart(record: Mapping[str, Any]) -> tuple[str, str]:
    """(chart name, version) of a Release/Chart record, as `helm pull` names its archive."""
    inputs = record["inputs"]
    chart = str(inputs.get("chart", ""))
    return chart.rstrip("/").rsplit("/", 1)[-1], str(inputs.get("version", ""))


def api_group(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def object_key(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """(API group, kind, namespace, name): one object in a cluster, whichever version it is written in."""
    meta = obj.get("metadata") or {}
    return api_group(str(obj.get("apiVersion", ""))), str(obj.get("kind", "")), str(meta.get("namespace") or ""), \
        str(meta.get("name", ""))


@dataclass
class RenderedRelease:
    urn: str
    name: str
    """The Release resource's name (its URN's last part)."""
    release: str
    """The Helm release name."""
    cluster: str
    """The cluster folder in manifests/ (the cluster's Kubernetes provider)."""
    chart: str
    version: str
    namespace: str
    kube_version: str
    objects: list[dict[str, Any]] = field(default_factory=list)
    """``{"template", "hook", "object", "yaml", "path"}`` for each object, ``path`` relative to
    manifests/, ``yaml`` its text when already dumped (never mutate ``object``: it is shared)."""
    values_problems: list[str] = field(default_factory=list)

    def listing(self) -> dict[str, Any]:
        return {"urn": self.urn, "release": self.release, "cluster": self.cluster, "chart": self.chart,
                "version": self.version, "namespace": self.namespace, "kube_version": self.kube_version,
                "values_problems": self.values_problems,
                "objects": [{"apiVersion": o["object"].get("apiVersion"), "kind": o["object"].get("kind"),
                             "namespace": (o["object"].get("metadata") or {}).get("namespace", ""),
                             "name": (o["object"].get("metadata") or {}).get("name", ""),
                             "template": o["template"], **({"hook": o["hook"]} if o["hook"] else {}),
                             "file": o["path"]} for o in self.objects]}


def _cluster_versions(resources: list[dict[str, Any]], spec) -> dict[str, str]:
    """Provider URN -> the Kubernetes version of the cluster it talks to: the cluster component
    that is the provider's ancestor, by the spec's cluster name."""
    by_urn = {r["urn"]: r for r in resources}
    versions = {c.name: c.kubernetes_version for c in spec.clusters}
    out = {}
    for r in resources:
        if r["type"] != "pulumi:providers:kubernetes":
            continue
        node = r
        while node is not None and node["name"] not in versions:
            node = by_urn.get(node["parent"])
        if node is not None:
            out[r["urn"]] = versions[node["name"]]
        elif len(versions) == 1:
            out[r["urn"]] = next(iter(versions.values()))
    return out


def _file_name(kind: str, namespace: str, name: str) -> str:
    return f"{kind}_{namespace or '_cluster'}_{name}.yaml"


def render_releases(resources: list[dict[str, Any]], spec, where: Path | None = None) -> list[RenderedRelease]:
    """Render every Helm release the plan declares, in URN order."""
    names = {r["urn"]: r["name"] for r in resources}
    versions = _cluster_versions(resources, spec)
    releases = []
    for r in resources:
        if r["type"] not in RELEASE_TYPES:
            continue
        inputs = r["inputs"]
        chart, version = release_chart(r)
        if not version:
            raise ChartError(f"{r['name']}: chart {chart} has no pinned version")
        release = str(inputs.get("name") or r["name"])
        namespace = str(inputs.get("namespace") or "default")
        minor = versions.get(r["provider"])
        if minor is None:
            raise ChartError(f"{r['name']}: no cluster of the spec owns its Kubernetes provider {r['provider']!r}")
        kube = kube_version(minor)
        rr = RenderedRelease(r["urn"], r["name"], release, names.get(r["provider"], "default"), chart, version,
                             namespace, kube)
        rr.values_problems = values_problems(r, where)
        rr.objects = [dict(item) for item in render(chart, version, inputs.get("values") or {}, release, namespace,
                                                    kube, where)]
        releases.append(rr)
    _place(releases)
    return releases


def _place(releases: list[RenderedRelease]) -> None:
    """Give namespaced objects their release's namespace where they name none, and each a file."""
    scoped: dict[str, set[str]] = {}
    for rr in releases:
        for item in rr.objects:
            o = item["object"]
            if o.get("kind") == "CustomResourceDefinition" and (o.get("spec") or {}).get("scope") == "Cluster":
                scoped.setdefault(rr.cluster, set()).add(str((o.get("spec") or {}).get("names", {}).get("kind")))
    for rr in releases:
        cluster_kinds = CLUSTER_SCOPED | scoped.get(rr.cluster, set())
        seen: dict[str, int] = {}
        for item in rr.objects:
            o = item["object"]  # shared with the render cache: copied before it is changed
            meta = o.get("metadata") or {}
            if o.get("kind") not in cluster_kinds and not meta.get("namespace"):
                meta = {**meta, "namespace": rr.namespace}
                o = item["object"] = {**o, "metadata": meta}
                item["yaml"] = None
            fname = _file_name(str(o.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name")))
            n = seen[fname] = seen.get(fname, 0) + 1
            if n > 1:  # the same object twice in one release: kept, and the owner check names it
                fname = fname.replace(".yaml", f"_{n}.yaml")
            item["path"] = f"{rr.cluster}/{rr.release}/{fname}"


def dump(obj: Mapping[str, Any]) -> str:
    return yaml.dump(obj, Dumper=_DUMPER, sort_keys=False, default_flow_style=False, width=100)


# --- one owner per object ---------------------------------------------------------------------------------

def bundle_objects(url: str) -> tuple[tuple[str, str, str], ...] | None:
    """(apiVersion, kind, name) of what a pinned CRD bundle installs; None for a URL we do not pin."""
    from components import platform_versions as pins

    for b in pins.BUNDLES.values():
        if b.url == url:
            return b.objects
    return None


def owners(resources: list[dict[str, Any]], manifests: Mapping[str, Mapping[str, Any]],
           releases: list[RenderedRelease]) -> list[str]:
    """Objects that two sources (a chart release, a CRD bundle, a component) would create in one
    cluster: ``(API group, kind, namespace, name)`` is one object whatever version writes it."""
    names = {r["urn"]: r["name"] for r in resources}
    found: dict[tuple[str, tuple[str, str, str, str]], list[str]] = {}

    def add(cluster: str, key: tuple[str, str, str, str], source: str) -> None:
        found.setdefault((cluster, key), []).append(source)

    for rel, obj in sorted(manifests.items()):
        add(rel.split("/", 1)[0], object_key(obj), f"component object manifests/{rel}")
    for r in resources:
        if r["type"] in BUNDLE_TYPES:
            objs = bundle_objects(str(r["inputs"].get("file", "")))
            for api, kind, name in objs or ():
                ns = ""
                add(names.get(r["provider"], "default"), (api_group(api), kind, ns, name),
                    f"CRD bundle {r['name']}")
    for rr in releases:
        for item in rr.objects:
            add(rr.cluster, object_key(item["object"]),
                f"chart {rr.chart} {rr.version} (release {rr.release}, {item['template']})")
    out = []
    for (cluster, (group, kind, ns, name)), sources in sorted(found.items()):
        if len(sources) > 1:
            what = f"{kind}{'.' + group if group else ''} {ns + '/' if ns else ''}{name}"
            out.append(f"cluster {cluster}: {what} has {len(sources)} owners: " + "; ".join(sources))
    return out


# --- what the charts fail by design -------------------------------------------------------------------

def resource_type(obj: Mapping[str, Any]) -> str:
    """The Pulumi type token of a Kubernetes object (``apps/v1`` Deployment -> ``kubernetes:apps/v1:Deployment``,
    core ``v1`` -> ``kubernetes:core/v1:...``), as the policy pack sees the program's own."""
    api = str(obj.get("apiVersion", ""))
    return f"kubernetes:{api if '/' in api else 'core/' + api}:{obj.get('kind', '')}"


def exemption(rr: RenderedRelease, obj: Mapping[str, Any], check: str):
    """The entry of components/chart_exemptions.py that exempts this chart object from ``check``
    (a checkov id or a policy-pack rule name), or None."""
    from components.chart_exemptions import EXEMPTIONS

    kind, name = str(obj.get("kind", "")), str((obj.get("metadata") or {}).get("name", ""))
    return next((e for e in EXEMPTIONS if e.covers(rr.release, rr.version, kind, name, check)), None)
