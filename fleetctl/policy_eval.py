"""Evaluate the CrossGuard pack (``policies/``) on an offline plan, with the SDK's own types.

The same rule objects ``pulumi preview --policy-pack policies`` loads are called here: each
recorded resource becomes a ``pulumi_policy.ResourceValidationArgs`` (and, for stack rules, a
``PolicyResource`` in ``StackValidationArgs``), and violations are collected through the
``report_violation`` callback. The fleet spec's ``budget`` feeds the cost ceilings' config, as
``fleet policy-config`` would for a real preview.

The objects each Helm release installs (rendered by :mod:`fleetctl.charts`) are judged too, each as
a resource under its Release named as ``fleet diff`` names it (``<release resource>:<ns>/<name>``):
a real ``pulumi preview`` never sees them (the Release is one resource), so only the offline plan
can. A violation that components/chart_exemptions.py exempts, with its reason, is reported apart
(``exempted`` in policy.json) and does not fail the plan.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fleetctl.plan import Plan

MANDATORY, ADVISORY = "mandatory", "advisory"


@dataclass(frozen=True)
class Violation:
    policy: str
    level: str
    message: str
    remediation: str
    urn: str = ""
    name: str = ""
    type: str = ""

    def __getitem__(self, key: str) -> Any:  # read like a dict by callers that expect one
        return getattr(self, key)


def policy_config(plan: Plan) -> dict[str, dict[str, Any]]:
    """Per-policy config from the fleet spec (the budget ceilings)."""
    budget = plan.spec.budget
    config: dict[str, dict[str, Any]] = {}
    if budget.pool_monthly_max_usd is not None:
        config["pool-monthly-cost-ceiling"] = {"maxUsd": budget.pool_monthly_max_usd}
    if budget.monthly_max_usd is not None:
        config["stack-monthly-cost-ceiling"] = {"maxUsd": budget.monthly_max_usd}
    return config


@dataclass(frozen=True)
class Exempted:
    violation: Violation
    reason: str
    """The exemption's reason (components/chart_exemptions.py), with the chart version it was read at."""


def chart_records(plan: Plan) -> list[dict[str, Any]]:
    """Every chart-rendered object as a plan record under its Release (the shape and names of
    ``fleet diff``'s chart children); ``chart`` holds (release, item) for the exemptions."""
    from fleetctl.charts import resource_type

    by_urn = {r["urn"]: r for r in plan.resources}
    out = []
    for rr in plan.releases or ():
        parent = by_urn.get(rr.urn, {})
        scheme, project, qualified, rname = rr.urn.split("::", 3)
        for item in rr.objects:
            obj = item["object"]
            meta = obj.get("metadata") or {}
            typ = resource_type(obj)
            name = f"{rname}:{meta['namespace'] + '/' if meta.get('namespace') else ''}{meta.get('name', '')}"
            out.append({"urn": f"{scheme}::{project}::{qualified}${typ}::{name}", "type": typ, "name": name,
                        "custom": True, "parent": rr.urn, "provider": parent.get("provider", ""), "dependencies": [],
                        "options": {}, "inputs": obj, "chart": (rr, obj)})
    return out


def evaluate(plan: Plan) -> list[Violation]:
    """Every violation not exempted, the program's resources and the chart objects both."""
    return evaluate_all(plan)[0]


