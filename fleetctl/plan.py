"""The offline plan: run the real program under Pulumi's mock engine and write what it declares.

``python -m fleet plan --stack dev`` loads ``Pulumi.dev.yaml``, validates the fleet spec, then runs
``__main__.py`` — the same file ``pulumi up`` runs — under ``pulumi.runtime.set_mocks`` with a
monitor that records every resource registration (type, name, parent, provider, dependencies,
options and inputs, secrets masked). It writes:

* ``plan.json`` — ``{"stack", "project", "outputs", "resources": [...]}``, sorted by URN;
* ``manifests/<provider>/<kind>_<namespace>_<name>.yaml`` — every Kubernetes object declared;
* ``manifests/<provider>/<release>/<kind>_<namespace>_<name>.yaml`` — every object each Helm release
  installs, rendered by Helm itself from the chart cache (:mod:`fleetctl.charts`); ``plan.json``'s
  ``charts`` lists them by release, with the release's chart, version and values problems.

Output is byte-identical for the same input. No cloud credentials, CLI or network are needed.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import runpy
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from fleetctl import mockdata
from fleet.spec import FleetSpec, SpecError, load_spec
from fleet.stackset import FLEETS_DIR, PART_KEY, SET_KEY, Part, fleet_file, parse_part, read_fleet_file

ROOT = Path(__file__).resolve().parent.parent
SECRET = "[secret]"
UNKNOWN = "[unknown]"

_SIG = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
_ASSET_SIG = "c44067f5952c0a294b673a41bacd8c17"
_ARCHIVE_SIG = "0def7320c3a5731c473e5ecbe6d01bc7"
_UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

BUNDLE_TYPES = {"kubernetes:yaml/v2:ConfigFile"}
"""Packaged components whose objects (a pinned CRD bundle's, components/platform_versions.BUNDLES) the
plan knows without expanding them: their records carry the options the program's transforms give each."""

# Kubernetes resource types that are not objects of their own (charts, bundles, providers).
NOT_MANIFESTS = {
    "kubernetes:helm.sh/v3:Release",
    "kubernetes:helm.sh/v4:Chart",
    "kubernetes:yaml/v2:ConfigFile",
    "kubernetes:yaml/v2:ConfigGroup",
    "kubernetes:kustomize/v2:Directory",
}


# --- stack files --------------------------------------------------------------------------------

@dataclass
class StackConfig:
    project: str
    stack: str
    source: str
    values: dict[str, Any]
    """Config values keyed ``project:key``; secure values replaced by a placeholder."""
    secret_keys: list[str]
    is_set: bool = False
    """``stack`` names a stack set (``fleets/<stack>.yaml``), planned as its parts (fleetctl.stackset)."""
    fleet_path: Path | None = None
    """The set's fleet file when not ``fleets/<set>.yaml`` (``fleet plan --stack SET --config-file F``)."""

    @property
    def set_name(self) -> str | None:
        """The stack set this stack is a part of (fleet/stackset.py), if any."""
        return self.stack if self.is_set else self.values.get(f"{self.project}:{SET_KEY}")

    @property
    def part(self) -> Part | None:
        if self.is_set or not self.set_name:
            return None
        return parse_part(self.values.get(f"{self.project}:{PART_KEY}"), self.source)

    @property
    def spec_source(self) -> str:
        """The file the fleet spec is read from: the stack file, or its set's fleet file."""
        if self.fleet_path is not None:
            return self.fleet_path.name
        return f"{FLEETS_DIR}/{self.set_name}.yaml" if self.set_name else self.source

    def fleet_raw(self) -> Any:
        if self.set_name:
            return read_fleet_file(self.fleet_path or fleet_file(ROOT, self.set_name))
        raw = self.values.get(f"{self.project}:fleet")
        return json.loads(raw) if isinstance(raw, str) else raw


def project_name() -> str:
    return yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["name"]


FLEET_FILES: dict[str, Path] = {}
"""Stack set -> the fleet file its parts read instead of ``fleets/<set>.yaml``, while
:func:`fleetctl.stackset.plan_set` plans an edited copy (``--config-file``)."""


def read_stack_config(stack: str, config_file: str | Path | None = None) -> StackConfig:
    """``Pulumi.<stack>.yaml`` (or ``config_file``); a stack set's fleet file when ``stack`` names a
    set (``fleets/<stack>.yaml``), or ``config_file`` is a fleet file (its one key is ``fleet:``)."""
    project = project_name()
    path = Path(config_file) if config_file else ROOT / f"Pulumi.{stack}.yaml"
    if not config_file and not path.exists() and fleet_file(ROOT, stack).exists():
        return StackConfig(project, stack, f"{FLEETS_DIR}/{stack}.yaml", {}, [], is_set=True,
                           fleet_path=FLEET_FILES.get(stack))
    if not path.exists():
        raise SpecError(path.name, [("", f"stack file {path} not found")])
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise SpecError(path.name, [("", f"not valid YAML: {e}".replace("\n", " "))]) from None
    if isinstance(doc, Mapping) and set(doc) == {"fleet"}:
        return StackConfig(project, stack, path.name, {}, [], is_set=True, fleet_path=path)
    values: dict[str, Any] = {}
    secrets: list[str] = []
    for key, value in (doc.get("config") or {}).items():
        full = key if ":" in key else f"{project}:{key}"
        if isinstance(value, Mapping) and set(value) == {"secure"}:
            # Ciphertext only the Pulumi CLI can decrypt: the plan carries a masked placeholder.
            values[full] = SECRET
            secrets.append(full)
        elif isinstance(value, str):
            values[full] = value
        else:
            values[full] = json.dumps(value)  # how the CLI passes structured config
    cfg = StackConfig(project, stack, path.name, values, secrets)
    if cfg.set_name in FLEET_FILES:
        cfg.fleet_path = FLEET_FILES[cfg.set_name]
    return cfg


# --- recording ------------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """A protobuf Struct value as plain JSON data, secrets masked and references named."""
    if isinstance(value, dict):
        sig = value.get(_SIG)
        if sig == _SECRET_SIG:
            return SECRET
        if sig == _RESOURCE_SIG:
            return {"$ref": value.get("urn", "")}
        if sig in (_ASSET_SIG, _ARCHIVE_SIG):
            return {"$asset": value.get("path") or value.get("uri") or "<inline>"}
        return {k: _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if value == _UNKNOWN:
        return UNKNOWN
    return value


def _unwrap(value: Any) -> Any:
    """A protobuf Struct value with its secrets revealed (for fingerprints only, never recorded)."""
    if isinstance(value, dict):
        if value.get(_SIG) == _SECRET_SIG:
            return _unwrap(value.get("value"))
        return {k: _unwrap(v) for k, v in value.items()}
    return value


def kubeconfig_fingerprint(kubeconfig: Any) -> str | None:
    """A non-secret fingerprint of a kubeconfig's active cluster (its server and CA), or None when the
    kubeconfig is not a string naming one. pulumi-kubernetes DiffConfig replaces the provider, and so
    every resource it manages, when the active cluster changes (provider/pkg/provider/provider.go:
    getActiveClusterFromConfig): the review compares this fingerprint, since the kubeconfig itself is
    recorded masked."""
    if kubeconfig == _UNKNOWN:
        return UNKNOWN
    if not isinstance(kubeconfig, str):
        return None
    try:
        doc = yaml.safe_load(kubeconfig)
    except yaml.YAMLError:
        return None
    if not isinstance(doc, dict):
        return None
    contexts = {c.get("name"): (c.get("context") or {}) for c in doc.get("contexts") or [] if isinstance(c, dict)}
    clusters = {c.get("name"): (c.get("cluster") or {}) for c in doc.get("clusters") or [] if isinstance(c, dict)}
    cluster = clusters.get(contexts.get(doc.get("current-context"), {}).get("cluster"))
    if not cluster or not cluster.get("server"):
        return None
    ident = json.dumps({k: cluster.get(k) for k in ("server", "certificate-authority-data")}, sort_keys=True)
    return "sha256:" + hashlib.sha256(ident.encode()).hexdigest()[:16]


def _provider_urn(ref: str) -> str:
    return ref.split("::" + ref.rsplit("::", 1)[-1])[0] if ref else ""


STACK_REFERENCE = "pulumi:pulumi:StackReference"
OFFLINE_ORGANIZATION = "organization"
"""The Pulumi organization offline plans run in (a DIY backend's name for its only one)."""


class FleetMocks:
    """Deterministic ids and outputs: a resource's outputs are its inputs plus mockdata's extras.

    A ``StackReference`` (read, not registered) gets the outputs :attr:`references` holds for the stack
    it names — what the offline plan of that stack exported (fleetctl.stackset) — in the shape the
    engine gives it (pulumi/stack_reference.py: ``outputs`` and ``secretOutputNames``)."""

    references: Mapping[str, Mapping[str, tuple[Any, bool]]] = {}
    """``org/project/stack`` -> output name -> (value, is secret)."""

    def new_resource(self, args):  # pulumi.runtime.MockResourceArgs
        if args.typ == STACK_REFERENCE:
            name = args.inputs.get("name") or args.resource_id
            if name not in self.references:
                raise ValueError(f"unknown stack {name!r}: the offline plan has no plan of it to read outputs from")
            outputs = self.references[name]
            return name, {"name": name, "outputs": {k: v for k, (v, _) in outputs.items()},
                          "secretOutputNames": sorted(k for k, (_, secret) in outputs.items() if secret)}
        extra = mockdata.RESOURCE_OUTPUTS.get(args.typ)
        state = dict(args.inputs)
        if extra:
            state.update(extra(args.name, args.inputs))
        return f"{args.name}-id", state

    def call(self, args):  # pulumi.runtime.MockCallArgs
        result = mockdata.CALL_RESULTS.get(args.token)
        out = result(args.args) if result else {}
        # What the real call takes from the provider it is given (its project, region, subscription).
        config = self.provider_inputs(_provider_urn(args.provider))
        out.update({k: config[key] for k, key in mockdata.FROM_PROVIDER.get(args.token, {}).items() if key in config})
        return out, []  # no check failures

    def provider_inputs(self, urn: str) -> dict[str, Any]:
        return {}


def _recording_monitor(references: Mapping[str, Mapping[str, tuple[Any, bool]]] | None = None):
    from google.protobuf import json_format
    from pulumi.runtime.mocks import MockMonitor, Mocks

    seen = threading.local()

    class _Mocks(FleetMocks, Mocks):
        def new_resource(self, args):
            # The transforms the registration carries, as callables (MockResourceArgs.transforms; the
            # mock engine runs none): RegisterResource below reads them on this same thread.
            seen.transforms = list(args.transforms or ())
            return super().new_resource(args)

        def provider_inputs(self, urn: str) -> dict[str, Any]:
            return dict((self.monitor.records.get(urn) or {}).get("inputs") or {})

    _Mocks.references = dict(references or {})

    class RecordingMonitor(MockMonitor):
        def __init__(self):
            super().__init__(_Mocks())
            self.mocks.monitor = self  # the calls answer from the providers recorded here
            self.records: dict[str, dict[str, Any]] = {}
            self.invokes: list[dict[str, str]] = []
            self.transforms: dict[str, list[Any]] = {}
            self._lock = threading.Lock()

        def _bundle_child_options(self, request, inputs: dict[str, Any]) -> dict[str, dict[str, Any]]:
            """The options each object of a CRD bundle gets from the transforms of its ConfigFile and the
            ConfigFile's ancestors, as the engine applies them to the children the kubernetes provider
            registers (the mocks expand no packaged component): ``Kind/name`` -> options, defaults left out."""
            import inspect

            import pulumi
            from pulumi.runtime.sync_await import _sync_await

            from fleetctl.charts import bundle_objects

            fns, parent = list(seen.transforms), request.parent
            while parent:
                fns += self.transforms.get(parent, [])
                parent = (self.records.get(parent) or {}).get("parent", "")
            out: dict[str, dict[str, Any]] = {}
            for api, kind, obj in bundle_objects(str(inputs.get("file", ""))) or ():
                args = pulumi.ResourceTransformArgs(custom=True, type_=f"kubernetes:{api}:{kind}",
                                                    name=f"{request.name}-{obj}", props={},
                                                    opts=pulumi.ResourceOptions())
                for fn in fns:
                    result = fn(args)
                    result = _sync_await(result) if inspect.isawaitable(result) else result
                    if result is not None:
                        args = pulumi.ResourceTransformArgs(custom=True, type_=args.type_, name=args.name,
                                                            props=result.props, opts=result.opts)
                opts = {"protect": args.opts.protect, "retain_on_delete": args.opts.retain_on_delete,
                        "delete_before_replace": args.opts.delete_before_replace,
                        "ignore_changes": sorted(args.opts.ignore_changes or ()) or None}
                if any(opts.values()):
                    out[f"{kind}/{obj}"] = {k: v for k, v in opts.items() if v}
            return out

        def Invoke(self, request):
            # Which provider each function call (getClientConfig, getAuthorizationToken, ...) was given,
            # as a resource's: "" is the default provider. The SDK's own calls (pulumi:pulumi:getResource)
            # need none.
            if not request.tok.startswith("pulumi:"):
                with self._lock:
                    self.invokes.append({"token": request.tok, "provider": _provider_urn(request.provider)})
            return super().Invoke(request)

        def RegisterResource(self, request):
            seen.transforms = []
            response = super().RegisterResource(request)
            if request.type == "pulumi:pulumi:Stack":
                return response
            raw = json_format.MessageToDict(request.object, preserving_proto_field_name=True)
            inputs = _plain(raw)
            record = {
                "urn": response.urn,
                "type": request.type,
                "name": request.name,
                "custom": bool(request.custom),
                "parent": request.parent,
                "provider": _provider_urn(request.provider),
                "dependencies": sorted(set(request.dependencies)),
                "property_dependencies": {
                    k: sorted(set(v.urns)) for k, v in sorted(request.propertyDependencies.items()) if v.urns
                },
                "options": {
                    k: v for k, v in {
                        "protect": request.protect or None,
                        "ignore_changes": sorted(request.ignoreChanges) or None,
                        "replace_on_changes": sorted(request.replaceOnChanges) or None,
                        "delete_before_replace": request.deleteBeforeReplace or None,
                        "retain_on_delete": request.retainOnDelete or None,
                        "version": request.version or None,
                        "remote": request.remote or None,
                    }.items() if v is not None
                },
                "inputs": inputs,
            }
            if seen.transforms:
                self.transforms[response.urn] = list(seen.transforms)
            if request.type in BUNDLE_TYPES:
                record["child_options"] = self._bundle_child_options(request, inputs)
            if request.type == "pulumi:providers:kubernetes":
                fingerprint = kubeconfig_fingerprint(_unwrap(raw.get("kubeconfig")))
                if fingerprint:
                    record["fingerprints"] = {"kubeconfig": fingerprint}
            with self._lock:
                self.records[response.urn] = record
            return response

    return RecordingMonitor()


# --- running ----------------------------------------------------------------------------------

@dataclass
class Plan:
    stack: str
    project: str
    spec: FleetSpec
    resources: list[dict[str, Any]]
    outputs: dict[str, Any]
    seconds: float = 0.0
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Relative manifest path -> Kubernetes object the program declares."""
    missing_secrets: list[dict[str, str]] = field(default_factory=list)
    """Secrets the stack cannot be deployed without that its config does not set: ``key``, ``why``,
    ``command``. ``pulumi preview``/``up`` fail on each; the offline plan lists them."""
    releases: list[Any] | None = None
    """Every Helm release rendered (:class:`fleetctl.charts.RenderedRelease`); None with ``charts=False``."""
    chart_problems: list[str] = field(default_factory=list)
    """Values a release sets that its chart does not have, and objects with two owners in a cluster."""
    invokes: list[dict[str, str]] = field(default_factory=list)
    """Every provider function the program called (``token``, ``provider``: the URN of the provider it
    was given, "" for the default one), sorted; not written to plan.json."""
    exports: dict[str, tuple[Any, bool]] = field(default_factory=dict)
    """Stack output -> (value, is secret), secrets revealed: what another stack's StackReference
    reads offline (fleetctl.stackset). Never written."""
    parts: list[dict[str, Any]] = field(default_factory=list)
    """A stack set's plan: the part stacks it planned (``stack``, ``part``, ``resources``)."""
    part_plans: dict[str, "Plan"] = field(default_factory=dict)
    """A stack set's plan: each part stack's own plan."""

    @property
    def chart_manifests(self) -> dict[str, dict[str, Any]]:
        """Relative manifest path -> object a chart installs."""
        return {o["path"]: o["object"] for rr in self.releases or () for o in rr.objects}

    def chart_objects(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [m for _, m in sorted(self.chart_manifests.items()) if kind is None or m.get("kind") == kind]

    def all_objects(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The program's objects and every chart's: what the clusters would hold."""
        return self.objects(kind) + self.chart_objects(kind)

    def by_type(self, typ: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["type"] == typ]

    def find(self, typ: str, name: str) -> dict[str, Any]:
        for r in self.resources:
            if r["type"] == typ and r["name"] == name:
                return r
        raise KeyError(f"no {typ} named {name!r} in the plan")

    def objects(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [m for _, m in sorted(self.manifests.items()) if kind is None or m.get("kind") == kind]

    def to_json(self) -> str:
        doc = {"stack": self.stack, "project": self.project, "outputs": self.outputs,
               "resources": self.resources, "missing_secrets": self.missing_secrets}
        if self.parts:
            doc["parts"] = self.parts
        if self.releases is not None:
            doc["charts"] = {"rendered": [rr.listing() for rr in self.releases], "problems": self.chart_problems}
        else:
            doc["charts"] = {"rendered": None, "skipped": "fleet plan --no-charts"}
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _reset_runtime() -> None:
    from pulumi.runtime import settings

    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()
    settings.set_root_resource(None)


def _resolve(stack_outputs: Mapping[str, Any]) -> dict[str, tuple[Any, bool, bool]]:
    """Each stack output, awaited once: (value, is secret, is known); an unknown one's value is None."""
    from pulumi import Output
    from pulumi.runtime.sync_await import _sync_await

    async def one(value: Any) -> tuple[Any, bool, bool]:
        out = Output.from_input(value)
        secret, known = await out.is_secret(), await out.is_known()
        return (await out.future() if known else None), secret, known

    return {k: _sync_await(one(v)) for k, v in sorted(stack_outputs.items())}


def _shown_outputs(resolved: Mapping[str, tuple[Any, bool, bool]]) -> dict[str, Any]:
    """The outputs as plan.json shows them: a secret as ``[secret]``, an unknown as ``[unknown]``."""
    return {k: SECRET if secret else UNKNOWN if not known else _plain(json.loads(json.dumps(value, default=str)))
            for k, (value, secret, known) in resolved.items()}


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """CPython's cycle collector paused for the duration, as it was before afterwards.

    A plan is a short run that builds a large heap which lives until the process ends — the
    provider SDKs' classes and type objects, imported as the program first touches each module —
    and makes little cyclic garbage. With the default thresholds the collector walks that growing
    heap again and again: on multicloud 9 full collections (and ~1,550 young ones) took about 2 s
    of a 10 s ``fleet verify`` and freed ~100 objects; the young ones freed ~100,000 (a few MB:
    peak RSS 362 MB with the collector, 366 MB without). Reference counting still frees everything
    else at once; garbage in cycles waits for the next collection after the plan."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def run_plan(stack: str, config_file: str | Path | None = None, *, as_engine: bool = False,
             charts: bool = True, references: Mapping[str, Mapping[str, tuple[Any, bool]]] | None = None) -> Plan:
    """Validate the stack's spec, run ``__main__.py`` under mocks and return what it declared;
    with ``charts``, every Helm release rendered too (:class:`fleetctl.charts.ChartError` when a
    chart is not in the cache).

    ``as_engine``: run the program as ``pulumi preview`` would (preview semantics, no offline-plan
    leniency), so what fails closed there fails here too.

    A stack set (``fleets/<stack>.yaml``) is planned as its parts, together (fleetctl.stackset).
    ``references``: the outputs each ``StackReference`` reads (``org/project/stack`` -> output ->
    (value, secret)); a set's router part planned alone reads its cluster parts' plans."""
    with _no_cycle_collection():
        return _run_plan(stack, config_file, as_engine=as_engine, charts=charts, references=references)


def _run_plan(stack: str, config_file: str | Path | None, *, as_engine: bool, charts: bool,
              references: Mapping[str, Mapping[str, tuple[Any, bool]]] | None) -> Plan:
    started = time.perf_counter()
    cfg = read_stack_config(stack, config_file)
    if cfg.is_set or (references is None and cfg.part is not None and cfg.part.kind == "router"):
        from fleetctl import stackset

        return stackset.plan_set(cfg, as_engine=as_engine, charts=charts, only=None if cfg.is_set else stack)
    spec = load_spec(cfg.fleet_raw(), cfg.spec_source)  # fails fast, before Pulumi is even imported

    import pulumi
    from pulumi.runtime import config as pulumi_config, mocks, settings
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    _reset_runtime()
    pulumi_config.set_all_config(cfg.values, cfg.secret_keys)
    monitor = _recording_monitor(references)
    mocks.set_mocks(monitor.mocks, project=cfg.project, stack=stack, preview=as_engine, monitor=monitor,
                    organization=OFFLINE_ORGANIZATION)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import program

    program.PLAN_SOURCE = cfg.source
    program.FLEET_FILES = dict(FLEET_FILES)
    program.OFFLINE_PLAN = not as_engine  # list missing secrets instead of failing (program.read_secrets)
    _sync_await(run_pulumi_func(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")))
    resolved = _resolve(settings.get_root_resource().outputs)
    outputs = _shown_outputs(resolved)
    exports = {k: (value, secret) for k, (value, secret, _) in resolved.items()}
    resources = [monitor.records[u] for u in sorted(monitor.records)]
    plan = Plan(stack=stack, project=cfg.project, spec=spec, resources=resources, outputs=outputs,
                missing_secrets=[{"key": m.key, "why": m.why, "command": m.command + (
                    f" --stack {stack}" if cfg.set_name else "")} for m in program.MISSING_SECRETS],
                exports=exports)
    plan.manifests = _manifests(resources)
    plan.invokes = sorted({(i["token"], i["provider"]): i for i in monitor.invokes}.values(),
                          key=lambda i: (i["token"], i["provider"]))
    if charts:
        from fleetctl import charts as fcharts

        plan.releases = fcharts.render_releases(resources, spec)
        plan.chart_problems = [f"release {rr.release} ({rr.cluster}): {p}" for rr in plan.releases
                               for p in rr.values_problems]
        plan.chart_problems += fcharts.owners(resources, plan.manifests, plan.releases)
    plan.seconds = time.perf_counter() - started
    del pulumi
    return plan


# --- manifests ------------------------------------------------------------------------------------

def _ordered(obj: dict[str, Any]) -> dict[str, Any]:
    head = {k: obj[k] for k in ("apiVersion", "kind", "metadata") if k in obj}
    return {**head, **{k: obj[k] for k in sorted(obj) if k not in head}}


def _manifests(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    names = {r["urn"]: r["name"] for r in resources}
    out: dict[str, dict[str, Any]] = {}
    for r in resources:
        inputs = r["inputs"]
        if not r["type"].startswith("kubernetes:") or r["type"] in NOT_MANIFESTS:
            continue
        if "kind" not in inputs or "apiVersion" not in inputs:
            continue
        meta = inputs.get("metadata") or {}
        cluster = names.get(r["provider"], "default")
        ns = meta.get("namespace", "_cluster")
        path = f"{cluster}/{inputs['kind']}_{ns}_{meta.get('name', r['name'])}.yaml"
        out[path] = _ordered(inputs)
    return out


def _write_if_changed(path: str, text: str) -> None:
    """``path`` holds ``text`` afterwards; a file that already holds exactly it is left as it is.

    Planning again into the same directory is the common case (``fleet verify --stack`` writes
    build/plan/<stack> each time), and nearly every file comes out the same: reading ~1,100 files
    (37 MB on multicloud) back from the page cache and comparing is cheaper than truncating and
    rewriting them, which on this kind of disk waits on writeback (0.3 s vs 0.6-2.9 s wall here).
    Compared by content, never by size or mtime; unchanged files keep their mtime."""
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except (OSError, UnicodeDecodeError):
        pass
    with open(path, "w") as f:
        f.write(text)


def write_plan(plan: Plan, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_if_changed(str(out_dir / "plan.json"), plan.to_json())
    mdir = str(out_dir / "manifests")
    # Files are rewritten in place (when they changed) and only the stale ones removed: deleting a
    # thousand files first and creating them again was the slowest part of writing a plan (unlink,
    # on this kind of disk). Paths are plain strings: hashing pathlib paths for the stale-file sets
    # cost more than the comparisons.
    old = {os.path.join(d, f) for d, _, files in os.walk(mdir) for f in files}
    written: set[str] = set()
    made: set[str] = set()

    def put(rel: str, text: str) -> None:
        p = os.path.join(mdir, rel)
        parent = os.path.dirname(p)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        _write_if_changed(p, text)
        written.add(p)

    for rel, obj in plan.manifests.items():
        put(rel, yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=100))
    if plan.releases:
        from fleetctl.charts import dump

        for item in (o for rr in plan.releases for o in rr.objects):
            put(item["path"], item["yaml"] or dump(item["object"]))
    for p in old - written:
        os.unlink(p)
    for d, _, _ in os.walk(mdir, topdown=False):  # deepest first, so emptied parents go too
        if d != mdir and not os.listdir(d):
            os.rmdir(d)


def _helm_version() -> str:
    import helm_python

    return helm_python.helm_sdk_version()


def summary(plan: Plan) -> str:
    from fleetctl.unchecked import lines as unchecked_lines

    by_urn = {r["urn"]: r for r in plan.resources}

    def top_component(r: dict[str, Any]) -> str:
        while r["parent"] in by_urn:
            r = by_urn[r["parent"]]
        return f"{r['type']} {r['name']}" if not r["custom"] else "(stack)"

    comps = Counter(top_component(r) for r in plan.resources)
    types = Counter(r["type"] for r in plan.resources)
    if plan.releases is None:
        charts = "Helm charts not rendered (--no-charts)"
    else:
        charts = (f"{sum(len(rr.objects) for rr in plan.releases)} more from {len(plan.releases)} Helm releases "
                  "rendered")
    lines = [f"stack {plan.stack}: {len(plan.resources)} resources, {len(plan.manifests)} Kubernetes "
             f"objects ({charts}), planned offline in {plan.seconds:.2f} s"]
    if plan.parts:
        lines += ["", "a stack set: its stacks, in deploy order (fleet/stackset.py):"]
        lines += [f"  {p['resources']:4d}  {p['stack']}  ({p['part']})" for p in plan.parts]
    lines += ["", "by component:"]
    lines += [f"  {n:4d}  {c}" for c, n in sorted(comps.items(), key=lambda kv: (-kv[1], kv[0]))]
    lines += ["", "by type:"]
    lines += [f"  {n:4d}  {t}" for t, n in sorted(types.items(), key=lambda kv: (-kv[1], kv[0]))]
    if plan.releases:
        lines += ["", "Helm releases (rendered by Helm " + _helm_version() + "):"]
        lines += [f"  {len(rr.objects):4d}  {rr.cluster}/{rr.release}: {rr.chart} {rr.version} in {rr.namespace}"
                  for rr in plan.releases]
    if plan.missing_secrets:
        lines += ["", "missing secrets (pulumi preview/up fail without them; `fleet plan --strict` too):"]
        lines += [f"  {m['key']}: {m['why']}\n    set it: {m['command']}" for m in plan.missing_secrets]
    lines += unchecked_lines(plan)
    if plan.outputs:
        lines += ["", "outputs:"]
        lines += [f"  {k} = {json.dumps(v)[:120]}" for k, v in plan.outputs.items()]
    return "\n".join(lines)
