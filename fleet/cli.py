"""``python -m fleet``: run the fleet offline — plan, and (as they land) diff, cost and demo.

Exit codes: 0 ok, 1 mandatory policy violations, 2 bad input (config, arguments).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fleet.spec import SpecError

EXIT_OK, EXIT_POLICY, EXIT_BAD_INPUT = 0, 1, 2


def _cmd_plan(args: argparse.Namespace) -> int:
    from fleet.plan import ROOT, run_plan, summary, write_plan

    plan = run_plan(args.stack, args.config_file)
    out = Path(args.out) if args.out else ROOT / "build" / "plan" / args.stack
    write_plan(plan, out)
    print(summary(plan))
    print(f"\nwrote {out / 'plan.json'} and {len(plan.manifests)} manifests under {out / 'manifests'}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fleet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="run the program offline under mocks; write plan.json and manifests")
    plan.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml")
    plan.add_argument("--config-file", help="a stack file to read instead of Pulumi.<stack>.yaml")
    plan.add_argument("--out", help="output directory (default build/plan/<stack>)")
    plan.set_defaults(func=_cmd_plan)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
