"""``python -m fleet diff --stack S --base REF``: an offline review of what a change does to a stack.

The stack is planned twice with the offline plan (``python -m fleet plan``, no cloud, no CLI):
once in the tree at ``REF`` (extracted with ``git archive`` into a temporary directory, so the
base is planned by the code *at* ``REF``) and once in the working tree. The two ``plan.json``
files are compared by URN and the result is printed as Markdown, for a terminal or a PR comment:

* **added / removed** — URNs only on one side;
* **changed** — the same URN with different inputs, listed as property paths ``old → new``
  (secrets stay masked: the plan only ever records ``[secret]``);
* **replaced** — a change to a property the provider cannot update in place (the upstream facts in
  :mod:`fleetctl.diff_rules`, each with its source file and version, plus any ``replace_on_changes``
  option a resource declares), or a resource deleted and
  re-created under a new name — a renamed pool: same type, same (or correspondingly renamed)
  parent, mostly the same inputs. Pulumi would show that as delete + create; a reviewer needs to
  read it as "this pool is drained and rebuilt";
* **as ``up`` would do it** — inputs an ``ignore_changes`` option covers keep their old value (a
  resource changed only there reads as ``ignored``), and an update the cloud would refuse says so
  (an EKS group whose minSize passes its ignored desiredSize); a resource whose provider is replaced
  (its kubeconfig names another cluster — compared by the plan's non-secret fingerprint, since the
  kubeconfig is recorded masked — or depends on a resource being replaced) or that moves to another
  cluster's provider is replaced;
* every object a Helm release installs (rendered by :mod:`fleetctl.charts`, listed in plan.json's
  ``charts``) is compared too, as a child of its Release named ``<release>:<namespace>/<name>``: a
  chart bump in components/platform_versions.py or a values change reads as the objects it
  adds, changes and removes in the cluster;
* grouped by top-level component, with the policy results (``policy.json`` beside each plan,
  when the tree has the offline policy evaluation) and the monthly cost delta (:mod:`fleet.cost`).
"""

from __future__ import annotations

import difflib
import fnmatch
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from fleet import cost as fcost
from fleetctl import diff_rules
from fleetctl.cost import cost_of_stack

ROOT = Path(__file__).resolve().parent.parent
SECRET = "[secret]"
UNKNOWN = "[unknown]"
MAX_PROPS_SHOWN = 25
MAX_MARKDOWN = 60_000
"""GitHub rejects comments over 65,536 characters; the review is cut below that."""

RENAME_SIMILARITY = 0.5
"""Share of identical input properties above which a removed and an added resource of the same
type and (corresponding) parent are one logical resource renamed."""


class DiffError(RuntimeError):
    """The diff cannot be produced (unknown ref, a side that does not plan)."""


# --- planning both sides ------------------------------------------------------------------------------

@dataclass
class Side:
    label: str
    tree: Path
    plan: dict[str, Any] | None
    """plan.json, or None when the stack does not exist on this side."""
    policy: Any = None
    """policy.json beside the plan, when this tree evaluates the policy pack offline."""
    policy_available: bool = False
    cost: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    verify: dict[str, Any] | None = None
    """verify.json beside the plan (``fleet verify``'s findings), when this tree writes one."""


