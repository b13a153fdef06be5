"""Deterministic stand-ins for what clouds return, used by the offline plan's mock engine.

The offline plan runs the real program under ``pulumi.runtime.set_mocks``. A mocked resource's
outputs are its inputs plus the values below, keyed by resource type; a mocked function call
returns the canned result for its token. Everything here is fixed text, so two plans of the same
input are byte-identical. Components that read a cloud output the program needs (an endpoint, a
kubeconfig, an image digest) add it here, next to the type that produces it.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Callable, Mapping

FAKE_CA = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCm9mZmxpbmUtcGxhbgotLS0tLUVORCBDRVJUSUZJQ0FURS0tLS0tCg=="


def digest_of(*parts: str) -> str:
    """A stable fake sha256 digest for an offline build or lookup."""
    return "sha256:" + hashlib.sha256("\0".join(parts).encode()).hexdigest()


def offline_pem(kind: str, *parts: str) -> str:
    """A PEM-framed placeholder that names what it stands for (no key or certificate in it): the same
    resource gets the same text, different ones differ, so the plan shows where each one goes."""
    body = base64.b64encode(f"offline plan: {kind} of {' / '.join(parts)}".encode()).decode()
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n"


def _endpoint(name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    return {"endpoint": f"{name}.offline.invalid"}


# type token -> function(name, inputs) -> extra outputs
RESOURCE_OUTPUTS: dict[str, Callable[[str, Mapping[str, Any]], dict[str, Any]]] = {
    # Every cluster has its own endpoint (a documentation address derived from its name and location):
    # a kubeconfig names the cluster it reaches, and `fleet diff` compares that.
    "gcp:container/cluster:Cluster": lambda name, i: {
        "endpoint": f"203.0.113.{int(digest_of(name, str(i.get('location')))[7:11], 16) % 250 + 1}",
        "masterAuth": {"clusterCaCertificate": FAKE_CA},
        "selfLink": f"projects/offline/locations/{i.get('location', 'x')}/clusters/{name}",
    },
    "aws:eks/cluster:Cluster": lambda name, i: {
        "endpoint": f"https://{name}.eks.offline.invalid",
        "certificateAuthority": {"data": FAKE_CA},
        "arn": f"arn:aws:eks:us-east-1:000000000000:cluster/{name}",
        "identities": [{"oidcs": [{"issuer": f"https://oidc.eks.offline.invalid/id/{name.upper()}"}]}],
    },
    "aws:iam/role:Role": lambda name, i: {"arn": f"arn:aws:iam::000000000000:role/{name}",
                                          "name": i.get("name", name)},
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider": lambda name, i: {
        "arn": f"arn:aws:iam::000000000000:oidc-provider/{name}"},
    "aws:ecr/repository:Repository": lambda name, i: {
        "registryId": "000000000000",
        "repositoryUrl": f"000000000000.dkr.ecr.us-east-1.amazonaws.com/{i.get('name', name)}",
        "arn": f"arn:aws:ecr:us-east-1:000000000000:repository/{name}"},
    "aws:eks/nodeGroup:NodeGroup": lambda name, i: {
        "resources": [{"autoscalingGroups": [{"name": f"eks-{name}-asg"}]}]},
    "gcp:serviceaccount/account:Account": lambda name, i: {
        "email": f"{i.get('accountId', name)}@offline-project.iam.gserviceaccount.com"},
    "gcp:artifactregistry/repository:Repository": lambda name, i: {
        "name": i.get("repositoryId", name)},
    "azure-native:containerregistry:Registry": lambda name, i: {
        "loginServer": f"{i.get('registryName', name)}.azurecr.io", "name": i.get("registryName", name)},
    "azure-native:containerregistry:Token": lambda name, i: {"name": i.get("tokenName", name)},
    # A user-assigned identity's client id (what a ServiceAccount's workload identity annotation names)
    # and the principal id its role assignments are made to.
    "azure-native:managedidentity:UserAssignedIdentity": lambda name, i: {
        "name": i.get("resourceName", name),
        "clientId": f"00000000-0000-0000-0001-{digest_of('client', name)[7:19]}",
        "principalId": f"00000000-0000-0000-0002-{digest_of('principal', name)[7:19]}"},
    # A role definition's name is its GUID (what role assignments reference).
    "azure-native:authorization:RoleDefinition": lambda name, i: {
        "name": f"00000000-0000-0000-0003-{digest_of('role', name)[7:19]}"},
    "azure-native:resources:ResourceGroup": lambda name, i: {"name": i.get("resourceGroupName", name)},
    "azure-native:containerservice:ManagedCluster": lambda name, i: {
        "fqdn": f"{name}.hcp.offline.azmk8s.io", "name": i.get("resourceName", name),
        "identityProfile": {"kubeletidentity": {"objectId": f"00000000-0000-0000-0000-{name[:12]:0>12}"}},
        # The wire name is issuerURL (pulumi-azure-native ManagedClusterOIDCIssuerProfileResponse).
        "oidcIssuerProfile": {"enabled": True, "issuerURL": f"https://oidc.offline.invalid/{name}/"}},
    # pulumi_tls: a gateway CA's key (a secret, masked in the plan) and its public certificate.
    "tls:index/privateKey:PrivateKey": lambda name, i: {
        "privateKeyPem": offline_pem("PRIVATE KEY", name), "publicKeyPem": offline_pem("PUBLIC KEY", name)},
    "tls:index/selfSignedCert:SelfSignedCert": lambda name, i: {
        "certPem": offline_pem("CERTIFICATE", name, str((i.get("subject") or {}).get("commonName", "")))},
    # The digest follows what changes a real image: context, Dockerfile, build args and labels
    # (RouterImage labels its image with the content hash of router/, so a code change shows).
    "docker-build:index:Image": lambda name, i: {
        "digest": digest_of("image", name, str(i.get("context")), str(i.get("dockerfile")),
                            str(sorted((i.get("buildArgs") or {}).items())),
                            str(sorted((i.get("labels") or {}).items())))},
}


def _aks_kubeconfig(args: Mapping[str, Any]) -> str:
    """The user kubeconfig AKS returns, base64 as the API does: it names the cluster's own API server."""
    import base64

    name = args.get("resourceName", "aks")
    server = f"https://{name}.hcp.offline.azmk8s.io:443"
    doc = (f"apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\n"
           f"    certificate-authority-data: {FAKE_CA}\ncontexts:\n- name: {name}\n"
           f"  context: {{cluster: {name}, user: clusterUser}}\ncurrent-context: {name}\n")
    return base64.b64encode(doc.encode()).decode()


