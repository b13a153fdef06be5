"""The cluster's inference Gateway, terminating TLS with certificates cert-manager issues.

One Gateway per cluster: an HTTPS listener for the gateway's own name (the per-pool routes the
cross-cloud router calls), and — on the cluster that hosts the router, when the router has a
hostname of its own — a second HTTPS listener ``router`` for that name with a certificate for it.
Gateway API v1.4.1 (../shared/crds/gateway_httproutes.yaml, ``HTTPRouteSpec.hostnames``): "If a
hostname is specified by both the Listener and HTTPRoute, there must be at least one intersecting
hostname for the HTTPRoute to be attached to the Listener", else the route is not accepted; and
(gateway_gateways.yaml) listeners on one port differ by hostname: "Combination of port, protocol
and hostname must be unique". So clients reach the router at its own name on 443 (SNI picks the
listener and its certificate) while the pools keep theirs; the router's route names its listener
(``sectionName``), so it never lands on one whose certificate does not cover its name.

Who signs: each cluster's own CA, made by the program (pulumi_tls: an ECDSA P-256 key, a Pulumi
secret, and a self-signed CA certificate) and installed as a cert-manager ``ca`` Issuer in the
gateway namespace. cert-manager v1.19.1 CA issuer (pkg/issuer/ca/setup.go): the Issuer's
``spec.ca.secretName`` names a Secret in the Issuer's own namespace holding ``tls.crt`` (which must
be a CA certificate) and ``tls.key``; cert-manager never generates it. Why this and not the
alternatives (the router must trust the CA of every gateway it calls, across clusters):

* cert-manager's own self-signed CA per cluster (what this did before) keeps the key in the cluster,
  but its certificate exists only after cert-manager issues it at run time and is rotated without
  Pulumi knowing, so the router — often on another cluster — could never be handed it at deploy time;
  trust-manager distributes bundles only inside one cluster.
* one fleet CA on every cluster would do, but its key would sit in every cluster's Secret: whoever
  reads it on one cluster could mint a certificate for any other cluster's gateway. With a CA per
  cluster and the router trusting each pool's gateway only through that cluster's CA (the pool's
  ``ca_file``, fleet_router.tls), a leaked key impersonates one cluster's gateway, not the fleet.
* a public ACME issuer needs DNS-provider credentials per cloud and public zones; pass
  ``GatewayArgs.issuer`` for that (the router then verifies with the default store, no bundle).

The CA key never appears in code or stack files: pulumi_tls generates it, Pulumi state keeps it
encrypted as a secret, and it reaches the cluster only as the Issuer's Secret. The CA certificate is
renewed by re-signing the same key (``early_renewal_hours``): certificates issued before still chain
to it, and the router's bundle is updated on the same ``pulumi up``.

Routes may attach from the inference namespace (the per-pool routes) and the router's namespace
(the router's listener: only the router's). Local (kind) clusters also get a plain-HTTP listener: no
public exposure there, and the simulated pools are reached in-cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_tls as tls

from components import inference_data as data
from fleet import layout
from fleet.spec import ClusterSpec

CERT_API = "cert-manager.io/v1"
HTTP_LISTENER = "http"
"""Local (kind) clusters' plain-HTTP listener."""
ROUTER_LISTENER = "router"
"""The listener that serves the router's own hostname (the router's HTTPRoute names it)."""
ROUTER_TLS_SECRET = "fleet-router-tls"
CA_ISSUER = "fleet-gateway-ca"
CA_VALIDITY_HOURS = 10 * 365 * 24
CA_EARLY_RENEWAL_HOURS = 365 * 24
"""Re-signed (same key) on the first ``pulumi up`` in the CA's last year."""


def gateway_hostnames(cluster: ClusterSpec) -> list[str]:
    """Names the certificate covers: the public name if set, always the in-cluster Service names."""
    svc = f"{data.GATEWAY_SERVICE}.{layout.NS_GATEWAY}"
    names = [cluster.gateway_hostname] if cluster.gateway_hostname else []
    return names + [f"{svc}.svc", f"{svc}.svc.cluster.local"]


def gateway_url(cluster: ClusterSpec) -> str:
    host = cluster.gateway_hostname or f"{data.GATEWAY_SERVICE}.{layout.NS_GATEWAY}.svc.cluster.local"
    return f"https://{host}"


def router_listener_hostname(cluster: ClusterSpec, router_hostname: str | None) -> str | None:
    """The hostname the ``router`` listener serves, if the router needs a listener of its own: it has
    a hostname, and not the gateway's (that one the ``https`` listener already serves)."""
    return router_hostname if router_hostname and router_hostname != cluster.gateway_hostname else None


@dataclass
class GatewayArgs:
    cluster: ClusterSpec
    gateway_class_name: str
    issuer: dict[str, str] | None = None
    """cert-manager issuerRef for the serving certificates; None: the cluster's own CA (see above)."""
    router_hostname: str | None = None
    """The router's public hostname when this cluster hosts the router (``spec.router.hostname``)."""


