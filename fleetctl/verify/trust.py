"""Trust: the router trusts the CA that signs each gateway it calls; certificates cover the names.

The router verifies a pool's TLS against the pool's ``ca_file`` (a PEM bundle, and only that) or,
without one, the image's default trust store — or the bundle named by ``SSL_CERT_FILE`` (Python ssl
docs, ``load_default_certs`` -> ``set_default_verify_paths``); see router/fleet_router/tls.py. A
gateway certificate from a cert-manager ``selfSigned`` or ``ca`` Issuer is in no default store; an
``acme`` issuer's is. A ``ca_file`` must be a file of a mounted ConfigMap or Secret (else the router
refuses to start), and where the plan shows both — the ConfigMap's text and the Issuer's
``inference-fleet.io/ca-sha256`` (the fingerprint of the CA in its Secret, which a plan masks) — the
bundle must hold that CA. cert-manager v1.19 Certificate: ``spec.secretName``, ``spec.dnsNames``,
``spec.issuerRef``; CA Issuer: ``spec.ca.secretName``.
"""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import urlsplit

from fleet.layout import CA_SHA256_ANNOTATION, pem_certificate_sha256s
from fleetctl.verify.findings import Finding
from fleetctl.verify.routing import attached_listeners, gateway_for_host, host_matches, router_config
from fleetctl.verify.topology import Cluster, Obj, Topology, workload_templates


def _certificate(cluster: Cluster, ns: str, secret: str) -> Obj | None:
    for c in cluster.of_kind("Certificate"):
        if c.namespace == ns and c.spec.get("secretName") == secret:
            return c
    return None


def _issuer(cluster: Cluster, cert: Obj) -> Obj | None:
    ref = cert.spec.get("issuerRef") or {}
    kind = ref.get("kind", "Issuer")
    return cluster.get(kind, cert.namespace if kind == "Issuer" else "", ref.get("name", ""))


def _listener_cert(cluster: Cluster, gw: Obj, lst: Mapping[str, Any]) -> Obj | None:
    for ref in (lst.get("tls") or {}).get("certificateRefs") or []:
        if ref.get("kind", "Secret") == "Secret":
            cert = _certificate(cluster, ref.get("namespace") or gw.namespace, ref.get("name", ""))
            if cert is not None:
                return cert
    return None


def covers(names: list[str], host: str) -> bool:
    return any(host_matches(n, host) for n in names)


def _router_trusts_private_ca(cluster: Cluster, router_pod: Mapping[str, Any]) -> bool:
    """SSL_CERT_FILE set in the router container to a file under a mounted Secret/ConfigMap/projected volume."""
    vols = {v.get("name"): v for v in router_pod.get("volumes") or []}
    for c in router_pod.get("containers") or []:
        env = {e.get("name"): e.get("value") for e in c.get("env") or []}
        path = env.get("SSL_CERT_FILE")
        if not path:
            continue
        for m in c.get("volumeMounts") or []:
            if path.startswith(m.get("mountPath", "").rstrip("/") + "/"):
                v = vols.get(m.get("name"), {})
                if any(k in v for k in ("secret", "configMap", "projected")):
                    return True
    return False


def mounted_file(cluster: Cluster, namespace: str, pod: Mapping[str, Any], path: str
                 ) -> tuple[str | None, str | None]:
    """Where ``path`` comes from in the pod — ``ConfigMap ns/name key k``, ``Secret ns/name`` or a
    projected volume — and its text when the plan shows it (a ConfigMap's data); (None, None) when no
    container mounts it from one of those."""
    vols = {v.get("name"): v for v in pod.get("volumes") or []}
    for c in pod.get("containers") or []:
        # The deepest mount holds the path (a volume mounted below another hides what is there).
        mounts = sorted(c.get("volumeMounts") or [], key=lambda m: -len(m.get("mountPath", "")))
        for m in mounts:
            root = m.get("mountPath", "").rstrip("/") + "/"
            if not path.startswith(root):
                continue
            rel = path[len(root):]
            v = vols.get(m.get("name"), {})
            if "configMap" in v:
                name = v["configMap"].get("name", "")
                items = {i.get("path"): i.get("key") for i in v["configMap"].get("items") or []}
                if items and rel not in items:
                    break
                key = items.get(rel, rel)
                cm = cluster.get("ConfigMap", namespace, name)
                data = (cm.doc.get("data") or {}) if cm is not None else None
                if data is not None and key not in data:
                    break  # the ConfigMap has no such key: no such file
                return f"ConfigMap {namespace}/{name} key {key}", (data or {}).get(key)
            if "secret" in v:
                return f"Secret {namespace}/{v['secret'].get('secretName', '')}", None
            if "projected" in v:
                return f"projected volume {m.get('name')}", None
            break  # an emptyDir or a volume that is not there
    return None, None


