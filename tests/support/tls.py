"""A self-signed certificate for 127.0.0.1, made at test time with openssl."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

#: (a server's TLS context, a client context that trusts it)
Contexts = tuple[ssl.SSLContext, ssl.SSLContext]


def make_certificate(directory: Path, name: str = "cert") -> Path:
    """A PEM file holding a self-signed certificate for IP 127.0.0.1 and its
    key, readable by everyone (icecast2 reads it as nobody)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, pem = (directory / f"{name}.{ext}" for ext in ("crt", "key", "pem"))
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    pem.chmod(0o644)
    return pem


def client_context(pem: Path) -> ssl.SSLContext:
    """A client context that trusts only this certificate (and checks the name)."""
    context = ssl.create_default_context(cafile=str(pem))
    return context


def server_context(pem: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pem))
    return context
