"""The admission webhook's serving certificate, when no one provides one (e.g. cert-manager).

kopf can generate a self-signed certificate itself, but only through certbuilder/oscrypto, which
do not work with OpenSSL 3. This makes one with `cryptography` instead: a tiny CA whose private
key never leaves memory (nothing can be signed with it once the process is gone) and a leaf for
the webhook's names. kopf serves the leaf and writes the CA into the webhook configurations'
caBundle; the API server verifies the leaf against it. A new operator process makes a new CA and
kopf re-writes the caBundle at start, so there is nothing to distribute and nothing to rotate by
hand. The leaf is re-issued by the same CA before it expires (the caBundle stays valid): kopf
re-reads the files every minute and restarts its HTTPS server when they change.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger("kube_l2tp.controller")

CA_DAYS = 3650  # the CA outlives any operator process; it is replaced at every start anyway
LEAF_DAYS = 365
RENEW_FRACTION = 2 / 3  # re-issue the leaf when this much of its lifetime has passed
CLOCK_SKEW = datetime.timedelta(minutes=5)  # valid from a little before now: clocks differ


@dataclass(frozen=True)
class ServingFiles:
    """What kopf's WebhookServer takes: certfile, pkeyfile, and cafile for the caBundle."""

    certfile: Path
    pkeyfile: Path  # may be certfile itself (key and certificate in one file)
    cafile: Path | None  # None: the certificate is its own caBundle


def service_of(host: str | None) -> tuple[str, str] | None:
    """(name, namespace) when ``host`` is a Service's name, NAME.NAMESPACE.svc (the chart's)."""
    labels = (host or "").split(".")
    if len(labels) == 3 and labels[2] == "svc" and all(labels):
        return labels[0], labels[1]
    return None


def service_names(host: str) -> list[str]:
    """The names a certificate must carry for a webhook reached as ``host``.

    For a Service's name also the other forms of the same Service's DNS name, so the
    certificate stays valid whichever form a client uses.
    """
    service = service_of(host)
    if service is None:
        return [host]
    name, namespace = service
    return [host, name, f"{name}.{namespace}", f"{host}.cluster.local"]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):  # in order, without duplicates
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


class SelfSignedIssuer:
    """A CA in memory and the leaf it issues for the webhook's names, written to a directory."""

    def __init__(self, hosts: list[str], directory: Path) -> None:
        if not hosts:
            raise ValueError("a serving certificate needs at least one host name")
        self.hosts = hosts
        # Key and certificate in one file, replaced in one rename: kopf, which re-reads them to
        # notice renewals, can never load a new key with the old certificate.
        pem = directory / "tls.pem"
        self.files = ServingFiles(pem, pem, directory / "ca.crt")
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        public = self._key.public_key()
        self.ca = (
            x509.CertificateBuilder()
            .subject_name(_name("kube-l2tp webhook CA"))
            .issuer_name(_name("kube-l2tp webhook CA"))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.leaf: x509.Certificate | None = None

    def issue(self, now: datetime.datetime | None = None) -> x509.Certificate:
        """A new leaf (and key) for the hosts, written over the previous one atomically."""
        now = now or datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder()
            .subject_name(_name("kube-l2tp webhook"))
            .issuer_name(self.ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(
                min(now + datetime.timedelta(days=LEAF_DAYS), self.ca.not_valid_after_utc)
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(_san(self.hosts), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        assert self.files.cafile is not None
        _write(self.files.cafile, self.ca.public_bytes(pem), 0o644)
        private = key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write(self.files.certfile, private + leaf.public_bytes(pem), 0o600)
        self.leaf = leaf
        return leaf

    def renew_at(self) -> datetime.datetime:
        """When the current leaf should be replaced."""
        assert self.leaf is not None
        start, end = self.leaf.not_valid_before_utc, self.leaf.not_valid_after_utc
        return start + (end - start) * RENEW_FRACTION

    def keep_renewed(self, stop: threading.Event) -> threading.Thread:
        """Re-issue the leaf before it expires, in a daemon thread, until ``stop`` is set."""

        def loop() -> None:
            while True:
                wait = self.renew_at() - datetime.datetime.now(datetime.UTC)
                if stop.wait(max(wait.total_seconds(), 0.0)):
                    return
                leaf = self.issue()
                log.info("webhook certificate renewed, valid until %s", leaf.not_valid_after_utc)

        thread = threading.Thread(target=loop, name="webhook-cert-renewal", daemon=True)
        thread.start()
        return thread


def _usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,  # ECDSA keys sign; they encipher nothing
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write-then-rename: kopf, re-reading the files, never sees half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
