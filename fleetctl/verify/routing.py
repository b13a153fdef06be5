"""Routing: routes attach, backends exist, pickers answer, and the router reaches every model.

Gateway API v1 semantics (gateway-api.sigs.k8s.io/reference/spec, v1.4): a parentRef attaches to
the Gateway's listeners it names (sectionName/port) whose protocol carries the route's kind, whose
``allowedRoutes`` admit the route's namespace (Same by default) and kind, and whose hostname
intersects one of the route's (a listener or route without hostnames matches any; ``*.x`` matches
every name below x, not x itself). A route attached to no listener is never programmed.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

import yaml

from fleetctl.verify.findings import Finding
from fleetctl.verify.topology import Cluster, Obj, Topology, container_args, flag, selects, workload_templates

GW_GROUP = "gateway.networking.k8s.io"
POOL_GROUPS = ("inference.networking.k8s.io", "inference.networking.x-k8s.io")
ROUTER_CONFIG = ("fleet-router", "fleet-router-config", "config.yaml")
"""Namespace, ConfigMap and key of the router's config (components/router.py renders it there)."""

_ROUTE_PROTOCOLS = {"HTTPRoute": ("HTTP", "HTTPS"), "GRPCRoute": ("HTTP", "HTTPS")}


def host_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower(), host.lower()
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and host != pattern[2:]
    return pattern == host


def hostnames_intersect(listener: str | None, route: Iterable[str]) -> bool:
    route = list(route)
    if not listener or not route:
        return True
    for h in route:
        if host_matches(listener, h) or host_matches(h, listener):
            return True
        if listener.startswith("*.") and h.startswith("*.") and (h.endswith(listener[1:]) or listener.endswith(h[1:])):
            return True
    return False


def listener_admits(gw: Obj, listener: Mapping[str, Any], route: Obj, ns_labels: Mapping[str, Mapping[str, str]]
                    ) -> str | None:
    """Why this listener does not take the route (None = it does), hostname aside."""
    if listener.get("protocol") not in _ROUTE_PROTOCOLS.get(route.kind, ()):
        return f"listener {listener.get('name')} speaks {listener.get('protocol')}, which carries no {route.kind}"
    allowed = listener.get("allowedRoutes") or {}
    kinds = allowed.get("kinds")
    if kinds and not any(k.get("kind") == route.kind and k.get("group", GW_GROUP) == GW_GROUP for k in kinds):
        return f"listener {listener.get('name')} allows only {', '.join(k.get('kind', '') for k in kinds)}"
    ns = allowed.get("namespaces") or {}
    frm = ns.get("from", "Same")
    if frm == "Same" and route.namespace != gw.namespace:
        return f"listener {listener.get('name')} admits routes from {gw.namespace} only"
    if frm == "Selector" and not selects(ns.get("selector"), ns_labels.get(route.namespace, {})):
        return f"listener {listener.get('name')}'s namespace selector does not select {route.namespace}"
    return None


def attached_listeners(cluster: Cluster, route: Obj, ref: Mapping[str, Any]) -> tuple[Obj | None, list, list[str]]:
    """(gateway, listeners that take the route, reasons the others do not)."""
    gw = cluster.get("Gateway", ref.get("namespace") or route.namespace, ref.get("name", ""))
    if gw is None:
        return None, [], []
    ns_labels = cluster.namespace_labels()
    ok, why = [], []
    for lst in gw.spec.get("listeners") or []:
        if ref.get("sectionName") and lst.get("name") != ref["sectionName"]:
            continue
        if ref.get("port") and int(lst.get("port", 0)) != int(ref["port"]):
            continue
        reason = listener_admits(gw, lst, route, ns_labels)
        if reason is None and not hostnames_intersect(lst.get("hostname"), route.spec.get("hostnames") or []):
            reason = (f"listener {lst.get('name')} hostname {lst.get('hostname')} intersects none of the route's "
                      f"hostnames {', '.join(route.spec.get('hostnames') or [])}")
        (why.append(reason) if reason else ok.append(lst))
    return gw, ok, why


def _service_port(svc: Obj, port: int) -> bool:
    return any(int(p.get("port", -1)) == int(port) for p in svc.spec.get("ports") or [])


def _reference_granted(cluster: Cluster, route: Obj, kind: str, group: str, to_ns: str) -> bool:
    for g in cluster.of_kind("ReferenceGrant"):
        if g.namespace != to_ns:
            continue
        if any(f.get("kind") == route.kind and f.get("namespace") == route.namespace for f in g.spec.get("from") or []) \
                and any(t.get("kind") == kind and t.get("group", "") == group for t in g.spec.get("to") or []):
            return True
    return False


