"""``fleet diff``, part 2: compare two plans, as ``pulumi up`` would decide — pure, no I/O.

Resources are matched by URN: **added / removed** are on one side only (a removed and an added resource
of the same type and corresponding parent, mostly alike, are one renamed resource: a replace);
**changed** ones list their property paths ``old → new`` (secrets stay masked) and are a **replace**
when a change falls under a provider's replacement rule (:mod:`fleetctl.diff_rules`, each with its
upstream source) or a declared ``replace_on_changes``, an **update** otherwise. Inputs under
``ignore_changes`` keep their old value; a resource whose provider is replaced, or that moves to a
provider for another cluster, is replaced; an update the cloud would refuse says so. Policy and
verify findings and the cost delta are compared here too.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from fleet import cost as fcost
from fleetctl import diff_rules
from fleetctl.diff_plan import Side

SECRET = "[secret]"
UNKNOWN = "[unknown]"
RENAME_SIMILARITY = 0.5
"""Share of identical input properties above which a removed and an added resource of the same
type and (corresponding) parent are one logical resource renamed."""


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
    order: str = ""
    """For a replace: ``create before delete`` (Pulumi's default) or ``delete first``."""
    dependants: list[str] = field(default_factory=list)
    """What goes with a replace, beyond the resource itself: for a node pool deleted first, the model
    servers scheduled on it (their pods are evicted and wait, Pending, for the new pool's nodes) and the
    InferencePools that select them; for a cluster, every Kubernetes object on it."""


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
        # The options a packaged component's objects get from the program's transforms (a CRD bundle's
        # protect / retain_on_delete): a change to them is an update of those objects' options.
        co, cn = o.get("child_options") or {}, n.get("child_options") or {}
        for child in sorted(set(co) | set(cn)):
            if co.get(child) != cn.get(child):
                props.append(PropChange(f"(option of {child})", co.get(child), cn.get(child)))
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
            # From a default provider (not in the plan) to an explicit one: DiffConfig compares their
            # configuration, which the plan does not know for the default; not judged a replacement.
            known = base.get(old_p) is not None and head.get(new_p) is not None
            if known and (_other_cluster(base.get(old_p), head.get(new_p)) or new_p in dead_providers):
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
    old_of = {new: old for old, new in renames.items()}
    for ch in changes:
        o = base.get(old_of.get(ch.urn, ch.urn))
        _completes(ch, o, head.get(ch.urn))
        if ch.action == "replace" and ch.urn in head:
            ch.dependants = _dependants(head[ch.urn], ch.order, head)
    order = {"replace": 0, "update": 1, "create": 2, "delete": 3, "ignored": 4}
    changes.sort(key=lambda c: (c.component, order[c.action], c.type, c.name))
    return changes, len(unchanged)


def _completes(ch: ResourceChange, o: Mapping[str, Any] | None, n: Mapping[str, Any] | None) -> None:
    """Whether a replace creates first or deletes first, and whether it — or a delete — can complete:
    a create-first replacement that keeps a name the cloud holds unique clashes with the object it
    replaces; the engine refuses to replace or delete a protected resource (step_generator.go: "unable
    to replace resource ... as it is currently marked for protection"; DeleteStep refuses to delete one)."""
    if o is None:
        return
    o_opts = o.get("options") or {}
    kept = sorted(k for k, v in (o.get("child_options") or {}).items() if v.get("protect"))
    if kept and (ch.action == "delete" or ch.old_name):
        # A removed or renamed CRD bundle: the engine deletes the old ConfigFile's objects, and refuses to
        # delete the protected ones (components/platform.keep_crds).
        ch.fails = (f"`up` fails: {o['name']} installs protected objects ({', '.join(kept)}), and deleting a CRD "
                    "deletes every object of its kinds; keep the bundle's name (or alias the new one), or "
                    "`pulumi state unprotect` them first if that is meant")
        return
    if ch.action == "delete" and o_opts.get("protect"):
        ch.fails = (f"`up` fails: {o['name']} is protected, and the engine refuses to delete a protected resource; "
                    f"unprotect it first (`pulumi state unprotect '{o['urn']}'`) if the delete is meant")
        return
    if ch.action != "replace" or n is None:
        return
    n_opts = n.get("options") or {}
    facts = diff_rules.facts_for(n["type"])
    moved = any(p.rule in (PROVIDER_MOVED, PROVIDER_REPLACED) for p in ch.properties)
    same_name = bool(n.get("custom")) and not n.get("chart_object") and not moved and all(
        _get(o["inputs"], k) == _get(n["inputs"], k) for f in facts for k in f.name_keys) and any(
        f.name_keys for f in facts)
    if n_opts.get("delete_before_replace"):
        ch.order = "delete first"
    elif same_name and not ch.old_name and any(f.delete_first for f in facts):
        ch.order = "delete first"  # the kubernetes provider deletes a same-named object first
    else:
        ch.order = "create before delete"
        if same_name:
            clash = next(f.clash for f in facts if f.clash)
            ch.fails = ch.fails or (f"`up` fails half-way: the replacement is created first under the same name, and "
                                    f"{clash}; set delete_before_replace or give it a unique name suffix")
    if o_opts.get("protect") and n_opts.get("protect"):
        ch.fails = ch.fails or ("`up` fails at preview: it is protected, and the engine refuses to replace a protected "
                                "resource (remove `protect` in the program first, if the replacement is meant)")


POOL_LABELS = {"gcp:container/nodePool:NodePool": "nodeConfig.labels", "aws:eks/nodeGroup:NodeGroup": "labels",
               "azure-native:containerservice:AgentPool": "nodeLabels"}
"""Node pool type -> where its inputs hold the labels every node of the pool carries."""
CLUSTER_TYPES = {"gcp:container/cluster:Cluster", "aws:eks/cluster:Cluster",
                 "azure-native:containerservice:ManagedCluster"}
SCHEDULED_KINDS = {"Deployment", "StatefulSet", "Job"}
"""Kinds whose pods a pool's nodes carry and that wait for new ones; a DaemonSet's pods belong to the
nodes themselves and go and come with them."""


def _object(r: Mapping[str, Any]) -> str:
    meta = r["inputs"].get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{r['inputs'].get('kind')} {ns}{meta.get('name', r['name'])}"


def _on_cluster(r: Mapping[str, Any], head: Mapping[str, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """What a kubernetes provider declared beside ``r`` (in the same cluster component) manages: the
    program's objects and releases, and the objects its charts install."""
    providers = {u for u, p in head.items() if p["type"] == "pulumi:providers:kubernetes" and p["parent"] == r["parent"]}
    return [o for o in head.values() if o.get("custom") and o.get("provider") in providers]


def _dependants(n: Mapping[str, Any], order: str, head: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What a replace of ``n`` takes with it (:attr:`ResourceChange.dependants`)."""
    if n["type"] in CLUSTER_TYPES:
        objs = _on_cluster(n, head)
        return [f"every Kubernetes resource on the cluster ({len(objs)}): the kubeconfig names the new cluster, "
                "so the kubernetes provider and all it manages are replaced"] if objs else []
    path = POOL_LABELS.get(n["type"])
    labels = _get(n["inputs"], path) if path else None
    if order != "delete first" or not isinstance(labels, Mapping) or not labels:
        return []  # created first, the new pool takes the pods before the old one drains

    def within(selector: Any, pool: Mapping[str, Any]) -> bool:
        return isinstance(selector, Mapping) and bool(selector) and all(pool.get(k) == v for k, v in selector.items())

    objs = [o for o in _on_cluster(n, head) if "kind" in o["inputs"]]
    servers = [o for o in objs if o["inputs"]["kind"] in SCHEDULED_KINDS
               and within(_get(o["inputs"], "spec.template.spec.nodeSelector"), labels)]
    pod_labels = [_get(o["inputs"], "spec.template.metadata.labels") or {} for o in servers]
    pools = [o for o in objs if o["inputs"]["kind"] == "InferencePool"
             and any(within(_get(o["inputs"], "spec.selector.matchLabels"), pl) for pl in pod_labels)]
    return ([f"{_object(o)}: its pods are evicted with the pool's nodes and stay Pending until the new pool "
             "has nodes" for o in sorted(servers, key=_object)]
            + [f"{_object(o)}: no endpoint to route to until then" for o in sorted(pools, key=_object)])


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
