"""Names that are unique and valid for each cloud, derived in one place.

Clouds limit node-pool and cluster names differently (AKS: 12 lowercase alphanumerics for a
Linux agent pool; GKE: 40; EKS: 63). When a name must be shortened, a short hash of the full
name keeps it unique and stable, so a rename of one pool never renames another.

The rule for names a cloud sees (issue 17 item 6): every name that is unique per account,
subscription or project starts with the Pulumi stack (:func:`cloud_name`), so two stacks of this
program in one account never collide — the ``azure`` and ``multicloud`` stacks both have a cluster
``azure-east``, and a copy of a stack under a new name (``staging``) must not reach for the names of
the one it was copied from. Names unique in the whole cloud (an ACR name is a DNS label under
``azurecr.io``) also carry a hash of the account they live in (:func:`global_name`): stack and
cluster names are in public code, so a name made of them alone could be taken by anyone first.
Node-pool names are per cluster and stay as the spec has them (:func:`pool_name`); Kubernetes object
names are per cluster too (:func:`k8s_name`).
"""

from __future__ import annotations

import hashlib
import re

from fleet import catalog


def _short_hash(text: str, n: int = 4) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _allows_dash(charset: str) -> bool:
    # "a-z0-9" holds a "-" as a range, not as a character: ask the class itself.
    return re.fullmatch(f"[{charset}]", "-") is not None


def fit_name(name: str, max_len: int, charset: str = "a-z0-9-") -> str:
    """``name`` in ``charset``, at most ``max_len`` long; shortened names end in a stable hash."""
    dash = _allows_dash(charset)
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


def cloud_name(*parts: str, stack: str, max_len: int = 63, charset: str = "a-z0-9-") -> str:
    """A cloud resource name (cluster, network, resource group, repository) unique in its account,
    subscription or project: ``<stack>-<parts>``, within the cloud's limits."""
    if not stack:
        raise ValueError("a cloud name needs the stack it belongs to")
    return fit_name("-".join(p for p in (stack, *parts) if p), max_len, charset)


GLOBAL_HASH_LENGTH = 10
"""Hex digits of the account hash in a globally unique name: 16^10 names per stack and cluster."""


def global_name(*parts: str, stack: str, account: str, max_len: int, charset: str = "a-z0-9") -> str:
    """A name unique in the whole cloud (an ACR registry): the stack and parts, shortened to leave
    room, then a hash of the account (subscription id), stack and parts. Stable for one account and
    stack; another subscription, or anyone reading this code, gets a different name."""
    if not account:
        raise ValueError("a globally unique name needs the account it lives in")
    digest = _short_hash("/".join((account, stack, *parts)), GLOBAL_HASH_LENGTH)
    sep = "-" if _allows_dash(charset) else ""
    # Characters outside the charset are dropped here, not hashed again: the digest already tells
    # "a-b" from "ab".
    joined = re.sub(f"[^{charset}]", "", sep.join(p for p in (stack, *parts) if p).lower())
    head = fit_name(joined, max_len - len(digest) - len(sep), charset)
    return f"{head}{sep}{digest}"


def label_value(text: str) -> str:
    """A Kubernetes / cloud label value (<= 63 of [A-Za-z0-9-_.], alphanumeric at both ends)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
    return clean if len(clean) <= 63 else f"{clean[:58].rstrip('-._')}-{_short_hash(text)}"
