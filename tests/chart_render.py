"""Render a plan's Helm releases into its manifests/ folder, the way the chart-rendering plan will.

Until ``fleet plan`` renders charts itself (issue 15), the verifier's tests put each release's
objects under ``manifests/<cluster>/<release>/`` with the real Helm engine (helm-python-sdk) and the
pinned charts in ``../shared/charts`` (``FLEET_CHARTS_DIR``), so checks about the charts' pods
(device plugins, the AMD operator's DeviceConfig) run on what upstream renders at those versions.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHARTS_DIR = Path(os.environ.get("FLEET_CHARTS_DIR", ROOT.parent / "shared" / "charts"))

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_SEP = re.compile(r"(?:^|\s*\n)---\s*")
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass",
                   "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "APIService", "StorageClass",
                   "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ClusterIssuer",
                   "IngressClass", "RuntimeClass", "GatewayClass", "PodSecurityPolicy", "CSIDriver",
                   "NodeFeatureRule"}


def charts_available() -> bool:
    return CHARTS_DIR.is_dir() and any(CHARTS_DIR.glob("*.tgz"))


def render_releases(plan_dir: str | Path, only: set[str] | None = None) -> list[Path]:
    """Render every Helm release of the plan (or those whose chart name is in ``only``)."""
    import helm_python

    plan_dir = Path(plan_dir)
    plan = json.loads((plan_dir / "plan.json").read_text())
    providers = {r["urn"]: r["name"] for r in plan["resources"] if r["type"] == "pulumi:providers:kubernetes"}
    written = []
    for r in plan["resources"]:
        if r["type"] != "kubernetes:helm.sh/v3:Release":
            continue
        i = r["inputs"]
        chart = str(i["chart"]).rstrip("/").rsplit("/", 1)[-1]
        if only is not None and chart not in only:
            continue
        tgz = CHARTS_DIR / f"{chart}-{i['version']}.tgz"
        ns = i.get("namespace", "default")
        c = helm_python.Chart.load(str(tgz))
        try:
            rendered = c.render(i.get("values") or {}, name=i.get("name", r["name"]), namespace=ns, is_install=True)
        finally:
            c.close()
        out_dir = plan_dir / "manifests" / providers.get(r.get("provider", ""), "default") / r["name"]
        if out_dir.exists():
            continue  # the plan rendered this release itself
        out_dir.mkdir(parents=True)
        for tpl, text in sorted(rendered.items()):
            if tpl.endswith("NOTES.txt"):
                continue
            # Helm's own split (releaseutil.SplitManifests): a "---" starts a document even when a
            # comment follows it on the same line.
            for part in _SEP.split(text or ""):
                doc = yaml.load(part, Loader=_LOADER) if part.strip() else None
                if not isinstance(doc, dict) or "kind" not in doc:
                    continue
                meta = doc.setdefault("metadata", {})
                if doc["kind"] not in _CLUSTER_SCOPED:
                    meta.setdefault("namespace", ns)
                path = out_dir / f"{doc['kind']}_{meta.get('namespace', '_cluster')}_{meta.get('name')}.yaml"
                path.write_text(yaml.dump(doc, Dumper=_DUMPER, sort_keys=False))
                written.append(path)
    return written
