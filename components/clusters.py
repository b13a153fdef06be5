"""What every cloud's cluster component shares: the labels of accelerator pool nodes."""

from __future__ import annotations

from fleet import catalog, naming
from fleet.spec import PoolSpec


def node_labels(pool: PoolSpec) -> dict[str, str]:
    """The labels of an accelerator pool's nodes on every cloud: the catalog's (vendor,
    accelerator, pool), plus the reserved reason when the pool runs on demand."""
    labels = catalog.pool_labels(pool.vendor, pool.accelerator, pool.name)
    if pool.reserved_reason:
        labels[f"{catalog.LABEL_PREFIX}/reserved-reason"] = naming.label_value(pool.reserved_reason)
    return labels
