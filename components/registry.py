"""What a cluster's image registry gives the rest of the program: where to push, how to log in.

Each cloud cluster component (``gke.py``, ``eks.py``, ``aks.py``) creates its own registry
(Artifact Registry, ECR, ACR) as a child, grants its nodes pull rights, and hands back a
:class:`RegistryAccess`. ``components/router_image.py`` pushes the router image with it; pods pull
``<url>/<repository>@<digest>`` with the node identity, so no pull secret is ever declared.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi


@dataclass(frozen=True)
class RegistryAccess:
    url: pulumi.Output[str]
    """Repository base images are pushed under, e.g. ``us-central1-docker.pkg.dev/<project>/<repo>``,
    ``<account>.dkr.ecr.<region>.amazonaws.com/<repo>``, ``<name>.azurecr.io``."""
    address: pulumi.Output[str]
    """Registry host to log in to (the part of ``url`` before the first ``/``)."""
    username: pulumi.Output[str]
    password: pulumi.Output[str]
    """Short-lived push credential, always a secret."""
    resource: pulumi.Resource
    """The registry (or repository) resource itself, for dependencies."""
