"""Test certificate authorities made with the openssl CLI (Debian's openssl, which ca-certificates
depends on): a CA, a server certificate it signs for 127.0.0.1, and a second, unrelated CA. Keys are
generated per test session in a temporary directory; none is committed."""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


_CA_EXT = ("-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def _ca(d: Path, name: str) -> Path:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}", *_CA_EXT,
             cwd=d)
    return d / f"{name}.pem"


def _resign(d: Path, name: str) -> Path:
    """The CA certificate re-signed with the same key and subject (another serial and validity), as
    pulumi_tls re-creates a SelfSignedCert in its early-renewal window while the PrivateKey stays."""
    _openssl("req", "-x509", "-new", "-key", f"{name}.key", "-out", f"{name}-renewed.pem", "-days", "20",
             "-set_serial", "4242", "-subj", f"/CN={name}", *_CA_EXT, cwd=d)
    return d / f"{name}-renewed.pem"


@dataclass
class PKI:
    ca: Path
    """PEM of the CA that signed the server certificate."""
    other_ca: Path
    """PEM of a CA that signed nothing here."""
    renewed_ca: Path
    """The first CA re-signed with its own key after the server certificate was issued."""
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def make_pki(d: Path) -> PKI:
    ca = _ca(d, "test-gateway-ca")
    other = _ca(d, "other-cluster-ca")
    (d / "server.ext").write_text(f"subjectAltName=IP:{HOST}\nbasicConstraints=CA:FALSE\n"
                                  "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                                  "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=gateway", cwd=d)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", ca.name, "-CAkey", "test-gateway-ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext", cwd=d)
    return PKI(ca=ca, other_ca=other, renewed_ca=_resign(d, "test-gateway-ca"), cert=d / "server.pem",
               key=d / "server.key")
