"""Admission: every pod passes the Pod Security level its namespace enforces.

Includes the pods controllers create from templates known offline (Istio's gateway from istiod's
values, see controllers.py). The rules are the Pod Security Standards as the built-in admission
controller enforces them (kubernetes.io/docs/concepts/security/pod-security-standards, Kubernetes
v1.32; ``pod-security.kubernetes.io/enforce`` on the Namespace, ``privileged`` when unset).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from fleetctl.verify.controllers import istio_gateway_templates
from fleetctl.verify.findings import Finding
from fleetctl.verify.topology import Cluster, PodTemplate, Topology, workload_templates

LEVELS = ("privileged", "baseline", "restricted")

# Baseline: capabilities beyond the default set are forbidden; these may be added.
_BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                  "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
# Baseline "Sysctls": the safe set (v1.32 adds net.ipv4.tcp_keepalive_* and ip_local_reserved_ports).
_SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                 "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                 "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                 "net.ipv4.tcp_keepalive_probes"}
# Restricted "Volume Types": only these.
_RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                       "projected", "secret"}


def _containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(spec.get("containers") or []) + list(spec.get("initContainers") or []) \
        + list(spec.get("ephemeralContainers") or [])


def baseline_violations(spec: Mapping[str, Any]) -> list[str]:
    out = []
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(f):
            out.append(f"{f}: true")
    for v in spec.get("volumes") or []:
        if "hostPath" in v:
            out.append(f"hostPath volume {v.get('name')}")
    psc = spec.get("securityContext") or {}
    for s in psc.get("sysctls") or []:
        if s.get("name") not in _SAFE_SYSCTLS:
            out.append(f"sysctl {s.get('name')}")
    for c in _containers(spec):
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"container {c.get('name')} is privileged")
        added = set((sc.get("capabilities") or {}).get("add") or []) - _BASELINE_CAPS
        if added:
            out.append(f"container {c.get('name')} adds capabilities {', '.join(sorted(added))}")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            out.append(f"container {c.get('name')} uses a hostPort")
        for scp in (sc.get("seccompProfile"), psc.get("seccompProfile")):
            if scp and scp.get("type") == "Unconfined":
                out.append(f"container {c.get('name')} runs seccomp Unconfined")
                break
        if sc.get("procMount") not in (None, "Default"):
            out.append(f"container {c.get('name')} procMount {sc['procMount']}")
    return out


def restricted_violations(spec: Mapping[str, Any]) -> list[str]:
    out = baseline_violations(spec)
    for v in spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        if kinds and not kinds & _RESTRICTED_VOLUMES:
            out.append(f"volume {v.get('name')} of type {', '.join(sorted(kinds))}")
    psc = spec.get("securityContext") or {}
    pod_nonroot, pod_seccomp = psc.get("runAsNonRoot"), (psc.get("seccompProfile") or {}).get("type")
    if psc.get("runAsUser") == 0:
        out.append("pod runAsUser 0")
    for c in _containers(spec):
        sc = c.get("securityContext") or {}
        name = c.get("name")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"container {name} does not set allowPrivilegeEscalation: false")
        if not (sc.get("runAsNonRoot") is True or (pod_nonroot is True and sc.get("runAsNonRoot") is not False)):
            out.append(f"container {name} does not set runAsNonRoot: true (nor does the pod)")
        if sc.get("runAsUser") == 0:
            out.append(f"container {name} runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"container {name} has no seccompProfile RuntimeDefault or Localhost (nor does the pod)")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"container {name} does not drop ALL capabilities")
        extra = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if extra:
            out.append(f"container {name} adds {', '.join(sorted(extra))} (restricted allows only NET_BIND_SERVICE)")
    return out


def violations(level: str, spec: Mapping[str, Any]) -> list[str]:
    if level == "restricted":
        return restricted_violations(spec)
    if level == "baseline":
        return baseline_violations(spec)
    return []


def _levels(cluster: Cluster) -> dict[str, str]:
    out = {}
    for ns in cluster.of_kind("Namespace"):
        level = ns.labels().get("pod-security.kubernetes.io/enforce")
        if level in LEVELS:
            out[ns.name] = level
    return out


def _fix(problems: Iterable[str]) -> str:
    text = " ".join(problems)
    if "seccompProfile" in text:
        return "set securityContext.seccompProfile.type: RuntimeDefault on the pod (for Istio's gateway pods: " \
               "istiod value gateways.seccompProfile)"
    if "hostPath" in text or "privileged" in text or "hostNetwork" in text:
        return "run it in a namespace whose enforce level allows it (privileged), or drop the host access"
    return "harden the pod's securityContext to the namespace's level"


def check(topo: Topology) -> list[Finding]:
    out: list[Finding] = []
    for cluster in topo.clusters.values():
        levels = _levels(cluster)
        templates: list[PodTemplate] = workload_templates(cluster) + istio_gateway_templates(cluster)
        for t in templates:
            level = levels.get(t.namespace, "privileged")
            problems = violations(level, t.spec)
            if problems:
                shown = problems[:4] + ([f"and {len(problems) - 4} more"] if len(problems) > 4 else [])
                out.append(Finding("admission", cluster.name, t.ref, t.owner.file,
                                   f"namespace {t.namespace} enforces Pod Security '{level}', which rejects its pods: "
                                   + "; ".join(shown), _fix(problems)))
    return out
