"""The accelerator and machine catalog: one table of facts every other module reads.

Everything vendor- or cloud-specific that is a *fact* (memory, resource names, machine types,
prices, node labels and taints, driver quirks) lives here as data, so components never grow
``if vendor == ...`` chains. Prices carry their source and the date they were read; the seeds'
figures are reproducible from this table (see ``tests/test_catalog.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

HOURS_PER_MONTH = 730.0
"""The month the clouds bill by (8760 h / 12), and the one the seeds' monthly figures use."""

LABEL_PREFIX = "inference-fleet.io"
"""Prefix of the node labels every accelerator pool carries, identical on every cloud."""

CLOUDS = ("gcp", "aws", "azure", "local")


@dataclass(frozen=True)
class Price:
    """USD per node-hour for one machine type, with where the figure came from."""

    on_demand: float
    spot: float
    source: str
    as_of: str

    def hourly(self, spot: bool) -> float:
        return self.spot if spot else self.on_demand


@dataclass(frozen=True)
class Vendor:
    """What differs between accelerator vendors, once."""

    name: str
    resource_name: str
    """The extended resource the device plugin advertises (what pods request)."""
    taint_key: str
    """The taint accelerator nodes carry so only workloads that ask for them land there."""
    vllm_image: str
    """Model-server image, pinned by tag and digest (resolved from the registry, see README)."""
    vllm_env: Mapping[str, str]
    """Environment the vendor's vLLM build needs (seed 000's ROCm note, seed 003's TPU vars)."""
    sim_profile_prefix: str
    """Prefix of ``fleet_router.sim`` profiles that emulate this vendor in the dev stack."""


@dataclass(frozen=True)
class MachineType:
    """A node shape that carries accelerators on one cloud."""

    cloud: str
    name: str
    accelerators: int
    price: Price
    vcpus: int
    memory_gib: float
    guest_accelerator: str | None = None
    """GKE N1 machines attach GPUs as guest accelerators (the machine itself has none)."""
    tpu_topology: str | None = None
    """Single-host TPU slice topology this machine type implies (``2x2`` = 4 chips)."""


@dataclass(frozen=True)
class Accelerator:
    key: str
    vendor: str
    display: str
    memory_gib: float
    """Nominal memory per accelerator."""
    usable_memory_gib: float
    """What the runtime actually reports free at start (seed 001: a T4 shows 14.58 GB)."""
    tokens_per_second: float
    """Aggregate decode throughput per accelerator for an 8B-class model with batching.

    Used for $ per million tokens; an estimate, not a benchmark (source below)."""
    stream_tokens_per_second: float
    """Single-stream decode speed (seed 000's table: H100 45 tok/s, MI300X 38 tok/s for 7B chat)."""
    gke_accelerator: str | None = None
    """GKE's name for the accelerator (guest accelerator type or TPU accelerator label)."""
    tpu_topologies: tuple[str, ...] = ()
    """Supported single-host slice topologies (TPU only)."""
    reference_price_per_hour: float | None = None
    """A seed's per-accelerator-hour reference figure, when a seed gives one."""
    machines: tuple[MachineType, ...] = field(default_factory=tuple)

    @property
    def is_tpu(self) -> bool:
        return bool(self.tpu_topologies)

    def clouds(self) -> tuple[str, ...]:
        return tuple(sorted({m.cloud for m in self.machines}))

    def machines_on(self, cloud: str) -> tuple[MachineType, ...]:
        return tuple(m for m in self.machines if m.cloud == cloud)


# --- vendors -----------------------------------------------------------------------------------

