"""Wiring, asserted through the program's own references rather than the strings the mocks make up.

The offline plan records, for every resource, which resources' outputs each input property was built
from (Pulumi's property dependencies, fleetctl/plan.py). A test that a node group uses the node role
asks that ``nodeRoleArn`` was fed by that Role — not that it equals the ARN fleetctl/mockdata.py
invents for it, which would pass just as well if the program pasted the mock's string in.
"""

from __future__ import annotations

from typing import Any


def fed_by(plan, record: dict[str, Any], prop: str) -> set[tuple[str, str]]:
    """(type, name) of each resource whose outputs went into ``record``'s input ``prop``."""
    by_urn = {r["urn"]: r for r in plan.resources}
    return {(by_urn[u]["type"], by_urn[u]["name"]) for u in record["property_dependencies"].get(prop, [])}
