"""The router's container image: built from ``router/``, pushed to each cluster's registry.

One ``docker_build.Image`` (BuildKit, through the ``pulumi-docker-build`` provider) per registry,
each with that registry's tag and credentials only. One Image carrying every registry's tag and
login pushed all of them or none: the first multicloud ``up`` built no router image anywhere while
one registry's credential was missing (issue 17 item 5). The builds share BuildKit's cache on the
machine that runs ``up``, so the second and third are cache hits, not rebuilds; each cluster pulls
``<its registry>/fleet-router@<its digest>``. Deployments reference the digest, never a tag, so a
pod only rolls when the bytes of the image change.

The tag carries a content hash of the build context (the files under ``router/`` that
``router/.dockerignore`` lets through): a code change changes the tag and the image label, so
Pulumi sees a diff and rebuilds; an unchanged tree is a no-op. Local clusters (kind, k3d) have no
registry: ``make image`` builds ``fleet-router:<same hash>`` and ``kind load`` puts it on the nodes
(README, "Router image"); :attr:`RouterImage.local_ref` names that tag.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = "router"
"""Build context, relative to the project root (where ``pulumi up`` runs the program)."""
DOCKERFILE = f"{CONTEXT}/Dockerfile"
REPOSITORY = "fleet-router"
PLATFORM = "linux/amd64"
"""Every cloud's accelerator and system nodes in the catalog are x86-64."""
HASH_LENGTH = 16


def _ignore_patterns(context: Path) -> list[str]:
    ignore = context / ".dockerignore"
    if not ignore.exists():
        return []
    lines = (ln.strip() for ln in ignore.read_text().splitlines())
    return [ln.rstrip("/") for ln in lines if ln and not ln.startswith("#") and not ln.startswith("!")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    for pat in patterns:
        pat = pat.removeprefix("./").removeprefix("**/")
        # A pattern matches the path itself, any leading directory of it, or any single component.
        if any(fnmatch.fnmatchcase("/".join(parts[:i]), pat) for i in range(1, len(parts) + 1)):
            return True
        if "/" not in pat and any(fnmatch.fnmatchcase(p, pat) for p in parts):
            return True
    return False


def source_hash(context: str = CONTEXT) -> str:
    """sha256 over the build context's files (path and bytes), as ``.dockerignore`` filters it.

    ``make image`` tags local builds with the same hash, so the dev stack's tag and the image
    in kind agree."""
    root = ROOT / context
    if not root.is_dir():
        return "0" * HASH_LENGTH
    patterns = _ignore_patterns(root)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if _ignored(rel, patterns):
            continue
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:HASH_LENGTH]


def local_tag() -> str:
    """The tag ``make image`` builds and kind loads for local clusters."""
    return f"{REPOSITORY}:{source_hash()}"


@dataclass
class RouterImageArgs:
    registries: dict[str, Any] = field(default_factory=dict)
    """cluster name -> that cluster's registry component (Artifact Registry / ECR / ACR).

    Each exposes ``url`` (``<host>/<path>`` images are pushed under), ``address`` (the registry
    host to log in to), ``username`` and ``password`` (an Output, secret)."""


class RouterImage(pulumi.ComponentResource):
    def __init__(self, name: str, args: RouterImageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:router:RouterImage", name, None, opts)
        self.source_hash = source_hash()
        # Local clusters: the tag `make image` builds and `kind load` loads (no registry, no push).
        self.local_ref: pulumi.Output[str] = pulumi.Output.from_input(local_tag())
        # cluster name -> image reference by digest in that cluster's registry
        self.refs: dict[str, pulumi.Output[str]] = {}
        # cluster name -> that registry's build (one each, see the module docstring)
        self.images: dict[str, Any] = {}
        if args.registries:
            import pulumi_docker_build as docker_build  # a dev plan never pays for importing it

            # The builds' own provider (Pulumi.yaml disables default providers): the Docker host of the
            # machine that runs `up` (DOCKER_HOST or the local socket); each Image logs in to its registry.
            builder = docker_build.Provider(f"{name}-docker-build", opts=pulumi.ResourceOptions(parent=self))
            for cluster in sorted(args.registries):
                reg = args.registries[cluster]
                repo = pulumi.Output.concat(reg.url, f"/{REPOSITORY}")
                tag = pulumi.Output.concat(repo, f":{self.source_hash}")
                self.images[cluster] = docker_build.Image(
                    f"{name}-{cluster}",
                    context=docker_build.BuildContextArgs(location=CONTEXT),
                    dockerfile=docker_build.DockerfileArgs(location=DOCKERFILE),
                    platforms=[docker_build.Platform(PLATFORM)],
                    tags=[tag],
                    push=True,
                    # This registry's credentials only: a registry that refuses them fails its own
                    # image, not every cluster's.
                    registries=[docker_build.RegistryArgs(address=reg.address, username=reg.username,
                                                          password=reg.password)],
                    # The content hash is part of the image config too: a code change is a new image
                    # even when a build cache would otherwise hand back the old one.
                    labels={
                        "org.opencontainers.image.title": REPOSITORY,
                        "org.opencontainers.image.source": "inference-fleet/router",
                        "org.opencontainers.image.revision": self.source_hash,
                    },
                    # Layers cached inline in this registry's image: a rebuild on another machine (CI,
                    # a colleague) reuses them.
                    cache_from=[docker_build.CacheFromArgs(
                        registry=docker_build.CacheFromRegistryArgs(ref=tag))],
                    cache_to=[docker_build.CacheToArgs(inline=docker_build.CacheToInlineArgs())],
                    # The one Image this component had was `<name>-build`; the first registry's
                    # build takes over its state instead of a delete and a create.
                    opts=pulumi.ResourceOptions(
                        parent=self, provider=builder,
                        aliases=[pulumi.Alias(name=f"{name}-build")] if not self.images else None),
                )
                self.refs[cluster] = pulumi.Output.concat(repo, "@", self.images[cluster].digest)
        self.register_outputs({"refs": self.refs, "local_ref": self.local_ref})

    def ref_for(self, cluster: str) -> pulumi.Output[str]:
        """The image a pod in ``cluster`` runs: the digest in its registry, else the local tag."""
        return self.refs.get(cluster, self.local_ref)
