"""Names that are unique and valid for each cloud, derived in one place.

Clouds limit node-pool and cluster names differently (AKS: 12 lowercase alphanumerics for a
Linux agent pool; GKE: 40; EKS: 63). When a name must be shortened, a short hash of the full
name keeps it unique and stable, so a rename of one pool never renames another.
"""

from __future__ import annotations

import hashlib
import re

from fleet import catalog


def _short_hash(text: str, n: int = 4) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def fit_name(name: str, max_len: int, charset: str = "a-z0-9-") -> str:
    """``name`` in ``charset``, at most ``max_len`` long; shortened names end in a stable hash."""
    # "a-z0-9" holds a "-" as a range, not as a character: ask the class itself.
    dash = re.fullmatch(f"[{charset}]", "-") is not None
    clean = re.sub(f"[^{charset}]", "", name.lower().replace("_", "-"))
    if len(clean) <= max_len and clean == name:
        return clean
    suffix = _short_hash(name)
    keep = max_len - len(suffix) - (1 if dash else 0)
    head = clean[:keep].rstrip("-")
    return f"{head}-{suffix}" if dash else f"{head}{suffix}"


def pool_name(cloud: str, pool: str) -> str:
    """The node-pool name the cloud sees for a spec pool."""
    traits = catalog.CLOUD_TRAITS[cloud]
    return fit_name(pool, traits.max_name_length, traits.name_charset)


def k8s_name(*parts: str, max_len: int = 63) -> str:
    """A Kubernetes object name (RFC 1123 label) from parts."""
    joined = "-".join(p for p in parts if p)
    return fit_name(re.sub(r"[^a-z0-9-]+", "-", joined.lower()).strip("-"), max_len)


def cloud_name(cloud: str, *parts: str, max_len: int = 63, charset: str = "a-z0-9-") -> str:
    """A cloud resource name (network, role, registry) from parts, within the cloud's limits."""
    return fit_name("-".join(p for p in parts if p), max_len, charset)


def label_value(text: str) -> str:
    """A Kubernetes / cloud label value (<= 63 of [A-Za-z0-9-_.], alphanumeric at both ends)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
    return clean if len(clean) <= 63 else f"{clean[:58].rstrip('-._')}-{_short_hash(text)}"
