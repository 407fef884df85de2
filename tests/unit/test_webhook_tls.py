"""The operator's own webhook certificate (controller.tls) and the choice of certificate files."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from kube_l2tp.controller import app, tls

HOST = "l2-kube-l2tp-webhook.kube-l2tp.svc"


def load(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_service_names_cover_every_form_of_the_service() -> None:
    assert tls.service_of(HOST) == ("l2-kube-l2tp-webhook", "kube-l2tp")
    assert tls.service_names(HOST) == [
        HOST,
        "l2-kube-l2tp-webhook",
        "l2-kube-l2tp-webhook.kube-l2tp",
        f"{HOST}.cluster.local",
    ]
    assert tls.service_of("webhook.example.com") is None
    assert tls.service_names("192.0.2.10") == ["192.0.2.10"]


def test_leaf_is_a_server_certificate_for_the_names_signed_by_the_ca(tmp_path: Path) -> None:
    issuer = tls.SelfSignedIssuer([*tls.service_names(HOST), "192.0.2.10"], tmp_path)
    before = datetime.datetime.now(datetime.UTC)
    issuer.issue()
    files = issuer.files
    assert files.certfile == files.pkeyfile  # one file: replaced in one rename
    assert stat.S_IMODE(files.certfile.stat().st_mode) == 0o600  # it holds the private key
    assert b"PRIVATE KEY" not in (files.cafile or Path()).read_bytes()
    (leaf,) = load(files.certfile)
    (ca,) = load(files.cafile)  # type: ignore[arg-type]

    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == tls.service_names(HOST)
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.10")]
    # validity: from a little before now (clock skew) for LEAF_DAYS
    assert leaf.not_valid_before_utc <= before <= leaf.not_valid_after_utc
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime == datetime.timedelta(days=tls.LEAF_DAYS) + tls.CLOCK_SKEW
    assert ca.not_valid_after_utc >= leaf.not_valid_after_utc
    # a server certificate, not a CA; the CA signs certificates and nothing else
    constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ca_constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert ca_constraints.ca and ca_constraints.path_length == 0
    ca_usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ca_usage.key_cert_sign and not ca_usage.digital_signature
    leaf.verify_directly_issued_by(ca)
    # what OpenSSL (a TLS server and client) makes of the files, strict RFC 5280 checks included
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.certfile, files.pkeyfile)
    client = ssl.create_default_context(cafile=files.cafile)
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    for name in [*tls.service_names(HOST), "192.0.2.10"]:
        handshake(server, client, name)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(server, client, "other.kube-l2tp.svc")
    with pytest.raises(ssl.SSLCertVerificationError, match=r"self-signed|unable to get"):
        handshake(server, ssl.create_default_context(), HOST)  # the CA is trusted by no one else


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> None:
    """A TLS handshake in memory (no sockets): the client verifies the server as `hostname`."""
    pipes = [ssl.MemoryBIO() for _ in range(4)]
    c = client.wrap_bio(pipes[0], pipes[1], server_hostname=hostname)
    s = server.wrap_bio(pipes[2], pipes[3], server_side=True)
    done = {"c": False, "s": False}
    for _ in range(10):
        for key, end in (("c", c), ("s", s)):
            if not done[key]:
                try:
                    end.do_handshake()
                    done[key] = True
                except ssl.SSLWantReadError:
                    pass
        pipes[2].write(pipes[1].read())  # client -> server
        pipes[0].write(pipes[3].read())  # server -> client
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def test_renewal_keeps_the_ca_so_the_ca_bundle_stays_valid(tmp_path: Path) -> None:
    issuer = tls.SelfSignedIssuer([HOST], tmp_path)
    first = issuer.issue()
    ca_bytes = (tmp_path / "ca.crt").read_bytes()
    renew = issuer.renew_at()
    expected = first.not_valid_before_utc + (
        first.not_valid_after_utc - first.not_valid_before_utc
    ) * (2 / 3)
    assert renew == expected
    second = issuer.issue(now=renew)
    assert (tmp_path / "ca.crt").read_bytes() == ca_bytes
    assert second.serial_number != first.serial_number
    assert second.not_valid_after_utc > first.not_valid_after_utc
    (on_disk,) = load(issuer.files.certfile)
    assert on_disk == second
    second.verify_directly_issued_by(load(tmp_path / "ca.crt")[0])
    assert issuer.renew_at() > renew
    assert not list(tmp_path.glob(".*.tmp"))  # written via a rename, nothing left over


def test_each_issuer_is_a_new_ca(tmp_path: Path) -> None:
    a = tls.SelfSignedIssuer([HOST], tmp_path / "a")
    b = tls.SelfSignedIssuer([HOST], tmp_path / "b")
    assert a.ca.public_key() != b.ca.public_key()
    with pytest.raises(ValueError, match="at least one host"):
        tls.SelfSignedIssuer([], tmp_path)


def test_user_certificate_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CERT", "KEY", "CA"):
        monkeypatch.delenv(f"KUBE_L2TP_WEBHOOK_{name}", raising=False)
    assert app.user_certificate(None, None, None) is None
    cert, key, ca = (tmp_path / n for n in ("tls.crt", "tls.key", "ca.crt"))
    for path in (cert, key, ca):
        path.write_text("x")
    with pytest.raises(ValueError, match="--webhook-cert and --webhook-key go together"):
        app.user_certificate(str(cert), None, None)
    with pytest.raises(ValueError, match=r"--webhook-ca .*missing: no such file; mount"):
        app.user_certificate(str(cert), str(key), str(tmp_path / "missing"))
    assert app.user_certificate(str(cert), str(key), None) == tls.ServingFiles(cert, key, None)
    # the chart's way: environment variables pointing into the mounted Secret
    monkeypatch.setenv("KUBE_L2TP_WEBHOOK_CERT", str(cert))
    monkeypatch.setenv("KUBE_L2TP_WEBHOOK_KEY", str(key))
    monkeypatch.setenv("KUBE_L2TP_WEBHOOK_CA", str(ca))
    assert app.user_certificate(None, None, None) == tls.ServingFiles(cert, key, ca)


def test_a_service_host_is_announced_as_a_service_reference(tmp_path: Path) -> None:
    files = tls.ServingFiles(tmp_path / "c", tmp_path / "k", None)
    server = app.webhook_server(app.OperatorConfig(webhook_host=HOST), files)
    assert isinstance(server, app.ServiceWebhookServer)
    assert (server.service, server.namespace, server.port) == (
        "l2-kube-l2tp-webhook",
        "kube-l2tp",
        9443,
    )
    assert (server.certfile, server.pkeyfile, server.cafile) == (
        files.certfile,
        files.pkeyfile,
        None,
    )
    other = app.webhook_server(app.OperatorConfig(webhook_host="192.0.2.10"), files)
    assert type(other) is not app.ServiceWebhookServer  # an address: kopf's URL
    plain = app.webhook_server(app.OperatorConfig(webhook_host=HOST, webhook_insecure=True), None)
    assert plain.insecure and plain.certfile is None
