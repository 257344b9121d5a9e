"""Throwaway X.509 certificates: a private CA and server certificates it signs.

The local MariaDB pair serves TLS with these, so the embedded default (and every test) connects
the way production must: encrypted, the server's certificate checked against a CA and a host
name. Nothing here is meant for a real server; production's certificates come from its own CA
(RDS's bundle, a company CA), named by ACODE_MYSQL_SSL_CA.

Keys are RSA 2048 (every TLS library a MariaDB may be built with takes them) and are written
mode 0600; certificates are PEM.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCAL_HOSTS = ("127.0.0.1", "localhost")
_VALID_DAYS = 3650
"""A local pair may live for years on a laptop; its CA is trusted by nothing but this project."""


@dataclass(frozen=True)
class ServerCertificates:
    """The files a TLS server needs, and the CA a client checks them against."""

    ca: Path
    cert: Path
    key: Path


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)  # os.open applies the mode to a file it creates only


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _validity() -> tuple[datetime, datetime]:
    # A day back: a clock a little behind the one that signed must not see a future certificate.
    now = datetime.now(UTC)
    return now - timedelta(days=1), now + timedelta(days=_VALID_DAYS)


def make_ca(folder: Path, name: str = "acode-dagster local CA") -> tuple[Path, Path]:
    """A new self-signed CA in ``folder``: ``(ca.pem, ca-key.pem)``."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start, end = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    ca_path, key_path = folder / "ca.pem", folder / "ca-key.pem"
    _write_key(key, key_path)
    _write_cert(cert, ca_path)
    return ca_path, key_path


def issue_server_certificate(
    ca_cert: Path, ca_key: Path, hosts: Sequence[str], cert_path: Path, key_path: Path
) -> None:
    """A server certificate for ``hosts`` (names and IP addresses, all in its SAN), signed by
    the CA in ``ca_cert`` / ``ca_key``."""
    if not hosts:
        raise ValueError("a server certificate needs at least one host name or address")
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    assert isinstance(signer, rsa.RSAPrivateKey)
    key = _new_key()
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    start, end = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
        .sign(signer, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_key(key, key_path)
    _write_cert(cert, cert_path)


def certificate_files(folder: Path) -> ServerCertificates:
    """Where :func:`local_server_certificates` keeps its files in ``folder``."""
    return ServerCertificates(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem")


def local_server_certificates(
    folder: Path, hosts: Sequence[str] = LOCAL_HOSTS
) -> ServerCertificates:
    """The CA and server certificate kept in ``folder``, made on first use (idempotent; not
    safe against a concurrent first use, so call it under the owner's lock)."""
    files = certificate_files(folder)
    if files.ca.is_file() and files.cert.is_file() and files.key.is_file():
        return files
    ca_cert, ca_key = make_ca(folder)
    issue_server_certificate(ca_cert, ca_key, hosts, files.cert, files.key)
    return files
