"""The control API and its web page: an HTTP server over the running stations.

Reading (the page, station status, metrics) is open to anyone who can reach
the address; every action (skip, reorder, remove, enqueue, upload) needs
``Authorization: Bearer TOKEN``. The server speaks JSON only, same origin only
(no CORS), and never logs the token: request lines go to the debug log, and
the token only ever travels in a header.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import json
import logging
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from ipaddress import ip_address
from typing import Any, BinaryIO, Final, Protocol, TypeVar, cast
from urllib.parse import parse_qs, unquote, urlsplit

from pushsource.errors import ConfigError, ControlError
from pushsource.ops.http import (
    DEFAULT_HEADER_DEADLINE,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PER_CLIENT,
    DEFAULT_TIMEOUT,
    JSON,
    HardenedHandler,
    HardenedServer,
    Reply,
    dumps,
    error_reply,
    json_reply,
)
from pushsource.ops.listeners import ListenerViews
from pushsource.ops.status import DEFAULT_INTERVAL, SnapshotCache

log = logging.getLogger("pushsource.control")

#: Uploads bigger than this are refused (413) before a byte of them is read.
DEFAULT_MAX_UPLOAD: Final = 1 << 30
#: JSON request bodies are tiny; anything bigger is refused.
#: The longest a kick may refuse a DJ (a week): a typo must not lock one out for good.
MAX_BAN_MINUTES: Final = 7 * 24 * 60
MAX_JSON_BODY: Final = 64 * 1024
#: Nesting and number length a JSON body may have: the API takes flat objects.
MAX_JSON_DEPTH: Final = 16
MAX_JSON_NUMBER: Final = 32
#: Longest upload file name, in UTF-8 bytes (most file systems' limit).
MAX_NAME_BYTES: Final = 255

_STATION_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._~-]*\Z")
_UPLOAD_CHUNK: Final = 64 * 1024

#: The page's files, served as they are (pushsource/web/, package data).
_PAGE_FILES: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
#: The page loads only its own files and talks only to its own origin.
_PAGE_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    # The station view's player plays the station from its server (another origin).
    "media-src http: https:"
)


#: Where "/" carries the stations' status, so the page's first paint has it.
_INITIAL_MARK: Final = b"<!--initial-status-->"
#: What the overview leaves out of each status (GET /api/stations?summary=1).
_DETAIL_KEYS: Final = ("queue", "history", "unplayable")


def summary(status: dict[str, Any]) -> dict[str, Any]:
    """A station's status for the overview: the lists replaced by counts."""
    short = {k: v for k, v in status.items() if k not in _DETAIL_KEYS}
    short["queue_length"] = len(status.get("queue") or [])
    short["unplayable_count"] = len(status.get("unplayable") or [])
    return short


def _initial_status(stations_json: bytes) -> bytes:
    # Inside <script type="application/json">: no "</script>" may appear, and
    # "<" only ever occurs inside JSON strings, where \u003c means the same.
    return stations_json.replace(b"<", b"\\u003c")


def playlist(kind: str, name: str, url: str, *more: str) -> str:
    """An .m3u or .pls file that plays url, titled name; ``more``: the same
    stream elsewhere (a second server), which players try when url fails."""
    clean = " ".join(name.split())  # no line breaks inside a playlist line
    urls = list(dict.fromkeys((url, *more)))
    if kind == "m3u":
        return "#EXTM3U\n" + "".join(f"#EXTINF:-1,{clean}\n{u}\n" for u in urls)
    entries = "".join(
        f"File{n}={u}\nTitle{n}={clean}\nLength{n}=-1\n" for n, u in enumerate(urls, 1)
    )
    return f"[playlist]\nNumberOfEntries={len(urls)}\n{entries}Version=2\n"


_PLAYLIST_TYPES: Final = {"m3u": "audio/x-mpegurl", "pls": "audio/x-scpls"}


