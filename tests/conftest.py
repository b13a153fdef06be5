"""Shared fixtures: offline plans of the shipped stacks, computed once per test session."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fleetctl.plan import Plan, run_plan  # noqa: E402

SHIPPED_STACKS = sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml"))


@functools.lru_cache(maxsize=None)
def plan_of(stack: str) -> Plan:
    """The offline plan of a shipped stack (cached: plans are deterministic)."""
    return run_plan(stack)


@pytest.fixture(params=SHIPPED_STACKS)
def shipped_plan(request) -> Plan:
    return plan_of(request.param)


@pytest.fixture
def dev_plan() -> Plan:
    return plan_of("dev")