def evaluate_all(plan: Plan) -> tuple[list[Violation], list[Exempted]]:
    """(violations, exempted chart-object violations with their reasons)."""
    from pulumi_policy import (EnforcementLevel, PolicyCustomTimeouts, PolicyProviderResource, PolicyResource,
                               PolicyResourceOptions, ResourceValidationArgs, ResourceValidationPolicy,
                               StackValidationArgs, StackValidationPolicy)

    from policies.rules import ALL

    from fleetctl.charts import exemption

    config = policy_config(plan)
    records = plan.resources + chart_records(plan)
    by_urn = {r["urn"]: r for r in records}

    def options(r) -> PolicyResourceOptions:
        o = r.get("options") or {}
        return PolicyResourceOptions(protect=bool(o.get("protect")), ignore_changes=list(o.get("ignore_changes") or []),
                                     delete_before_replace=o.get("delete_before_replace"), aliases=[],
                                     custom_timeouts=PolicyCustomTimeouts(0, 0, 0), additional_secret_outputs=[],
                                     parent=r["parent"] or None)

    def provider(r) -> PolicyProviderResource | None:
        p = by_urn.get(r["provider"])
        return PolicyProviderResource(p["type"], p["inputs"], p["urn"], p["name"]) if p else None

    policy_resources: dict[str, PolicyResource] = {}
    for r in records:
        policy_resources[r["urn"]] = PolicyResource(r["type"], r["inputs"], r["urn"], r["name"], options(r),
                                                    provider(r), None, [], {})
    for r in records:
        pr = policy_resources[r["urn"]]
        pr.parent = policy_resources.get(r["parent"])
        pr.dependencies = [policy_resources[u] for u in r["dependencies"] if u in policy_resources]

    out: list[Violation] = []
    exempted: list[Exempted] = []

    def add(v: Violation) -> None:
        chart = by_urn.get(v.urn, {}).get("chart")
        e = exemption(*chart, v.policy) if chart else None
        if e is None:
            out.append(v)
        else:
            exempted.append(Exempted(v, f"{e.reason} (chart {e.release} {e.version})"))

    for policy in ALL:
        level = MANDATORY if policy.enforcement_level in (None, EnforcementLevel.MANDATORY) else ADVISORY
        cfg = config.get(policy.name, {})
        fns = policy.validate if isinstance(policy.validate, list) else [policy.validate]
        if isinstance(policy, ResourceValidationPolicy):
            for r in records:
                if not r["custom"]:
                    continue
                args = ResourceValidationArgs(r["type"], r["inputs"], r["urn"], r["name"], options(r), provider(r),
                                              cfg)
                for fn in fns:
                    fn(args, lambda msg, urn=None, r=r: add(
                        Violation(policy.name, level, msg, policy.remediation_steps or "", r["urn"], r["name"],
                                  r["type"])))
        elif isinstance(policy, StackValidationPolicy):
            args = StackValidationArgs([policy_resources[r["urn"]] for r in records if r["custom"]], cfg)

            def report(msg, urn=None, policy=policy, level=level):
                r = by_urn.get(urn or "", {})
                add(Violation(policy.name, level, msg, policy.remediation_steps or "", urn or "",
                                     r.get("name", ""), r.get("type", "")))

            for fn in fns:
                fn(args, report)
    order = lambda v: (v.level != MANDATORY, v.policy, v.urn, v.message)  # noqa: E731
    return sorted(out, key=order), sorted(exempted, key=lambda x: order(x.violation))


def write_reports(violations: list[Violation], out_dir: Path, stack: str,
                  missing_secrets: list[dict[str, str]] | None = None, exempted: list[Exempted] | None = None) -> None:
    from policies.rules import ALL

    mandatory = [v for v in violations if v.level == MANDATORY]
    missing_secrets = missing_secrets or []
    exempted = exempted or []
    doc = {"stack": stack, "rules": len(ALL), "mandatory": len(mandatory),
           "advisory": len(violations) - len(mandatory), "violations": [asdict(v) for v in violations],
           "exempted": [{**asdict(x.violation), "reason": x.reason} for x in exempted],
           "missing_secrets": missing_secrets}
    (out_dir / "policy.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    lines = [f"# Policy report: stack `{stack}`", "",
             f"{len(ALL)} rules; {len(mandatory)} mandatory and {len(violations) - len(mandatory)} advisory "
             "violations.", ""]
    if violations:
        lines += ["| level | rule | resource | finding | remediation |", "|---|---|---|---|---|"]
        lines += [f"| {v.level} | `{v.policy}` | `{v.name or '(stack)'}` | {v.message} | {v.remediation} |"
                  for v in violations]
    if exempted:
        lines += ["", f"## Chart objects exempted ({len(exempted)}: components/chart_exemptions.py)", "",
                  "| level | rule | object | finding | reason |", "|---|---|---|---|---|"]
        lines += [f"| {x.violation.level} | `{x.violation.policy}` | `{x.violation.name}` | {x.violation.message} | "
                  f"{x.reason} |" for x in exempted]
    if missing_secrets:
        lines += ["", "## Missing secrets (blocking: `pulumi preview`/`up` fail without them)", "",
                  "| secret | why | set it |", "|---|---|---|"]
        lines += [f"| `{m['key']}` | {m['why']} | `{m['command']}` |" for m in missing_secrets]
    (out_dir / "policy.md").write_text("\n".join(lines) + "\n")


def summary_line(violations: list[Violation], exempted: list[Exempted] | None = None) -> str:
    mandatory = sum(v.level == MANDATORY for v in violations)
    tail = f"; {len(exempted)} on chart objects exempted with a reason" if exempted else ""
    return f"policy: {mandatory} mandatory, {len(violations) - mandatory} advisory violation(s){tail}"
