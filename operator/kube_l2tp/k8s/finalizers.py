"""Per-node finalizer names: what an agent puts on the objects it programs.

One name per node, so that each agent removes only its own finalizer once its kernel is clean,
and the operator can strip exactly the finalizers of a node that is gone. Agents and the operator
must compute the name the same way: this module is the only place that does.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

PREFIX = "l2tp.kubel2tp.io/"
# The part after the slash of a qualified name: at most 63 characters, alphanumeric at both ends.
MAX_NAME = 63
_HASH_LEN = 16
_VALID = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def node_finalizer(node: str) -> str:
    """`l2tp.kubel2tp.io/<node>`; a long node name becomes a stable, readable, hashed name."""
    if len(node) <= MAX_NAME and _VALID.match(node):
        return PREFIX + node
    digest = hashlib.sha256(node.encode()).hexdigest()[:_HASH_LEN]
    head = re.sub(r"[^-A-Za-z0-9_.]", "-", node)[: MAX_NAME - _HASH_LEN - 1].strip("-_.")
    return PREFIX + (f"{head}-{digest}" if head else digest)


def is_node_finalizer(finalizer: str) -> bool:
    return finalizer.startswith(PREFIX)


def stale(finalizers: Iterable[str], nodes: Iterable[str]) -> list[str]:
    """Our per-node finalizers on an object that name none of these (existing) nodes."""
    alive = {node_finalizer(n) for n in nodes}
    return [f for f in finalizers if is_node_finalizer(f) and f not in alive]
