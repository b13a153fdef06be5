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

import upstream  # noqa: E402
from fleetctl import charts  # noqa: E402
from fleetctl.plan import Plan, read_stack_config, run_plan  # noqa: E402
from fleetctl.stackset import shipped_stacks  # noqa: E402

SHIPPED_STACKS = shipped_stacks()
"""What `fleet plan --stack` plans by name: the stand-alone stacks and the stack sets (multicloud)."""


def fleet_raw(stack: str):
    """The raw fleet spec of a shipped stack or stack set, from the file that holds it."""
    return read_stack_config(stack).fleet_raw()

# The chart cache and the CRDs are upstream test data (`make upstream` fetches them at the pinned
# versions: tests/upstream.py): without the charts the plans cannot render them, and every test that
# plans fails (a ChartError naming the missing chart); without the CRDs every custom-kind schema check
# fails (tests/schemas.py) — unless FLEET_UPSTREAM_OFFLINE=1 says this run has no upstream data: then
# plans skip the charts, the checks that need either do not run, and the summary below counts them.
OFFLINE = upstream.offline()
CHARTS_PRESENT = all((charts.charts_dir() / p.archive).exists() for p in charts.pinned_charts())
RENDER_CHARTS = CHARTS_PRESENT or not OFFLINE
needs_charts = pytest.mark.skipif(not RENDER_CHARTS, reason=f"{upstream.OFFLINE_VAR}=1 and no chart cache at "
                                                            f"{charts.charts_dir()}")


@functools.lru_cache(maxsize=None)
def plan_of(stack: str) -> Plan:
    """The offline plan of a shipped stack, its charts rendered (cached: plans are deterministic)."""
    return run_plan(stack, charts=RENDER_CHARTS)


def pytest_terminal_summary(terminalreporter):
    if notice := upstream.deprecation():
        terminalreporter.write_line(notice, yellow=True)
    if not OFFLINE:
        return
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if upstream.OFFLINE_VAR in str(r.longrepr)]
    if skipped or not RENDER_CHARTS:
        terminalreporter.write_line(
            f"{upstream.OFFLINE_VAR}=1: {len(skipped)} checks did not run for want of upstream data "
            f"(charts at {charts.charts_dir()}: {'present' if CHARTS_PRESENT else 'absent'}; CRDs: see the skip "
            f"reasons above); `make upstream` fetches both at the pinned versions", yellow=True)


@pytest.fixture(params=SHIPPED_STACKS)
def shipped_plan(request) -> Plan:
    return plan_of(request.param)


@pytest.fixture
def dev_plan() -> Plan:
    return plan_of("dev")
