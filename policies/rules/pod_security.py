"""Pod security: no privileged containers, non-root, no host namespaces or paths, read-only root.

Risk: a model server or router that escapes its container owns a node with accelerators worth
tens of dollars an hour and the tokens mounted on it. Operators that must touch the host (device
plugins, DCGM) are installed by Helm charts, which these rules do not see.
"""

from __future__ import annotations

from pulumi_policy import EnforcementLevel, ResourceValidationPolicy

from policies.rules._util import WRITABLE_ROOT_REASON, containers, pod_spec


def _no_privileged(args, report):
    found = pod_spec(args.resource_type, args.props)
    if not found:
        return
    _, spec = found
    for c in containers(spec):
        sc = c.get("securityContext") or {}
        if sc.get("privileged") or sc.get("allowPrivilegeEscalation", True) is not False:
            report(f"container {c.get('name')!r} may run privileged or escalate privileges")
        caps = ((sc.get("capabilities") or {}).get("drop")) or []
        if "ALL" not in caps:
            report(f"container {c.get('name')!r} does not drop ALL capabilities")


def _non_root(args, report):
    found = pod_spec(args.resource_type, args.props)
    if not found:
        return
    _, spec = found
    pod_sc = spec.get("securityContext") or {}
    for c in containers(spec):
        sc = c.get("securityContext") or {}
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if non_root is not True or uid == 0:
            report(f"container {c.get('name')!r} may run as root (set runAsNonRoot: true and a non-zero runAsUser)")


def _no_host_access(args, report):
    found = pod_spec(args.resource_type, args.props)
    if not found:
        return
    _, spec = found
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            report(f"pod uses {key}")
    for v in spec.get("volumes") or []:
        if "hostPath" in v:
            report(f"volume {v.get('name')!r} mounts a hostPath")


def _read_only_root(args, report):
    found = pod_spec(args.resource_type, args.props)
    if not found:
        return
    meta, spec = found
    if (meta.get("annotations") or {}).get(WRITABLE_ROOT_REASON):
        return  # an explicit, reviewed exception (e.g. a runtime that writes caches under /root)
    for c in containers(spec):
        if (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True:
            report(f"container {c.get('name')!r} has a writable root filesystem")


POLICIES = [
    ResourceValidationPolicy(
        name="no-privileged-containers", description="Containers are not privileged, cannot escalate, drop ALL.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_no_privileged,
        remediation_steps="Set securityContext.privileged: false, allowPrivilegeEscalation: false and "
                          "capabilities.drop: [ALL] on every container."),
    ResourceValidationPolicy(
        name="run-as-non-root", description="Containers run as a non-root user.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_non_root,
        remediation_steps="Set securityContext.runAsNonRoot: true and runAsUser to a non-zero UID."),
    ResourceValidationPolicy(
        name="no-host-access", description="Pods use no host network, PID, IPC or hostPath volumes.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_no_host_access,
        remediation_steps="Remove hostNetwork/hostPID/hostIPC and hostPath volumes; use emptyDir or a PVC."),
    ResourceValidationPolicy(
        name="read-only-root-filesystem", description="Root filesystems are read-only unless a reason is recorded.",
        enforcement_level=EnforcementLevel.ADVISORY, validate=_read_only_root,
        remediation_steps="Set readOnlyRootFilesystem: true and mount emptyDir for scratch paths, or annotate "
                          f"the pod template with {WRITABLE_ROOT_REASON}: <why>."),
]