def _check_routes(cluster: Cluster) -> list[Finding]:
    out = []
    for route in cluster.of_kind("HTTPRoute", "GRPCRoute"):
        for ref in route.spec.get("parentRefs") or []:
            if ref.get("kind", "Gateway") != "Gateway" or ref.get("group", GW_GROUP) != GW_GROUP:
                continue
            gw, ok, why = attached_listeners(cluster, route, ref)
            gw_ns = ref.get("namespace") or route.namespace
            if gw is None:
                out.append(Finding("routing", cluster.name, route.ref, route.file,
                                   f"parentRef names Gateway {gw_ns}/{ref.get('name')}, which does not exist",
                                   "point parentRefs at the cluster's Gateway"))
            elif not ok:
                out.append(Finding("routing", cluster.name, route.ref, route.file,
                                   f"attaches to no listener of Gateway {gw_ns}/{gw.name}: " + "; ".join(why or
                                   ["no listener matches its sectionName/port"]),
                                   "give the route a hostname the listener serves (or a listener for the route's "
                                   "hostname, with a certificate for it)"))
        for rule in route.spec.get("rules") or []:
            for b in rule.get("backendRefs") or []:
                kind, group = b.get("kind", "Service"), b.get("group", "")
                ns = b.get("namespace") or route.namespace
                name = b.get("name", "")
                if ns != route.namespace and not _reference_granted(cluster, route, kind, group, ns):
                    out.append(Finding("routing", cluster.name, route.ref, route.file,
                                       f"backendRef {kind} {ns}/{name} is in another namespace and no ReferenceGrant "
                                       "allows it", f"add a ReferenceGrant in {ns} from {route.kind} in "
                                       f"{route.namespace}"))
                if kind == "Service" and group in ("", "core"):
                    svc = cluster.get("Service", ns, name)
                    if svc is None:
                        out.append(Finding("routing", cluster.name, route.ref, route.file,
                                           f"backendRef Service {ns}/{name} does not exist",
                                           "point the backendRef at an existing Service"))
                    elif b.get("port") is not None and not _service_port(svc, b["port"]):
                        out.append(Finding("routing", cluster.name, route.ref, route.file,
                                           f"backendRef Service {ns}/{name} has no port {b['port']} (it has "
                                           f"{', '.join(str(p.get('port')) for p in svc.spec.get('ports') or [])})",
                                           "use a port the Service exposes"))
                elif kind == "InferencePool" and group in POOL_GROUPS:
                    if cluster.get("InferencePool", ns, name) is None:
                        out.append(Finding("routing", cluster.name, route.ref, route.file,
                                           f"backendRef InferencePool {ns}/{name} does not exist",
                                           "point the backendRef at an existing InferencePool"))
                else:
                    out.append(Finding("routing", cluster.name, route.ref, route.file,
                                       f"backendRef of kind {group or 'core'}/{kind} is not one the gateway serves",
                                       "use a Service or an InferencePool"))
    return out


# --- InferencePools and their pickers --------------------------------------------------------------

def served_models(spec: Mapping[str, Any]) -> set[str]:
    """Model names a pod answers to: vLLM's ``--served-model-name`` (else ``--model``), for every container."""
    out: set[str] = set()
    for c in spec.get("containers") or []:
        args = container_args(c)
        for opt in ("--served-model-name", "--model"):
            names = []
            for i, a in enumerate(args):
                if a == opt:
                    names += [x for x in args[i + 1:i + 2] if not x.startswith("--")]
                    j = i + 2
                    while opt == "--served-model-name" and j < len(args) and not args[j].startswith("--"):
                        names.append(args[j])
                        j += 1
                elif a.startswith(opt + "="):
                    names.append(a.split("=", 1)[1])
            if names:
                out |= set(names)
                break
    return out


def _container_ports(spec: Mapping[str, Any]) -> set[int]:
    return {int(p["containerPort"]) for c in spec.get("containers") or [] for p in c.get("ports") or []
            if "containerPort" in p}


def _secure_serving(cluster: Cluster, svc: Obj) -> tuple[bool, Obj | None]:
    """Whether the picker behind the Service serves TLS, and its Deployment.

    GAIE v1.5.0 pkg/epp/server/options.go: ``--secure-serving`` defaults to true (a self-signed
    certificate without ``--cert-path``); upstream's inferencepool chart v1.5.0 therefore renders an
    Istio DestinationRule with ``tls.mode: SIMPLE`` for the picker (templates/istio.yaml).
    """
    sel = svc.spec.get("selector") or {}
    for t in workload_templates(cluster):
        if t.namespace == svc.namespace and sel and all(t.labels.get(k) == v for k, v in sel.items()):
            for c in t.spec.get("containers") or []:
                v = flag(container_args(c), "secure-serving")
                if v is not None:
                    return v.lower() != "false", t.owner
            return True, t.owner
    return True, None


