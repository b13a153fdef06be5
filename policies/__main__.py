"""The inference-fleet CrossGuard pack: `pulumi preview --policy-pack policies`.

Only assembles rules: `PolicyPack(...)` starts the analyzer server and blocks, so nothing imports
this module. The rules live in policies/rules/, one small family per file.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from policies.rules import ALL  # noqa: E402

PolicyPack(name="inference-fleet", enforcement_level=EnforcementLevel.MANDATORY, policies=ALL)
