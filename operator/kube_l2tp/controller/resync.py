"""Everything the event handlers keep, computed once from a fresh list: run by a new leader.

Replicas that do not hold the Lease see every event but write nothing (handlers.leading), so
whatever changed while no replica led (the old leader dead, its Lease not yet expired) has
already been seen and skipped. The new leader repairs all of it at once, from the API server
rather than its indexes, with the same pure functions the handlers use: tunnels' session
summaries, sessions' missing spec.nodeName, and finalizers of nodes that no longer exist.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from kube_l2tp.controller import admission, status
from kube_l2tp.k8s import conditions
from kube_l2tp.k8s.finalizers import stale
from kube_l2tp.k8s.objects import Cluster

log = logging.getLogger(__name__)

TUNNELS, SESSIONS = "l2tptunnels", "l2tpsessions"


def resync(cluster: Cluster) -> int:
    """Write what differs from what the handlers would have written; the number of writes."""
    tunnels = cluster.objects(TUNNELS)
    sessions = cluster.objects(SESSIONS)
    nodes = cluster.nodes()
    writes = 0
    ready: defaultdict[str, list[bool]] = defaultdict(list)
    for s in sessions:
        if not s["metadata"].get("deletionTimestamp"):
            ready[str(s["spec"].get("tunnelRef"))].append(conditions.is_true(s.get("status")))
    by_name = {t["metadata"]["name"]: t for t in tunnels}
    for name, t in by_name.items():
        wanted = status.summary(ready.get(name, ()))
        if status.differs(t.get("status"), wanted) and cluster.patch_status(TUNNELS, name, wanted):
            writes += 1
    for s in sessions:
        name, spec = s["metadata"]["name"], s["spec"]
        node = admission.session_node(spec, by_name)
        if node and not s["metadata"].get("deletionTimestamp"):
            log.info(f"L2TPSession {name}: spec.nodeName set to {node} from its tunnel")
            cluster.patch_spec(SESSIONS, name, {"nodeName": node})
            writes += 1
    for plural, objects in ((SESSIONS, sessions), (TUNNELS, tunnels)):
        for obj in objects:
            gone = stale(obj["metadata"].get("finalizers") or (), nodes)
            if gone:
                name = obj["metadata"]["name"]
                removed, _ = cluster.remove_finalizers(plural, name, gone)
                if removed:
                    log.info(f"{plural}/{name}: removed finalizer(s) of gone nodes {removed}")
                    writes += 1
    return writes
