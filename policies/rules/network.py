"""Network: every namespace the stack creates has a default-deny policy; Gateways terminate TLS.

Risk: a model server that can reach anything, or be reached by anything, turns one compromised
pod into the whole fleet; plaintext at the edge leaks prompts and API keys.
"""

from __future__ import annotations

from pulumi_policy import EnforcementLevel, ResourceValidationPolicy, StackValidationPolicy

NAMESPACE = "kubernetes:core/v1:Namespace"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
GATEWAY = "kubernetes:gateway.networking.k8s.io/v1:Gateway"


def is_default_deny(props) -> bool:
    spec = props.get("spec") or {}
    selector = spec.get("podSelector")
    return (selector is not None and not (selector.get("matchLabels") or selector.get("matchExpressions"))
            and "Ingress" in (spec.get("policyTypes") or []) and not spec.get("ingress"))


def _default_deny(args, report):
    cluster_of = lambda r: r.provider.urn if r.provider else ""  # noqa: E731 - namespaces are per cluster
    denied = {(cluster_of(r), (r.props.get("metadata") or {}).get("namespace"))
              for r in args.resources if r.resource_type == NETPOL and is_default_deny(r.props)}
    for r in args.resources:
        if r.resource_type == NAMESPACE:
            name = (r.props.get("metadata") or {}).get("name")
            if (cluster_of(r), name) not in denied:
                report(f"namespace {name!r} has no default-deny NetworkPolicy", r.urn)


def _gateway_tls(args, report):
    if args.resource_type != GATEWAY:
        return
    listeners = (args.props.get("spec") or {}).get("listeners") or []
    tls = [l for l in listeners if l.get("protocol") == "HTTPS"
           and ((l.get("tls") or {}).get("certificateRefs")) and (l.get("tls") or {}).get("mode", "Terminate") == "Terminate"]
    if not tls:
        report("Gateway has no HTTPS listener terminating TLS with a certificate")


POLICIES = [
    StackValidationPolicy(
        name="default-deny-every-namespace",
        description="Every namespace the stack creates has a default-deny NetworkPolicy.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_default_deny,
        remediation_steps="Add a NetworkPolicy with an empty podSelector and policyTypes [Ingress, Egress] in the "
                          "namespace (components/network_policies.py does this for namespaces it is told about)."),
    ResourceValidationPolicy(
        name="gateways-terminate-tls", description="Gateways have an HTTPS listener with a certificate.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_gateway_tls,
        remediation_steps="Add an HTTPS listener with tls.mode Terminate and certificateRefs to a cert-manager "
                          "Certificate's Secret."),
]