def _git(repo: Path, *args: str, binary: bool = False) -> Any:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)
    if proc.returncode != 0:
        raise DiffError(f"git {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout if binary else proc.stdout.decode().strip()


def _env() -> dict[str, str]:
    from fleetctl.charts import CHARTS_ENV, charts_dir

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONHASHSEED"] = "0"
    # Both sides render their charts from this checkout's chart cache: the base is extracted into a
    # temporary directory with no ../shared beside it.
    env[CHARTS_ENV] = str(charts_dir().resolve())
    return env


def extract(repo: Path, ref: str, dest: Path) -> str:
    """The tree of ``ref`` under ``dest``; returns the commit it resolved to."""
    try:
        sha = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except DiffError:
        sha = ""
    if not sha:
        raise DiffError(f"unknown git ref {ref!r} in {repo} (in CI, fetch the base branch: fetch-depth: 0)")
    data = _git(repo, "archive", "--format=tar", sha, binary=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return sha


def _plan_tree(tree: Path, stack: str, out: Path, label: str) -> Side:
    side = Side(label=label, tree=tree, plan=None)
    side.policy_available = any((tree / d / "policy_eval.py").exists() for d in ("fleetctl", "fleet"))  # new, old layout
    if not (tree / f"Pulumi.{stack}.yaml").exists():
        side.notes.append(f"stack `{stack}` does not exist at {label}")
        return side
    proc = subprocess.run(
        [sys.executable, "-m", "fleet", "plan", "--stack", stack, "--out", str(out)],
        cwd=tree, env=_env(), capture_output=True, text=True, check=False, timeout=900,
    )
    plan_file = out / "plan.json"
    if proc.returncode == 2 or not plan_file.exists():
        err = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise DiffError(f"the {stack} stack does not plan at {label} (exit {proc.returncode}): "
                        + "\n".join(err[-15:]))
    if proc.returncode != 0:
        side.notes.append(f"`fleet plan` exited {proc.returncode} at {label} (mandatory policy violations "
                          "or chart problems)")
    side.plan = json.loads(plan_file.read_text())
    side.plan["resources"] = side.plan["resources"] + chart_resources(side.plan, out / "manifests", side.notes,
                                                                      label)
    policy_file = out / "policy.json"
    if policy_file.exists():
        side.policy = json.loads(policy_file.read_text())
    verify_file = out / "verify.json"
    if verify_file.exists():
        side.verify = json.loads(verify_file.read_text())
    side.cost = _cost_of(tree, stack)
    return side


def chart_resources(plan: Mapping[str, Any], manifests: Path, notes: list[str] | None = None,
                    label: str = "") -> list[dict[str, Any]]:
    """Every object a Helm release renders (plan.json ``charts``, the object from its manifest file),
    as a resource under its Release: so a chart bump or a values change reads as the objects it
    adds, changes and removes, the way Pulumi names a helm.v4 Chart's children (``<chart>:<ns>/<name>``)."""
    charts = plan.get("charts")
    if not charts or charts.get("rendered") is None:
        if notes is not None:
            notes.append(f"Helm charts were not rendered at {label}: the objects they install are not compared"
                         if charts else f"the plan at {label} predates chart rendering: every chart object "
                         "reads as created")
        return []
    releases = {r["urn"]: r for r in plan.get("resources", [])}
    out = []
    for rel in charts["rendered"]:
        parent = releases.get(rel["urn"], {})
        scheme, project, qualified, rname = rel["urn"].split("::", 3)
        for o in rel["objects"]:
            api = str(o["apiVersion"])
            typ = f"kubernetes:{api if '/' in api else 'core/' + api}:{o['kind']}"
            name = f"{rname}:{o['namespace'] + '/' if o['namespace'] else ''}{o['name']}"
            obj = yaml.load((manifests / o["file"]).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            # chart_object: Helm installs and upgrades it (a patch in place), not the kubernetes provider.
            out.append({"urn": f"{scheme}::{project}::{qualified}${typ}::{name}", "type": typ, "name": name,
                        "custom": True, "chart_object": True, "parent": rel["urn"],
                        "provider": parent.get("provider", ""),
                        "dependencies": [], "property_dependencies": {}, "options": {}, "inputs": obj})
    return out


def _cost_of(tree: Path, stack: str) -> dict[str, Any] | None:
    """The tree's own cost report (its catalog's prices); this code's, when the tree predates it."""
    if (tree / "fleet" / "cost.py").exists():
        proc = subprocess.run([sys.executable, "-m", "fleet", "cost", "--stack", stack, "--json"],
                              cwd=tree, env=_env(), capture_output=True, text=True, check=False, timeout=300)
        if proc.returncode == 0:
            return json.loads(proc.stdout)
    try:
        return cost_of_stack(stack, str(tree / f"Pulumi.{stack}.yaml")).to_dict()
    except Exception:  # noqa: BLE001 - an old stack file the current spec cannot read: no cost
        return None


# --- comparing ----------------------------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf property paths of a recorded input value: ``spec.template.spec.containers[0].image``;
    keys that are not plain identifiers are quoted: ``metadata.labels["app.kubernetes.io/name"]``."""
    out: dict[str, Any] = {}
    if isinstance(value, dict) and value and "$ref" not in value:
        for k in sorted(value):
            key = f".{k}" if _PLAIN_KEY.match(k) else f'["{k}"]'
            if not prefix and key.startswith("."):
                key = key[1:]
            out.update(flatten(value[k], prefix + key))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = value
    return out


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    body = re.escape(pattern).replace(r"\[\*\]", r"\[\d+\]")
    return re.compile(rf"^{body}(?:$|[.\[])")


DECLARED = diff_rules.Rule("(option) replace_on_changes", diff_rules.ENGINE, "applyReplaceOnChanges")


def verdict(typ: str, path: str, declared: Iterable[str] = (),
            ctx: Mapping[str, Any] | None = None) -> diff_rules.Rule | None:
    """The upstream rule a change to ``path`` of a ``typ`` resource falls under (a replace or a change the
    provider never applies), or None for a plain in-place update. A conditional rule holds only when its
    condition does on ``ctx`` (the two sides' inputs and providers); without ``ctx`` it is assumed to."""
    declared = list(declared)
    if "*" in declared or any(_pattern_regex(p).match(path) for p in declared):
        return DECLARED
    found = None
    for rule in diff_rules.rules_for(typ):
        if rule.path != "*" and not _pattern_regex(rule.path).match(path):
            continue
        if rule.when is not None and ctx is not None and not diff_rules.CONDITIONS[rule.when](rule.path, ctx):
            continue
        if rule.effect == diff_rules.REPLACE:
            return rule
        found = found or rule
    return found


def forces_replace(typ: str, path: str, declared: Iterable[str] = (), ctx: Mapping[str, Any] | None = None) -> bool:
    """Whether changing ``path`` of a ``typ`` resource makes the provider replace it."""
    rule = verdict(typ, path, declared, ctx)
    return rule is not None and rule.effect == diff_rules.REPLACE


@dataclass
class PropChange:
    path: str
    old: Any
    new: Any
    forces_replace: bool = False
    rule: diff_rules.Rule | None = None
    """The upstream fact behind the verdict (a replace, or a change the provider never applies)."""
    ignored: bool = False
    """An ``ignore_changes`` option covers it: ``up`` keeps the old value."""

    @property
    def not_applied(self) -> bool:
        return self.rule is not None and self.rule.effect == diff_rules.NOT_APPLIED


@dataclass
class ResourceChange:
    action: str
    """``create``, ``delete``, ``update``, ``replace``, or ``ignored`` (every change is one an
    ``ignore_changes`` option keeps: ``up`` leaves the resource as it is)."""
    type: str
    name: str
    urn: str
    component: str
    old_name: str | None = None
    """For a rename: the name the resource had at the base."""
    properties: list[PropChange] = field(default_factory=list)
    reason: str = ""
    fails: str = ""
    """Why ``up`` would fail on this change, and what to do first (empty: it would not)."""


def _components(resources: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """URN -> "type name" of its top-level component; "stack" for resources directly in the stack."""
    out = {}
    for urn, r in resources.items():
        top = r
        while top["parent"] in resources:
            top = resources[top["parent"]]
        out[urn] = "stack" if top.get("custom") else f"{top['type']} {top['name']}"
    return out


def _prop_changes(typ: str, old: Mapping[str, Any], new: Mapping[str, Any],
                  declared: Iterable[str] = (), ctx: Mapping[str, Any] | None = None) -> list[PropChange]:
    a, b = flatten(old), flatten(new)
    declared = list(declared)
    changes = []
    for path in sorted(set(a) | set(b)):
        va, vb = a.get(path, None), b.get(path, None)
        if path in a and path in b and va == vb:
            continue
        rule = None if ctx is not None and ctx.get("chart_object") else verdict(typ, path, declared, ctx)
        changes.append(PropChange(path, va if path in a else None, vb if path in b else None,
                                  rule is not None and rule.effect == diff_rules.REPLACE, rule))
    return changes


def _cite(rule: diff_rules.Rule) -> str:
    return f"{rule.why}: {rule.source}"


def _reason(props: list[PropChange]) -> str:
    forced = [p for p in props if p.forces_replace]
    if forced:
        rules: dict[str, list[str]] = {}
        for p in forced:
            rules.setdefault(_cite(p.rule), []).append(p.path)  # type: ignore[arg-type]
        return "; ".join(f"{', '.join(paths)} cannot change in place ({cite})" for cite, paths in rules.items())
    live = [p for p in props if not p.ignored]
    if not live:
        return (f"{', '.join(p.path for p in props)}: in ignore_changes, so `up` keeps the current value "
                "(whatever owns it at run time, e.g. an autoscaler, keeps owning it)")
    idle = [p for p in props if p.not_applied]
    if idle:
        return (f"{', '.join(p.path for p in idle)}: the provider has no update for it, so `up` succeeds and the "
                f"cloud keeps the old value ({_cite(idle[0].rule)})")  # type: ignore[arg-type]
    return ""


def _similarity(old: Mapping[str, Any], new: Mapping[str, Any]) -> float:
    a, b = flatten(old), flatten(new)
    keys = set(a) | set(b)
    if not keys:
        return 1.0
    return sum(1 for k in keys if k in a and k in b and a[k] == b[k]) / len(keys)


def _depth(urn: str, resources: Mapping[str, Mapping[str, Any]]) -> int:
    d, r = 0, resources.get(urn)
    while r is not None and r["parent"] in resources:
        d, r = d + 1, resources[r["parent"]]
    return d


def pair_renames(base: Mapping[str, Mapping[str, Any]], head: Mapping[str, Mapping[str, Any]],
                 removed: Iterable[str], added: Iterable[str]) -> dict[str, str]:
    """Removed URN -> added URN for resources that are one logical resource renamed: same type,
    parents equal or themselves paired, inputs at least :data:`RENAME_SIMILARITY` alike (names
    at least that alike too, for components, which record no inputs). Parents are paired before
    children, so a renamed component's children follow it; ties go to the closest name."""
    pairs: dict[str, str] = {}
    free_added = set(added)
    for old in sorted(removed, key=lambda u: (_depth(u, base), u)):
        o = base[old]
        parent = pairs.get(o["parent"], o["parent"])
        best, best_score = None, (RENAME_SIMILARITY, RENAME_SIMILARITY)
        for new in sorted(free_added):
            n = head[new]
            if n["type"] != o["type"] or n["parent"] != parent:
                continue
            by_name = difflib.SequenceMatcher(None, o["name"], n["name"]).ratio()
            if not o["inputs"] and not n["inputs"] and by_name < RENAME_SIMILARITY:
                continue
            score = (_similarity(o["inputs"], n["inputs"]), by_name)
            if score >= best_score and (best is None or score > best_score):
                best, best_score = new, score
        if best is not None:
            pairs[old] = best
            free_added.discard(best)
    return pairs


@dataclass
class DiffResult:
    stack: str
    base_ref: str
    base_sha: str
    head_label: str
    changes: list[ResourceChange]
    unchanged: int
    base: Side
    head: Side
    cost_delta: dict[str, Any] | None
    policy: dict[str, Any]
    verify: dict[str, Any] = field(default_factory=dict)

    def count(self, action: str) -> int:
        return sum(1 for c in self.changes if c.action == action)

    def find(self, name: str, typ: str | None = None) -> ResourceChange:
        return next(c for c in self.changes if c.name == name and (typ is None or c.type == typ))


def _inputs(r: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    """A resource's inputs as compared: a masked kubeconfig is compared by its non-secret fingerprint
    (the active cluster it names, recorded by the plan), since the provider replaces on exactly that.
    Only when both sides recorded one: a plan from before fingerprints has none."""
    inputs = dict(r["inputs"])
    theirs = other.get("fingerprints") or {}
    for key, fp in (r.get("fingerprints") or {}).items():
        if key in theirs:
            inputs[key] = f"{inputs.get(key, SECRET)} (cluster {fp})"
    return inputs


def _ignored(path: str, patterns: Iterable[str]) -> bool:
    """Whether an ``ignore_changes`` pattern covers ``path`` (the engine resets it to the old input:
    pulumi step_generator.go processIgnoreChanges)."""
    return any(_pattern_regex(p).match(path) for p in patterns)


def _get(inputs: Mapping[str, Any], path: str) -> Any:
    node: Any = inputs
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _eks_scaling(o: Mapping[str, Any], n: Mapping[str, Any], ignored: list[PropChange]) -> str:
    """What EKS does with a node group update whose desiredSize is ignored: UpdateNodegroupConfig
    rejects minSize > desiredSize and desiredSize > maxSize with InvalidParameterException ("Minimum
    capacity 1 can't be greater than desired size 0": terraform-aws-modules/terraform-aws-eks#3306, #944)."""
    if not any(p.path == "scalingConfig.desiredSize" for p in ignored):
        return ""
    desired = _get(o, "scalingConfig.desiredSize")
    lo, hi = _get(n, "scalingConfig.minSize"), _get(n, "scalingConfig.maxSize")
    if not all(isinstance(v, int) for v in (desired, lo, hi)):
        return ""
    if lo <= desired <= hi:
        return ""
    cluster, group = n.get("clusterName", "<cluster>"), n.get("nodeGroupName", "<group>")
    bound = f"minSize {lo} > desiredSize {desired}" if lo > desired else f"desiredSize {desired} > maxSize {hi}"
    fix = lo if lo > desired else hi
    return (f"`up` fails: desiredSize is in ignore_changes, so it stays {desired} while the group gets {bound}; "
            "EKS rejects that (InvalidParameterException, terraform-aws-modules/terraform-aws-eks#3306). "
            f"Set it first: `aws eks update-nodegroup-config --cluster-name {cluster} --nodegroup-name {group} "
            f"--scaling-config desiredSize={fix}`")


CONSEQUENCES = {"aws:eks/nodeGroup:NodeGroup": _eks_scaling}
"""Type -> what the cloud does with an update once ``ignore_changes`` has kept some of its fields."""

PROVIDER_REPLACED = diff_rules.Rule(
    "(provider)", diff_rules.ENGINE,
    "its provider is replaced, and the engine replaces every resource a replaced provider manages "
    "(calculateDependentReplacements)")
PROVIDER_MOVED = diff_rules.Rule(
    "(provider)", diff_rules.ENGINE,
    "its provider changes to one whose DiffConfig reports a replacement (providerChanged): another cluster")


def compare(base_plan: Mapping[str, Any] | None, head_plan: Mapping[str, Any] | None) -> tuple[list[ResourceChange], int]:
    """The resource changes from ``base_plan`` to ``head_plan`` (plan.json documents), and how
    many resources are unchanged.

    As ``pulumi up`` decides them: inputs an ``ignore_changes`` option covers keep their old value
    (listed, but not applied); a resource whose provider is replaced — its kubeconfig names another
    cluster, or depends on a resource being replaced, so it is unknown at preview — or that moves to a
    provider for another cluster is replaced."""
    base = {r["urn"]: r for r in (base_plan or {}).get("resources", [])}
    head = {r["urn"]: r for r in (head_plan or {}).get("resources", [])}
    comp_base, comp_head = _components(base), _components(head)
    removed = sorted(set(base) - set(head))
    added = sorted(set(head) - set(base))
    renames = pair_renames(base, head, removed, added)
    pending: dict[str, ResourceChange] = {}
    unchanged: set[str] = set()

    def declared(r: Mapping[str, Any]) -> list[str]:
        return list((r.get("options") or {}).get("replace_on_changes") or [])

    def ctx(o: Mapping[str, Any], n: Mapping[str, Any]) -> dict[str, Any]:
        return {"old": o["inputs"], "new": n["inputs"], "chart_object": bool(n.get("chart_object")),
                "provider_old": (base.get(o.get("provider") or "") or {}).get("inputs") or {},
                "provider_new": (head.get(n.get("provider") or "") or {}).get("inputs") or {}}

    for urn in sorted(set(base) & set(head)):
        o, n = base[urn], head[urn]
        props = _prop_changes(n["type"], _inputs(o, n), _inputs(n, o), declared(n), ctx(o, n))
        ignore = list((n.get("options") or {}).get("ignore_changes") or [])
        for p in props:
            if ignore and _ignored(p.path, ignore):
                p.ignored, p.forces_replace, p.rule = True, False, None
        for opt in sorted(set(o.get("options") or {}) | set(n.get("options") or {})):
            vo, vn = (o.get("options") or {}).get(opt), (n.get("options") or {}).get(opt)
            if vo != vn:
                props.append(PropChange(f"(option) {opt}", vo, vn))
        if not props:
            unchanged.add(urn)
            continue
        ch = ResourceChange(action="update", type=n["type"], name=n["name"], urn=urn, component=comp_head[urn],
                            properties=props)
        _settle(ch)
        consequence = CONSEQUENCES.get(n["type"])
        if ch.action == "update" and consequence:
            ch.fails = consequence(o["inputs"], n["inputs"], [p for p in props if p.ignored])
        pending[urn] = ch
    # Providers: a replaced provider (or one whose kubeconfig depends on a resource being replaced, so
    # that it is unknown at preview: DiffConfig replaces on a computed kubeconfig) replaces everything
    # it manages; a resource handed to a provider for another cluster is replaced too.
    replaced = {u for u, c in pending.items() if c.action == "replace"} | set(renames)
    dead_providers = set()
    for urn, r in head.items():
        if not r["type"].startswith("pulumi:providers:") or urn not in base:
            continue
        if urn in replaced or replaced & set(r.get("dependencies") or ()):
            dead_providers.add(urn)
            if urn not in replaced:
                why = sorted(replaced & set(r.get("dependencies") or ()))
                ch = pending.get(urn) or ResourceChange("update", r["type"], r["name"], urn, comp_head[urn])
                ch.properties.append(PropChange("kubeconfig", SECRET, UNKNOWN, True, diff_rules.Rule(
                    "kubeconfig", diff_rules.K8S_PROVIDER,
                    f"DiffConfig: a computed kubeconfig replaces (it depends on {', '.join(_name(u) for u in why)}, "
                    "replaced)")))
                _settle(ch)
                pending[urn] = ch
                unchanged.discard(urn)
    for urn in sorted(set(base) & set(head)):
        o, n = base[urn], head[urn]
        if not n.get("custom") or n["type"].startswith("pulumi:providers:"):
            continue
        rule, old_p, new_p = None, o.get("provider") or "", n.get("provider") or ""
        if old_p != new_p:
            if _other_cluster(base.get(old_p), head.get(new_p)) or new_p in dead_providers:
                rule = PROVIDER_MOVED
        elif new_p in dead_providers:
            rule = PROVIDER_REPLACED
        if old_p != new_p or rule:
            ch = pending.get(urn) or ResourceChange("update", n["type"], n["name"], urn, comp_head[urn])
            ch.properties.append(PropChange("(provider)", _name(old_p), _name(new_p), rule is not None, rule))
            _settle(ch)
            pending[urn] = ch
            unchanged.discard(urn)
    changes = list(pending.values())
    for old, new in renames.items():
        o, n = base[old], head[new]
        props = _prop_changes(n["type"], _inputs(o, n), _inputs(n, o), declared(n), ctx(o, n))
        changes.append(ResourceChange(
            action="replace", type=n["type"], name=n["name"], urn=new, component=comp_head[new],
            old_name=o["name"], properties=props,
            reason=f"renamed {o['name']} → {n['name']}: a new name is a new URN, so `up` creates it and deletes "
                   "the old one"))
    for urn in added:
        if urn not in renames.values():
            r = head[urn]
            changes.append(ResourceChange("create", r["type"], r["name"], urn, comp_head[urn]))
    for urn in removed:
        if urn not in renames:
            r = base[urn]
            changes.append(ResourceChange("delete", r["type"], r["name"], urn, comp_base[urn]))
    order = {"replace": 0, "update": 1, "create": 2, "delete": 3, "ignored": 4}
    changes.sort(key=lambda c: (c.component, order[c.action], c.type, c.name))
    return changes, len(unchanged)


def _name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1] if urn else "(default provider)"


def _other_cluster(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """Whether two providers reach different clusters: by their kubeconfig fingerprints when both plans
    recorded one, else by their recorded (masked) inputs, which differ in context or cluster names."""
    fo, fn = ((old or {}).get("fingerprints") or {}).get("kubeconfig"), ((new or {}).get("fingerprints") or {}).get(
        "kubeconfig")
    if fo and fn:
        return fo != fn or UNKNOWN in (fo, fn)
    return (old or {}).get("inputs") != (new or {}).get("inputs") or (old or {}).get("type") != (new or {}).get("type")


def _settle(ch: ResourceChange) -> None:
    """Action and reason from the properties: replace if any forces it, ``ignored`` if every change is
    one ``ignore_changes`` keeps, update otherwise."""
    live = [p for p in ch.properties if not p.ignored]
    ch.action = ("replace" if any(p.forces_replace for p in live) else "update" if live else "ignored")
    ch.reason = _reason(ch.properties)


# --- policy results -----------------------------------------------------------------------------------

def _violations(policy: Any) -> list[dict[str, Any]]:
    """The violations listed in a policy.json, whatever its exact shape (a list, or under
    ``violations``/``results``)."""
    if isinstance(policy, Mapping):
        for key in ("violations", "results", "findings"):
            if isinstance(policy.get(key), list):
                policy = policy[key]
                break
        else:
            return []
    if not isinstance(policy, list):
        return []
    out = []
    for v in policy:
        if not isinstance(v, Mapping):
            continue
        if v.get("passed") is True or v.get("ok") is True:
            continue
        out.append({
            "rule": str(v.get("rule") or v.get("policy") or v.get("policyName") or v.get("name") or "?"),
            "level": str(v.get("level") or v.get("enforcement") or v.get("enforcementLevel") or "advisory"),
            "resource": str(v.get("resource") or v.get("urn") or "stack"),
            "name": str(v.get("name") or v.get("resource") or v.get("urn") or "(stack)").rsplit("::", 1)[-1],
            "message": str(v.get("message") or v.get("description") or ""),
            "remediation": str(v.get("remediation") or ""),
        })
    return out


def _policy_summary(base: Side, head: Side) -> dict[str, Any]:
    if not head.policy_available:
        return {"evaluated": False, "reason": "this tree has no offline policy evaluation (fleetctl/policy_eval.py)"}
    if head.policy is None:
        return {"evaluated": False, "reason": "the plan wrote no policy.json"}
    now = _violations(head.policy)
    before = _violations(base.policy) if base.policy is not None else []

    def key(v: Mapping[str, str]) -> tuple[str, str]:
        return v["rule"], v["resource"]

    before_keys = {key(v) for v in before}
    now_keys = {key(v) for v in now}
    return {
        "evaluated": True,
        "violations": now,
        "new": [v for v in now if key(v) not in before_keys],
        "resolved": [v for v in before if key(v) not in now_keys] if base.policy is not None else [],
        "base_evaluated": base.policy is not None,
    }


def _verify_summary(base: Side, head: Side) -> dict[str, Any]:
    """``fleet verify`` at the working tree, with what is new and what is resolved against the base."""
    if head.verify is None:
        return {"evaluated": False, "reason": "the plan wrote no verify.json"}

    def key(f: Mapping[str, str]) -> tuple[str, ...]:
        return f["check"], f["cluster"], f["object"], f["problem"]

    now = list(head.verify.get("findings") or [])
    before = list(base.verify.get("findings") or []) if base.verify is not None else []
    before_keys, now_keys = {key(f) for f in before}, {key(f) for f in now}
    return {"evaluated": True, "findings": now, "new": [f for f in now if key(f) not in before_keys],
            "resolved": [f for f in before if key(f) not in now_keys], "base_evaluated": base.verify is not None}


# --- the whole diff -----------------------------------------------------------------------------------

def diff_stack(stack: str, base_ref: str, repo: Path | None = None) -> DiffResult:
    """Plan ``stack`` at ``base_ref`` and in the working tree of ``repo`` and compare them."""
    repo = Path(repo or ROOT).resolve()
    with tempfile.TemporaryDirectory(prefix="fleet-diff-") as tmp:
        tmpdir = Path(tmp)
        base_tree = tmpdir / "base"
        base_tree.mkdir()
        sha = extract(repo, base_ref, base_tree)
        base = _plan_tree(base_tree, stack, tmpdir / "out-base", f"`{base_ref}`")
        head = _plan_tree(repo, stack, tmpdir / "out-head", "the working tree")
    if base.plan is None and head.plan is None:
        raise DiffError(f"stack {stack!r} exists neither at {base_ref} nor in the working tree")
    changes, unchanged = compare(base.plan, head.plan)
    cost_delta = None
    if base.cost is not None or head.cost is not None:
        cost_delta = _cost_delta(base.cost, head.cost)
    return DiffResult(stack=stack, base_ref=base_ref, base_sha=sha, head_label="working tree",
                      changes=changes, unchanged=unchanged, base=base, head=head,
                      cost_delta=cost_delta, policy=_policy_summary(base, head),
                      verify=_verify_summary(base, head))


def _cost_delta(base: Mapping[str, Any] | None, head: Mapping[str, Any] | None) -> dict[str, Any]:
    zero = {s: 0.0 for s in fcost.SCALES}

    def pools(doc: Mapping[str, Any] | None) -> dict[str, Mapping[str, float]]:
        return {p["pool"]: p["monthly"] for p in (doc or {}).get("pools", [])}

    b, h = pools(base), pools(head)
    per_pool = []
    for name in sorted(set(b) | set(h)):
        bm, hm = b.get(name, zero), h.get(name, zero)
        d = {s: hm[s] - bm[s] for s in fcost.SCALES}
        if any(abs(v) >= 0.005 for v in d.values()):
            per_pool.append({"pool": name, "base": dict(bm), "head": dict(hm), "delta": d,
                             "status": "added" if name not in b else "removed" if name not in h else "changed"})
    bt = dict((base or {}).get("totals", zero))
    ht = dict((head or {}).get("totals", zero))
    return {"base": bt, "head": ht, "delta": {s: ht[s] - bt[s] for s in fcost.SCALES}, "pools": per_pool,
            "base_known": base is not None, "head_known": head is not None}


# --- Markdown -----------------------------------------------------------------------------------------

SYMBOL = {"replace": "±", "update": "~", "create": "+", "delete": "−", "ignored": "·"}


def _short(v: Any, limit: int = 90) -> str:
    if v is None:
        return "(none)"
    text = v if v == SECRET else json.dumps(v, sort_keys=True, ensure_ascii=False)
    text = text.replace("`", "'").replace("\n", " ")
    return f"`{text if len(text) <= limit else text[:limit - 1] + '…'}`"


def render_markdown(result: DiffResult) -> str:
    c = result.changes
    lines = [
        f"<!-- fleet-diff:{result.stack} -->",
        f"### Offline plan diff: stack `{result.stack}`",
        "",
        f"`{result.base_ref}` (`{result.base_sha[:12]}`) → {result.head_label}. Planned offline "
        "(`python -m fleet plan`, Pulumi mocks): inputs the program declares, not the clouds' live state.",
        "",
        f"**{result.count('update')} to update · {result.count('replace')} to replace · "
        f"{result.count('create')} to create · {result.count('delete')} to delete** · {result.unchanged} unchanged"
        + (f" · {result.count('ignored')} changed only where ignore_changes keeps the old value"
           if result.count("ignored") else "")
        + (f" · **{sum(1 for ch in c if ch.fails)} would fail**" if any(ch.fails for ch in c) else ""),
    ]
    for note in result.base.notes + result.head.notes:
        lines += ["", f"> {note}"]
    groups: dict[str, list[ResourceChange]] = {}
    for ch in c:
        groups.setdefault(ch.component, []).append(ch)
    for comp, items in groups.items():
        title = comp if comp == "stack" else f"`{comp.split(' ', 1)[0]}` **{comp.split(' ', 1)[1]}**"
        lines += ["", f"#### {title}", ""]
        for ch in items:
            head = f"- {SYMBOL[ch.action]} **{ch.action}** `{ch.type}` `{ch.name}`"
            if ch.reason:
                head += f" — {ch.reason}"
            lines.append(head)
            if ch.fails:
                lines.append(f"  - ⚠ **{ch.fails}**")
            for p in ch.properties[:MAX_PROPS_SHOWN]:
                mark = (" **(forces replacement)**" if p.forces_replace and not ch.old_name
                        else " **(not applied by the provider)**" if p.not_applied
                        else " (ignore_changes: kept as it is)" if p.ignored else "")
                lines.append(f"  - `{p.path}`: {_short(p.old)} → {_short(p.new)}{mark}")
            if len(ch.properties) > MAX_PROPS_SHOWN:
                lines.append(f"  - … and {len(ch.properties) - MAX_PROPS_SHOWN} more properties")
    if not c:
        lines += ["", "No resource changes."]

    lines += ["", "#### Policy", ""]
    pol = result.policy
    if not pol["evaluated"]:
        lines.append(f"Not evaluated: {pol['reason']}.")
    else:
        v = pol["violations"]
        lines.append(f"{len(v)} violation(s) at the working tree; {len(pol['new'])} new, "
                     f"{len(pol['resolved'])} resolved" + ("" if pol["base_evaluated"] else
                                                          " (the base was not evaluated)") + ".")
        if v:
            lines += ["", "| level | rule | resource | finding | fix |", "|---|---|---|---|---|"]
            new_keys = {(x["rule"], x["resource"]) for x in pol["new"]}

            def cell(text: str) -> str:
                return text.replace("|", "\\|").replace("\n", " ")[:200]

            for x in v[:50]:
                flag = " (new)" if (x["rule"], x["resource"]) in new_keys else ""
                lines.append(f"| {x['level']}{flag} | `{x['rule']}` | `{x['name']}` | {cell(x['message'])} "
                             f"| {cell(x['remediation'])} |")
            if len(v) > 50:
                lines.append(f"\n… and {len(v) - 50} more (policy.json beside the plan)")

    missing = (result.head.plan or {}).get("missing_secrets") or []
    if missing:
        lines += ["", "#### Missing secrets (blocking)", "",
                  "`pulumi preview` and `pulumi up` of this stack fail until these are set:", "",
                  "| secret | why | set it |", "|---|---|---|"]
        lines += [f"| `{m['key']}` | {m['why']} | `{m['command']}` |" for m in missing]

    lines += ["", "#### Verify (would it serve?)", ""]
    ver = result.verify
    if not ver.get("evaluated"):
        lines.append(f"Not verified: {ver.get('reason', 'no result')}.")
    else:
        f_all = ver["findings"]
        lines.append(f"{len(f_all)} finding(s) at the working tree; {len(ver['new'])} new, {len(ver['resolved'])} "
                     "resolved" + ("" if ver["base_evaluated"] else " (the base was not verified)") + ".")
        if f_all:
            new_keys = {(x["check"], x["cluster"], x["object"], x["problem"]) for x in ver["new"]}
            lines += ["", "| check | object | problem | fix |", "|---|---|---|---|"]
            for x in f_all[:50]:
                flag = " (new)" if (x["check"], x["cluster"], x["object"], x["problem"]) in new_keys else ""
                cell = lambda t: str(t).replace("|", "\\|").replace("\n", " ")[:240]  # noqa: E731
                lines.append(f"| {x['check']}{flag} | `{x['object']}` ({x['cluster']}) | {cell(x['problem'])} "
                             f"| {cell(x['fix'])} |")
            if len(f_all) > 50:
                lines.append(f"\n… and {len(f_all) - 50} more (verify.json beside the plan)")

    lines += ["", "#### Cost (USD per month, 730 h)", ""]
    d = result.cost_delta
    if d is None:
        lines.append("Not priced: neither side's stack file could be read by `fleet cost`.")
    else:
        lines.append("| scale | base | head | delta |")
        lines.append("|---|--:|--:|--:|")
        for s in fcost.SCALES:
            lines.append(f"| {s} | {fcost.usd(d['base'][s])} | {fcost.usd(d['head'][s])} "
                         f"| {fcost.usd(d['delta'][s], signed=True)} |")
        if d["pools"]:
            lines += ["", "| pool | change | min | typical | max |", "|---|---|--:|--:|--:|"]
            for p in d["pools"]:
                lines.append(f"| {p['pool']} | {p['status']} | "
                             + " | ".join(fcost.usd(p["delta"][s], signed=True) for s in fcost.SCALES) + " |")
        else:
            lines += ["", "No pool's cost changes."]
    text = "\n".join(lines) + "\n"
    if len(text) > MAX_MARKDOWN:
        cut = text[:MAX_MARKDOWN].rsplit("\n", 1)[0]
        text = cut + "\n\n… (cut: the full review is in the job's `diff.md` artifact)\n"
    return text


def render_error(stack: str, base_ref: str, error: str) -> str:
    """The review when there is no diff to show: which side failed and why."""
    fence = "~~~"
    return (f"<!-- fleet-diff:{stack} -->\n### Offline plan diff: stack `{stack}`\n\n"
            f"The diff against `{base_ref}` could not be produced:\n\n{fence}\n{error[:MAX_MARKDOWN // 2]}\n{fence}\n")


def to_json(result: DiffResult) -> dict[str, Any]:
    """A machine-readable form of the diff (used by tests and scripts)."""
    return {
        "stack": result.stack, "base": result.base_sha, "unchanged": result.unchanged,
        "changes": [{"action": ch.action, "type": ch.type, "name": ch.name, "old_name": ch.old_name,
                     "component": ch.component, "reason": ch.reason, "fails": ch.fails,
                     "properties": [{"path": p.path, "old": p.old, "new": p.new, "forces_replace": p.forces_replace,
                                     "effect": "ignored" if p.ignored else p.rule.effect if p.rule else "update",
                                     "source": _cite(p.rule) if p.rule else None} for p in ch.properties]}
                    for ch in result.changes],
        "cost": result.cost_delta, "policy": result.policy, "verify": result.verify,
    }