class Gateway(pulumi.ComponentResource):
    def __init__(self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:inference:Gateway", name, None, opts)
        ns = layout.NS_GATEWAY
        labels = {**layout.COMMON_LABELS, layout.COMPONENT: "gateway"}
        child = pulumi.ResourceOptions(parent=self)

        def meta(obj_name: str, annotations=None) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(name=obj_name, namespace=ns, labels=labels, annotations=annotations)

        def cr(res: str, kind: str, obj_name: str, spec: dict, api: str = CERT_API,
               depends: list[pulumi.Resource] | None = None, annotations=None) -> k8s.apiextensions.CustomResource:
            return k8s.apiextensions.CustomResource(
                f"{name}-{res}", api_version=api, kind=kind, metadata=meta(obj_name, annotations), spec=spec,
                opts=pulumi.ResourceOptions(parent=self, depends_on=depends or []))

        issuer = args.issuer
        self.ca_cert_pem: pulumi.Output[str] | None = None
        """The cluster CA's certificate (public), for whoever calls this gateway; None: a public issuer."""
        if issuer is None:
            # pulumi-tls keeps no configuration of its own, but Pulumi.yaml disables default providers.
            tls_provider = tls.Provider(f"{name}-tls", opts=pulumi.ResourceOptions(parent=self))
            on_tls = pulumi.ResourceOptions(parent=self, provider=tls_provider)
            key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=on_tls)
            ca_cert = tls.SelfSignedCert(
                f"{name}-ca-cert",
                private_key_pem=key.private_key_pem,
                is_ca_certificate=True,
                set_subject_key_id=True,
                allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
                subject=tls.SelfSignedCertSubjectArgs(common_name=f"inference-fleet {args.cluster.name} gateway CA",
                                                      organization="inference-fleet"),
                validity_period_hours=CA_VALIDITY_HOURS,
                early_renewal_hours=CA_EARLY_RENEWAL_HOURS,
                opts=on_tls,
            )
            self.ca_cert_pem = ca_cert.cert_pem
            ca_secret = k8s.core.v1.Secret(
                f"{name}-ca-secret",
                metadata=meta(data.GATEWAY_CA_SECRET),
                type="kubernetes.io/tls",
                string_data={"tls.crt": ca_cert.cert_pem, "tls.key": pulumi.Output.secret(key.private_key_pem)},
                opts=child,
            )
            fingerprint = ca_cert.cert_pem.apply(lambda pem: {layout.CA_SHA256_ANNOTATION: ",".join(
                layout.pem_certificate_sha256s(pem))})
            ca_issuer = cr("ca-issuer", "Issuer", CA_ISSUER, {"ca": {"secretName": data.GATEWAY_CA_SECRET}},
                           depends=[ca_secret], annotations=fingerprint)
            issuer = {"group": "cert-manager.io", "kind": "Issuer", "name": CA_ISSUER}
            issuer_deps: list[pulumi.Resource] = [ca_issuer]
        else:
            issuer_deps = []

        def certificate(res: str, secret: str, dns_names: list[str]) -> k8s.apiextensions.CustomResource:
            return cr(res, "Certificate", secret, {
                "secretName": secret,
                # No commonName: it is capped at 64 characters and clients match on dnsNames anyway.
                "dnsNames": dns_names,
                "duration": data.CERT_DURATION,
                "renewBefore": data.CERT_RENEW_BEFORE,
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                "usages": ["server auth", "digital signature"],  # ECDSA: no key encipherment
                "issuerRef": dict(issuer),
            }, depends=issuer_deps)

        self.certificate = certificate("certificate", data.GATEWAY_TLS_SECRET, gateway_hostnames(args.cluster))
        router_host = router_listener_hostname(args.cluster, args.router_hostname)
        certificates = [self.certificate]
        if router_host:
            certificates.append(certificate("router-certificate", ROUTER_TLS_SECRET, [router_host]))

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
        if router_host:
            listeners.append({
                "name": ROUTER_LISTENER,
                "protocol": "HTTPS",
                "port": layout.GATEWAY_HTTPS_PORT,
                "hostname": router_host,
                "tls": {"mode": "Terminate", "certificateRefs": [
                    {"group": "", "kind": "Secret", "name": ROUTER_TLS_SECRET}]},
                "allowedRoutes": {"namespaces": {"from": "Selector", "selector": {"matchExpressions": [{
                    "key": "kubernetes.io/metadata.name", "operator": "In", "values": [layout.NS_ROUTER]}]}},
                    "kinds": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}]},
            })
        if args.cluster.cloud == "local":
            listeners.append({"name": HTTP_LISTENER, "protocol": "HTTP", "port": layout.GATEWAY_HTTP_PORT,
                              "allowedRoutes": allowed})
        self.gateway = cr("gateway", "Gateway", layout.GATEWAY_NAME, {
            "gatewayClassName": args.gateway_class_name,
            "listeners": listeners,
        }, api="gateway.networking.k8s.io/v1", depends=certificates)

        self.url = pulumi.Output.from_input(gateway_url(args.cluster))
        self.register_outputs({"url": self.url})