def _destination_rule_tls(cluster: Cluster, svc: Obj, port: int) -> tuple[str | None, Obj | None]:
    """The TLS mode Istio uses towards svc:port per its DestinationRules (None = plaintext/none)."""
    fqdn = f"{svc.name}.{svc.namespace}.svc.cluster.local"
    for dr in cluster.of_kind("DestinationRule"):
        host = str(dr.spec.get("host", ""))
        # Istio resolves a short host relative to the DestinationRule's namespace.
        full = host if "." in host and host.endswith(".cluster.local") else (
            f"{host}.svc.cluster.local" if host.count(".") == 1 else f"{host}.{dr.namespace}.svc.cluster.local")
        if full != fqdn:
            continue
        tp = dr.spec.get("trafficPolicy") or {}
        for pls in tp.get("portLevelSettings") or []:
            if int((pls.get("port") or {}).get("number", -1)) == port and pls.get("tls"):
                return pls["tls"].get("mode"), dr
        mode = (tp.get("tls") or {}).get("mode")
        return mode, dr
    return None, None


def _check_pools(cluster: Cluster) -> list[Finding]:
    out = []
    istio = any(g.spec.get("gatewayClassName") == "istio" for g in cluster.of_kind("Gateway"))
    templates = workload_templates(cluster)
    for pool in cluster.of_kind("InferencePool"):
        ref = pool.spec.get("endpointPickerRef") or pool.spec.get("extensionRef") or {}
        svc_name, port = ref.get("name", ""), int((ref.get("port") or {}).get("number", ref.get("portNumber", 9002)))
        svc = cluster.get("Service", pool.namespace, svc_name)
        if svc is None:
            out.append(Finding("routing", cluster.name, pool.ref, pool.file,
                               f"endpointPickerRef names Service {pool.namespace}/{svc_name}, which does not exist",
                               "point endpointPickerRef at the picker's Service"))
        elif not _service_port(svc, port):
            out.append(Finding("routing", cluster.name, pool.ref, pool.file,
                               f"the picker Service {svc_name} has no port {port}",
                               "use the port the picker Service exposes for ext-proc"))
        else:
            tls, picker = _secure_serving(cluster, svc)
            if picker is None:
                out.append(Finding("routing", cluster.name, svc.ref, svc.file,
                                   "selects no endpoint-picker pod", "match the Service selector to the picker's labels"))
            elif istio:
                mode, dr = _destination_rule_tls(cluster, svc, port)
                if tls and mode not in ("SIMPLE", "MUTUAL", "ISTIO_MUTUAL"):
                    out.append(Finding(
                        "routing", cluster.name, pool.ref, pool.file,
                        f"picker {picker.name} serves ext-proc over TLS (v1.5.0 --secure-serving default) but "
                        + ("no DestinationRule tells Istio" if dr is None else f"{dr.ref} sets tls mode {mode}")
                        + f" to originate TLS to {svc_name}:{port}: every request fails at the gateway",
                        f"add a DestinationRule for {svc_name}.{svc.namespace}.svc.cluster.local with "
                        "trafficPolicy.tls.mode SIMPLE (insecureSkipVerify: true, as upstream's chart)"))
                elif not tls and mode in ("SIMPLE", "MUTUAL"):
                    out.append(Finding("routing", cluster.name, dr.ref, dr.file,
                                       f"originates TLS to {svc_name}:{port} but picker {picker.name} runs with "
                                       "--secure-serving=false", "drop the DestinationRule's tls or serve TLS"))
        selected = [t for t in templates if t.namespace == pool.namespace
                    and selects(pool.spec.get("selector") or {}, t.labels)]
        if not selected:
            out.append(Finding("routing", cluster.name, pool.ref, pool.file,
                               "its selector matches no model-server pod template",
                               "match spec.selector to the model servers' pod labels"))
            continue
        ports = {int(p.get("number", 0)) for p in pool.spec.get("targetPorts") or []}
        served_ports = set().union(*(_container_ports(t.spec) for t in selected))
        missing = sorted(ports - served_ports)
        if missing and served_ports:
            out.append(Finding("routing", cluster.name, pool.ref, pool.file,
                               f"targetPorts {missing} are not ports of the selected model servers "
                               f"({', '.join(map(str, sorted(served_ports)))})",
                               "set targetPorts to the model server's container port"))
    return out


