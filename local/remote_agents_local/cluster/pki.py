"""Key material for the local control plane: a CA, a loopback serving certificate, the
service-account signing key and an admin bearer token. Generated once per state directory."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    service_account_key: Path
    token_file: Path
    admin_token: str


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _certificate(subject: str, issuer_name: x509.Name, public_key, signing_key, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(signing_key, hashes.SHA256())


def ensure(pki_dir: Path) -> Pki:
    pki_dir.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        ca_cert=pki_dir / "ca.crt",
        serving_cert=pki_dir / "apiserver.crt",
        serving_key=pki_dir / "apiserver.key",
        service_account_key=pki_dir / "service-account.key",
        token_file=pki_dir / "tokens.csv",
        admin_token="",
    )
    if not pki.token_file.exists():
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca_cert = _certificate("remote-agents-local-ca", x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                               "remote-agents-local-ca")]), ca_key.public_key(), ca_key, ca=True)
        serving_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        serving_cert = _certificate("kube-apiserver", ca_cert.subject, serving_key.public_key(), ca_key, ca=False)
        pki.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        pki.serving_cert.write_bytes(serving_cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pki.serving_key, serving_key)
        _write_key(pki.service_account_key, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        # The static token file is the admin identity: system:masters bypasses RBAC, as cluster-admin should.
        pki.token_file.write_text(f'{secrets.token_hex(24)},admin,admin-uid,"system:masters"\n')
        pki.token_file.chmod(0o600)
    token = pki.token_file.read_text().split(",", 1)[0]
    return Pki(**{**pki.__dict__, "admin_token": token})
