"""Talking to Icecast: the source URL, the long PUT, and now-playing titles.

All HTTP goes through ``requests``; its exceptions are translated into
:class:`~pushsource.errors.IcecastError` here and nowhere else.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool

from pushsource import __version__
from pushsource.errors import AuthenticationError, ConfigError, IcecastError, MountInUseError

log = logging.getLogger("pushsource.icecast")

USER_AGENT: Final = f"pushsource/{__version__}"
DEFAULT_PORT: Final = 8000
DEFAULT_USER: Final = "source"
#: Content-Length we announce for the endless PUT body. Icecast 2.4.4 does not
#: de-chunk request bodies, so the body must go raw, and requests sends an
#: iterable raw only when it knows a length.
ENDLESS: Final = 1 << 62


@dataclass(frozen=True)
class IcecastTarget:
    """Where to send: parsed from ``icecast://user:password@host:port/mount``."""

    host: str
    port: int
    mount: str
    user: str = DEFAULT_USER
    password: str = field(default="", repr=False)
    tls: bool = False

    def __str__(self) -> str:
        scheme = "https" if self.tls else "icecast"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{self.user}@{host}:{self.port}{self.mount}"


def parse_target(
    url: str, *, password: str | None = None, fallback_password: str | None = None
) -> IcecastTarget:
    """Parse a source URL. The password is ``password`` if given (from a
    file), else the URL's, else ``fallback_password`` (from the environment).
    Raises ConfigError, whose message never repeats the password."""
    shown = redact(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # its text may quote part of the password
        raise ConfigError(f"bad Icecast URL {shown}: the port is not a number") from None
    if parts.scheme not in ("icecast", "http", "https"):
        raise ConfigError(
            f"bad Icecast URL {shown}: scheme must be icecast://, http:// or https://"
        )
    if not parts.hostname:
        raise ConfigError(f"bad Icecast URL {shown}: no host")
    mount = parts.path
    if not mount or mount == "/" or parts.query or parts.fragment:
        raise ConfigError(f"bad Icecast URL {shown}: give a mount, e.g. {shown.rstrip('/')}/stream")
    if any(c.isspace() for c in mount):
        raise ConfigError(f"bad Icecast URL {shown}: the mount contains white space")
    secret = password or unquote(parts.password or "") or fallback_password
    if not secret:
        raise ConfigError(
            "no source password: put it in the URL, in --password-file, "
            "or in the PUSHSOURCE_PASSWORD environment variable"
        )
    return IcecastTarget(
        host=parts.hostname,
        port=port if port is not None else DEFAULT_PORT,
        mount=mount,
        user=unquote(parts.username or "") or DEFAULT_USER,
        password=secret,
        tls=parts.scheme == "https",
    )


def redact(text: str) -> str:
    """Replace the password of any URL in text with ***."""
    # Up to the last "@" of the word: a password may hold "@" and "/" too.
    return re.sub(r"(//[^:/@\s]*:)\S*@", r"\1***@", text)


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
            self.base = f"https://{_netloc(target.host, target.port)}"
            self.host_header: dict[str, str] = {}
        else:
            self.base = f"http://{_netloc(address, target.port)}"
            self.host_header = {"Host": _netloc(target.host, target.port)}
        self.auth = (target.user, target.password)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class StationInfo:
    """What listeners' directories show: sent as ``ice-*`` headers."""

    name: str | None = None
    description: str | None = None
    genre: str | None = None
    url: str | None = None
    public: bool = False

    def headers(self, bitrate: int, sample_rate: int, channels: int) -> dict[str, str]:
        headers = {
            "ice-public": "1" if self.public else "0",
            "ice-bitrate": str(bitrate),
            "ice-audio-info": f"bitrate={bitrate};samplerate={sample_rate};channels={channels}",
        }
        for key, value in (
            ("ice-name", self.name),
            ("ice-description", self.description),
            ("ice-genre", self.genre),
            ("ice-url", self.url),
        ):
            if value:
                headers[key] = value
        return headers


class _RawBody:
    """An iterable PUT body with a length, so requests sends it raw.

    ``finished`` tells afterwards whether the whole body went out: urllib3
    swallows a reset while sending and then reads Icecast's early ``200 OK``,
    so the status alone cannot tell a finished stream from a dropped one.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.finished = False
        self.sent = 0

    def __len__(self) -> int:
        return ENDLESS

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            yield chunk
            self.sent += len(chunk)
        self.finished = True


#: How often a streaming connection checks that Icecast still answers HTTP.
WATCH_EVERY: Final = 2.0
#: Our socket's send buffer: small, so a server that stops reading blocks our
#: send (and trips the send timeout) after about a second of audio, not after
#: the megabytes the kernel would otherwise buffer.
SEND_BUFFER: Final = 16 * 1024


class _SourceAdapter(HTTPAdapter):
    """requests' transport with the socket options a long source stream wants,
    and a hand on the socket: to peek at Icecast's answer while the body is
    still going out, and to cut a connection whose server stopped answering."""

    def __init__(self, timeout: float) -> None:
        options = [*HTTPConnection.default_socket_options]
        options.append((socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER))
        if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux: give up on unacknowledged data
            options.append((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(timeout * 1000)))
        self._socket_options = options
        self.sockets: list[socket.socket] = []
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["socket_options"] = self._socket_options
        super().init_poolmanager(*args, **kwargs)
        sockets = self.sockets

        class Connection(HTTPConnection):
            def connect(self) -> None:
                super().connect()
                sockets.append(self.sock)

        class Pool(HTTPConnectionPool):
            ConnectionCls = Connection

        # TLS keeps the default classes: an SSL socket cannot be peeked at.
        self.poolmanager.pool_classes_by_scheme = {
            **self.poolmanager.pool_classes_by_scheme,
            "http": Pool,
        }


class ServerMonitor:
    """Asks one Icecast server every ``every`` seconds whether it still answers
    HTTP (the status line of ``/status-json.xsl``), for every connection that
    :meth:`watch` es it: one thread and one request per interval per server,
    however many stations stream to it. The thread runs only while someone
    watches, and sleeps on an event in between.

    A server that stopped reading may go on taking a source's bytes into
    kernel buffers for a minute, but a hung one does not answer HTTP.
    """

    def __init__(
        self,
        target: IcecastTarget,
        *,
        timeout: float = 5.0,
        every: float = WATCH_EVERY,
        address: str | None = None,
    ) -> None:
        """``target``: any mount of the server (only its host, port and scheme
        count). Raises IcecastError if the host cannot be resolved."""
        self.target = target
        self.address = address if address is not None else resolve(target)
        self.timeout = timeout
        self.every = every
        endpoint = _Endpoint(target, self.address)
        host = endpoint.host_header.get("Host", _netloc(target.host, target.port))
        self._request = (
            f"GET /status-json.xsl HTTP/1.0\r\nHost: {host}\r\n"
            f"User-Agent: {USER_AGENT}\r\nConnection: close\r\n\r\n"
        ).encode()
        self._lock = threading.Lock()
        self._watchers: dict[object, Callable[[str], object]] = {}
        self._thread: threading.Thread | None = None
        self._retired: threading.Thread | None = None
        self._idle = threading.Event()  # set: no watchers, the thread is to end

    def watch(self, on_hang: Callable[[str], object]) -> Callable[[], None]:
        """Call ``on_hang(reason)`` once, from the monitor's thread, if the
        server stops answering. Returns the function that stops watching."""
        token = object()
        with self._lock:
            self._watchers[token] = on_hang
            if self._thread is None:
                self._idle = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(self._idle,), name="pushsource-watchdog", daemon=True
                )
                self._thread.start()

        def unwatch() -> None:
            with self._lock:
                self._watchers.pop(token, None)
                if not self._watchers:
                    self._retire()

        return unwatch

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread of a monitor nobody watches any more to end."""
        thread = self._retired
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _retire(self) -> None:
        """With the lock held: the thread is to end; the next watch() starts another."""
        self._idle.set()
        self._retired, self._thread = self._thread, None

    def _run(self, idle: threading.Event) -> None:
        while not idle.wait(self.every):
            problem = self.probe()
            with self._lock:
                if problem is None or idle.is_set():
                    continue
                hung = list(self._watchers.values())
                self._watchers.clear()
                self._retire()
            for on_hang in hung:
                on_hang(problem)

    def probe(self) -> str | None:
        """None if the server answers an HTTP status line within the timeout,
        else why not. Does not raise."""
        target = self.target
        try:
            # The pinned address, like the PUT; TLS goes by name, for the certificate.
            where = (target.host if target.tls else self.address, target.port)
            with socket.create_connection(where, timeout=self.timeout) as raw:
                sock = raw
                if target.tls:
                    import ssl  # only TLS stations pay for it

                    context = ssl.create_default_context()
                    sock = context.wrap_socket(raw, server_hostname=target.host)
                sock.sendall(self._request)
                head = b""
                while len(head) < 12 and (data := sock.recv(64)):
                    head += data
        except TimeoutError:
            return f"no answer within {self.timeout:g} s"
        except OSError as exc:
            return exc.strerror or str(exc) or type(exc).__name__
        if re.match(rb"HTTP/1\.[01] \d{3}", head) is None:
            return "no HTTP answer" if head else "closed without an answer"
        return None


class SourceConnection:
    """One source connection: a single long ``PUT`` to the mount.

    ``monitor`` asks the server whether it still answers while the PUT runs;
    stations on one server may share one (default: a monitor of its own).
    """

    def __init__(
        self,
        target: IcecastTarget,
        *,
        timeout: float = 5.0,
        monitor: ServerMonitor | None = None,
    ) -> None:
        self.target = target
        self.address = resolve(target) if monitor is None else monitor.address
        self._endpoint = _Endpoint(target, self.address)
        self._timeout = timeout
        self._monitor = monitor
        self._adapter: _SourceAdapter | None = None
        self._cut = threading.Event()
        self._refusal: str | None = None

    def accepted(self) -> bool | None:
        """Whether Icecast took the source: it answers ``200 OK`` before it reads
        the body, so the answer is there to peek at while we send. None: not
        known (yet, or over TLS). Does not raise."""
        adapter = self._adapter
        if adapter is None or not adapter.sockets:
            return None
        try:
            head = adapter.sockets[-1].recv(2048, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError:
            return False
        if not head:
            return False  # closed without a word
        match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
        if match is None:
            return None if len(head) < 12 else False
        if match.group(1) != b"200":
            # Keep the reason: a reset may destroy it before requests reads it.
            self._refusal = head.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")
        return match.group(1) == b"200"

    def cut(self) -> None:
        """Break the connection from another thread: a blocked send fails."""
        self._cut.set()
        adapter = self._adapter
        for sock in adapter.sockets if adapter is not None else ():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __repr__(self) -> str:
        return f"SourceConnection({self.target}, address={self.address!r})"

    def stream(self, chunks: Iterable[bytes], headers: Mapping[str, str]) -> int:
        """Send ``chunks`` as the body of one PUT; return the bytes sent.

        Returns once the body is exhausted and Icecast has accepted it. Raises
        AuthenticationError (401), MountInUseError (403), or IcecastError when
        the connection fails or drops before the body is done. A send that
        stalls for ``timeout`` seconds counts as a drop.
        """
        endpoint = self._endpoint
        body = _RawBody(chunks)
        self._refusal = None
        all_headers = {
            "Content-Type": "audio/mpeg",
            "User-Agent": USER_AGENT,
            **endpoint.host_header,
            **headers,
        }
        where = f"{self.target.host}:{self.target.port}"
        with requests.Session() as session, self._watch():
            adapter = self._adapter = _SourceAdapter(self._timeout)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            try:
                response = session.put(
                    endpoint.base + self.target.mount,
                    data=body,
                    headers=all_headers,
                    auth=endpoint.auth,
                    timeout=(self._timeout, self._timeout),
                    stream=True,
                    allow_redirects=False,
                )
            except requests.ConnectionError as exc:
                if body.sent:
                    raise IcecastError(f"connection to {where} lost: {_reason(exc)}") from exc
                raise IcecastError(f"cannot connect to {where}: {_reason(exc)}") from exc
            except requests.Timeout as exc:
                raise IcecastError(f"connection to {where} timed out") from exc
            except requests.RequestException as exc:
                raise IcecastError(f"HTTP error talking to {where}: {_reason(exc)}") from exc
            with response:
                status = response.status_code
                if status == 401:
                    raise AuthenticationError(
                        f"authentication failed for {self.target.user} user on {self.target.mount}",
                        status,
                    )
                if status == 403:
                    reason = _icecast_message(response, self._refusal)
                    if "in use" in reason.lower():
                        raise MountInUseError(f"mountpoint {self.target.mount} is in use", status)
                    raise IcecastError(
                        f"Icecast refused the source on {self.target.mount}: {reason}", status
                    )
                if not 200 <= status < 300:
                    raise IcecastError(
                        f"Icecast answered {status} {_icecast_message(response)} "
                        f"for {self.target.mount}",
                        status,
                    )
        if self._cut.is_set():
            raise IcecastError(f"{where} stopped answering; dropped the connection")
        if not body.finished:
            raise IcecastError(f"connection to {where} lost after {body.sent} bytes")
        return body.sent

    @contextlib.contextmanager
    def _watch(self) -> Iterator[None]:
        """While streaming, have a monitor ask Icecast whether it still answers."""
        monitor = self._monitor
        if monitor is None:
            monitor = ServerMonitor(self.target, timeout=self._timeout, address=self.address)
        unwatch = monitor.watch(self._hung)
        try:
            yield
        finally:
            unwatch()
            if monitor is not self._monitor:
                monitor.join(self._timeout + 1)

    def _hung(self, reason: str) -> None:
        log.warning("Icecast does not answer (%s): dropping the connection", reason)
        self.cut()


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


def _icecast_message(response: requests.Response, text: str | None = None) -> str:
    """Icecast's reason: the body of a 2.4 error answer is a short line of
    text ("Mountpoint in use"); admin answers wrap it in <message>."""
    if text is None:
        try:  # the PUT's answer: read a little, never wait for the whole stream
            text = response.raw.read(2048, decode_content=True).decode("utf-8", "replace")
        except Exception:  # a body we cannot read adds nothing to the status line
            text = ""
    match = re.search(r"<message>(.*?)</message>", text, re.S)
    line = match.group(1) if match else (text.strip().splitlines() or [""])[0]
    line = line.strip()
    if line and len(line) <= 200 and "<" not in line:
        return line
    return response.reason or f"HTTP {response.status_code}"


class TitleUpdater:
    """Sets the mount's now-playing title, on a thread of its own.

    A slow or failing admin request never holds up the audio; when titles come
    faster than Icecast answers, only the newest is sent.
    """

    RETRIES: Final = 5  # Icecast may not have set the mount up yet

    def __init__(self, connection: SourceConnection, *, timeout: float = 5.0) -> None:
        self._endpoint = _Endpoint(connection.target, connection.address)
        self._timeout = timeout
        self._cond = threading.Condition()
        self._title: str | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="pushsource-titles", daemon=True)
        self._thread.start()

    def set(self, title: str) -> None:
        """Queue ``title``; returns at once. Does not raise."""
        with self._cond:
            self._title = title
            self._cond.notify()

    def close(self, timeout: float = 2.0) -> None:
        """Stop after sending what is queued (waiting up to ``timeout``)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        with requests.Session() as session:
            while True:
                with self._cond:
                    while self._title is None and not self._closed:
                        self._cond.wait()
                    title, self._title = self._title, None
                if title is None:
                    return
                self._send(session, title)

    def _send(self, session: requests.Session, title: str) -> None:
        endpoint = self._endpoint
        mount = endpoint.target.mount
        problem = ""
        for attempt in range(self.RETRIES):
            with self._cond:
                if self._title is not None or (self._closed and attempt):
                    return  # superseded, or shutting down: not worth retrying
            try:
                response = session.get(
                    endpoint.base + "/admin/metadata",
                    stream=True,
                    params={"mount": mount, "mode": "updinfo", "song": title, "charset": "UTF-8"},
                    headers={"User-Agent": USER_AGENT, **endpoint.host_header},
                    auth=endpoint.auth,
                    timeout=self._timeout,
                    allow_redirects=False,
                )
                with response:
                    text = response.text
                    if response.status_code == 200 and "<return>1</return>" in text:
                        log.debug("title set on %s: %s", mount, title)
                        return
                    reason = _icecast_message(response, text)
                    problem = f"Icecast answered {response.status_code} {reason}"
            except requests.RequestException as exc:
                problem = _reason(exc)
            with self._cond:
                self._cond.wait(0.2 * (attempt + 1))
        log.warning("could not set the title on %s: %s", mount, problem)


def check_source(target: IcecastTarget, *, timeout: float = 5.0) -> None:
    """Log in as the source and leave at once, sending no audio: Icecast
    checks the credentials before the mount, so a 403 (mount in use) still
    means they are right. Raises AuthenticationError, MountInUseError or
    IcecastError."""
    endpoint = _Endpoint(target, resolve(target))
    try:
        response = requests.put(
            endpoint.base + target.mount,
            data=b"",
            headers={
                "Content-Type": "audio/mpeg",
                "User-Agent": USER_AGENT,
                "ice-public": "0",
                **endpoint.host_header,
            },
            auth=endpoint.auth,
            timeout=timeout,
            allow_redirects=False,
            stream=True,  # Icecast's 200 has no end: hang up once it is read
        )
    except requests.RequestException as exc:
        raise IcecastError(f"cannot reach {target}: {_reason(exc)}") from None
    status = response.status_code
    if status == 200:
        response.close()
        return
    if status == 401:
        raise AuthenticationError(f"{target}: wrong source user or password (401)", status)
    if status == 403:
        raise MountInUseError(f"{target}: {_icecast_message(response)}", status)
    if status != 200:
        raise IcecastError(f"{target}: {_icecast_message(response)}", status)