# --- the router reaches every model --------------------------------------------------------------

def router_config(cluster: Cluster) -> tuple[Obj, dict[str, Any]] | None:
    ns, name, key = ROUTER_CONFIG
    cm = cluster.get("ConfigMap", ns, name)
    if cm is None:
        return None
    try:
        return cm, yaml.safe_load((cm.doc.get("data") or {}).get(key, "")) or {}
    except yaml.YAMLError:
        return cm, {}


def _path_matches(match: Mapping[str, Any], path: str) -> bool:
    p = match.get("path") or {"type": "PathPrefix", "value": "/"}
    v = p.get("value", "/")
    if p.get("type", "PathPrefix") == "Exact":
        return path == v
    if p.get("type") == "PathPrefix":
        v = v.rstrip("/")
        return path == v or path.startswith(v + "/") or v == ""
    return False


def _rule_for(route: Obj, path: str) -> Mapping[str, Any] | None:
    """The first rule that takes a router request to ``path`` (the router sets no routing headers)."""
    for rule in route.spec.get("rules") or []:
        for m in rule.get("matches") or [{}]:
            if not m.get("headers") and not m.get("queryParams") and m.get("method") in (None, "POST") \
                    and _path_matches(m, path):
                return rule
    return None


def gateway_for_host(topo: Topology, host: str) -> list[tuple[Cluster, Obj, Mapping[str, Any]]]:
    """(cluster, Gateway, listener) answering for ``host``: a listener hostname, or the gateway's Service."""
    out = []
    for c in topo.clusters.values():
        for gw in c.of_kind("Gateway"):
            internal = {f"{gw.name}-{gw.spec.get('gatewayClassName', 'istio')}.{gw.namespace}.svc.cluster.local",
                        f"{gw.name}-{gw.spec.get('gatewayClassName', 'istio')}.{gw.namespace}.svc"}
            for lst in gw.spec.get("listeners") or []:
                if (lst.get("hostname") and host_matches(lst["hostname"], host)) or host in internal:
                    out.append((c, gw, lst))
    return out


def _pods_behind(cluster: Cluster, backend: Mapping[str, Any], ns: str) -> list:
    kind = backend.get("kind", "Service")
    name = backend.get("name", "")
    if kind == "InferencePool":
        pool = cluster.get("InferencePool", backend.get("namespace") or ns, name)
        sel = (pool.spec.get("selector") if pool else None)
    else:
        svc = cluster.get("Service", backend.get("namespace") or ns, name)
        sel = {"matchLabels": svc.spec.get("selector") or {}} if svc and svc.spec.get("selector") else None
    if not sel:
        return []
    return [t for t in workload_templates(cluster) if t.namespace == (backend.get("namespace") or ns)
            and selects(sel, t.labels)]


def _check_router(topo: Topology) -> list[Finding]:
    out = []
    for cluster in topo.clusters.values():
        rc = router_config(cluster)
        if rc is None:
            continue
        cm, cfg = rc
        for pool in cfg.get("pools") or []:
            url = urlsplit(str(pool.get("url", "")))
            host, path = url.hostname or "", url.path.rstrip("/") + "/v1/chat/completions"
            models = set(pool.get("models") or [])
            pods: list = []
            how = ""
            targets = gateway_for_host(topo, host)
            svc_host = host.split(".")
            if targets:
                for c, gw, lst in targets:
                    for route in c.of_kind("HTTPRoute"):
                        for ref in route.spec.get("parentRefs") or []:
                            g, ok, _ = attached_listeners(c, route, ref)
                            if g is not gw or lst not in ok:
                                continue
                            if not hostnames_intersect(host, route.spec.get("hostnames") or []):
                                continue
                            rule = _rule_for(route, path)
                            if rule is None:
                                continue
                            for b in rule.get("backendRefs") or []:
                                pods += _pods_behind(c, b, route.namespace)
                            how = f"{route.ref} on {gw.ref}"
                            break
                        if how:
                            break
                    if how:
                        break
                if not how:
                    out.append(Finding("routing", cluster.name, cm.ref, cm.file,
                                       f"router pool {pool.get('name')} calls {url.geturl()}, but no HTTPRoute "
                                       f"attached to the Gateway for {host} matches {path} without headers",
                                       f"add a route for {url.path or '/'} on that Gateway's listener"))
                    continue
            elif len(svc_host) >= 2 and (len(svc_host) == 2 or svc_host[2] == "svc"):
                ns = svc_host[1]
                c = next((c for c in topo.clusters.values() if c.get("Service", ns, svc_host[0])), None)
                if c is None:
                    out.append(Finding("routing", cluster.name, cm.ref, cm.file,
                                       f"router pool {pool.get('name')} calls {url.geturl()}: no Service "
                                       f"{ns}/{svc_host[0]} in any cluster", "point the pool at an existing Service"))
                    continue
                svc = c.get("Service", ns, svc_host[0])
                port = url.port or (443 if url.scheme == "https" else 80)
                if not _service_port(svc, port):
                    out.append(Finding("routing", cluster.name, cm.ref, cm.file,
                                       f"router pool {pool.get('name')} calls port {port} of Service {ns}/{svc.name}, "
                                       "which does not expose it", "use the Service's port"))
                    continue
                pods, how = _pods_behind(c, {"kind": "Service", "name": svc.name}, ns), svc.ref
            else:
                out.append(Finding("routing", cluster.name, cm.ref, cm.file,
                                   f"router pool {pool.get('name')} calls {host}, which no Gateway listener of this "
                                   "topology serves", "use the hostname of a Gateway listener"))
                continue
            served = set().union(*(served_models(t.spec) for t in pods)) if pods else set()
            for m in sorted(models - served):
                out.append(Finding("routing", cluster.name, cm.ref, cm.file,
                                   f"router pool {pool.get('name')} lists model {m}, but the pods behind {how} serve "
                                   + (", ".join(sorted(served)) or "nothing"),
                                   "route the pool to servers of that model or drop it from the pool's models"))
    return out


