"""Secrets never in plain config: env literals and ConfigMaps hold no tokens, keys or passwords.

Risk: a ConfigMap or a pod spec is readable by anyone who can `kubectl get` it, and lands in the
Pulumi state and the preview diff in plain text.
"""

from __future__ import annotations

import yaml
from pulumi_policy import EnforcementLevel, ResourceValidationPolicy

from policies.rules._util import SECRET_NAME, containers, pod_spec


def _no_env_literals(args, report):
    found = pod_spec(args.resource_type, args.props)
    if not found:
        return
    for c in containers(found[1]):
        for e in c.get("env") or []:
            if SECRET_NAME.search(str(e.get("name", ""))) and "value" in e and e.get("value") not in ("", None):
                report(f"container {c.get('name')!r} sets {e['name']} as a literal")


def _no_configmap_secrets(args, report):
    if args.resource_type != "kubernetes:core/v1:ConfigMap":
        return
    for key in (args.props.get("data") or {}):
        if SECRET_NAME.search(key):
            report(f"ConfigMap key {key!r} looks like a secret")


def _router_needs_keys(args, report):
    """A router in front of cloud pools is reachable from outside its cluster: without API keys
    anyone who finds its hostname spends the fleet's accelerators."""
    if args.resource_type != "kubernetes:core/v1:ConfigMap":
        return
    text = (args.props.get("data") or {}).get("config.yaml")
    if not isinstance(text, str) or "pools:" not in text:
        return
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        return
    if not isinstance(config, dict) or not isinstance(config.get("pools"), list):
        return
    clouds = {p.get("cloud") for p in config["pools"] if isinstance(p, dict)} - {"local", None}
    auth = config.get("auth") or {}
    if clouds and not (auth.get("api_key_hashes_file") or auth.get("api_key_hashes")):
        report(f"the router serves {', '.join(sorted(map(str, clouds)))} pools without API keys")


POLICIES = [
    ResourceValidationPolicy(
        name="no-secret-env-literals", description="Secret-looking environment variables come from Secrets.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_no_env_literals,
        remediation_steps="Use env[].valueFrom.secretKeyRef, fed by a Pulumi secret (pulumi config set --secret)."),
    ResourceValidationPolicy(
        name="no-secrets-in-configmaps", description="ConfigMaps carry no tokens, keys or passwords.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_no_configmap_secrets,
        remediation_steps="Move the value into a Kubernetes Secret and mount or reference it."),
    ResourceValidationPolicy(
        name="router-requires-api-keys", description="A router in front of cloud pools checks API keys.",
        enforcement_level=EnforcementLevel.ADVISORY, validate=_router_needs_keys,
        remediation_steps="pulumi config set --secret routerApiKeys 'key-1,key-2' (stored hashed in-cluster)."),
]
