"""Shared fixtures: offline plans of the shipped stacks, computed once per test session."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fleetctl import charts  # noqa: E402
from fleetctl.plan import Plan, run_plan  # noqa: E402

SHIPPED_STACKS = sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml"))

# The chart cache is upstream test data: without it the plans cannot render the charts, and every
# test that plans fails (a ChartError naming the missing chart) — unless FLEET_OFFLINE=1 says this run
# has no upstream data, in which case plans skip the charts and the tests that need them do not run
# (counted in the summary below).
OFFLINE = os.environ.get("FLEET_OFFLINE") == "1"
CHARTS_PRESENT = all((charts.charts_dir() / p.archive).exists() for p in charts.pinned_charts())
RENDER_CHARTS = CHARTS_PRESENT or not OFFLINE
needs_charts = pytest.mark.skipif(not RENDER_CHARTS, reason=f"FLEET_OFFLINE=1 and no chart cache at "
                                                            f"{charts.charts_dir()}")


@functools.lru_cache(maxsize=None)
def plan_of(stack: str) -> Plan:
    """The offline plan of a shipped stack, its charts rendered (cached: plans are deterministic)."""
    return run_plan(stack, charts=RENDER_CHARTS)


def pytest_terminal_summary(terminalreporter):
    if not RENDER_CHARTS:
        skipped = [r for r in terminalreporter.stats.get("skipped", []) if "FLEET_OFFLINE" in str(r.longrepr)]
        terminalreporter.write_line(f"FLEET_OFFLINE=1: {len(skipped)} chart checks did not run "
                                    f"(no chart cache at {charts.charts_dir()}; `python -m fleet charts pull`)")


@pytest.fixture(params=SHIPPED_STACKS)
def shipped_plan(request) -> Plan:
    return plan_of(request.param)


@pytest.fixture
def dev_plan() -> Plan:
    return plan_of("dev")