# The Inference Extension's body-based router copies the request body's "model" into this header
# so routes can match it (body-based-routing chart v1.5.0, image gateway-api-inference-extension/bbr);
# nothing else sets it.
MODEL_HEADER = "x-gateway-model-name"
BBR_IMAGE = "gateway-api-inference-extension/bbr"


def _pool_models(cluster: Cluster, ns: str, name: str) -> set[str] | None:
    pods = _pods_behind(cluster, {"kind": "InferencePool", "name": name, "namespace": ns}, ns)
    return set().union(*(served_models(t.spec) for t in pods)) if pods else None


def _check_models_per_rule(cluster: Cluster) -> list[Finding]:
    """Rules that send a model's requests to pools that do not serve it, or match a header no one sets."""
    out = []
    bbr = any(BBR_IMAGE in str(c.get("image", "")) for t in workload_templates(cluster)
              for c in t.spec.get("containers") or [])
    for route in cluster.of_kind("HTTPRoute"):
        for i, rule in enumerate(route.spec.get("rules") or []):
            pools = [b for b in rule.get("backendRefs") or [] if b.get("kind") == "InferencePool"]
            if not pools:
                continue
            wanted = {h.get("value") for m in rule.get("matches") or [] for h in m.get("headers") or []
                      if str(h.get("name", "")).lower() == MODEL_HEADER}
            if wanted and not bbr:
                out.append(Finding("routing", cluster.name, route.ref, route.file,
                                   f"rule {i} matches the {MODEL_HEADER} header, which only a body-based router sets, "
                                   "and none is deployed: the rule never matches",
                                   "deploy the body-based-routing chart (v1.5.0) for this gateway, or route on the "
                                   "path/headers clients send"))
            models = {b.get("name"): _pool_models(cluster, b.get("namespace") or route.namespace, b.get("name", ""))
                      for b in pools}
            known = {k: v for k, v in models.items() if v is not None}
            for m in sorted(x for x in wanted if x):
                for pool, served in known.items():
                    if m not in served:
                        out.append(Finding("routing", cluster.name, route.ref, route.file,
                                           f"rule {i} sends requests for model {m} to InferencePool {pool}, whose "
                                           f"servers serve only {', '.join(sorted(served)) or 'nothing'}",
                                           "send each model's rule only to pools that serve it"))
            if not wanted and len(known) > 1 and len({frozenset(v) for v in known.values()}) > 1:
                every = set.intersection(*known.values())
                for pool, served in sorted(known.items()):
                    missing = sorted(set().union(*known.values()) - served)
                    if missing:
                        out.append(Finding("routing", cluster.name, route.ref, route.file,
                                           f"rule {i} splits traffic across pools that serve different models: "
                                           f"requests for {', '.join(missing)} weighted to {pool} fail there "
                                           f"(models common to all: {', '.join(sorted(every)) or 'none'})",
                                           "split a rule only across pools that serve the same models (one rule "
                                           "per model, matched on the model)"))
    return out


def check(topo: Topology) -> list[Finding]:
    out: list[Finding] = []
    for cluster in topo.clusters.values():
        out += _check_routes(cluster) + _check_pools(cluster) + _check_models_per_rule(cluster)
    return out + _check_router(topo)
