"""Talking to Icecast over requests, on the workers: title updates by admin request.

All HTTP goes through ``requests``; its exceptions are translated into
:class:`~pushsource.errors.IcecastError` here and nowhere else.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import socket
import threading
from collections.abc import Callable

import requests
import requests.auth

from pushsource.core.shoutcast import ADMIN_PATH, ADMIN_USER_AGENT, admin_params
from pushsource.core.target import (
    DEFAULT_PORT,
    DEFAULT_USER,
    USER_AGENT,
    IcecastTarget,
    StationInfo,
    netloc,
    parse_target,
    redact,
)
from pushsource.core.titles import clean_title
from pushsource.errors import IcecastError

# Re-exported: they lived here before pushsource.core.target.
__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_USER",
    "USER_AGENT",
    "IcecastTarget",
    "StationInfo",
    "parse_target",
    "redact",
    "resolve",
    "trusted",
]

log = logging.getLogger("pushsource.icecast")


def resolve(target: IcecastTarget) -> str:
    """The one address both the PUT and the title updates go to.

    Icecast accepts a title update with source credentials only from the
    source's own IP address; pinning one address keeps a dual-stack name like
    ``localhost`` from sending the PUT over IPv4 and the update over IPv6.
    Raises IcecastError.
    """
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise IcecastError(f"cannot resolve {target.host}: {exc}") from exc
    return str(infos[0][4][0])


class _Endpoint:
    """URLs and headers that reach the target at its pinned address."""

    def __init__(self, target: IcecastTarget, address: str) -> None:
        self.target = target
        if target.tls:  # certificates name the host, so TLS goes by name
            self.base = f"https://{netloc(target.host, target.port)}"
            self.host_header: dict[str, str] = {}
        else:
            self.base = f"http://{netloc(address, target.port)}"
            self.host_header = {"Host": netloc(target.host, target.port)}
        # As bytes: requests would send str as Latin-1 (and fail on anything else);
        # Icecast compares with its config's UTF-8 text.
        self.auth = requests.auth.HTTPBasicAuth(_utf8(target.user), _utf8(target.password))


def trusted() -> str | bool:
    """What requests verifies Icecast's certificate with: the file or folder in
    REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE), else in OpenSSL's SSL_CERT_FILE
    (or SSL_CERT_DIR), else its own bundle (True). The source connection trusts
    what OpenSSL's variables say; requests alone would not read them, and an
    operator who trusts a private CA with SSL_CERT_FILE would get audio
    without titles."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        value = os.environ.get(name)
        if value:
            return value
    return True


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")  # a command line's bytes as they were


def _reason(exc: BaseException) -> str:
    """The innermost cause of a requests error, without URLs in it."""
    seen: list[BaseException] = [exc]
    for _ in range(50):  # urllib3 nests the OSError in causes, contexts and args
        if not seen:
            break
        error = seen.pop(0)
        if isinstance(error, http.client.RemoteDisconnected):
            return "the server closed the connection without answering (not an Icecast?)"
        if isinstance(error, http.client.BadStatusLine):
            return "the server's answer is not HTTP (is it Icecast?)"
        if isinstance(error, OSError) and error.strerror:
            return error.strerror
        seen += [e for e in (error.__cause__, error.__context__) if e is not None]
        seen += [arg for arg in error.args if isinstance(arg, BaseException)]
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    return match.group(1) if match else redact(text)


def _icecast_message(response: requests.Response, text: str) -> str:
    """Icecast's reason: admin answers wrap it in <message>; else the body's
    first line, if short."""
    match = re.search(r"<message>(.*?)</message>", text, re.S)
    line = match.group(1) if match else (text.strip().splitlines() or [""])[0]
    line = line.strip()
    if line and len(line) <= 200 and "<" not in line:
        return line
    return response.reason or f"HTTP {response.status_code}"


def send_title(
    session: requests.Session,
    target: IcecastTarget,
    address: str,
    title: str,
    *,
    timeout: float = 5.0,
    superseded: Callable[[], bool] = lambda: False,
    retries: int = 5,
) -> str | None:
    """Set the mount's now-playing title (on a worker). Returns None when set,
    else why not; gives up early once ``superseded()`` (a newer title came).
    Icecast takes it only from the source's own IP: ``address``. A SHOUTcast
    target's goes by admin.cgi, whatever the titles setting: its sources
    cannot carry titles."""
    endpoint = _Endpoint(target, address)
    title = clean_title(title)
    problem: str | None = ""
    for attempt in range(retries):
        if attempt and superseded():
            return None
        try:
            if target.protocol == "shoutcast":
                problem = _shoutcast_title(session, endpoint, title, timeout)
            else:
                problem = _icecast_title(session, endpoint, title, timeout)
            if problem is None:
                log.debug("title set on %s: %s", target, title)
                return None
        except requests.RequestException as exc:
            problem = _reason(exc)
        threading.Event().wait(0.2 * (attempt + 1))  # Icecast may not have set the mount up yet
    return problem


def _icecast_title(
    session: requests.Session, endpoint: _Endpoint, title: str, timeout: float
) -> str | None:
    response = session.get(
        endpoint.base + "/admin/metadata",
        stream=True,
        params={
            "mount": endpoint.target.mount,
            "mode": "updinfo",
            "song": title,
            "charset": "UTF-8",
        },
        headers={"User-Agent": USER_AGENT, **endpoint.host_header},
        auth=endpoint.auth,
        timeout=timeout,
        allow_redirects=False,
        verify=trusted(),
    )
    with response:
        text = response.text
        if response.status_code == 200 and "<return>1</return>" in text:
            return None
        reason = _icecast_message(response, text)
        return f"Icecast answered {response.status_code} {reason}"


def _shoutcast_title(
    session: requests.Session, endpoint: _Endpoint, title: str, timeout: float
) -> str | None:
    """``GET /admin.cgi?mode=updinfo&pass=...&song=...`` on the listener port.
    Its URL holds the password: only the status and the server's reason are
    told, never the URL."""
    response = session.get(
        endpoint.base + ADMIN_PATH,
        stream=True,  # a server that took us for a listener would send its stream
        params=admin_params(endpoint.target, title),
        headers={"User-Agent": ADMIN_USER_AGENT, **endpoint.host_header},
        timeout=timeout,
        allow_redirects=False,
    )
    with response:
        if response.status_code == 200:
            return None
        try:  # a little of it: never wait for a whole stream
            text = response.raw.read(2048, decode_content=True).decode("utf-8", "replace")
        except Exception:  # a body we cannot read adds nothing to the status
            text = ""
        reason = redact(_icecast_message(response, text))
        return f"the SHOUTcast server answered {response.status_code} {reason}"
