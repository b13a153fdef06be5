"""Mutation testing of the core modules (``make mutation``; not part of ``make test``): mutmut changes
one thing at a time in the code that decides what is deployed, what it costs and where a request
goes, runs the tests written for that code, and reports each change no test noticed.

Two bounded scopes, each with the tests that target it (mutmut runs only the tests that reach the
mutated function, in forked children, ``--max-children`` at a time):

- ``iac``: fleet/spec.py, fleet/cost.py, fleet/models.py against tests/test_spec.py, test_cost.py and
  test_model_fit.py (configured in pyproject.toml [tool.mutmut]; mutants/ in the checkout);
- ``router``: the routing core's filters, scorers, pickers and pipeline (fleet_router/core) against
  router/tests/test_core.py and test_core_edges.py, in build/mutation/router (a copy of router/ with its own mutmut
  settings, so router/'s own files stay as they are).

    python tests/mutation.py [iac|router|all] [--jobs N]

It prints, per scope, killed / total (the score) and the surviving mutants by function; ``mutmut show
<name>`` in the scope's directory prints one. Minutes on a quiet machine, more on a shared one.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = Path(sys.executable).with_name("mutmut")

ROUTER_SCOPE = ["fleet_router/core/filters.py", "fleet_router/core/scorers.py", "fleet_router/core/pickers.py",
                "fleet_router/core/pipeline.py"]
ROUTER_TESTS = ["tests/test_core.py", "tests/test_core_edges.py"]

ROUTER_SETTINGS = f"""
[tool.mutmut]
source_paths = ["fleet_router"]
only_mutate = {ROUTER_SCOPE!r}
also_copy = ["tests"]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "no:xdist", "-q"]
pytest_add_cli_args_test_selection = {ROUTER_TESTS!r}

[tool.pytest.ini_options]
testpaths = ["tests"]
timeout = 300
"""


def _router_dir() -> Path:
    work = ROOT / "build" / "mutation" / "router"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copytree(ROOT / "router" / "fleet_router", work / "fleet_router",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "router" / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "pyproject.toml").write_text(ROUTER_SETTINGS.lstrip())
    return work


def _run(where: Path, jobs: int, env: dict[str, str]) -> None:
    shutil.rmtree(where / "mutants", ignore_errors=True)  # a fresh run: no result from older code or tests
    # mutmut redraws a progress line many times a second: keep its output out of the log.
    subprocess.run([str(MUTMUT), "run", "--max-children", str(jobs)], cwd=where, env=env, check=False,
                   stdout=subprocess.DEVNULL)


def score(where: Path, env: dict[str, str] | None = None) -> tuple[collections.Counter, dict[str, int]]:
    """(mutants by status, surviving mutants by function) of the last run in ``where``."""
    out = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=where, env=env, capture_output=True,
                         text=True, check=True).stdout
    status: collections.Counter = collections.Counter()
    survivors: collections.Counter = collections.Counter()
    for line in out.splitlines():
        name, _, state = line.strip().rpartition(": ")
        if not name:
            continue
        status[state] += 1
        if state == "survived":
            survivors[name.rsplit("__mutmut_", 1)[0]] += 1
    return status, dict(survivors.most_common())


def report(scope: str, status: collections.Counter, survivors: dict[str, int]) -> str:
    total = sum(status.values())
    killed = status["killed"] + status["timeout"]  # a mutant that hangs the tests is caught too
    lines = [f"{scope}: {killed}/{total} mutants killed ({100.0 * killed / total:.1f} %); "
             + ", ".join(f"{n} {s}" for s, n in sorted(status.items()) if s not in ("killed",))]
    lines += [f"  {n:4d} survived in {fn}" for fn, n in survivors.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tests/mutation.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("scope", nargs="?", default="all", choices=("iac", "router", "all"))
    ap.add_argument("--jobs", type=int, default=1, help="mutants tested at once (default 1: a shared 2-core machine)")
    args = ap.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    scopes = []
    if args.scope in ("iac", "all"):
        # The IaC tests import the router's config (the generated router config): the checkout's router/.
        scopes.append(("iac", ROOT, {**env, "PYTHONPATH": str(ROOT / "router")}))
    if args.scope in ("router", "all"):
        # One core test checks the fleet spec accepts the core's policy names: the IaC from the checkout
        # (it has no fleet_router of its own at the top, so the mutated copy is the one imported).
        scopes.append(("router", _router_dir(), {**env, "PYTHONPATH": str(ROOT)}))
    for name, where, scope_env in scopes:
        _run(where, args.jobs, scope_env)
        print(report(name, *score(where, scope_env)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