def check(topo: Topology) -> list[Finding]:
    out: list[Finding] = []
    for cluster in topo.clusters.values():
        # Every HTTPS listener's certificate covers its hostname and the hostnames of routes it takes.
        for gw in cluster.of_kind("Gateway"):
            for lst in gw.spec.get("listeners") or []:
                if lst.get("protocol") != "HTTPS":
                    continue
                cert = _listener_cert(cluster, gw, lst)
                if cert is None:
                    continue
                names = list(cert.spec.get("dnsNames") or [])
                wanted = [lst["hostname"]] if lst.get("hostname") else []
                for route in cluster.of_kind("HTTPRoute"):
                    for ref in route.spec.get("parentRefs") or []:
                        g, ok, _ = attached_listeners(cluster, route, ref)
                        if g is gw and lst in ok:
                            wanted += [h for h in route.spec.get("hostnames") or [] if not h.startswith("*.")]
                for h in sorted(set(wanted)):
                    if not covers(names, h):
                        out.append(Finding("trust", cluster.name, cert.ref, cert.file,
                                           f"serves {h} on {gw.ref} listener {lst.get('name')} but its dnsNames "
                                           f"({', '.join(names)}) do not cover it: clients reject the handshake",
                                           f"add {h} to spec.dnsNames"))
        # The router trusts the CA of every gateway it calls over TLS.
        rc = router_config(cluster)
        if rc is None:
            continue
        cm, cfg = rc
        routers = [t for t in workload_templates(cluster) if t.namespace == cm.namespace and t.owner.kind == "Deployment"
                   and any((v.get("configMap") or {}).get("name") == cm.name for v in t.spec.get("volumes") or [])]
        for t in routers[:1]:
            trusted = _router_trusts_private_ca(cluster, t.spec)
            for pool in cfg.get("pools") or []:
                url = urlsplit(str(pool.get("url", "")))
                if url.scheme != "https":
                    continue
                for c, gw, lst in gateway_for_host(topo, url.hostname or "")[:1]:
                    cert = _listener_cert(c, gw, lst)
                    if cert is None:
                        continue
                    issuer = _issuer(c, cert)
                    private = issuer is None or any(k in issuer.spec for k in ("selfSigned", "ca", "vault"))
                    what = f"{issuer.kind} {issuer.name}" if issuer else "an issuer not in the plan"
                    ca_file = pool.get("ca_file")
                    if ca_file:
                        source, text = mounted_file(cluster, t.namespace, t.spec, str(ca_file))
                        want = [h for h in (issuer.doc.get("metadata", {}).get("annotations") or {}).get(
                            CA_SHA256_ANNOTATION, "").split(",") if h] if issuer else []
                        if source is None:
                            out.append(Finding(
                                "trust", cluster.name, t.owner.ref, t.owner.file,
                                f"pool {pool.get('name')}'s ca_file {ca_file} is no file of a ConfigMap or Secret "
                                "the router mounts: the router refuses to start",
                                "mount the bundle at that path (components/router.py: the upstream-ca ConfigMap)"))
                        elif want and text is not None and not set(want) & set(pem_certificate_sha256s(text)):
                            out.append(Finding(
                                "trust", cluster.name, t.owner.ref, t.owner.file,
                                f"calls {url.geturl()} (pool {pool.get('name')}) trusting only {ca_file} "
                                f"({source}), which does not hold the CA of {what} on {c.name} "
                                f"(sha256 {want[0][:16]}...) that signs {cert.name}: every handshake fails",
                                f"put {c.name}'s gateway CA certificate in that bundle"))
                    elif private and not trusted:
                        out.append(Finding(
                            "trust", cluster.name, t.owner.ref, t.owner.file,
                            f"calls {url.geturl()} (pool {pool.get('name')}), whose certificate {cert.name} on "
                            f"{c.name} is signed by {what}, a private CA; the router trusts only the default store",
                            "set the pool's ca_file to a mounted bundle of that CA (or mount one and set "
                            "SSL_CERT_FILE to it, or use a publicly trusted issuer for the gateways)"))
                    if not covers(list(cert.spec.get("dnsNames") or []), url.hostname or ""):
                        out.append(Finding("trust", c.name, cert.ref, cert.file,
                                           f"the router calls {url.hostname}, which the certificate does not cover",
                                           f"add {url.hostname} to spec.dnsNames"))
    return sorted(set(out))
