"""How the fleet's own pods are hardened and probed: one home for the shapes every workload shares.

The model servers, the simulators, the endpoint pickers, the router and its Redis store all run
as the ``restricted`` Pod Security Standard asks (Kubernetes docs, "Pod Security Standards",
restricted profile, v1.33): non-root, no privilege escalation, every capability dropped, seccomp
``RuntimeDefault``; on top of it a read-only root filesystem and an explicit UID/GID, because
images differ in what ``USER`` they declare (vLLM's run as root unless told otherwise). The
namespaces they live in enforce ``restricted`` (components/namespaces.py), so a pod that drifts
from these shapes is rejected at admission, not quietly weaker. Each component passes only its
UID and its probe numbers; the shutdown arithmetic lives in fleet.drain.
"""

from __future__ import annotations

from typing import Any, Iterable

RUNTIME_DEFAULT = {"type": "RuntimeDefault"}


def container_security(uid: int) -> dict[str, Any]:
    """A container's securityContext: restricted, read-only root, running as ``uid``:``uid``."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": dict(RUNTIME_DEFAULT),
    }


def pod_security(uid: int, *, fs_group: bool = False,
                 supplemental_groups: Iterable[int] = ()) -> dict[str, Any]:
    """A pod's securityContext. ``fs_group`` makes mounted volumes (Secrets, caches) readable by
    ``uid``'s group; ``supplemental_groups`` add device groups (ROCm's ``video``/``render``)."""
    sc: dict[str, Any] = {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid}
    if fs_group:
        sc["fsGroup"] = uid
    sc["seccompProfile"] = dict(RUNTIME_DEFAULT)
    groups = list(supplemental_groups)
    if groups:
        sc["supplementalGroups"] = groups
    return sc


def http_probe(path: str, port: str, *, period: int, failures: int, timeout: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period,
            "failureThreshold": failures, "timeoutSeconds": timeout}


def grpc_probe(port: int, service: str, *, period: int, failures: int, timeout: int) -> dict[str, Any]:
    return {"grpc": {"port": port, "service": service}, "periodSeconds": period,
            "failureThreshold": failures, "timeoutSeconds": timeout}


def tcp_probe(port: str, *, period: int, failures: int, timeout: int,
              initial_delay: int | None = None) -> dict[str, Any]:
    probe: dict[str, Any] = {"tcpSocket": {"port": port}}
    if initial_delay is not None:
        probe["initialDelaySeconds"] = initial_delay
    probe.update({"periodSeconds": period, "timeoutSeconds": timeout, "failureThreshold": failures})
    return probe