# function token -> canned result
CALL_RESULTS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "aws:index/getAvailabilityZones:getAvailabilityZones": lambda a: {
        "names": ["us-east-1a", "us-east-1b", "us-east-1c"], "zoneIds": ["use1-az1", "use1-az2", "use1-az3"]},
    "aws:index/getCallerIdentity:getCallerIdentity": lambda a: {
        "accountId": "000000000000", "arn": "arn:aws:iam::000000000000:user/offline", "userId": "OFFLINE"},
    "aws:index/getPartition:getPartition": lambda a: {"partition": "aws", "dnsSuffix": "amazonaws.com"},
    "aws:index/getRegion:getRegion": lambda a: {"name": "us-east-1", "region": "us-east-1"},
    "aws:ecr/getAuthorizationToken:getAuthorizationToken": lambda a: {
        "userName": "AWS", "password": "offline", "authorizationToken": "offline",
        "proxyEndpoint": "https://000000000000.dkr.ecr.us-east-1.amazonaws.com", "expiresAt": "2026-01-01T00:00:00Z"},
    "aws:ssm/getParameter:getParameter": lambda a: {"value": "ami-0offline000000000", "name": a.get("name")},
    "gcp:organizations/getClientConfig:getClientConfig": lambda a: {
        "project": "offline-project", "region": "us-central1", "accessToken": "offline"},
    "gcp:organizations/getProject:getProject": lambda a: {"number": "000000000000", "projectId": "offline-project"},
    "azure-native:authorization:getClientConfig": lambda a: {
        "subscriptionId": "00000000-0000-0000-0000-000000000000",
        "tenantId": "00000000-0000-0000-0000-000000000000",
        "objectId": "00000000-0000-0000-0000-000000000000", "clientId": "offline"},
    "azure-native:containerservice:listManagedClusterUserCredentials": lambda a: {
        "kubeconfigs": [{"name": "clusterUser", "value": _aks_kubeconfig(a)}]},
}


# function token -> result field -> the input of the provider the call was given that the real call
# returns there (when the program set it on the provider; else the canned value above stands).
FROM_PROVIDER: dict[str, dict[str, str]] = {
    "gcp:organizations/getClientConfig:getClientConfig": {"project": "project", "region": "region"},
    "azure-native:authorization:getClientConfig": {"subscriptionId": "subscriptionId"},
    "aws:index/getRegion:getRegion": {"name": "region", "region": "region"},
}
