"""A real Kubernetes control plane on loopback: etcd and kube-apiserver, built from Go modules.

scripts/build-k8s-bin.sh builds both once (pinned in tests/k8s-bin/go.mod) into a cache outside
the clone. Each start makes a fresh data directory and a fresh PKI: a CA, the server's
certificate for 127.0.0.1, an admin client certificate (group system:masters, the only identity
that bypasses RBAC) and the ServiceAccount token signing key, so TokenRequest works. The server
runs with RBAC authorization and the admission plugins a cluster has (webhooks and
ValidatingAdmissionPolicy included). No kubelet, scheduler or controller-manager runs: Pods can
exist (with spec.nodeName) but never start, and nothing garbage-collects.

`RealApiServer` offers the handful of calls the tests use on the emulator (create, objects,
submit, path_for, outage) so a test can move from one to the other unchanged where it makes
sense.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-k8s-bin.sh"
START_TIMEOUT = 120.0  # a cold kube-apiserver on 2 busy cores: ~10-20 s; be generous
ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN = "kube-l2tp-test-admin"
L2TP_PLURALS = ("l2tpsessions", "l2tptunnels")


class ApiError(RuntimeError):
    """A request the harness itself made was refused."""

    def __init__(self, what: str, code: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{what}: {code} {message}")
        self.code = code
        self.body = body


def build_binaries() -> Path:
    """The directory with kube-apiserver and etcd (built on the first call on this machine)."""
    done = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/build-k8s-bin.sh failed:\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- PKI ---------------------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: x509.Name,
    key: Any,
    issuer: x509.Name,
    issuer_key: Any,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    usage: list[x509.ObjectIdentifier] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def make_pki(directory: Path, server_ips: Sequence[str] = ()) -> None:
    """ca.crt, server.{crt,key}, admin.{crt,key}, sa.{key,pub} in ``directory``; the server's
    certificate names 127.0.0.1 and ``server_ips`` (addresses other network namespaces reach it
    by)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name("kube-l2tp-test-ca")
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    server_key = _key()
    server = _cert(
        _name("kube-apiserver"),
        server_key,
        ca_name,
        ca_key,
        sans=[
            *(x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", *server_ips)),
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes.default.svc"),
        ],
        usage=[ExtendedKeyUsageOID.SERVER_AUTH],
    )
    admin_key = _key()
    admin = _cert(
        _name(ADMIN, "system:masters"),
        admin_key,
        ca_name,
        ca_key,
        usage=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = serialization.Encoding.PEM
    files = {
        "ca.crt": ca.public_bytes(pem),
        "server.crt": server.public_bytes(pem),
        "server.key": _pem_key(server_key),
        "admin.crt": admin.public_bytes(pem),
        "admin.key": _pem_key(admin_key),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            pem, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
        (directory / name).chmod(0o600)


# --- the processes -------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child: SIGKILL when the test process dies, however it dies (no orphan servers;
    their state is thrown away anyway, and kube-apiserver can linger on SIGTERM without etcd)."""
    _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# resolved here, not in the forked child (no loader lock to take between fork and exec)
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl


class RealApiServer:
    """etcd + kube-apiserver on 127.0.0.1 with a fresh data directory; a context manager."""

    def __init__(
        self,
        workdir: Path,
        bin_dir: Path | None = None,
        log: Any = None,
        *,
        bind: str = "127.0.0.1",
        server_ips: Sequence[str] = (),
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        """``bind`` and ``server_ips``: for clients in other network namespaces (the VM's
        end-to-end test: bind 0.0.0.0, the certificate naming the addresses they connect to)."""
        self.workdir = workdir
        self.bind = bind
        self.server_ips = tuple(server_ips)
        self.start_timeout = start_timeout  # longer under emulation (TCG)
        self.bin_dir = bin_dir
        self.pki = workdir / "pki"
        self.kubeconfig = workdir / "kubeconfig"
        self.port = 0
        self.start_seconds = 0.0  # etcd + kube-apiserver, from spawn to /readyz ok
        self.version = ""
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._etcd_port = 0
        self._http: requests.Session | None = None
        self._bearer: requests.Session | None = None
        self._paths: dict[tuple[str, str], tuple[str, bool]] = {}
        self._log = log

    # lifecycle

    def __enter__(self) -> RealApiServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self.bin_dir is None:
            self.bin_dir = build_binaries()
        started = time.monotonic()
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        make_pki(self.pki, self.server_ips)
        self._etcd_port = free_port()
        self.port = free_port()
        self._start_etcd()
        self._start_apiserver()
        self.write_kubeconfig(self.kubeconfig)
        self.start_seconds = time.monotonic() - started
        self.version = self.get("/version")["gitVersion"]

    def _start_etcd(self) -> None:
        assert self.bin_dir is not None
        peer = free_port()
        client = f"http://127.0.0.1:{self._etcd_port}"
        args = [
            str(self.bin_dir / "etcd"),
            "--name=default",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=default=http://127.0.0.1:{peer}",
            "--log-level=warn",
            "--unsafe-no-fsync",  # a throwaway store: durability buys nothing, fsync costs much
        ]
        self._etcd = self._spawn(args, "etcd.log")
        self._wait(lambda: self._etcd_healthy(client), self._etcd, "etcd.log", "etcd")

    @staticmethod
    def _etcd_healthy(client: str) -> bool:
        try:
            return bool(requests.get(f"{client}/health", timeout=2).json().get("health") == "true")
        except (requests.RequestException, ValueError):
            return False

    def apiserver_args(self) -> list[str]:
        assert self.bin_dir is not None
        pki = self.pki
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self._etcd_port}",
            f"--bind-address={self.bind}",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--tls-cert-file={pki / 'server.crt'}",
            f"--tls-private-key-file={pki / 'server.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            # on by default; named so that no future default can quietly drop them
            "--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook,"
            "ValidatingAdmissionPolicy",
            "--service-cluster-ip-range=10.0.0.0/24",  # allocated to Services, never reached
            "--endpoint-reconciler-type=none",  # no kubernetes Service endpoints to keep
            "--allow-privileged=true",  # the agent's DaemonSet asks for NET_ADMIN on the host
            "--profiling=false",
            f"--cert-dir={self.workdir / 'certs'}",
        ]

    def _start_apiserver(self) -> None:
        self._apiserver = self._spawn(self.apiserver_args(), "kube-apiserver.log")
        self._wait(self._ready, self._apiserver, "kube-apiserver.log", "kube-apiserver")

    def _ready(self) -> bool:
        try:
            answer = self.http.get(f"{self.url}/readyz", timeout=5)
        except requests.RequestException:
            return False
        return answer.status_code == 200

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / log_name).open("ab")
        try:
            return subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (async-signal-safe: one prctl)
            )
        finally:
            log.close()

    def _wait(self, ok: Any, proc: subprocess.Popen[bytes] | None, log: str, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not ok():
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{what} exited ({proc.returncode}):\n{self.log_tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{what} not ready in {self.start_timeout:.0f} s:\n{self.log_tail(log)}"
                )
            time.sleep(0.1)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / name
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    @staticmethod
    def _end(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)

    def stop_apiserver(self) -> None:
        """An API outage: kube-apiserver killed (connections reset); etcd keeps the state."""
        self._end(self._apiserver, signal.SIGKILL)
        self._apiserver = None

    def start_apiserver(self) -> None:
        """kube-apiserver again, same port, same store (as after a restart of the process)."""
        if self._apiserver is None:
            self._start_apiserver()

    def processes(self) -> dict[str, int]:
        """The running server processes' ids, by name (to read their memory from /proc)."""
        procs = {"etcd": self._etcd, "kube-apiserver": self._apiserver}
        return {name: p.pid for name, p in procs.items() if p is not None and p.poll() is None}

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        self.stop_apiserver()
        try:
            yield
        finally:
            self.start_apiserver()

    def close(self) -> None:
        self._end(self._apiserver)
        self._end(self._etcd)
        self._apiserver = self._etcd = None
        for session in (self._http, self._bearer):
            if session is not None:
                session.close()
        self._http = self._bearer = None

    # clients

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def http(self) -> requests.Session:
        """An admin session (client certificate), verifying the server against our CA."""
        if self._http is None:
            s = requests.Session()
            s.trust_env = False  # REQUESTS_CA_BUNDLE would replace our CA; no proxy either
            s.cert = (str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
            s.verify = str(self.pki / "ca.crt")
            self._http = s
        return self._http

    @property
    def bearer(self) -> requests.Session:
        """A session with no client certificate (for requests that carry a token)."""
        if self._bearer is None:
            s = requests.Session()
            s.trust_env = False
            s.verify = str(self.pki / "ca.crt")
            self._bearer = s
        return self._bearer

    def kubeconfig_dict(self, user: dict[str, Any], server: str | None = None) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "real",
                    "cluster": {
                        "server": server or self.url,
                        "certificate-authority": str(self.pki / "ca.crt"),
                    },
                }
            ],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "real", "context": {"cluster": "real", "user": "user"}}],
            "current-context": "real",
        }

    def write_kubeconfig(
        self, path: Path, token: str | None = None, server: str | None = None
    ) -> Path:
        """Admin's (client certificate), or one that authenticates with ``token``; ``server``:
        another URL of this server (one of ``server_ips``) instead of 127.0.0.1's."""
        user: dict[str, Any] = (
            {"token": token}
            if token
            else {
                "client-certificate": str(self.pki / "admin.crt"),
                "client-key": str(self.pki / "admin.key"),
            }
        )
        path.write_text(yaml.safe_dump(self.kubeconfig_dict(user, server)))
        return path

    def submit(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        token: str | None = None,
    ) -> tuple[int, Any]:
        """One request as admin (or with a bearer token): status code and decoded body."""
        headers = {"Content-Type": content_type}
        session = self.http
        if token is not None:  # no client certificate: it would authenticate as admin first
            headers["Authorization"] = f"Bearer {token}"
            session = self.bearer
        data = (
            None if body is None else (body if isinstance(body, str | bytes) else json.dumps(body))
        )
        deadline = time.monotonic() + 30
        while True:
            answer = session.request(
                method,
                f"{self.url}{path}",
                data=data,
                params=dict(params or {}),
                headers=headers,
                timeout=30,
            )
            # 429 "storage is (re)initializing": a new CRD's cache, for a moment; clients retry
            if answer.status_code != 429 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        try:
            decoded = answer.json()
        except ValueError:
            decoded = answer.text
        return answer.status_code, decoded

    def get(self, path: str, **params: str) -> Any:
        code, body = self.submit("GET", path, params=params)
        if code != 200:
            raise ApiError(f"GET {path}", code, body)
        return body

    def path_for(self, api_version: str, kind: str, namespace: str | None = None) -> str:
        """The collection URL of a kind, found through discovery as a client would."""
        key = (api_version, kind)
        if key not in self._paths:
            prefix = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
            code, body = self.submit("GET", prefix)
            if code != 200:
                raise ApiError(f"discovery of {api_version}", code, body)
            for res in body.get("resources", []):
                if res["kind"] == kind and "/" not in res["name"]:
                    self._paths[key] = (f"{prefix}/{res['name']}", res["namespaced"])
            if key not in self._paths:
                raise ApiError(f"no {kind} in {api_version}", 404, body)
        path, namespaced = self._paths[key]
        if namespaced and namespace:
            prefix, plural = path.rsplit("/", 1)
            return f"{prefix}/namespaces/{namespace}/{plural}"
        return path

    def create(self, body: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        namespace = namespace or body.get("metadata", {}).get("namespace")
        path = self.path_for(body["apiVersion"], body["kind"], namespace)
        code, answer = self.submit("POST", path, dict(body))
        if code >= 300:
            raise ApiError(f"create {body['kind']}", code, answer)
        result: dict[str, Any] = answer
        return result

    PLURALS: Mapping[str, str] = {
        "l2tptunnels": "/apis/kubel2tp.io/v1alpha1/l2tptunnels",
        "l2tpsessions": "/apis/kubel2tp.io/v1alpha1/l2tpsessions",
        "validatingwebhookconfigurations": (
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
        ),
        "mutatingwebhookconfigurations": (
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
        ),
        "nodes": "/api/v1/nodes",
        "events": "/api/v1/events",
    }

    def objects(self, plural: str) -> list[dict[str, Any]]:
        """The current objects of a resource, as the emulator's call of the same name."""
        items: list[dict[str, Any]] = self.get(self.PLURALS[plural])["items"]
        return items

    def apply(self, obj: Mapping[str, Any], manager: str = "kube-l2tp-tests") -> dict[str, Any]:
        """Server-side apply as admin (creates or updates)."""
        namespace = obj.get("metadata", {}).get("namespace")
        path = self.path_for(obj["apiVersion"], obj["kind"], namespace)
        path += f"/{obj['metadata']['name']}"
        code, answer = self.submit(
            "PATCH",
            path,
            dict(obj),
            params={"fieldManager": manager, "force": "true"},
            content_type="application/apply-patch+yaml",
        )
        if code >= 300:
            raise ApiError(f"apply {obj['kind']}/{obj['metadata']['name']}", code, answer)
        result: dict[str, Any] = answer
        return result

    def token(
        self,
        namespace: str,
        service_account: str,
        *,
        pod: Mapping[str, Any] | None = None,
        seconds: int = 3600,
    ) -> str:
        """A TokenRequest for the ServiceAccount, bound to ``pod`` if given (as a kubelet does)."""
        spec: dict[str, Any] = {"expirationSeconds": seconds}
        if pod is not None:
            spec["boundObjectRef"] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod["metadata"]["name"],
                "uid": pod["metadata"]["uid"],
            }
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        code, answer = self.submit("POST", path, body)
        if code != 201:
            raise ApiError(f"TokenRequest {namespace}/{service_account}", code, answer)
        token: str = answer["status"]["token"]
        return token

    def reset(self) -> None:
        """Between tests: no L2TP objects (finalizers stripped), no Nodes, no webhook
        configuration left by an operator that has stopped (nor one a test labelled
        kube-l2tp-test)."""
        for plural in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
            for obj in self.objects(plural):
                if obj["metadata"]["name"] == "kube-l2tp.kubel2tp.io" or obj["metadata"].get(
                    "labels", {}
                ).get("kube-l2tp-test"):
                    self.submit("DELETE", f"{self.PLURALS[plural]}/{obj['metadata']['name']}")
        for plural in L2TP_PLURALS:
            base = self.PLURALS[plural]
            for obj in self.objects(plural):
                name = obj["metadata"]["name"]
                if obj["metadata"].get("finalizers"):
                    self.submit(
                        "PATCH",
                        f"{base}/{name}",
                        {"metadata": {"finalizers": None}},
                        content_type="application/merge-patch+json",
                    )
                self.submit("DELETE", f"{base}/{name}")
        for obj in self.objects("nodes"):  # tests create theirs; nothing else uses them
            self.submit("DELETE", f"/api/v1/nodes/{obj['metadata']['name']}")
        deadline = time.monotonic() + 30
        while any(self.objects(p) for p in L2TP_PLURALS):
            if time.monotonic() > deadline:
                raise RuntimeError("L2TP objects still there 30 s after deleting them")
            time.sleep(0.05)


def environment_with(kubeconfig: Path) -> dict[str, str]:
    """The environment for a subprocess (kubectl, the CLI) talking to this server."""
    env = dict(os.environ)
    env["KUBECONFIG"] = str(kubeconfig)
    return env