class StationControl(Protocol):
    """What the control server needs of a running station.

    Actions raise ControlError (400 bad request, 404 unknown file, 409 not
    possible now); anything else they raise is a 500 and is logged.
    """

    @property
    def id(self) -> str:
        """URL-safe station id, unique among the stations, e.g. "rock"."""
        ...

    # Optional: ``listener_series``, a core.listeners.ListenerSeries: its
    # listeners over time, served by GET /api/stations/ID/listeners and
    # summed into GET /api/listeners.

    # Optional: ``target``, with a ``mount``: the station's mount, a field of
    # each action's log line (with --log-format json).

    # Optional: ``status_version``, an int the station bumps after each change
    # to its status (a track, the connection, the queue...). With it, the
    # server keeps a station's serialized status until it changes or ages
    # (``status_interval``); a station without one is read on every request.

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot: id, name, mount, server, listen_url, listeners
        (int, or None while not known), connection {state, reconnects (outages),
        attempts (failed in the current outage), error}, now_playing {title,
        file, elapsed (of the audio sent; still while off air), duration,
        bitrate (of what is sent)} or None, queue [{file}] (what played is left
        out), history [{file, title, started}] newest first (at most 50, kept
        across restarts)."""
        ...

    def skip(self) -> None: ...

    def kick(self, ban_minutes: int = 0) -> None:
        """Hang up on the DJ live on the station (ControlError if none); their
        user may not go live again for ``ban_minutes``."""
        ...

    def remove(self, file: str) -> None:
        """Take ``file`` (relative to the station folder, posix) off the queue."""
        ...

    def move(self, file: str, index: int) -> None:
        """Put queued ``file`` at 0-based position ``index`` of the queue."""
        ...

    def enqueue(self, file: str) -> None:
        """Queue a file already in the folder, at the end."""
        ...

    def library(self, query: str = "", limit: int = 100) -> dict[str, Any]:
        """The folder's files matching every word of ``query``: {files: [{file,
        queued}], total}, at most ``limit`` files."""
        ...

    def upload(self, filename: str, data: BinaryIO, length: int) -> str:
        """Save ``length`` bytes from ``data`` into the folder as ``filename`` and
        return its name relative to the folder. ``data`` raises ControlError if
        the client stops short, and OSError (a timeout) if it stalls: remove the
        partial file on any exception."""
        ...


def check_upload_name(name: str) -> str:
    """``name`` if it is a plain file name to create in a folder; ControlError (400) if not."""
    if not name or name in (".", ".."):
        raise ControlError("a file name is needed", 400)
    if "/" in name or "\\" in name:
        raise ControlError(f"{name!r}: a plain file name, without folders, is needed", 400)
    if name.startswith("."):
        raise ControlError(f"{name!r}: hidden file names are not accepted", 400)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise ControlError(f"{name!r}: control characters are not accepted", 400)
    if len(name.encode("utf-8", errors="surrogatepass")) > MAX_NAME_BYTES:
        raise ControlError(f"file name longer than {MAX_NAME_BYTES} bytes", 400)
    return name


class _Body(io.RawIOBase):
    """Exactly ``length`` bytes of a request body, read as they arrive."""

    def __init__(self, stream: BinaryIO, length: int) -> None:
        self._stream = stream
        self.length = length
        self.left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self.left == 0 or not view:
            return 0
        data = self._stream.read(min(len(view), self.left, _UPLOAD_CHUNK))
        if not data:
            got = self.length - self.left
            raise ControlError(f"the upload ended after {got} of {self.length} bytes", 400)
        view[: len(data)] = data
        self.left -= len(data)
        return len(data)


class ControlServer:
    """The control API and page for ``stations``, on ``address`` (port 0: a free one).

    ``token`` None turns every action off (403); reading stays open.
    ``metrics``, if given, answers ``GET /metrics`` with (body, content type).
    """

    def __init__(
        self,
        address: tuple[str, int],
        stations: Sequence[StationControl],
        *,
        token: str | None,
        metrics: Callable[[], tuple[bytes, str]] | None = None,
        max_upload: int = DEFAULT_MAX_UPLOAD,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_per_client: int = DEFAULT_MAX_PER_CLIENT,
        header_deadline: float = DEFAULT_HEADER_DEADLINE,
        allowed_hosts: Sequence[str] = (),
        status_interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        air: threading.Event | None = None,
        reload: Callable[[str], Reloaded] | None = None,
        inherited: socket.socket | None = None,
    ) -> None:
        """``allowed_hosts``: names the page may be reached by, beside the listen
        address, IP addresses and localhost (a Host header naming anything else is
        refused with 421: another site's page, its name rebound to this address,
        must not read the API). ``status_interval``: how old (seconds) the status
        and metrics served may be, at most; 0 builds them for every request.
        ``air``: the engine's Engine.air_idle; a request is parsed and answered
        only between the air's passes (32 keep-alive readers otherwise take
        turns at the interpreter lock with the thread every station sends on).
        ``reload``: what ``POST /api/reload`` runs (``pushsource run``'s
        reload, given who asked); None: the route is 404.
        ``inherited``: the socket a restart in place handed over, listening on
        ``address`` already."""
        self._stations = _by_id(stations)
        self.name = "control API"
        self._token = token.encode("utf-8") if token else None
        self._reload = reload
        self._metrics = metrics
        self.air = air
        self.snapshots = SnapshotCache(status_interval, clock)
        self.listener_views = ListenerViews()
        self.max_upload = max_upload
        self.timeout = timeout
        self.header_deadline = header_deadline
        self._hosts = {_host_key(address[0]), "localhost"} | {_host_key(h) for h in allowed_hosts}
        self._page = {
            path: (resources.files("pushsource.ops.web").joinpath(name).read_bytes(), kind)
            for path, (name, kind) in _PAGE_FILES.items()
        }
        try:
            self._httpd = HardenedServer(
                address, _Handler, self, max_connections, max_per_client, inherited
            )
        except OSError as exc:
            host, port = address
            raise ConfigError(
                f"control API: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:  # no token, ever
        return (
            f"<ControlServer {self.address[0]}:{self.address[1]} stations={list(self._stations)}>"
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return (str(host), int(port))

    @property
    def listening_socket(self) -> socket.socket:
        """The socket it listens on (for a restart in place)."""
        return self._httpd.socket

    def pause(self) -> None:
        """Stop taking connections (a restart in place: they wait in the
        listen queue for the new image); :meth:`start` takes them again."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None

    def start(self) -> None:
        """Serve on a daemon thread until close()."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="control server",
            daemon=True,
        )
        self._thread.start()
        log.debug("control server on http://%s:%d/", *self.address)

    def close(self) -> None:
        """Stop serving, and drop the connections still open."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
        self._httpd.drop_connections()

    def __enter__(self) -> ControlServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- a reload (pushsource.ops.fleet) ---------------------------------------------

    def set_stations(self, stations: Sequence[StationControl]) -> None:
        """The stations after a reload: one dict swapped in, so a request
        sees the old set or the new one whole. Raises ConfigError."""
        self._stations = _by_id(stations)
        self.snapshots.invalidate()

    def set_access(self, token: str | None, allowed_hosts: Sequence[str]) -> None:
        """A reload's new token and allowed_hosts, taken at once (the listen
        address is the server's own: a new one is a new server)."""
        self._token = token.encode("utf-8") if token else None
        host = self.address[0]
        self._hosts = {_host_key(host), "localhost"} | {_host_key(h) for h in allowed_hosts}

    def reload(self, client: str) -> Reloaded:
        if self._reload is None:
            raise ControlError("reload is for pushsource run --config", 404)
        return self._reload(client)

    # --- what the handler asks --------------------------------------------------------

    def station(self, station_id: str) -> StationControl:
        try:
            return self._stations[station_id]
        except KeyError:
            raise ControlError(f"no station {station_id!r}", 404) from None

    def stations(self) -> list[StationControl]:
        return list(self._stations.values())

    def page(self, path: str) -> tuple[bytes, str] | None:
        return self._page.get(path)

    def metrics(self) -> tuple[bytes, str] | None:
        build = self._metrics
        if build is None:
            return None
        return self.snapshots.get("metrics", self._version(), build)

    def status_json(self, station: StationControl, *, short: bool = False) -> bytes:
        """A station's status (``short``: its summary) as JSON, from its snapshot."""
        version = getattr(station, "status_version", None)

        def build() -> bytes:
            status = station.status()
            return dumps(summary(status) if short else status)

        return self.snapshots.get((station.id, short), version, build)

    def stations_json(self, *, short: bool = False) -> bytes:
        """``{"stations": [STATUS, ...]}`` as JSON: one station's change rebuilds
        only its own part."""

        def build() -> bytes:
            parts = [self.status_json(station, short=short) for station in self._stations.values()]
            return b'{"stations":[' + b",".join(parts) + b"]}"

        return self.snapshots.get(("stations", short), self._version(), build)

    def listeners_json(self, query: dict[str, list[str]], station_id: str | None = None) -> bytes:
        """Listeners over time: one station's (GET /api/stations/ID/listeners),
        else every station's and their total (GET /api/listeners)."""
        views = self.listener_views
        if station_id is not None:
            station = self.station(station_id)
            series = getattr(station, "listener_series", None)
            return views.station(station.id, series, query, dumps)
        found = [(s.id, getattr(s, "listener_series", None)) for s in self._stations.values()]
        return views.all(found, query, dumps)

    def changed(self) -> None:
        """An action ran: the next read sees its effect."""
        self.snapshots.invalidate()

    def _version(self) -> int | None:
        """Every station's version in one number (versions only grow: any bump
        changes the sum); None if a station has none."""
        total = 0
        for station in self._stations.values():
            version = getattr(station, "status_version", None)
            if version is None:
                return None
            total += version
        return total

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request's Host header names this server: an IP address (which
        no DNS rebinding can point elsewhere), localhost, the listen address or
        one of ``allowed_hosts``. No header (HTTP/1.0 tools) is allowed."""
        if header is None:
            return True
        host = header.strip()
        if host.startswith("["):
            host = host[1 : host.find("]")] if "]" in host else host
        elif host.count(":") == 1:
            host = host.partition(":")[0]
        try:
            ip_address(host)
        except ValueError:
            return _host_key(host) in self._hosts
        return True

    def authorize(self, header: str | None) -> Reply | None:
        """None if ``header`` (the Authorization header) allows actions, else the error."""
        if self._token is None:
            return error_reply(403, "control actions are off: set a token")
        scheme, _, given = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return error_reply(
                401, "this needs 'Authorization: Bearer TOKEN'", ("WWW-Authenticate", "Bearer")
            )
        if not hmac.compare_digest(given.strip().encode("utf-8", errors="replace"), self._token):
            return error_reply(
                401, "wrong token", ("WWW-Authenticate", 'Bearer error="invalid_token"')
            )
        return None


class Reloaded(Protocol):
    """What a reload did, for ``POST /api/reload``."""

    @property
    def applied(self) -> bool: ...

    def as_json(self) -> dict[str, Any]: ...


def _by_id(stations: Sequence[StationControl]) -> dict[str, StationControl]:
    found: dict[str, StationControl] = {}
    for station in stations:
        station_id = station.id
        if not _STATION_ID.match(station_id):
            raise ConfigError(
                f"station id {station_id!r}: use letters, digits, '.', '_', '~' or '-'"
            )
        if station_id in found:
            raise ConfigError(f"station id {station_id!r} is used twice")
        found[station_id] = station
    return found


def _host_key(host: str) -> str:
    return host.strip("[]").rstrip(".").casefold()


class _Handler(HardenedHandler):
    """The routes of the control API and page."""

    @property
    def control(self) -> ControlServer:
        return cast(ControlServer, self.server.site)

    def handle_expect_100(self) -> bool:
        # Refuse an upload before its body comes, when it would be refused anyway.
        early = self.framing() or self._refuse_early()
        if early is not None:
            self.send_reply(early, head=False)
            self.close_connection = True
            self.refused = True
            return False
        return super().handle_expect_100()

    # --- dispatch ---------------------------------------------------------------------

    def serve(self, method: str) -> None:
        self._body_left = self.declared_length()
        try:
            reply = self._route(method)
        except ControlError as error:
            reply = error_reply(error.status, str(error))
        except (TimeoutError, ConnectionError) as error:
            log.debug("%s: connection lost: %s", self.address_string(), error)
            self.close_connection = True
            return
        except Exception:
            log.exception("control API: %s %s failed", method, urlsplit(self.path).path)
            reply = error_reply(500, "internal error, see the log")
        if self._body_left != 0:
            # An unread (or unknown-length) body would be taken for the next request.
            self.close_connection = True
        self.send_reply(reply, head=method == "HEAD")

    def _segments(self) -> list[str]:
        path = urlsplit(self.path).path
        # Split before decoding, so an encoded "/" stays inside its segment.
        return [unquote(part, errors="strict") for part in path.split("/")[1:]]

    def _route(self, method: str) -> Reply:
        path = urlsplit(self.path).path
        try:
            parts = self._segments()
        except UnicodeDecodeError:
            return error_reply(400, "the path is not UTF-8")
        page = self.control.page(path)
        if page is not None:
            if (allowed := self._allow(method, "GET", "HEAD")) is not None:
                return allowed
            body = page[0]
            if _INITIAL_MARK in body:
                initial = _initial_status(self.control.stations_json(short=True))
                body = body.replace(_INITIAL_MARK, initial, 1)
            return Reply(200, body, page[1], (("Content-Security-Policy", _PAGE_POLICY),))
        if len(parts) == 2 and parts[0] == "listen":
            if (allowed := self._allow(method, "GET", "HEAD")) is not None:
                return allowed
            return self._playlist(parts[1])
        if path == "/metrics":
            if (allowed := self._allow(method, "GET", "HEAD")) is not None:
                return allowed
            metrics = self.control.metrics()
            if metrics is None:
                return error_reply(404, "metrics are off")
            return Reply(200, metrics[0], metrics[1])
        if parts == ["api", "reload"]:
            if (allowed := self._allow(method, "POST")) is not None:
                return allowed
            return self._reload()
        if parts == ["api", "listeners"]:
            if (allowed := self._allow(method, "GET", "HEAD")) is not None:
                return allowed
            return Reply(200, self.control.listeners_json(self._query()), JSON)
        if parts[:2] != ["api", "stations"]:
            return error_reply(404, f"no such page: {path}")
        rest = parts[2:]
        if rest in ([], [""]):
            if (allowed := self._allow(method, "GET", "HEAD")) is not None:
                return allowed
            short = parse_qs(urlsplit(self.path).query).get("summary") == ["1"]
            return Reply(200, self.control.stations_json(short=short), JSON)
        station_id, action = rest[0], rest[1:]
        if action == []:
            if (allowed := self._allow(method, "GET", "HEAD")) is not None:
                return allowed
            return Reply(200, self.control.status_json(self.control.station(station_id)), JSON)
        if action == ["listeners"]:
            if (allowed := self._allow(method, "GET", "HEAD")) is not None:
                return allowed
            body = self.control.listeners_json(self._query(), station_id)
            return Reply(200, body, JSON)
        if action == ["library"]:
            if (allowed := self._allow(method, "GET", "HEAD")) is not None:
                return allowed
            query = parse_qs(urlsplit(self.path).query).get("q", [""])[0]
            return json_reply(200, self.control.station(station_id).library(query[:200]))
        posts = (["skip"], ["live", "kick"], ["queue"], ["queue", "move"], ["queue", "remove"])
        if action in posts:
            if (allowed := self._allow(method, "POST")) is not None:
                return allowed
            return self._act(station_id, action)
        if len(action) == 2 and action[0] == "files":
            if (allowed := self._allow(method, "PUT")) is not None:
                return allowed
            return self._upload(station_id, action[1])
        if len(action) == 2 and action[0] == "recordings":
            if (allowed := self._allow(method, "GET", "HEAD")) is not None:
                return allowed
            return self._recording(station_id, action[1])
        return error_reply(404, f"no such page: {path}")

    def _recording(self, station_id: str, name: str) -> Reply:
        """A DJ set's recording: only a file the station's history links to
        (the station says which, never the request), not through a link."""
        station = self.control.station(station_id)
        find = getattr(station, "recording_file", None)
        path = find(name) if find is not None else None
        missing = error_reply(404, "no such recording")
        if path is None:
            return missing
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return missing
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return missing
        shown = re.sub(r"[^A-Za-z0-9._ -]", "_", os.path.basename(path))
        disposition = f'attachment; filename="{shown}"'
        return _FileReply(
            200, b"", "audio/mpeg", (("Content-Disposition", disposition),), info.st_size, fd
        )

    def send_reply(self, reply: Reply, *, head: bool) -> None:
        if not isinstance(reply, _FileReply):
            super().send_reply(reply, head=head)
            return
        with open(reply.fd, "rb", closefd=True) as file:
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(reply.size))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                for key, value in reply.headers:
                    self.send_header(key, value)
                self.end_headers()
                left = 0 if head else reply.size
                while left > 0 and (chunk := file.read(min(left, _UPLOAD_CHUNK))):
                    self.wfile.write(chunk)
                    left -= len(chunk)
                if left:  # the file shrank meanwhile: the length said is a lie now
                    self.close_connection = True
            except OSError as error:
                log.debug("%s: could not answer: %s", self.address_string(), error)
                self.close_connection = True

    def _query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)

    def _playlist(self, name: str) -> Reply:
        station_id, dot, kind = name.rpartition(".")
        if not dot or kind not in _PLAYLIST_TYPES:
            return error_reply(404, f"no such playlist: {name} (ID.m3u or ID.pls)")
        status = self.control.station(station_id).status()
        # Outputs in the station's format are the same stream: listed after it.
        outputs = status.get("outputs") or []
        same = [
            str(o["listen_url"])
            for o in outputs[1:]
            if isinstance(o, dict) and not o.get("converted") and o.get("listen_url")
        ]
        name = str(status.get("name") or station_id)
        body = playlist(kind, name, str(status["listen_url"]), *same)
        disposition = f'inline; filename="{station_id}.{kind}"'
        return Reply(
            200,
            body.encode("utf-8"),
            f"{_PLAYLIST_TYPES[kind]}; charset=utf-8",
            (("Content-Disposition", disposition),),
        )

    def _allow(self, method: str, *allowed: str) -> Reply | None:
        if method in allowed:
            return None
        return error_reply(405, f"{method} is not allowed here", ("Allow", ", ".join(allowed)))

    def _act(self, station_id: str, action: list[str]) -> Reply:
        refused = self.control.authorize(self.headers.get("Authorization"))
        if refused is not None:
            return refused
        station = self.control.station(station_id)
        try:
            done, fields = self._apply(station, action)
        except ControlError as error:
            if error.status == 409:  # refused for what the station is doing: say so
                self._told(
                    station_id,
                    f"refused {'/'.join(action)}: {error}",
                    {"event": "refused", "action": "/".join(action)},
                )
            raise
        finally:  # even one that failed half-way may have changed something
            self.control.changed()
        self._told(station_id, done, fields)
        return json_reply(200, station.status())

    def _apply(self, station: StationControl, action: list[str]) -> tuple[str, dict[str, object]]:
        """Do the action; what was done, for its log line, and its fields."""
        if action == ["skip"]:
            self._read_json(optional=True)
            playing = station.status().get("now_playing") or {}
            title = playing.get("title") if isinstance(playing, dict) else None
            station.skip()
            what = f"skipped {title}" if title else "skipped what was playing"
            return f"{what} by hand", {"event": "skip", "title": title}
        if action == ["live", "kick"]:
            kick_body = self._read_json(optional=True)
            ban = _field(kick_body, "ban_minutes", int) if "ban_minutes" in kick_body else 0
            if not 0 <= ban <= MAX_BAN_MINUTES:
                raise ControlError(f"'ban_minutes' must be 0 to {MAX_BAN_MINUTES}", 400)
            station.kick(ban)
            banned = f", refused for {ban} min" if ban else ""
            return f"hung up on the live DJ{banned}", {"event": "kick", "ban_minutes": ban}
        body = self._read_json()
        file = _field(body, "file", str)
        if not file:
            raise ControlError("'file' must not be empty", 400)
        if action == ["queue"]:
            station.enqueue(file)
            return f"queued {file} by hand", {"event": "queue", "file": file}
        if action == ["queue", "remove"]:
            station.remove(file)
            return f"removed {file} from the queue", {"event": "queue_remove", "file": file}
        index = _field(body, "index", int)
        station.move(file, index)
        done = f"moved {file} to position {index + 1} of the queue"
        return done, {"event": "queue_move", "file": file, "position": index + 1}

    def _reload(self) -> Reply:
        """Read the config file again and apply it (the token needed): 200
        with what changed, or 422 with one line per problem (nothing changed)."""
        refused = self.control.authorize(self.headers.get("Authorization"))
        if refused is not None:
            return refused
        self._read_json(optional=True)
        client = self.client_address[0]
        log.info("reload asked for (from %s)", client, extra={"event": "reload", "client": client})
        outcome = self.control.reload(f"the control API, from {client}")
        return json_reply(200 if outcome.applied else 422, outcome.as_json())

    def _told(self, station_id: str, done: str, fields: dict[str, object]) -> None:
        """One line per action, of one shape: the station, what, and who asked."""
        client = self.client_address[0]
        extra = {**fields, "station": station_id, "client": client, "names_station": True}
        with contextlib.suppress(ControlError):  # a station that went while it acted
            target = getattr(self.control.station(station_id), "target", None)
            if target is not None:
                extra["mount"] = target.mount
        log.info("station %s: %s (from %s)", station_id, done, client, extra=extra)

    def _refuse_early(self) -> Reply | None:
        """Why an upload would be refused before its body is read, if it would be."""
        if self.command != "PUT":
            return None
        try:
            parts = self._segments()
        except UnicodeDecodeError:
            return error_reply(400, "the path is not UTF-8")
        if len(parts) != 5 or parts[:2] != ["api", "stations"] or parts[3] != "files":
            return None  # _route answers it
        refused = self.control.authorize(self.headers.get("Authorization"))
        if refused is not None:
            return refused
        try:
            self.control.station(parts[2])
            check_upload_name(parts[4])
        except ControlError as error:
            return error_reply(error.status, str(error))
        return self._check_upload_length()

    def _check_upload_length(self) -> Reply | None:
        length = self.declared_length()
        if length is None or "Content-Length" not in self.headers:
            return error_reply(411, "an upload needs a Content-Length (no chunked bodies)")
        if length > self.control.max_upload:
            return error_reply(413, f"uploads are limited to {self.control.max_upload} bytes")
        return None

    def _upload(self, station_id: str, name: str) -> Reply:
        early = self._refuse_early()
        if early is not None:
            return early
        station = self.control.station(station_id)
        length = self._body_left
        assert length is not None  # _refuse_early checked it
        body = _Body(cast(BinaryIO, self.rfile), length)
        try:
            saved = station.upload(name, cast(BinaryIO, body), length)
        finally:
            self._body_left = body.left
            self.control.changed()
        if body.left:
            raise ControlError(f"the station read {length - body.left} of {length} bytes", 500)
        fields: dict[str, object] = {"event": "upload", "file": saved, "bytes": length}
        self._told(station_id, f"uploaded {saved} ({length} bytes)", fields)
        return json_reply(201, {"file": saved})

    def _read_json(self, *, optional: bool = False) -> dict[str, Any]:
        length = self._body_left
        if length is None:
            raise ControlError("send the JSON body with a Content-Length", 411)
        if length > MAX_JSON_BODY:
            raise ControlError(f"the JSON body is limited to {MAX_JSON_BODY} bytes", 413)
        self.server.waiting(self.connection, time.monotonic())
        raw = self.rfile.read(length)
        self.server.waiting(self.connection, None)
        self._body_left = length - len(raw)
        if len(raw) < length:
            raise ConnectionError("the body ended early")
        if optional and not raw.strip():
            return {}
        value = parse_json(raw)
        if not isinstance(value, dict):
            raise ControlError("the body must be a JSON object", 400)
        return value


_T = TypeVar("_T")


@dataclass(frozen=True)
class _FileReply(Reply):
    """A file sent from an open descriptor, in chunks (a set may be an hour)."""

    size: int = 0
    fd: int = -1


def _number(text: str) -> int:
    if len(text) > MAX_JSON_NUMBER:
        raise ControlError(f"the body has a number longer than {MAX_JSON_NUMBER} digits", 400)
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_JSON_NUMBER:
        raise ControlError(f"the body has a number longer than {MAX_JSON_NUMBER} digits", 400)
    return float(text)


def _no_constant(text: str) -> None:
    raise ControlError(f"the body is not JSON: {text} is not a JSON value", 400)


def parse_json(raw: bytes) -> Any:
    """A request body's JSON value, refusing what only an attacker sends (deep
    nesting, huge numbers, NaN) with ControlError 400. Does not raise otherwise."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:  # bodies are at most MAX_JSON_BODY bytes
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    if deepest > MAX_JSON_DEPTH:
        raise ControlError(f"the body is nested deeper than {MAX_JSON_DEPTH} levels", 400)
    try:
        return json.loads(
            raw,
            parse_int=_number,
            parse_float=_float,
            parse_constant=_no_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ControlError(f"the body is not JSON: {error}", 400) from None


def _field(body: dict[str, Any], key: str, kind: type[_T]) -> _T:
    value = body.get(key)
    # bool is an int to Python, never to this API.
    if not isinstance(value, kind) or isinstance(value, bool):
        name = {str: "a string", int: "an integer"}.get(kind, kind.__name__)
        raise ControlError(f"{key!r} must be {name}", 400)
    return value
