"""Settings and entry points of the operator: standalone kopf, cluster-wide, no finalizer.

Standalone kopf (no KopfPeering objects): with several replicas, each runs all of kopf (indexes
and the admission webhooks) and a Lease (k8s.lease) decides which one writes (handlers.leading);
a replica that takes the Lease over first repairs what was missed (controller.resync).
The operator's annotations and finalizer name are its own, distinct from kopf's defaults, so it
can never take (or strip) an agent's; it registers no handler that needs a finalizer; it adds none.

The admission webhook serves HTTPS with the operator's own certificate (controller.tls) or one
given with --webhook-cert/--webhook-key (e.g. cert-manager's); kopf writes the matching CA into
the webhook configurations it manages, which name the webhook's Service when the host is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp.web
import kopf

from kube_l2tp.controller import admission, handlers, resync
from kube_l2tp.controller.tls import SelfSignedIssuer, ServingFiles, service_names, service_of
from kube_l2tp.k8s import lease
from kube_l2tp.k8s.errors import NoClusterConfig
from kube_l2tp.k8s.objects import Cluster, api_client
from kube_l2tp.metrics.operator import OperatorMetrics

PREFIX = "operator.kubel2tp.io"
WEBHOOK_CONFIG = "kube-l2tp.kubel2tp.io"  # the Validating/MutatingWebhookConfiguration kopf owns
SERVICE = "kube-l2tp-webhook"


@dataclass(frozen=True)
class LeaderElection:
    """The Lease that decides which replica writes (namespace/name) and who this replica is."""

    namespace: str
    name: str
    identity: str
    timing: lease.Timing = field(default_factory=lease.Timing)


def identity() -> str:
    """$POD_NAME (the chart sets it), else host name and process id."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class OperatorConfig:
    health_port: int | None = 8080  # None: no liveness endpoint
    webhook_port: int = 9443  # kopf refuses to run admission handlers without a server
    webhook_host: str | None = None  # the name the API server reaches the webhook by
    webhook_insecure: bool = False  # plain HTTP (tests only: the API server requires HTTPS)
    # A certificate made elsewhere (e.g. cert-manager, mounted from a Secret); None: the
    # operator makes its own (controller.tls) in tls_dir (None: a new temporary directory).
    webhook_tls: ServingFiles | None = None
    tls_dir: Path | None = None
    metrics_port: int | None = None  # /metrics (webhook requests, handler errors); None: off
    leader_election: LeaderElection | None = None  # None: this replica always writes


def webhook_host(explicit: str | None, namespace: str | None) -> str | None:
    """--webhook-host, else $KUBE_L2TP_WEBHOOK_HOST (the chart), else the Service's DNS name."""
    host = explicit or os.environ.get("KUBE_L2TP_WEBHOOK_HOST")
    if host:
        return host
    ns = namespace or os.environ.get("POD_NAMESPACE")
    return f"{SERVICE}.{ns}.svc" if ns else None


def user_certificate(cert: str | None, key: str | None, ca: str | None) -> ServingFiles | None:
    """--webhook-cert/--webhook-key/--webhook-ca (or their $KUBE_L2TP_WEBHOOK_* variables)."""
    cert = cert or os.environ.get("KUBE_L2TP_WEBHOOK_CERT") or None
    key = key or os.environ.get("KUBE_L2TP_WEBHOOK_KEY") or None
    ca = ca or os.environ.get("KUBE_L2TP_WEBHOOK_CA") or None
    if not (cert or key or ca):
        return None
    if not (cert and key):
        raise ValueError(
            "--webhook-cert and --webhook-key go together: give both (e.g. tls.crt and tls.key"
            " of a Secret), or neither to let the operator make its own certificate"
        )
    for flag, path in (("--webhook-cert", cert), ("--webhook-key", key), ("--webhook-ca", ca)):
        if path and not Path(path).is_file():
            raise ValueError(f"{flag} {path}: no such file; mount the Secret that holds it")
    return ServingFiles(Path(cert), Path(key), Path(ca) if ca else None)