# Image digests: the digests of the tags named, as recorded by public deployments of those tags
# (this machine cannot reach a registry to re-resolve them). Bump tag and digest together, and
# check them with `crane digest <image:tag>` before a real rollout (README, "Pinned versions").
VENDORS: Mapping[str, Vendor] = MappingProxyType(
    {
        "nvidia": Vendor(
            name="nvidia",
            resource_name="nvidia.com/gpu",
            taint_key="nvidia.com/gpu",
            vllm_image=(
                "docker.io/vllm/vllm-openai:v0.11.0"
                "@sha256:014a95f21c9edf6abe0aea6b07353f96baa4ec291c427bb1176dc7c93a85845c"
            ),
            vllm_env=MappingProxyType({}),
            sim_profile_prefix="nvidia",
        ),
        "amd": Vendor(
            name="amd",
            resource_name="amd.com/gpu",
            taint_key="amd.com/gpu",
            vllm_image=(
                "docker.io/rocm/vllm:rocm7.0.0_vllm_0.11.2_20251210"
                "@sha256:e7f02dd2ce3824959658bc0391296f6158638e3ebce164f6c019c4eca8150ec7"
            ),
            # Seed 000, troubleshooting #2: Triton flash attention miscompiles on some ROCm builds.
            vllm_env=MappingProxyType({"VLLM_USE_TRITON_FLASH_ATTN": "0"}),
            sim_profile_prefix="amd",
        ),
        "google": Vendor(
            name="google",
            resource_name="google.com/tpu",
            taint_key="google.com/tpu",
            vllm_image=(
                "docker.io/vllm/vllm-tpu:nightly-20260416-c98c322-08bfedc"
                "@sha256:360eae322ff76fe0f414d9b7c1ee769d65a07447da478e69784145dbedc5743e"
            ),
            vllm_env=MappingProxyType({"PJRT_DEVICE": "TPU"}),
            sim_profile_prefix="google",
        ),
    }
)

_SRC_SEED002 = "seed 002 (GPU support for the multi-cloud LLM router), monthly spot estimate / 730 h"
_SRC_SEED000 = "seed 000 (multi-vendor routing), per-accelerator-hour cost analysis x accelerators"
_SRC_LIST = "cloud list price page, region us-central1 / us-east-1 / eastus"
_AS_OF = "2026-11"


def _m(cloud, name, accelerators, on_demand, spot, vcpus, mem, src=_SRC_LIST, **kw) -> MachineType:
    return MachineType(
        cloud=cloud,
        name=name,
        accelerators=accelerators,
        price=Price(on_demand=on_demand, spot=spot, source=src, as_of=_AS_OF),
        vcpus=vcpus,
        memory_gib=mem,
        **kw,
    )


