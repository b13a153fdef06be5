"""Identity: each controller we configure can read what it watches at its pinned version.

The endpoint picker (gateway-api-inference-extension ``epp`` v1.5.0) is ours to grant: what it
needs is what upstream's reference chart for that version grants it —
``inferencepool`` chart v1.5.0 (../shared/charts/inferencepool-v1.5.0.tgz):

* templates/rbac.yaml, Role ``<name>-non-sa``: ``inference.networking.x-k8s.io`` ``inferenceobjectives``
  and ``inferencemodelrewrites``; ``inference.networking.k8s.io`` ``inferencepools``; get/watch/list;
* charts/inference-extension/templates/_rbac.yaml, Role ``<name>-sa``: core ``pods`` get/watch/list;
  ClusterRole ``tokenreviews``/``subjectaccessreviews`` create, only when metrics auth is on (the
  chart passes ``--metrics-endpoint-auth=false`` otherwise);
* _leader-election-rbac.yaml: ``coordination.k8s.io`` ``leases`` and core ``events`` when
  ``--ha-enable-leader-election`` is passed (replicas > 1).

The charts we install (KEDA, cert-manager, istiod, ...) bring their own RBAC at their version.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from fleetctl.verify.findings import Finding
from fleetctl.verify.topology import Cluster, Obj, Topology, container_args, flag

READ = ("get", "list", "watch")

PICKER_IMAGE = "gateway-api-inference-extension/epp"

PICKER_NEEDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "pods", READ),
    ("inference.networking.k8s.io", "inferencepools", READ),
    ("inference.networking.x-k8s.io", "inferenceobjectives", READ),
    ("inference.networking.x-k8s.io", "inferencemodelrewrites", READ),
)
PICKER_METRICS_AUTH = (
    ("authentication.k8s.io", "tokenreviews", ("create",)),
    ("authorization.k8s.io", "subjectaccessreviews", ("create",)),
)
PICKER_LEADER_ELECTION = (
    ("coordination.k8s.io", "leases", ("get", "list", "watch", "create", "update", "patch", "delete")),
    ("", "events", ("create", "patch")),
)


def pickers(cluster: Cluster) -> list[tuple[Obj, Mapping]]:
    out = []
    for o in cluster.of_kind("Deployment"):
        for c in ((o.spec.get("template") or {}).get("spec") or {}).get("containers") or []:
            if PICKER_IMAGE in str(c.get("image", "")):
                out.append((o, c))
    return out


def _rules_for(cluster: Cluster, namespace: str, sa: str) -> tuple[list[Obj], list[tuple[Obj, Mapping]]]:
    """The roles bound to the ServiceAccount, and every (role, rule) they hold."""
    out, roles = [], []
    for b in cluster.of_kind("RoleBinding", "ClusterRoleBinding"):
        if b.kind == "RoleBinding" and b.namespace != namespace:
            continue
        subjects = b.doc.get("subjects") or []
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa
                   and (s.get("namespace") or b.namespace) == namespace for s in subjects):
            continue
        ref = b.doc.get("roleRef") or {}
        role = cluster.get(ref.get("kind", ""), b.namespace if ref.get("kind") == "Role" else "", ref.get("name", ""))
        if role is None:
            continue
        roles.append(role)
        out += [(role, rule) for rule in role.doc.get("rules") or []]
    return roles, out


def missing(rules: Iterable[tuple[Obj, Mapping]], group: str, resource: str, verbs: Iterable[str]) -> list[str]:
    have: set[str] = set()
    for _, r in rules:
        if r.get("resourceNames"):
            continue
        groups, resources = r.get("apiGroups") or [], r.get("resources") or []
        if (group in groups or "*" in groups) and (resource in resources or "*" in resources):
            have |= set(r.get("verbs") or [])
    return [] if "*" in have else [v for v in verbs if v not in have]


def check(topo: Topology) -> list[Finding]:
    out: list[Finding] = []
    for cluster in topo.clusters.values():
        for dep, container in pickers(cluster):
            pod = (dep.spec.get("template") or {}).get("spec") or {}
            ns = dep.namespace or "default"
            sa_name = pod.get("serviceAccountName") or "default"
            sa = cluster.get("ServiceAccount", ns, sa_name)
            token = pod.get("automountServiceAccountToken")
            if token is None and sa is not None:
                token = sa.doc.get("automountServiceAccountToken")
            if token is False:
                out.append(Finding("identity", cluster.name, dep.ref, dep.file,
                                   "the endpoint picker gets no ServiceAccount token, so it cannot watch the API",
                                   "set automountServiceAccountToken: true on the picker's pod or ServiceAccount"))
            args = container_args(container)
            needs = list(PICKER_NEEDS)
            if flag(args, "metrics-endpoint-auth", "true") != "false":
                needs += PICKER_METRICS_AUTH
            if flag(args, "ha-enable-leader-election", "false") != "false":
                needs += PICKER_LEADER_ELECTION
            roles, rules = _rules_for(cluster, ns, sa_name)
            roles = sorted(roles, key=lambda r: (r.kind != "Role", r.ref))
            where = roles[0] if roles else dep  # the finding names the Role to edit, if there is one
            for group, resource, verbs in needs:
                gap = missing(rules, group, resource, verbs)
                if gap:
                    out.append(Finding(
                        "identity", cluster.name, where.ref, where.file,
                        f"ServiceAccount {ns}/{sa_name} of picker {dep.name} may not {'/'.join(gap)} "
                        f"{resource}.{group or 'core'} (the v1.5.0 picker needs it; inferencepool chart v1.5.0 "
                        "grants it), so its informer never syncs",
                        f"grant {{apiGroups: [{group!r}], resources: [{resource}], verbs: [{', '.join(verbs)}]}} "
                        f"in a Role bound to {sa_name}"))
    return out
