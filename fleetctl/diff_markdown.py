"""``fleet diff``, part 3: the review as Markdown (a terminal or a PR comment) and as JSON."""

from __future__ import annotations

import json
from typing import Any

from fleet import cost as fcost
from fleetctl.diff_compare import SECRET, DiffResult, ResourceChange, _cite

MAX_PROPS_SHOWN = 25
MAX_MARKDOWN = 60_000
"""GitHub rejects comments over 65,536 characters; the review is cut below that."""


SYMBOL = {"replace": "±", "update": "~", "create": "+", "delete": "−", "ignored": "·"}


def _short(v: Any, limit: int = 90) -> str:
    if v is None:
        return "(none)"
    text = v if v == SECRET else json.dumps(v, sort_keys=True, ensure_ascii=False)
    text = text.replace("`", "'").replace("\n", " ")
    return f"`{text if len(text) <= limit else text[:limit - 1] + '…'}`"


def render_markdown(result: DiffResult) -> str:
    c = result.changes
    lines = [
        f"<!-- fleet-diff:{result.stack} -->",
        f"### Offline plan diff: stack `{result.stack}`",
        "",
        f"`{result.base_ref}` (`{result.base_sha[:12]}`) → {result.head_label}. Planned offline "
        "(`python -m fleet plan`, Pulumi mocks): inputs the program declares, not the clouds' live state.",
        "",
        f"**{result.count('update')} to update · {result.count('replace')} to replace · "
        f"{result.count('create')} to create · {result.count('delete')} to delete** · {result.unchanged} unchanged"
        + (f" · {result.count('ignored')} changed only where ignore_changes keeps the old value"
           if result.count("ignored") else "")
        + (f" · **{sum(1 for ch in c if ch.fails)} would fail**" if any(ch.fails for ch in c) else ""),
    ]
    for note in result.base.notes + result.head.notes:
        lines += ["", f"> {note}"]
    groups: dict[str, list[ResourceChange]] = {}
    for ch in c:
        groups.setdefault(ch.component, []).append(ch)
    for comp, items in groups.items():
        title = comp if comp == "stack" else f"`{comp.split(' ', 1)[0]}` **{comp.split(' ', 1)[1]}**"
        lines += ["", f"#### {title}", ""]
        for ch in items:
            action = f"{ch.action} ({ch.order})" if ch.order else ch.action
            head = f"- {SYMBOL[ch.action]} **{action}** `{ch.type}` `{ch.name}`"
            if ch.reason:
                head += f" — {ch.reason}"
            lines.append(head)
            if ch.fails:
                lines.append(f"  - ⚠ **{ch.fails}**")
            for d in ch.dependants:
                lines.append(f"  - goes with it: {d}")
            for p in ch.properties[:MAX_PROPS_SHOWN]:
                mark = (" **(forces replacement)**" if p.forces_replace and not ch.old_name
                        else " **(not applied by the provider)**" if p.not_applied
                        else " (ignore_changes: kept as it is)" if p.ignored else "")
                lines.append(f"  - `{p.path}`: {_short(p.old)} → {_short(p.new)}{mark}")
            if len(ch.properties) > MAX_PROPS_SHOWN:
                lines.append(f"  - … and {len(ch.properties) - MAX_PROPS_SHOWN} more properties")
    if not c:
        lines += ["", "No resource changes."]

    lines += ["", "#### Policy", ""]
    pol = result.policy
    if not pol["evaluated"]:
        lines.append(f"Not evaluated: {pol['reason']}.")
    else:
        v = pol["violations"]
        lines.append(f"{len(v)} violation(s) at the working tree; {len(pol['new'])} new, "
                     f"{len(pol['resolved'])} resolved" + ("" if pol["base_evaluated"] else
                                                          " (the base was not evaluated)") + ".")
        if v:
            lines += ["", "| level | rule | resource | finding | fix |", "|---|---|---|---|---|"]
            new_keys = {(x["rule"], x["resource"]) for x in pol["new"]}

            def cell(text: str) -> str:
                return text.replace("|", "\\|").replace("\n", " ")[:200]

            for x in v[:50]:
                flag = " (new)" if (x["rule"], x["resource"]) in new_keys else ""
                lines.append(f"| {x['level']}{flag} | `{x['rule']}` | `{x['name']}` | {cell(x['message'])} "
                             f"| {cell(x['remediation'])} |")
            if len(v) > 50:
                lines.append(f"\n… and {len(v) - 50} more (policy.json beside the plan)")

    missing = (result.head.plan or {}).get("missing_secrets") or []
    if missing:
        lines += ["", "#### Missing secrets (blocking)", "",
                  "`pulumi preview` and `pulumi up` of this stack fail until these are set:", "",
                  "| secret | why | set it |", "|---|---|---|"]
        lines += [f"| `{m['key']}` | {m['why']} | `{m['command']}` |" for m in missing]

    lines += ["", "#### Verify (would it serve?)", ""]
    ver = result.verify
    if not ver.get("evaluated"):
        lines.append(f"Not verified: {ver.get('reason', 'no result')}.")
    else:
        f_all = ver["findings"]
        lines.append(f"{len(f_all)} finding(s) at the working tree; {len(ver['new'])} new, {len(ver['resolved'])} "
                     "resolved" + ("" if ver["base_evaluated"] else " (the base was not verified)") + ".")
        if f_all:
            new_keys = {(x["check"], x["cluster"], x["object"], x["problem"]) for x in ver["new"]}
            lines += ["", "| check | object | problem | fix |", "|---|---|---|---|"]
            for x in f_all[:50]:
                flag = " (new)" if (x["check"], x["cluster"], x["object"], x["problem"]) in new_keys else ""
                cell = lambda t: str(t).replace("|", "\\|").replace("\n", " ")[:240]  # noqa: E731
                lines.append(f"| {x['check']}{flag} | `{x['object']}` ({x['cluster']}) | {cell(x['problem'])} "
                             f"| {cell(x['fix'])} |")
            if len(f_all) > 50:
                lines.append(f"\n… and {len(f_all) - 50} more (verify.json beside the plan)")

    lines += ["", "#### Cost (USD per month, 730 h)", ""]
    d = result.cost_delta
    if d is None:
        lines.append("Not priced: neither side's stack file could be read by `fleet cost`.")
    else:
        lines.append("| scale | base | head | delta |")
        lines.append("|---|--:|--:|--:|")
        for s in fcost.SCALES:
            lines.append(f"| {s} | {fcost.usd(d['base'][s])} | {fcost.usd(d['head'][s])} "
                         f"| {fcost.usd(d['delta'][s], signed=True)} |")
        if d["pools"]:
            lines += ["", "| pool | change | min | typical | max |", "|---|---|--:|--:|--:|"]
            for p in d["pools"]:
                lines.append(f"| {p['pool']} | {p['status']} | "
                             + " | ".join(fcost.usd(p["delta"][s], signed=True) for s in fcost.SCALES) + " |")
        else:
            lines += ["", "No pool's cost changes."]
    text = "\n".join(lines) + "\n"
    if len(text) > MAX_MARKDOWN:
        cut = text[:MAX_MARKDOWN].rsplit("\n", 1)[0]
        text = cut + "\n\n… (cut: the full review is in the job's `diff.md` artifact)\n"
    return text