def self_signed(config: OperatorConfig) -> SelfSignedIssuer:
    """The operator's own CA and serving certificate, for the name the API server uses."""
    host = config.webhook_host
    hosts = service_names(host) if host else ["127.0.0.1", "localhost"]  # kopf's default
    directory = config.tls_dir or Path(tempfile.mkdtemp(prefix="kube-l2tp-webhook-"))
    issuer = SelfSignedIssuer(hosts, directory)
    issuer.issue()
    return issuer


def _measured(fn: kopf.WebhookFn, metrics: OperatorMetrics) -> kopf.WebhookFn:
    """kopf's review function, counted by verdict and timed (an exception is an "error")."""

    async def measured(request: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        verdict = "error"
        try:
            response = await fn(request, **kwargs)
            allowed = (response.get("response") or {}).get("allowed")
            verdict = "allowed" if allowed else "denied"
            return response
        finally:
            metrics.observe(kwargs.get("webhook") or "", verdict, time.monotonic() - started)

    return cast(kopf.WebhookFn, measured)


class GuardedWebhookServer(kopf.WebhookServer):
    """kopf's server with the AdmissionReview envelope checked before kopf reads it
    (admission.read_envelope): what is not understood is denied, or answered 400 when there is
    no request to answer, never a 500 with a traceback (which failurePolicy Ignore admits)."""

    metrics: OperatorMetrics | None = None  # set: every review kopf answers is measured

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        if self.metrics is not None:
            fn = _measured(fn, self.metrics)
        async for config in super().__call__(fn):
            yield config

    @staticmethod
    async def _serve(fn: kopf.WebhookFn, request: aiohttp.web.Request) -> aiohttp.web.Response:
        envelope = admission.read_envelope(await request.read())
        if envelope.request is None:
            if envelope.response is not None:
                return aiohttp.web.json_response(envelope.response)
            return aiohttp.web.json_response({"message": envelope.reason}, status=400)
        sslpeer = request.transport.get_extra_info("peercert") if request.transport else None
        try:
            response = await fn(
                cast(Any, envelope.request),  # checked to be a review kopf can read
                webhook=request.match_info.get("id"),
                sslpeer=sslpeer,
                headers=dict(request.headers),
            )
        except Exception as exc:  # whatever it is, the object is not admitted because of it
            logging.getLogger(__name__).exception("admission failed")
            review = envelope.request
            message = f"the webhook could not review this request ({type(exc).__name__}: {exc})"
            denial = admission.denial(review["apiVersion"], review["request"]["uid"], message[:500])
            return aiohttp.web.json_response(denial)
        return aiohttp.web.json_response(response)


class ServiceWebhookServer(GuardedWebhookServer):
    """kopf's HTTPS server, announced to the API server as a Service, not a URL.

    Kubernetes asks in-cluster webhooks to be referred to by `service`: the API server does not
    necessarily resolve cluster DNS names (it often runs with the node's resolver). The Service
    forwards its port to the operator's webhook port; the certificate names the Service.
    """

    def __init__(self, *, service: str, namespace: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service
        self.namespace = namespace

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        async for config in super().__call__(fn):
            reference = kopf.WebhookClientConfig(
                service=kopf.WebhookClientConfigService(
                    name=self.service,
                    namespace=self.namespace,
                    port=self.port,
                    path=(self.path or "").rstrip("/"),
                )
            )
            if config.get("caBundle"):
                reference["caBundle"] = config["caBundle"]
            yield reference


def webhook_server(
    config: OperatorConfig, tls: ServingFiles | None, metrics: OperatorMetrics | None = None
) -> kopf.WebhookServer:
    """HTTPS with these files (plain HTTP only when insecure), named as the API server calls it."""
    files: dict[str, Any] = {"insecure": config.webhook_insecure}
    if tls is not None and not config.webhook_insecure:
        files.update(certfile=tls.certfile, pkeyfile=tls.pkeyfile, cafile=tls.cafile)
    common: dict[str, Any] = {
        "addr": "0.0.0.0",
        "port": config.webhook_port,
        "host": config.webhook_host,
    }
    service = service_of(config.webhook_host)
    server: GuardedWebhookServer
    if service is not None and not config.webhook_insecure:
        name, namespace = service
        server = ServiceWebhookServer(service=name, namespace=namespace, **common, **files)
    else:
        server = GuardedWebhookServer(**common, **files)
    server.metrics = metrics
    return server


def settings(
    config: OperatorConfig,
    tls: ServingFiles | None = None,
    metrics: OperatorMetrics | None = None,
) -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    s.peering.standalone = True
    s.peering.mandatory = False
    s.persistence.finalizer = f"{PREFIX}/unused"  # never added: no handler requires one
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    s.posting.level = logging.WARNING  # Events for what users must see, not every log line
    s.admission.server = webhook_server(config, tls, metrics)
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
    metrics: OperatorMetrics | None = None,
) -> None:
    """The operator in the running event loop (tests run it in theirs, with a stop flag)."""
    cluster = cluster or Cluster()
    memo = kopf.Memo(cluster=cluster)
    elector = None
    if config.leader_election is not None:
        elector = _elector(config.leader_election, cluster, metrics)
        memo.leader = elector
    elif metrics is not None:
        metrics.leader.set(1)
    electing = asyncio.create_task(elector.run()) if elector is not None else None
    try:
        with _serving(config) as tls:
            await kopf.operator(
                registry=handlers.registry,
                settings=settings(config, tls, metrics),
                standalone=True,
                clusterwide=True,
                liveness_endpoint=_liveness(config),
                stop_flag=stop_flag,
                ready_flag=ready_flag,
                memo=memo,
            )
    finally:
        if electing is not None:
            electing.cancel()  # a holder releases the Lease on its way out
            with contextlib.suppress(asyncio.CancelledError):
                await electing


_RESYNCS: set[asyncio.Task[None]] = set()  # running resyncs (a task needs a reference)


def _elector(
    election: LeaderElection, cluster: Cluster, metrics: OperatorMetrics | None
) -> lease.Elector:
    """The Lease elector; taking the Lease starts a resync, the gauge follows it."""
    timing = election.timing
    store = lease.LeaseStore(
        election.namespace, election.name, api_client(), timing.request_timeout
    )

    def changed(held: bool) -> None:
        if metrics is not None:
            metrics.leader.set(int(held))
        if held:
            task = asyncio.get_running_loop().create_task(_resync(cluster))
            _RESYNCS.add(task)
            task.add_done_callback(_RESYNCS.discard)

    return lease.Elector(store, election.identity, timing, changed)


async def _resync(cluster: Cluster) -> None:
    log = logging.getLogger(__name__)
    try:
        writes = await asyncio.to_thread(resync.resync, cluster)
    except Exception:  # the handlers still run; the next event repairs what this could not
        log.exception("resync after taking the lease failed")
        return
    log.warning(f"took the lease: resync made {writes} write(s)")


def serve_metrics(port: int, addr: str = "0.0.0.0") -> OperatorMetrics:
    """/metrics on ``port``: webhook requests, verdicts and latency, kopf handler errors."""
    metrics = OperatorMetrics()
    logging.getLogger("kopf.objects").addHandler(metrics.log_handler())
    metrics.serve(port, addr)
    return metrics


class CannotStartError(Exception):
    """Why the operator cannot run at all (said in one line, exit non-zero: the Pod's log)."""


def run(config: OperatorConfig) -> None:
    """The operator as a process: kopf's own loop, signal handling and logging."""
    kopf.configure(verbose=False)
    try:
        cluster = Cluster()
    except NoClusterConfig as exc:
        raise CannotStartError(
            f"no Kubernetes API server to talk to ({exc}): in a cluster the Pod's service"
            " account gives one (automountServiceAccountToken must not be false); elsewhere"
            " set KUBECONFIG"
        ) from exc
    metrics = serve_metrics(config.metrics_port) if config.metrics_port else None
    with contextlib.suppress(asyncio.CancelledError):  # as kopf.run: a signal ends it cleanly
        asyncio.run(operator(config, cluster=cluster, metrics=metrics))


@contextlib.contextmanager
def _serving(config: OperatorConfig) -> Iterator[ServingFiles | None]:
    """The webhook's certificate files: the user's, or our own kept renewed while we run."""
    if config.webhook_insecure or config.webhook_tls is not None:
        yield config.webhook_tls
        return
    issuer = self_signed(config)
    stop = threading.Event()
    issuer.keep_renewed(stop)
    try:
        yield issuer.files
    finally:
        stop.set()
