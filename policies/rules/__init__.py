"""Every rule of the pack, one small family per module. ``ALL`` is what the pack and the offline
plan evaluate; each rule carries its description, enforcement level and remediation steps."""

from policies.rules import cluster_identity, cost, images, network, pod_security, registries, reliability, secrets

ALL = [
    *pod_security.POLICIES,
    *images.POLICIES,
    *secrets.POLICIES,
    *network.POLICIES,
    *registries.POLICIES,
    *cluster_identity.POLICIES,
    *cost.POLICIES,
    *reliability.POLICIES,
]
