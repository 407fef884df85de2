"""`kube-l2tp cleanup`: the Helm pre-delete hook that leaves nothing stuck behind.

Delete every session and tunnel; give the agents time to tear the kernel state down and remove
their finalizers; then strip what is left (its agent is gone, or it would have finished), so
uninstalling never hangs on a finalizer nobody will remove. Last, delete the webhook
configurations the operator made (kopf creates them, so Helm does not know them): left behind,
they would send every later L2TP write to a Service that no longer exists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from kube_l2tp.controller.app import WEBHOOK_CONFIG
from kube_l2tp.k8s.errors import ApiError
from kube_l2tp.k8s.objects import WEBHOOK_CONFIGURATIONS, Cluster

ORDER = ("l2tpsessions", "l2tptunnels")  # sessions first, as an agent tears them down


def remaining(cluster: Cluster) -> list[tuple[str, str, list[str]]]:
    return [
        (plural, obj["metadata"]["name"], list(obj["metadata"].get("finalizers") or []))
        for plural in ORDER
        for obj in cluster.objects(plural)
    ]


def cleanup(
    cluster: Cluster,
    timeout: float,
    out: TextIO,
    *,
    poll: float = 1.0,
    settle: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """0 when no L2TP object and no webhook configuration of ours remains at the end."""
    for plural in ORDER:
        for obj in cluster.objects(plural):
            name = obj["metadata"]["name"]
            if obj["metadata"].get("deletionTimestamp"):
                print(f"{plural}/{name}: already being deleted", file=out)
            elif cluster.delete(plural, name):
                print(f"{plural}/{name}: deleted", file=out)
    deadline = clock() + timeout
    left = remaining(cluster)
    while left and clock() < deadline:
        sleep(poll)
        left = remaining(cluster)
    if left:
        print(f"{len(left)} object(s) still held after {timeout:g}s: agents gone?", file=out)
    for plural, name, finalizers in left:
        removed, _ = cluster.remove_finalizers(plural, name, finalizers)
        if removed:
            print(f"{plural}/{name}: removed finalizer(s) {', '.join(removed)}", file=out)
    deadline = clock() + settle
    left = remaining(cluster)
    while left and clock() < deadline:
        sleep(poll)
        left = remaining(cluster)
    for plural, name, finalizers in left:
        print(f"{plural}/{name}: still present (finalizers: {finalizers})", file=out)
    webhooks_left = _delete_webhook_configurations(cluster, out)
    print("nothing left" if not left else f"{len(left)} object(s) left", file=out)
    return 0 if not left and not webhooks_left else 1


def _delete_webhook_configurations(cluster: Cluster, out: TextIO) -> int:
    """Delete the operator's webhook configurations; the number that could not be deleted."""
    failed = 0
    for plural in WEBHOOK_CONFIGURATIONS:
        try:
            if cluster.delete_webhook_configuration(plural, WEBHOOK_CONFIG):
                print(f"{plural}/{WEBHOOK_CONFIG}: deleted", file=out)
        except ApiError as exc:
            failed += 1
            print(
                f"{plural}/{WEBHOOK_CONFIG}: not deleted ({exc.status} {exc.reason}); delete it"
                f" with: kubectl delete {plural.removesuffix('s')} {WEBHOOK_CONFIG}",
                file=out,
            )
    return failed