ACCELERATORS: Mapping[str, Accelerator] = MappingProxyType(
    {
        "t4": Accelerator(
            key="t4", vendor="nvidia", display="NVIDIA Tesla T4", memory_gib=16, usable_memory_gib=14.58,
            tokens_per_second=250, stream_tokens_per_second=18, gke_accelerator="nvidia-tesla-t4",
            machines=(
                # Seed 002: n1-standard-4 + T4 preemptible ~$201/month; seed 001: $0.40/h on demand.
                _m("gcp", "n1-standard-4", 1, 0.40, 0.2753, 4, 15, src=_SRC_SEED002,
                   guest_accelerator="nvidia-tesla-t4"),
                _m("gcp", "n1-standard-16", 4, 2.16, 0.66, 16, 60, guest_accelerator="nvidia-tesla-t4"),
                # Seed 002: g4dn.xlarge spot ~$114/month.
                _m("aws", "g4dn.xlarge", 1, 0.526, 0.1562, 4, 16, src=_SRC_SEED002),
                _m("aws", "g4dn.12xlarge", 4, 3.912, 1.22, 48, 192),
                # Seed 002: Standard_NC4as_T4_v3 spot ~$151/month.
                _m("azure", "Standard_NC4as_T4_v3", 1, 0.526, 0.2068, 4, 28, src=_SRC_SEED002),
                _m("azure", "Standard_NC64as_T4_v3", 4, 4.352, 1.31, 64, 440),
            ),
        ),
        "l4": Accelerator(
            key="l4", vendor="nvidia", display="NVIDIA L4", memory_gib=24, usable_memory_gib=22.0,
            tokens_per_second=600, stream_tokens_per_second=30, gke_accelerator="nvidia-l4",
            machines=(
                _m("gcp", "g2-standard-8", 1, 0.8536, 0.34, 8, 32),
                _m("gcp", "g2-standard-24", 2, 2.0005, 0.80, 24, 96),
                _m("gcp", "g2-standard-48", 4, 4.0011, 1.60, 48, 192),
                _m("aws", "g6.xlarge", 1, 0.8048, 0.32, 4, 16),
                _m("aws", "g6.12xlarge", 4, 4.6016, 1.84, 48, 192),
                _m("aws", "g6.48xlarge", 8, 13.3504, 5.34, 192, 768),
            ),
        ),
        "a100-80gb": Accelerator(
            key="a100-80gb", vendor="nvidia", display="NVIDIA A100 80GB", memory_gib=80,
            usable_memory_gib=79.2, tokens_per_second=1500, stream_tokens_per_second=38,
            gke_accelerator="nvidia-a100-80gb",
            machines=(
                _m("gcp", "a2-ultragpu-1g", 1, 5.0688, 1.62, 12, 170),
                _m("gcp", "a2-ultragpu-8g", 8, 40.5504, 12.98, 96, 1360),
                _m("aws", "p4de.24xlarge", 8, 40.9657, 13.11, 96, 1152),
                _m("azure", "Standard_NC24ads_A100_v4", 1, 3.673, 1.18, 24, 220),
                _m("azure", "Standard_NC96ads_A100_v4", 4, 14.692, 4.70, 96, 880),
            ),
        ),
        "h100": Accelerator(
            key="h100", vendor="nvidia", display="NVIDIA H100 80GB", memory_gib=80, usable_memory_gib=79.1,
            tokens_per_second=2500, stream_tokens_per_second=45, gke_accelerator="nvidia-h100-80gb",
            reference_price_per_hour=2.00,
            machines=(
                # Seed 000: "NVIDIA H100 ~$2.00/hour" per accelerator; 8 per node at spot.
                _m("gcp", "a3-highgpu-8g", 8, 88.49, 16.00, 208, 1872, src=_SRC_SEED000),
                _m("aws", "p5.48xlarge", 8, 55.04, 16.00, 192, 2048, src=_SRC_SEED000),
                _m("azure", "Standard_ND96isr_H100_v5", 8, 98.32, 16.00, 96, 1900, src=_SRC_SEED000),
            ),
        ),
        "mi300x": Accelerator(
            key="mi300x", vendor="amd", display="AMD Instinct MI300X", memory_gib=192, usable_memory_gib=191.5,
            tokens_per_second=2100, stream_tokens_per_second=38, reference_price_per_hour=0.50,
            machines=(
                # Seed 000: "AMD MI300X ~$0.50/hour" per accelerator; 8 per node. Azure only.
                _m("azure", "Standard_ND96isr_MI300X_v5", 8, 48.00, 4.00, 96, 1850, src=_SRC_SEED000),
            ),
        ),
        "tpu-v5e": Accelerator(
            key="tpu-v5e", vendor="google", display="Google TPU v5e", memory_gib=16, usable_memory_gib=15.75,
            tokens_per_second=800, stream_tokens_per_second=30, gke_accelerator="tpu-v5-lite-podslice",
            tpu_topologies=("1x1", "2x2", "2x4"),
            machines=(
                _m("gcp", "ct5lp-hightpu-1t", 1, 1.20, 0.48, 24, 48, tpu_topology="1x1"),
                _m("gcp", "ct5lp-hightpu-4t", 4, 4.80, 1.92, 112, 192, tpu_topology="2x2"),
                _m("gcp", "ct5lp-hightpu-8t", 8, 9.60, 3.84, 224, 384, tpu_topology="2x4"),
            ),
        ),
        "tpu-v6e": Accelerator(
            key="tpu-v6e", vendor="google", display="Google TPU v6e (Trillium)", memory_gib=32,
            usable_memory_gib=31.25, tokens_per_second=1600, stream_tokens_per_second=40,
            gke_accelerator="tpu-v6e-slice", tpu_topologies=("1x1", "2x2", "2x4"),
            machines=(
                _m("gcp", "ct6e-standard-1t", 1, 2.70, 0.81, 44, 176, tpu_topology="1x1"),
                # Seed 003: TPU v6e, 4 chips, 2x2 topology.
                _m("gcp", "ct6e-standard-4t", 4, 10.80, 3.24, 180, 720, tpu_topology="2x2"),
                _m("gcp", "ct6e-standard-8t", 8, 21.60, 6.48, 180, 1440, tpu_topology="2x4"),
            ),
        ),
    }
)


# --- system (CPU) pools ------------------------------------------------------------------------

@dataclass(frozen=True)
class SystemMachine:
    cloud: str
    name: str
    price: Price


SYSTEM_MACHINES: Mapping[str, SystemMachine] = MappingProxyType(
    {
        # Seed 002's CPU-only figures: ~$21/month each at spot.
        "gcp": SystemMachine("gcp", "e2-standard-4", Price(0.134, 0.0288, _SRC_SEED002, _AS_OF)),
        "aws": SystemMachine("aws", "m6i.xlarge", Price(0.192, 0.0288, _SRC_SEED002, _AS_OF)),
        "azure": SystemMachine("azure", "Standard_D4s_v5", Price(0.192, 0.0288, _SRC_SEED002, _AS_OF)),
        "local": SystemMachine("local", "local", Price(0.0, 0.0, "your laptop", _AS_OF)),
    }
)


