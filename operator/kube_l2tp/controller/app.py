"""Settings and entry points of the operator: standalone kopf, cluster-wide, no finalizer.

Standalone (one replica, Recreate): no peering objects to install or clean up. The operator's
annotations and finalizer name are its own, distinct from kopf's defaults, so it can never take
(or strip) an agent's; it registers no handler that needs a finalizer, so it adds none.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import kopf

from kube_l2tp.controller import handlers
from kube_l2tp.k8s.objects import Cluster

PREFIX = "operator.kubel2tp.io"
WEBHOOK_CONFIG = "kube-l2tp.kubel2tp.io"  # the Validating/MutatingWebhookConfiguration kopf owns
SERVICE = "kube-l2tp-webhook"


@dataclass(frozen=True)
class OperatorConfig:
    health_port: int | None = 8080  # None: no liveness endpoint
    webhook_port: int = 9443  # kopf refuses to run admission handlers without a server
    webhook_host: str | None = None  # the name the API server reaches the webhook by
    webhook_insecure: bool = False  # plain HTTP (tests only: the API server requires HTTPS)


def webhook_host(explicit: str | None, namespace: str | None) -> str | None:
    """--webhook-host, else $KUBE_L2TP_WEBHOOK_HOST (the chart), else the Service's DNS name."""
    host = explicit or os.environ.get("KUBE_L2TP_WEBHOOK_HOST")
    if host:
        return host
    ns = namespace or os.environ.get("POD_NAMESPACE")
    return f"{SERVICE}.{ns}.svc" if ns else None


def settings(config: OperatorConfig) -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    s.peering.standalone = True
    s.peering.mandatory = False
    s.persistence.finalizer = f"{PREFIX}/unused"  # never added: no handler requires one
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    s.posting.level = logging.WARNING  # Events for what users must see, not every log line
    s.admission.server = kopf.WebhookServer(
        addr="0.0.0.0",
        port=config.webhook_port,
        host=config.webhook_host,
        insecure=config.webhook_insecure,
    )
    s.admission.managed = WEBHOOK_CONFIG
    return s


def _liveness(config: OperatorConfig) -> str | None:
    if config.health_port is None:
        return None
    return f"http://0.0.0.0:{config.health_port}/healthz"


async def operator(
    config: OperatorConfig,
    *,
    stop_flag: Any = None,
    ready_flag: Any = None,
    cluster: Cluster | None = None,
) -> None:
    """The operator in the running event loop (tests run it in theirs, with a stop flag)."""
    await kopf.operator(
        registry=handlers.registry,
        settings=settings(config),
        standalone=True,
        clusterwide=True,
        liveness_endpoint=_liveness(config),
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        memo=kopf.Memo(cluster=cluster or Cluster()),
    )


def run(config: OperatorConfig) -> None:
    """The operator as a process: kopf's own loop, signal handling and logging."""
    kopf.configure(verbose=False)
    kopf.run(
        registry=handlers.registry,
        settings=settings(config),
        standalone=True,
        clusterwide=True,
        liveness_endpoint=_liveness(config),
        memo=kopf.Memo(cluster=Cluster()),
    )