def render_error(stack: str, base_ref: str, error: str) -> str:
    """The review when there is no diff to show: which side failed and why."""
    fence = "~~~"
    return (f"<!-- fleet-diff:{stack} -->\n### Offline plan diff: stack `{stack}`\n\n"
            f"The diff against `{base_ref}` could not be produced:\n\n{fence}\n{error[:MAX_MARKDOWN // 2]}\n{fence}\n")


def to_json(result: DiffResult) -> dict[str, Any]:
    """A machine-readable form of the diff (used by tests and scripts)."""
    return {
        "stack": result.stack, "base": result.base_sha, "unchanged": result.unchanged,
        "changes": [{"action": ch.action, "type": ch.type, "name": ch.name, "old_name": ch.old_name,
                     "component": ch.component, "reason": ch.reason, "fails": ch.fails, "order": ch.order,
                     "dependants": ch.dependants,
                     "properties": [{"path": p.path, "old": p.old, "new": p.new, "forces_replace": p.forces_replace,
                                     "effect": "ignored" if p.ignored else p.rule.effect if p.rule else "update",
                                     "source": _cite(p.rule) if p.rule else None} for p in ch.properties]}
                    for ch in result.changes],
        "cost": result.cost_delta, "policy": result.policy, "verify": result.verify,
    }
