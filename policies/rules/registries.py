"""Registries are private and scanned: ECR scans on push with immutable tags, ACR has no admin
user, Artifact Registry grants no public read.

Risk: a public or mutable registry lets anyone pull (or replace) the router image every cluster runs.
"""

from __future__ import annotations

from pulumi_policy import EnforcementLevel, ResourceValidationPolicy

PUBLIC = {"allUsers", "allAuthenticatedUsers"}


def _private(args, report):
    t, p = args.resource_type, args.props
    if t == "aws:ecr/repository:Repository":
        if not (p.get("imageScanningConfiguration") or {}).get("scanOnPush"):
            report("ECR repository does not scan images on push")
        if p.get("imageTagMutability") != "IMMUTABLE":
            report("ECR repository allows tags to be overwritten")
    elif t == "azure-native:containerregistry:Registry":
        if p.get("adminUserEnabled"):
            report("ACR has the admin user enabled")
        if p.get("publicNetworkAccess") == "Enabled" and (p.get("sku") or {}).get("name") == "Premium":
            report("Premium ACR allows public network access")
    elif t in ("gcp:artifactregistry/repositoryIamMember:RepositoryIamMember",
               "gcp:artifactregistry/repositoryIamBinding:RepositoryIamBinding"):
        members = [p.get("member")] + list(p.get("members") or [])
        if PUBLIC & set(filter(None, members)):
            report("Artifact Registry repository is readable by the public")


POLICIES = [
    ResourceValidationPolicy(
        name="registries-private", description="Image registries are private, scanned and immutable.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_private,
        remediation_steps="ECR: imageScanningConfiguration.scanOnPush and imageTagMutability IMMUTABLE; ACR: "
                          "adminUserEnabled false; Artifact Registry: grant readers to node service accounts only."),
]
