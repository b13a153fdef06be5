"""``python -m fleet``: run the fleet offline — plan, verify, diff, cost, demo, the chart cache — and
watch a running router (top, load).

Exit codes: 0 ok, 1 mandatory policy violations or chart problems (plan: a value a chart does not
have, an object with two owners) or findings (verify), 2 bad input (config, arguments, an
unreadable plan directory, a chart not in the cache).
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

from fleet.spec import SpecError

EXIT_OK, EXIT_POLICY, EXIT_BAD_INPUT = 0, 1, 2
EXIT_FINDINGS = 1


def _cmd_plan(args: argparse.Namespace) -> int:
    from fleetctl.plan import ROOT, run_plan, summary, write_plan

    from fleetctl.charts import ChartError

    try:
        plan = run_plan(args.stack, args.config_file, charts=not args.no_charts)
    except ChartError as e:
        if not args.charts_if_cached:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        # A first `make plan` on a machine with no chart cache yet: the program's plan, and why its
        # charts were not rendered (the summary says they went unchecked).
        print(f"note: {e}; planning without rendering the charts", file=sys.stderr)
        plan = run_plan(args.stack, args.config_file, charts=False)
    out = Path(args.out) if args.out else ROOT / "build" / "plan" / args.stack
    write_plan(plan, out)
    print(summary(plan))
    from fleetctl import policy_eval

    violations, exempted = policy_eval.evaluate_all(plan)
    policy_eval.write_reports(violations, out, plan.stack, plan.missing_secrets, exempted)
    print(f"\nwrote {out / 'plan.json'}, {out / 'policy.json'} and {len(plan.manifests)} manifests under "
          f"{out / 'manifests'}")
    print(policy_eval.summary_line(violations, exempted))
    from fleetctl import verify

    findings = verify.verify(verify.load_plan(plan, out))
    (out / "verify.json").write_text(verify.to_json(findings, plan.stack))
    print(verify.summary_line(findings) + (f" (python -m fleet verify --plan-dir {out})" if findings else ""))
    mandatory = [v for v in violations if v.level == policy_eval.MANDATORY]
    for v in mandatory:
        print(f"policy violation [{v.policy}] {v.name or '(stack)'} ({v.urn or plan.stack}): {v.message}\n"
              f"  fix: {v.remediation}", file=sys.stderr)
    for m in plan.missing_secrets:
        print(f"missing secret {m['key']}: {m['why']}\n  set it: {m['command']}", file=sys.stderr)
    print(f"charts: not rendered ({'--no-charts' if args.no_charts else 'not in the chart cache'}): chart objects "
          "were not checked" if plan.releases is None else
          f"charts: {len(plan.chart_problems)} problem(s)")
    for p in plan.chart_problems:
        print(f"chart problem: {p}", file=sys.stderr)
    if args.strict and plan.missing_secrets:
        return EXIT_POLICY
    return EXIT_POLICY if mandatory or plan.chart_problems else EXIT_OK


def _cmd_charts(args: argparse.Namespace) -> int:
    from fleetctl import charts

    where = charts.charts_dir()
    pins = charts.pinned_charts()
    if args.action == "list":
        print(f"chart cache: {where}")
        for pin in pins:
            state = "cached" if (where / pin.archive).exists() else "MISSING"
            print(f"  {state:8s} {pin.chart} {pin.version}  ({pin.ref}{'' if pin.repo.startswith('oci://') else ' from ' + pin.repo})")
        return EXIT_OK if all((where / p.archive).exists() for p in pins) else EXIT_POLICY
    failed = charts.pull(where, pins)
    for pin, err in failed:
        print(f"error: cannot pull {pin.chart} {pin.version} from {pin.repo}: {err}", file=sys.stderr)
    print(f"chart cache {where}: {len(pins) - len(failed)} of {len(pins)} pinned charts present")
    return EXIT_BAD_INPUT if failed else EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from fleetctl import verify

    plan = None
    if args.plan_dir:
        plan_dir = Path(args.plan_dir)
    else:
        from fleetctl.charts import ChartError
        from fleetctl.plan import ROOT, run_plan, write_plan

        try:
            plan = run_plan(args.stack, args.config_file)
        except ChartError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        plan_dir = Path(args.out) if args.out else ROOT / "build" / "plan" / args.stack
        write_plan(plan, plan_dir)
    try:
        topo = verify.load(plan_dir) if plan is None else verify.load_plan(plan, plan_dir)
    except verify.VerifyInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    findings = verify.verify(topo)
    if args.json:
        print(verify.to_json(findings, topo.stack), end="")
    else:
        for f in findings:
            print(f.line())
        print(verify.summary_line(findings))
        note = verify.coverage_note(topo)
        if note:
            print(note)
    return EXIT_FINDINGS if findings else EXIT_OK


def _cmd_cost(args: argparse.Namespace) -> int:
    from fleet.cost import render_markdown
    from fleetctl.cost import by_part_stack, cost_of_stack, render_parts

    report = cost_of_stack(args.stack, args.config_file)
    if args.json:
        print(report.to_json(), end="")
        return EXIT_OK
    parts = by_part_stack(args.stack, report, args.config_file)
    print(render_markdown(report) + (render_parts(parts) if parts else ""), end="")
    return EXIT_OK


def _cmd_diff(args: argparse.Namespace) -> int:
    from fleetctl.diff import DiffError, diff_stack, render_error, render_markdown

    try:
        result = diff_stack(args.stack, args.base, repo=Path(args.repo) if args.repo else None)
    except DiffError as e:
        print(f"error: {e}", file=sys.stderr)
        if args.out:  # the PR comment says why, so a fork's author need not read the job log
            Path(args.out).write_text(render_error(args.stack, args.base, str(e)))
        return EXIT_BAD_INPUT
    text = render_markdown(result)
    if args.out:
        Path(args.out).write_text(text)
    print(text, end="")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from fleetctl.demo import run_demo
    from fleetctl.plan import read_stack_config
    from fleet.spec import load_spec

    cfg = read_stack_config(args.stack, args.config_file)
    return run_demo(load_spec(cfg.fleet_raw(), cfg.spec_source), args.port, args.api_key, traffic=args.traffic)


def _cmd_clouds(args: argparse.Namespace) -> int:
    from fleetctl.stackset import stack_clouds

    for cloud in stack_clouds(args.stack):
        print(f"{cloud}=true")
    return EXIT_OK


def _cmd_top(args: argparse.Namespace) -> int:
    from fleetctl.top import run_top

    return run_top(args.url, once=args.once, interval=args.interval)


def _cmd_load(args: argparse.Namespace) -> int:
    from fleetctl.load import run_load

    headers = [dict(h.split(":", 1) for h in group.split(",")) if group else {} for group in args.tier or [""]]
    headers = [{k.strip(): v.strip() for k, v in h.items()} for h in headers]
    try:
        result = run_load(args.url, args.api_key, duration=args.duration, rate=args.rate,
                          concurrency=args.concurrency, tier_headers=headers)
    except OSError as e:
        print(f"error: cannot reach the router at {args.url}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(result.line())
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fleet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="run the program offline under mocks; write plan.json and manifests")
    plan.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml")
    plan.add_argument("--config-file", help="a stack file to read instead of Pulumi.<stack>.yaml")
    plan.add_argument("--out", help="output directory (default build/plan/<stack>)")
    plan.add_argument("--strict", action="store_true",
                      help="exit 1 when a secret the stack cannot be deployed without is not set")
    plan.add_argument("--no-charts", action="store_true",
                      help="do not render the Helm releases (their objects go unchecked; the summary says so)")
    plan.add_argument("--charts-if-cached", action="store_true",
                      help="render the Helm releases if the chart cache holds them, else plan without them and "
                           "say which chart is missing (what `make plan` runs)")
    plan.set_defaults(func=_cmd_plan)

    verify = sub.add_parser("verify", help="check offline that the planned topology would serve: scheduling, "
                            "admission, identity, routing, flows, trust, autoscaling")
    where = verify.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", help="plan this stack first (reads Pulumi.<stack>.yaml), then verify it")
    where.add_argument("--plan-dir", help="a directory written by `fleet plan --out DIR` (plan.json, manifests/)")
    verify.add_argument("--config-file", help="with --stack: a stack file to read instead of Pulumi.<stack>.yaml")
    verify.add_argument("--out", help="with --stack: where the plan goes (default build/plan/<stack>)")
    verify.add_argument("--json", action="store_true", help="print every finding as JSON")
    verify.set_defaults(func=_cmd_verify)

    charts = sub.add_parser("charts", help="the Helm chart cache the plan renders from")
    charts.add_argument("action", choices=["list", "pull"],
                        help="list: pinned vs cached; pull: download the pinned versions not cached yet")
    charts.set_defaults(func=_cmd_charts)

    diff = sub.add_parser("diff", help="plan the stack at a git ref and at the working tree; print a Markdown review")
    diff.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml on both sides")
    diff.add_argument("--base", required=True, help="git ref to compare against, e.g. origin/main")
    diff.add_argument("--out", help="also write the Markdown to this file")
    diff.add_argument("--repo", help="git working tree to diff (default: this checkout)")
    diff.set_defaults(func=_cmd_diff)

    cost = sub.add_parser("cost", help="monthly cost per pool and per stack at min, typical and max scale")
    cost.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml")
    cost.add_argument("--config-file", help="a stack file to read instead of Pulumi.<stack>.yaml")
    cost.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    cost.set_defaults(func=_cmd_cost)

    clouds = sub.add_parser("clouds", help="the clouds a stack's preview and up sign in to, one `<cloud>=true` "
                            "line each (the format of $GITHUB_OUTPUT: the up and drift workflows read it)")
    clouds.add_argument("--stack", required=True, help="a stack (a part of a stack set, not the set)")
    clouds.set_defaults(func=_cmd_clouds)

    demo = sub.add_parser("demo", help="run the stack's pools as simulators and the router on loopback")
    demo.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml")
    demo.add_argument("--config-file", help="a stack file to read instead of Pulumi.<stack>.yaml")
    demo.add_argument("--port", type=int, default=8080, help="router API port on 127.0.0.1 (default 8080)")
    demo.add_argument("--api-key", help="API key clients send (default: a random one, printed)")
    demo.add_argument("--traffic", action="store_true",
                      help="also send a small mixed workload (tiers, shared prefixes, every model) until stopped")
    demo.set_defaults(func=_cmd_demo)

    top = sub.add_parser("top", help="live view of a running router from its /metrics (per pool and tier)")
    top.add_argument("--url", default="http://127.0.0.1:9091",
                     help="the router's admin URL (default http://127.0.0.1:9091; `fleet demo` prints its own)")
    top.add_argument("--once", action="store_true", help="print one frame as plain text and exit")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes (default 1)")
    top.set_defaults(func=_cmd_top)

    load = sub.add_parser("load", help="send a small mixed workload to a router (what `demo --traffic` sends)")
    load.add_argument("--url", required=True, help="the router's API base URL, e.g. http://127.0.0.1:8080")
    load.add_argument("--api-key", required=True, help="an API key the router accepts")
    load.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    load.add_argument("--rate", type=float, default=20.0, help="requests per second offered (default 20)")
    load.add_argument("--concurrency", type=int, default=8, help="client threads (default 8)")
    load.add_argument("--tier", action="append",
                      help="a tier's headers, 'Name: value[,Name: value]'; repeat for several (default: none)")
    load.set_defaults(func=_cmd_load)
    return parser


def main(argv: list[str] | None = None) -> int:
    return _dispatch(build_parser().parse_args(argv))


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:
        # What the program itself refuses while planning (a topology's own rules: program.main) comes
        # as Pulumi's RunError: one line and bad input, as for the spec's rules, not a traceback.
        from pulumi.errors import RunError

        if not isinstance(e, RunError):
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


PLANNING = frozenset({"plan", "verify"})
"""Commands that run a plan: a short batch over the provider SDKs' large, long-lived heap."""


def run() -> None:
    """The process's entry (``python -m fleet``, ``python -m fleetctl``): the command, then exit with its code.

    A command that plans runs with CPython's cycle collector off to the end (``run_plan`` pauses
    it for the plan itself; here it stays off for writing and verifying too, since turning it back
    on walks every object the plan made, twice: ~1 s CPU on multicloud). Before exiting, what is
    still alive is put out of the collector's reach (``gc.freeze``): the interpreter's teardown
    otherwise runs full collections over the heap the SDKs built (~600,000 tracked objects after
    a multicloud plan), ~2 s CPU spent freeing memory that the exit returns anyway. atexit handlers,
    thread joins and module teardown run as before. Neither is done in :func:`main`, which tests
    call in-process."""
    args = build_parser().parse_args()
    if args.command in PLANNING:
        gc.disable()
    code = _dispatch(args)
    gc.freeze()
    raise SystemExit(code)
