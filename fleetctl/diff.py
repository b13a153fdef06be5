"""``python -m fleet diff --stack S --base REF``: an offline review of what a change does to a stack.

The stack is planned twice with the offline plan (``python -m fleet plan``, no cloud, no CLI):
once in the tree at ``REF`` (extracted with ``git archive`` into a temporary directory, so the
base is planned by the code *at* ``REF``) and once in the working tree. The two ``plan.json``
files are compared by URN and the result is printed as Markdown, for a terminal or a PR comment:

* **added / removed** — URNs only on one side;
* **changed** — the same URN with different inputs, listed as property paths ``old → new``
  (secrets stay masked: the plan only ever records ``[secret]``);
* **replaced** — a change to a property the provider cannot update in place (the upstream facts in
  :mod:`fleetctl.diff_rules`, each with its source file and version, plus any ``replace_on_changes``
  option a resource declares), or a resource deleted and
  re-created under a new name — a renamed pool: same type, same (or correspondingly renamed)
  parent, mostly the same inputs. Pulumi would show that as delete + create; a reviewer needs to
  read it as "this pool is drained and rebuilt";
* **as ``up`` would do it** — inputs an ``ignore_changes`` option covers keep their old value (a
  resource changed only there reads as ``ignored``), and an update the cloud would refuse says so
  (an EKS group whose minSize passes its ignored desiredSize); a resource whose provider is replaced
  (its kubeconfig names another cluster — compared by the plan's non-secret fingerprint, since the
  kubeconfig is recorded masked — or depends on a resource being replaced) or that moves to another
  cluster's provider is replaced;
* every object a Helm release installs (rendered by :mod:`fleetctl.charts`, listed in plan.json's
  ``charts``) is compared too, as a child of its Release named ``<release>:<namespace>/<name>``: a
  chart bump in components/platform_versions.py or a values change reads as the objects it
  adds, changes and removes in the cluster;
* grouped by top-level component, with the policy results (``policy.json`` beside each plan,
  when the tree has the offline policy evaluation) and the monthly cost delta (:mod:`fleet.cost`).

Three parts, one module each: :mod:`fleetctl.diff_plan` plans both sides (all the I/O: git, the two
``fleet plan`` runs, reading their files), :mod:`fleetctl.diff_compare` compares them (pure) and
:mod:`fleetctl.diff_markdown` renders the review; the replacement facts are :mod:`fleetctl.diff_rules`.
This module runs them in order (:func:`diff_stack`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

# The three parts (planning, comparing, rendering) live in their own modules; their public names are
# re-exported here, where the CLI and the tests have always found them.
from fleetctl.diff_compare import (  # noqa: F401
    RENAME_SIMILARITY, SECRET, DiffResult, PropChange, ResourceChange, _cost_delta, _policy_summary,
    _verify_summary, compare, flatten, forces_replace, pair_renames, verdict,
)
from fleetctl.diff_markdown import MAX_MARKDOWN, render_error, render_markdown, to_json  # noqa: F401
from fleetctl.diff_plan import ROOT, DiffError, Side, _plan_tree, chart_resources, extract  # noqa: F401


def diff_stack(stack: str, base_ref: str, repo: Path | None = None) -> DiffResult:
    """Plan ``stack`` at ``base_ref`` and in the working tree of ``repo`` and compare them."""
    repo = Path(repo or ROOT).resolve()
    with tempfile.TemporaryDirectory(prefix="fleet-diff-") as tmp:
        tmpdir = Path(tmp)
        base_tree = tmpdir / "base"
        base_tree.mkdir()
        sha = extract(repo, base_ref, base_tree)
        base = _plan_tree(base_tree, stack, tmpdir / "out-base", f"`{base_ref}`")
        head = _plan_tree(repo, stack, tmpdir / "out-head", "the working tree")
    if base.plan is None and head.plan is None:
        raise DiffError(f"stack {stack!r} exists neither at {base_ref} nor in the working tree")
    changes, unchanged = compare(base.plan, head.plan)
    cost_delta = None
    if base.cost is not None or head.cost is not None:
        cost_delta = _cost_delta(base.cost, head.cost)
    return DiffResult(stack=stack, base_ref=base_ref, base_sha=sha, head_label="working tree",
                      changes=changes, unchanged=unchanged, base=base, head=head,
                      cost_delta=cost_delta, policy=_policy_summary(base, head),
                      verify=_verify_summary(base, head))
