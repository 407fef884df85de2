"""`kube-l2tp`: validate, render, status, agent and operator in one command.

Subcommands import their I/O layers lazily, so `validate` and `render` work on any machine
(no netlink, no cluster) and start fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kube_l2tp import buildinfo
from kube_l2tp.agent.statestore import DEFAULT_STATE_DIR
from kube_l2tp.api import manifests, validation
from kube_l2tp.api.model import Resources
from kube_l2tp.core import render as render_mod
from kube_l2tp.files import manifests as manifest_files

DEFAULT_METRICS_PORT = 9717  # the chart's agent.metricsPort; PodMonitor/ServiceMonitor scrape it


def profiles_names() -> list[str]:
    from kube_l2tp.core.profiles import PROFILES  # noqa: PLC0415

    return list(PROFILES)


def _load(files: Sequence[Path]) -> validation.Report:
    return validation.check_documents(manifest_files.load(files))


def cmd_validate(args: argparse.Namespace) -> int:
    """Exit 0 when every object is valid (warnings allowed), 1 otherwise."""
    try:
        report = _load(args.file)
    except manifests.ManifestError as exc:
        print(exc, file=sys.stderr)
        return 1
    for problem in report.problems:
        is_error = problem.severity.value == "error"
        print(problem.render(), file=sys.stdout if is_error else sys.stderr)
    res = report.resources
    if report.errors:
        print(f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)", file=sys.stderr)
        return 1
    print(
        f"valid: {len(res.tunnels)} tunnel(s), {len(res.sessions)} session(s),"
        f" {len(report.warnings)} warning(s)",
        file=sys.stderr,
    )
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    try:
        report = _load(args.file)
    except manifests.ManifestError as exc:
        print(exc, file=sys.stderr)
        return 1
    if report.errors:
        for problem in report.errors:
            print(problem.render(), file=sys.stderr)
        print("not rendering: fix the errors above (kube-l2tp validate)", file=sys.stderr)
        return 1
    if args.profile is not None:
        return _render_far_end(args, report.resources)
    if args.network_attachments:
        return _render_network_attachments(args, report.resources)
    text = render_mod.render(report.resources, node=args.node, peer=args.peer)
    if not text:
        print(f"nothing for node {args.node!r}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


def _render_network_attachments(args: argparse.Namespace, resources: Resources) -> int:
    """--network-attachments: the NetworkAttachmentDefinitions of the bridges offered to pods,
    for `kubectl apply -f -` until the operator writes them itself."""
    import yaml  # noqa: PLC0415

    from kube_l2tp.core import attachment  # noqa: PLC0415

    nads = [
        nad
        for s in resources.sessions
        for t in [resources.tunnel(s.tunnel_ref)]
        if t is not None and (args.node is None or t.node == args.node)
        for nad in attachment.network_attachment_definitions(s, t)
    ]
    if not nads:
        print("no bridge is offered to pods (spec.interface.bridge.podNetwork)", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump_all(nads, sort_keys=False))
    return 0


def _render_far_end(args: argparse.Namespace, resources: Resources) -> int:
    """--peer --profile: the far end's configuration, or why the profile cannot express it."""
    from kube_l2tp.core import profiles  # noqa: PLC0415

    if not args.peer:
        print("--profile describes the far end: add --peer", file=sys.stderr)
        return 2
    opts = dict(o.partition("=")[::2] for o in args.peer_option)
    result = profiles.render_far_end(resources, args.profile, node=args.node, options=opts)
    if isinstance(result, profiles.Refused):
        for refusal in result.refusals:
            print(refusal.render(), file=sys.stderr)
        print(f"not rendered: the {args.profile} profile cannot express the above", file=sys.stderr)
        return 1
    for out in result.outputs:
        if out.path is not None and args.out is not None:
            target = args.out / out.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(out.text)
            print(f"wrote {target}", file=sys.stderr)
        else:
            sys.stdout.write(f"# file: {out.path}\n{out.text}\n" if out.path else out.text)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _manifest_dir(path: Path) -> Path:
    """'embedded' names the manifests shipped in the package: the seed's site-A/site-B."""
    if str(path) == "embedded":
        from kube_l2tp import embedded  # noqa: PLC0415

        return embedded.DIRECTORY
    return path


