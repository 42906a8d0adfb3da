"""A self-signed certificate for 127.0.0.1, made at test time with openssl."""

from __future__ import annotations

import ssl
from pathlib import Path

from pushsource.ops.trial import make_certificate

__all__ = ["client_context", "make_certificate", "server_context"]

#: (a server's TLS context, a client context that trusts it)
Contexts = tuple[ssl.SSLContext, ssl.SSLContext]


def client_context(pem: Path) -> ssl.SSLContext:
    """A client context that trusts only this certificate (and checks the name)."""
    context = ssl.create_default_context(cafile=str(pem))
    return context


def server_context(pem: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pem))
    return context
