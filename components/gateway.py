"""The cluster's inference Gateway, terminating TLS with a certificate cert-manager issues.

Seed 003's shape: one Gateway, an HTTPS listener whose certificate comes from a cert-manager
``Certificate``, and a self-signed CA so renewal needs nothing external. The CA lives in the
gateway namespace (a namespaced ``Issuer``, not a ClusterIssuer: nothing else should mint
certificates from it). For a public name, point ``GatewayArgs.issuer`` at an ACME or
organisation issuer instead.

Routes may attach from the inference namespace (the per-pool routes) and the router's
namespace only. Local (kind) clusters also get a plain-HTTP listener: no public exposure there,
and the simulated pools are reached in-cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import inference_data as data
from fleet import layout
from fleet.spec import ClusterSpec

CERT_API = "cert-manager.io/v1"


def gateway_hostnames(cluster: ClusterSpec) -> list[str]:
    """Names the certificate covers: the public name if set, always the in-cluster Service names."""
    svc = f"{data.GATEWAY_SERVICE}.{layout.NS_GATEWAY}"
    names = [cluster.gateway_hostname] if cluster.gateway_hostname else []
    return names + [f"{svc}.svc", f"{svc}.svc.cluster.local"]


def gateway_url(cluster: ClusterSpec) -> str:
    host = cluster.gateway_hostname or f"{data.GATEWAY_SERVICE}.{layout.NS_GATEWAY}.svc.cluster.local"
    return f"https://{host}"


@dataclass
class GatewayArgs:
    cluster: ClusterSpec
    gateway_class_name: str
    issuer: dict[str, str] | None = None
    """cert-manager issuerRef for the serving certificate; None: the gateway's own self-signed CA."""


class Gateway(pulumi.ComponentResource):
    def __init__(self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:inference:Gateway", name, None, opts)
        ns = layout.NS_GATEWAY
        labels = {**layout.COMMON_LABELS, layout.COMPONENT: "gateway"}
        child = pulumi.ResourceOptions(parent=self)

        def meta(obj_name: str) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(name=obj_name, namespace=ns, labels=labels)

        def cr(res: str, kind: str, obj_name: str, spec: dict, api: str = CERT_API,
               depends: list[pulumi.Resource] | None = None) -> k8s.apiextensions.CustomResource:
            return k8s.apiextensions.CustomResource(
                f"{name}-{res}", api_version=api, kind=kind, metadata=meta(obj_name), spec=spec,
                opts=pulumi.ResourceOptions(parent=self, depends_on=depends or []))

        issuer = args.issuer
        if issuer is None:
            selfsigned = cr("selfsigned-issuer", "Issuer", "fleet-gateway-selfsigned", {"selfSigned": {}})
            ca = cr("ca-certificate", "Certificate", "fleet-gateway-ca", {
                "isCA": True,
                "commonName": f"inference-fleet {args.cluster.name} gateway CA",
                "secretName": data.GATEWAY_CA_SECRET,
                "duration": data.CA_DURATION,
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                "issuerRef": {"group": "cert-manager.io", "kind": "Issuer", "name": "fleet-gateway-selfsigned"},
            }, depends=[selfsigned])
            ca_issuer = cr("ca-issuer", "Issuer", "fleet-gateway-ca",
                           {"ca": {"secretName": data.GATEWAY_CA_SECRET}}, depends=[ca])
            issuer = {"group": "cert-manager.io", "kind": "Issuer", "name": "fleet-gateway-ca"}
            issuer_deps: list[pulumi.Resource] = [ca_issuer]
        else:
            issuer_deps = []

        hostnames = gateway_hostnames(args.cluster)
        self.certificate = cr("certificate", "Certificate", data.GATEWAY_TLS_SECRET, {
            "secretName": data.GATEWAY_TLS_SECRET,
            # No commonName: it is capped at 64 characters and clients match on dnsNames anyway.
            "dnsNames": hostnames,
            "duration": data.CERT_DURATION,
            "renewBefore": data.CERT_RENEW_BEFORE,
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "usages": ["server auth", "digital signature"],  # ECDSA: no key encipherment
            "issuerRef": dict(issuer),
        }, depends=issuer_deps)

        allowed = {"namespaces": {"from": "Selector", "selector": {"matchExpressions": [{
            "key": "kubernetes.io/metadata.name", "operator": "In",
            "values": [layout.NS_INFERENCE, layout.NS_ROUTER]}]}},
            "kinds": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}]}
        https: dict = {
            "name": "https",
            "protocol": "HTTPS",
            "port": layout.GATEWAY_HTTPS_PORT,
            "tls": {"mode": "Terminate", "certificateRefs": [
                {"group": "", "kind": "Secret", "name": data.GATEWAY_TLS_SECRET}]},
            "allowedRoutes": allowed,
        }
        if args.cluster.gateway_hostname:
            https["hostname"] = args.cluster.gateway_hostname
        listeners = [https]
        if args.cluster.cloud == "local":
            listeners.append({"name": "http", "protocol": "HTTP", "port": layout.GATEWAY_HTTP_PORT,
                              "allowedRoutes": allowed})
        self.gateway = cr("gateway", "Gateway", layout.GATEWAY_NAME, {
            "gatewayClassName": args.gateway_class_name,
            "listeners": listeners,
        }, api="gateway.networking.k8s.io/v1", depends=[self.certificate])

        self.url = pulumi.Output.from_input(gateway_url(args.cluster))
        self.register_outputs({"url": self.url})