def cmd_agent(args: argparse.Namespace) -> int:
    """The agent: from --manifests (standalone), else from the API server (in a cluster)."""
    import logging  # noqa: PLC0415

    from kube_l2tp.agent.encryption import XfrmStep  # noqa: PLC0415
    from kube_l2tp.agent.events import kernel_events  # noqa: PLC0415
    from kube_l2tp.agent.loop import AgentConfig, install_signal_handlers  # noqa: PLC0415
    from kube_l2tp.agent.standalone import print_results, standalone_agent  # noqa: PLC0415
    from kube_l2tp.agent.statestore import StateError, StateStore  # noqa: PLC0415
    from kube_l2tp.core.state import KernelError  # noqa: PLC0415
    from kube_l2tp.netlink.kernel import Kernel  # noqa: PLC0415
    from kube_l2tp.netlink.xfrm import Xfrm  # noqa: PLC0415

    logging.basicConfig(
        level=logging.WARNING if args.once else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    cluster = args.manifests is None
    args.manifests = _manifest_dir(args.manifests) if args.manifests else Path()
    if not cluster and not args.manifests.is_dir():
        print(f"kube-l2tp agent: --manifests {args.manifests}: not a directory", file=sys.stderr)
        return 2
    try:
        store = StateStore(args.state_dir)
    except StateError as exc:
        print(f"kube-l2tp agent: {exc}", file=sys.stderr)
        return 2
    try:
        kernel = Kernel()
    except KernelError as exc:
        print(f"kube-l2tp agent: {exc}", file=sys.stderr)
        return 2
    config = AgentConfig(
        args.node,
        args.manifests,
        args.state_dir,
        args.resync,
        peer_silence_window=args.peer_silence_window,
    )
    try:
        if cluster:  # this node's objects from the API server
            from kube_l2tp.agent.cluster import cluster_agent  # noqa: PLC0415

            agent = cluster_agent(config, kernel, store, kernel_events)
        else:
            agent = standalone_agent(config, kernel, store, kernel_events)
        agent.xfrm = XfrmStep(Xfrm)  # opened only if a tunnel of the node is encrypted
        if args.metrics_bind_address not in ("", "off") and not args.once:
            from kube_l2tp.agent.serve import serve_metrics  # noqa: PLC0415

            serve_metrics(agent, args.metrics_bind_address, per_session=not args.no_session_metrics)
        if args.once:
            result = agent.reconcile_once()
            print_results(result, sys.stdout)
            unread = agent.snapshot.unreadable if agent.snapshot is not None else []
            for problem in unread:
                print(f"not read: {problem.render()}", file=sys.stdout)
            return 0 if result.converged and not unread else 1
        install_signal_handlers(agent)
        agent.run()
        return 0
    finally:
        kernel.close()
        store.close()


def cmd_status(args: argparse.Namespace) -> int:
    from kube_l2tp.agent import statestore  # noqa: PLC0415
    from kube_l2tp.cli.status import status  # noqa: PLC0415
    from kube_l2tp.core.plan import Observed  # noqa: PLC0415
    from kube_l2tp.core.state import KernelError  # noqa: PLC0415
    from kube_l2tp.netlink.kernel import Kernel  # noqa: PLC0415

    resources = None
    if args.manifests:
        try:
            report = _load([_manifest_dir(args.manifests)])
        except manifests.ManifestError as exc:
            print(f"kube-l2tp status: --manifests {exc}", file=sys.stderr)
            return 1
        for problem in report.errors:  # names only: the kernel's state is shown regardless
            print(f"kube-l2tp status: {problem.render()}", file=sys.stderr)
        resources = report.resources.for_node(args.node) if args.node else report.resources
    owned = statestore.peek(args.state_dir)
    try:
        with Kernel() as kernel:
            observed = Observed.of(
                kernel.dump_tunnels(), kernel.dump_sessions(), kernel.dump_links()
            )
    except KernelError as exc:
        print(f"kube-l2tp status: {exc}", file=sys.stderr)
        return 1
    if owned is None and not args.json:
        print(f"(no agent state in {args.state_dir}: showing every L2TP object)", file=sys.stderr)
    text = status(observed, owned, resources, show_all=args.all, as_json=args.json)
    sys.stdout.write(text)
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    """The kopf operator: admission, tunnel status, cleanup after nodes that are gone."""
    from kube_l2tp.controller import app  # noqa: PLC0415

    try:
        tls = app.user_certificate(args.webhook_cert, args.webhook_key, args.webhook_ca)
    except ValueError as exc:
        print(f"kube-l2tp operator: {exc}", file=sys.stderr)
        return 2
    try:
        election = _leader_election(args)
    except ValueError as exc:
        print(f"kube-l2tp operator: {exc}", file=sys.stderr)
        return 2
    config = app.OperatorConfig(
        health_port=args.health_port or None,
        webhook_port=args.webhook_port,
        webhook_host=app.webhook_host(args.webhook_host, args.namespace_of_service),
        webhook_tls=tls,
        metrics_port=args.metrics_port or None,
        leader_election=election,
    )
    try:
        app.run(config)
    except app.CannotStartError as exc:
        print(f"kube-l2tp operator: cannot start: {exc}", file=sys.stderr)
        return 2
    return 0


def _leader_election(args: argparse.Namespace) -> Any:
    """--leader-election LEASE: the Lease in --lease-namespace (default $POD_NAMESPACE)."""
    from kube_l2tp.controller import app  # noqa: PLC0415
    from kube_l2tp.k8s.lease import Timing  # noqa: PLC0415

    if not args.leader_election:
        return None
    namespace = args.lease_namespace or os.environ.get("POD_NAMESPACE")
    if not namespace:
        raise ValueError(
            "--leader-election needs the Lease's namespace: --lease-namespace NS or $POD_NAMESPACE"
        )
    timing = Timing(args.lease_duration, args.lease_renew_deadline, args.lease_retry_period)
    return app.LeaderElection(
        namespace, args.leader_election, args.identity or app.identity(), timing
    )


def cmd_cleanup(args: argparse.Namespace) -> int:
    """Delete every L2TP object; strip finalizers left after --timeout (the chart's hook)."""
    from kube_l2tp.controller.cleanup import cleanup  # noqa: PLC0415
    from kube_l2tp.k8s.objects import Cluster  # noqa: PLC0415

    cluster = Cluster()
    try:
        return cleanup(cluster, args.timeout, sys.stdout)
    finally:
        cluster.close()


class _Version(argparse.Action):
    """--version, resolved only when asked (the commit may need a `git` run)."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: object, **_kw: object) -> None:
        print(buildinfo.describe())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kube-l2tp",
        description="Declarative static L2TPv3 Ethernet pseudowires for Kubernetes and Linux.",
    )
    parser.add_argument(
        "--version", action=_Version, nargs=0, help="print the version and commit, then exit"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def files(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-f",
            "--file",
            type=Path,
            action="append",
            required=True,
            help="manifest file or directory (YAML or JSON, multi-document); repeatable",
        )

    p = sub.add_parser(
        "validate", help="check manifests as the cluster would, plus cross-object rules"
    )
    files(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("render", help="print the equivalent ip commands")
    files(p)
    p.add_argument("--node", help="only this node's objects")
    p.add_argument(
        "--peer", action="store_true", help="the mirrored commands for the far end of each tunnel"
    )
    p.add_argument(
        "--profile",
        choices=sorted(profiles_names()),
        help="with --peer: the far end's configuration in its own language (linux: ip commands)",
    )
    p.add_argument(
        "--peer-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a far-end setting no manifest holds (e.g. cisco-ios-xe local-interface=Lo1)",
    )
    p.add_argument("--out", type=Path, help="with --profile networkd: write the files under DIR")
    p.add_argument(
        "--network-attachments",
        action="store_true",
        help="the NetworkAttachmentDefinitions (Multus) of the bridges offered to pods",
    )
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("agent", help="program this node's tunnels and sessions and keep them")
    p.add_argument("--node", required=True, help="this node's name (spec.nodeName)")
    p.add_argument(
        "--manifests",
        type=Path,
        help="directory of manifests (standalone mode); 'embedded' for the seed's example",
    )
    p.add_argument("--once", action="store_true", help="reconcile once, print results, exit")
    p.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"where the record of what the agent owns is kept (default {DEFAULT_STATE_DIR})",
    )
    p.add_argument(
        "--metrics-bind-address",
        default=f"0.0.0.0:{DEFAULT_METRICS_PORT}",
        help="serve /metrics, /healthz and /readyz here"
        f" (default 0.0.0.0:{DEFAULT_METRICS_PORT}; 'off' disables)",
    )
    p.add_argument(
        "--no-session-metrics",
        action="store_true",
        help="export no per-session series (tunnels' stay): for nodes with very many sessions",
    )
    p.add_argument(
        "--resync", type=float, default=30.0, help="seconds between full resyncs (backstop)"
    )
    p.add_argument(
        "--peer-silence-window",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a session that sent packets and received none for this long is PeerSilent"
        " (default 60)",
    )
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("status", help="tunnels and sessions in the kernel, with counters")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    p.add_argument("--manifests", type=Path, help="manifests, to show object names")
    p.add_argument("--node", help="with --manifests: this node's objects")
    p.add_argument("--all", action="store_true", help="also objects the agent does not own")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("operator", help="the cluster's operator (kopf): admission, status")
    p.add_argument(
        "--health-port", type=int, default=8080, help="liveness /healthz (default 8080; 0: off)"
    )
    p.add_argument(
        "--webhook-port", type=int, default=9443, help="admission webhooks (default 9443)"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=8081,
        help="/metrics: webhook requests, verdicts, latency, handler errors (default 8081; 0: off)",
    )
    p.add_argument(
        "--webhook-host",
        help="name the API server reaches the webhooks by (default $KUBE_L2TP_WEBHOOK_HOST,"
        " else kube-l2tp-webhook.NAMESPACE.svc)",
    )
    p.add_argument(
        "--namespace-of-service",
        metavar="NS",
        help="namespace of the webhook Service (default $POD_NAMESPACE)",
    )
    p.add_argument(
        "--webhook-cert",
        metavar="FILE",
        help="the webhook's serving certificate, PEM (default $KUBE_L2TP_WEBHOOK_CERT; none:"
        " the operator makes its own CA and certificate at start)",
    )
    p.add_argument(
        "--webhook-key",
        metavar="FILE",
        help="its private key, PEM (default $KUBE_L2TP_WEBHOOK_KEY)",
    )
    p.add_argument(
        "--webhook-ca",
        metavar="FILE",
        help="the CA bundle the API server verifies it with, e.g. cert-manager's ca.crt"
        " (default $KUBE_L2TP_WEBHOOK_CA; none: the certificate itself)",
    )
    p.add_argument(
        "--leader-election",
        metavar="LEASE",
        help="several replicas: only the holder of this coordination.k8s.io Lease writes (status,"
        " finalizers, Events); every replica answers admission reviews (default: off, this"
        " replica always writes)",
    )
    p.add_argument("--lease-namespace", metavar="NS", help="the Lease's (default $POD_NAMESPACE)")
    p.add_argument(
        "--identity", help="this replica's name in the Lease (default $POD_NAME, else host-pid)"
    )
    p.add_argument(
        "--lease-duration",
        type=float,
        default=15.0,
        help="seconds after which a silent holder's Lease is taken over (default 15)",
    )
    p.add_argument(
        "--lease-renew-deadline",
        type=float,
        default=10.0,
        help="seconds without a renewal after which the holder stops writing (default 10)",
    )
    p.add_argument(
        "--lease-retry-period",
        type=float,
        default=2.0,
        help="seconds between renewals and between a candidate's looks (default 2)",
    )
    p.set_defaults(func=cmd_operator)

    p = sub.add_parser("cleanup", help="delete every tunnel and session (Helm pre-delete hook)")
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for agents to remove their finalizers before stripping them",
    )
    p.set_defaults(func=cmd_cleanup)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