# --- per-cloud quirks, as data -----------------------------------------------------------------

@dataclass(frozen=True)
class CloudTraits:
    cloud: str
    installs_nvidia_driver: bool
    """Whether the cloud installs the NVIDIA driver *and* device plugin itself."""
    spot_label: tuple[str, str] | None
    """The label the cloud itself puts on spot nodes (declared so Pulumi does not fight it)."""
    spot_taint: tuple[str, str, str] | None
    """The taint the cloud itself puts on spot nodes (key, value, effect)."""
    max_name_length: int
    """Longest node-pool name the cloud accepts."""
    name_charset: str
    """Regex character class of characters allowed in node-pool names."""


CLOUD_TRAITS: Mapping[str, CloudTraits] = MappingProxyType(
    {
        # GKE installs drivers and its own device plugin when gpu_driver_installation_config is set.
        "gcp": CloudTraits("gcp", True, ("cloud.google.com/gke-spot", "true"), None, 40, "a-z0-9-"),
        # EKS AL2023 NVIDIA AMIs ship the driver; the device plugin is ours to install.
        "aws": CloudTraits("aws", False, ("eks.amazonaws.com/capacityType", "SPOT"), None, 63, "a-zA-Z0-9-_"),
        # AKS adds this label and taint to every Spot pool; declaring them avoids a perpetual diff.
        "azure": CloudTraits(
            "azure", False,
            ("kubernetes.azure.com/scalesetpriority", "spot"),
            ("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule"),
            12, "a-z0-9",
        ),
        "local": CloudTraits("local", True, None, None, 63, "a-z0-9-"),
    }
)


@dataclass(frozen=True)
class NodeImage:
    """How an accelerator node of one vendor on one cloud gets its driver (issue 5)."""

    setting: str | None
    """The cloud's own knob: GKE ``gpu_driver_installation_config.gpu_driver_version``, the EKS
    managed node group ``ami_type``, the AKS agent pool ``gpuProfile.driver``; None = nothing to set."""
    why: str


NODE_IMAGES: Mapping[tuple[str, str], NodeImage] = MappingProxyType(
    {
        # GKE installs the driver (and runs its own device plugin) when asked; LATEST follows the
        # newest driver the node version supports, which CUDA 12.8 builds of vLLM need on L4/H100.
        ("gcp", "nvidia"): NodeImage("LATEST", "GKE installs the NVIDIA driver and its device plugin"),
        # TPU nodes: GKE's TPU runtime and device plugin come with the node image; nothing to choose.
        ("gcp", "google"): NodeImage(None, "GKE TPU node image carries the TPU runtime and device plugin"),
        # The EKS AL2023 NVIDIA AMI ships driver + container toolkit; the device plugin is ours.
        ("aws", "nvidia"): NodeImage("AL2023_x86_64_NVIDIA", "EKS AL2023 NVIDIA AMI ships the driver"),
        # AKS installs the NVIDIA driver on N-series pools by default; the device plugin is ours.
        ("azure", "nvidia"): NodeImage("Install", "AKS installs the NVIDIA driver; platform adds the device plugin"),
        # MI300X: never the NVIDIA driver. The AMD GPU operator (platform layer) installs amdgpu.
        ("azure", "amd"): NodeImage("None", "AMD GPU operator installs the amdgpu driver and device plugin"),
    }
)

EKS_SYSTEM_AMI = "AL2023_x86_64_STANDARD"
"""AMI type of EKS system node groups (no accelerators)."""

GKE_RELEASE_CHANNEL = "REGULAR"
"""GKE release channel: TPU v6e and the GPU driver LATEST option are GA there."""

KUBERNETES_DEFAULT = "1.35"
"""The spec's default minor: in standard support on all three clouds as of 2026-12."""


@dataclass(frozen=True)
class KubernetesSupport:
    offered: frozenset[str]
    """Minors a new cluster gets in standard support (no LTS tier, no extended-support surcharge)."""
    older: str
    """Why an older minor is refused."""
    check: str
    """How to re-check (the lists move every few months)."""


