"""Images by digest or pinned tag: no `:latest`, no untagged images.

Risk: a moving tag changes what runs on a spot node's next boot, without a diff anyone reviewed.
"""

from __future__ import annotations

import re

from pulumi_policy import EnforcementLevel, ResourceValidationPolicy

from policies.rules._util import containers, pod_spec

MOVING = re.compile(r"^(latest|main|master|nightly|stable|edge|dev)$")


def image_problem(image: str) -> str | None:
    if "@sha256:" in image:
        return None
    name = image.rsplit("/", 1)[-1]
    if ":" not in name:
        return "has no tag (pulls :latest)"
    tag = name.split(":", 1)[1]
    if MOVING.match(tag):
        return f"uses the moving tag {tag!r}"
    return None


def _pinned(args, report):
    found = pod_spec(args.resource_type, args.props)
    if not found:
        return
    for c in containers(found[1]):
        problem = image_problem(str(c.get("image", "")))
        if problem:
            report(f"container {c.get('name')!r} image {c.get('image')!r} {problem}")


POLICIES = [
    ResourceValidationPolicy(
        name="images-pinned", description="Container images are pinned by digest or an immutable tag.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_pinned,
        remediation_steps="Reference images as repo:tag@sha256:<digest> (or at least an exact version tag)."),
]
