"""Secrets never in plain config: env literals and ConfigMaps hold no tokens, keys or passwords.

Risk: a ConfigMap or a pod spec is readable by anyone who can `kubectl get` it, and lands in the
Pulumi state and the preview diff in plain text.
"""

from __future__ import annotations

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


POLICIES = [
    ResourceValidationPolicy(
        name="no-secret-env-literals", description="Secret-looking environment variables come from Secrets.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_no_env_literals,
        remediation_steps="Use env[].valueFrom.secretKeyRef, fed by a Pulumi secret (pulumi config set --secret)."),
    ResourceValidationPolicy(
        name="no-secrets-in-configmaps", description="ConfigMaps carry no tokens, keys or passwords.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_no_configmap_secrets,
        remediation_steps="Move the value into a Kubernetes Secret and mount or reference it."),
]