KUBERNETES_SUPPORT: Mapping[str, KubernetesSupport] = MappingProxyType({
    # EKS: 14 months of standard support from its EKS release, then 12 months of extended support at
    # extra cost per cluster-hour (EKS user guide, "Kubernetes version lifecycle"); 1.34's standard
    # support ended 2026-12-02, 1.35 (EKS 2026-01-28) runs to 2027-03-27.
    "aws": KubernetesSupport(frozenset({"1.35", "1.36"}),
                             "EKS bills extended support (extra per cluster-hour) for it as of 2026-12",
                             "aws eks describe-cluster-versions"),
    # AKS: three GA minors; older ones only as LTS on the Premium tier.
    "azure": KubernetesSupport(frozenset({"1.35", "1.36"}),
                               "AKS offers it only as LTS on the Premium tier as of 2026-12",
                               "az aks get-versions --location <region>"),
    # GKE REGULAR: new clusters get the channel's available minors only.
    "gcp": KubernetesSupport(frozenset({"1.35", "1.36"}),
                             f"GKE's {GKE_RELEASE_CHANNEL} channel does not offer it for new clusters as of 2026-12",
                             "gcloud container get-server-config --region <region>"),
})


# --- queries -------------------------------------------------------------------------------------

def node_image(cloud: str, vendor: str) -> NodeImage:
    """The driver choice for ``vendor``'s accelerators on ``cloud``; CatalogError if unsupported."""
    try:
        return NODE_IMAGES[(cloud, vendor)]
    except KeyError:
        raise CatalogError(f"no node image for {vendor} accelerators on {cloud}") from None


class CatalogError(ValueError):
    pass


def accelerator(key: str) -> Accelerator:
    try:
        return ACCELERATORS[key]
    except KeyError:
        raise CatalogError(f"unknown accelerator {key!r}; known: {', '.join(sorted(ACCELERATORS))}") from None


def vendor_of(accelerator_key: str) -> Vendor:
    return VENDORS[accelerator(accelerator_key).vendor]


def machine(accelerator_key: str, cloud: str, machine_type: str | None = None,
            accelerators_per_node: int | None = None, tpu_topology: str | None = None) -> MachineType:
    """The machine type for a pool: the override if given, else the smallest that fits the ask."""
    acc = accelerator(accelerator_key)
    options = acc.machines_on(cloud)
    if not options:
        raise CatalogError(
            f"{acc.display} is not offered on {cloud}; it is offered on: {', '.join(acc.clouds())}"
        )
    if machine_type is not None:
        for m in options:
            if m.name == machine_type:
                return m
        raise CatalogError(
            f"machine type {machine_type!r} does not carry {acc.display} on {cloud}; "
            f"catalog lists: {', '.join(m.name for m in options)}"
        )
    if tpu_topology is not None:
        for m in options:
            if m.tpu_topology == tpu_topology:
                return m
        raise CatalogError(
            f"{acc.display} has no single-host machine for topology {tpu_topology!r}; "
            f"supported: {', '.join(acc.tpu_topologies)}"
        )
    ordered = sorted(options, key=lambda m: m.accelerators)
    if accelerators_per_node is None:
        return ordered[0]  # the smallest node that carries the accelerator
    want = accelerators_per_node
    for m in ordered:
        if m.accelerators == want:
            return m
    raise CatalogError(
        f"no {cloud} machine carries {want} x {acc.display}; "
        f"options: {', '.join(f'{m.name} ({m.accelerators})' for m in options)}"
    )


def pool_labels(vendor: str, accelerator_key: str, pool: str) -> dict[str, str]:
    """The labels every accelerator node carries, the same on every cloud."""
    return {
        f"{LABEL_PREFIX}/vendor": vendor,
        f"{LABEL_PREFIX}/accelerator": accelerator_key,
        f"{LABEL_PREFIX}/pool": pool,
    }


def pool_taints(vendor: str) -> list[dict[str, str]]:
    """The vendor resource taint every accelerator node carries, the same on every cloud."""
    return [{"key": VENDORS[vendor].taint_key, "value": "present", "effect": "NoSchedule"}]


def monthly(hourly: float) -> float:
    return hourly * HOURS_PER_MONTH


def cost_per_million_tokens(node_hourly: float, accelerators: int, accelerator_key: str) -> float:
    """USD per million generated tokens for one node running flat out."""
    tps = accelerator(accelerator_key).tokens_per_second * accelerators
    return node_hourly / (tps * 3600.0) * 1e6
