"""What the offline plan cannot check, per stack, each with the command that checks it.

The plan knows the program and the pinned charts; it cannot know what a cloud has today: whether a
region still has Spot capacity for a pool's machine (ND MI300X v5 and p5 often have none), which
digest a tag points at now, or the credentials only a cloud can hand out. ``fleet plan`` prints
these under "not checked offline" so nobody reads a clean plan as a promise (README, "What the
offline plan cannot check").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True)
class Unchecked:
    what: str
    check: str


def _capacity(cloud: str, machine: str, region: str, zones: tuple[str, ...], spot: bool, tpu: bool) -> str:
    if cloud == "azure":
        # Restrictions (NotAvailableForSubscription, zones) per size; Spot uses the Low-priority quota.
        return (f"az vm list-skus --location {region} --size {machine} --all --output table "
                f"&& az vm list-usage --location {region} --output table")
    if cloud == "aws":
        if spot:
            return (f"aws ec2 get-spot-placement-scores --instance-types {machine} --target-capacity 1 "
                    f"--single-availability-zone --region-names {region}")
        return (f"aws ec2 describe-instance-type-offerings --location-type availability-zone "
                f"--filters Name=instance-type,Values={machine} --region {region}")
    if cloud == "gcp":
        where = ",".join(zones) or f"{region}-a,{region}-b,{region}-c"
        if tpu:
            return f"gcloud compute tpus accelerator-types list --zone {where.split(',')[0]}"
        return f"gcloud compute machine-types list --filter='name={machine}' --zones {where}"
    return ""


def _reference(value: str) -> bool:
    """An image reference with a tag or digest (a bare repository, e.g. KMM's driver.image, is not)."""
    return "@" in value or ":" in value.rsplit("/", 1)[-1]


def _images(objects: Iterable[dict[str, Any]]) -> set[str]:
    """Container images of every pod template, image fields of operator CRs (DeviceConfig's
    ``devicePluginImage``, ...) and KMM's ``RELATED_IMAGE_*`` env values."""
    out: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if str(node.get("name", "")).startswith("RELATED_IMAGE") and isinstance(node.get("value"), str):
                out.add(node["value"])
            for k, v in node.items():
                if isinstance(v, str) and (k == "image" or k.endswith("Image")) and _reference(v):
                    out.add(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for obj in objects:
        if obj.get("kind") != "CustomResourceDefinition":
            walk(obj.get("spec", {}))
    return out


def unchecked(plan) -> list[Unchecked]:
    """Every fact the plan relies on and cannot see, in a stable order."""
    spec = plan.spec
    out: list[Unchecked] = []
    clusters = {c.name: c for c in spec.clusters}
    for pool in spec.pools:
        cluster = clusters[pool.cluster]
        if cluster.cloud == "local":
            continue
        kind = "Spot capacity" if pool.spot else "capacity"
        machine = pool.machine.name
        out.append(Unchecked(
            f"{kind} for {pool.name} ({machine}, {pool.max_nodes} node(s)) in {cluster.region}"
            + (f" {','.join(cluster.zones)}" if cluster.zones else ""),
            _capacity(cluster.cloud, machine, cluster.region, tuple(cluster.zones), pool.spot,
                      pool.vendor == "google")))
    for cluster in spec.clusters:
        if cluster.cloud != "azure":
            continue
        out.append(Unchecked(
            f"{cluster.name}: the identity `pulumi up` runs as may push to the cluster's ACR (Owner, "
            "Contributor or AcrPush on it): the router image is pushed with its Entra token",
            "az role assignment list --assignee <object id> --all --output table"))
        if any(p.cluster == cluster.name and p.vendor == "amd" for p in spec.pools):
            # KMM's push password is rotated in the cluster (components/driver_credentials.py) by an
            # identity with a custom role on the registry, which the deployer creates and assigns.
            out.append(Unchecked(
                f"{cluster.name}: the identity `pulumi up` runs as may create a custom role and assign it on the "
                "cluster's ACR (Owner or User Access Administrator): the AMD driver push refresher's "
                "generateCredentials role",
                "az role assignment list --assignee <object id> --all --output table"))
    by_digest = sorted(i for i in _images(plan.all_objects()) if "@sha256:" in i)
    by_tag = sorted(i for i in _images(plan.all_objects()) if "@" not in i)
    if by_tag:
        out.append(Unchecked(
            f"{len(by_tag)} image(s) pinned by tag, not digest: a tag can be moved upstream "
            f"({len(by_digest)} more are pinned by digest)", "crane digest <image>  # for each of: "
            + " ".join(by_tag)))
    return out


def lines(plan) -> list[str]:
    items = unchecked(plan)
    if not items:
        return []
    out = ["", "not checked offline (README, \"What the offline plan cannot check\"):"]
    for u in items:
        out += [f"  {u.what}", f"    check: {u.check}"]
    return out

