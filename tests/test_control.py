"""The control server against a fake station: routes, auth, errors, uploads, robustness."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from pushsource.errors import ConfigError, ControlError
from pushsource.ops.control import ControlServer, check_upload_name
from tests.conftest import capture_output, register_secret

TOKEN = "tok-Vq83-control-Zx1"
register_secret(TOKEN)


class FakeStation:
    """A station as the server sees it: a queue of names and a folder to save into."""

    def __init__(self, station_id: str, folder: Path) -> None:
        self._id = station_id
        self.folder = folder
        self.queue = ["b.mp3", "sub/c.flac", "d.mp3"]
        self.history: list[dict[str, Any]] = []
        self.calls: list[tuple[str, ...]] = []
        self.fail: BaseException | None = None
        #: Largest read() the upload asked of the body, and how many reads it took.
        self.largest_read = 0
        self.reads = 0

    @property
    def id(self) -> str:
        return self._id

    def status(self) -> dict[str, Any]:
        return {
            "id": self._id,
            "name": self._id.title(),
            "mount": f"/{self._id}",
            "server": "127.0.0.1:8000",
            "listen_url": f"http://127.0.0.1:8000/{self._id}",
            "connection": {"state": "on air", "reconnects": 0, "error": None},
            "now_playing": {
                "title": "Artist - Ünïcode",
                "file": "a.mp3",
                "elapsed": 1.5,
                "duration": 20.0,
                "bitrate": 128,
            },
            "queue": [{"file": f} for f in self.queue],
            "history": self.history,
        }

    def _check(self, *call: str) -> None:
        self.calls.append(call)
        if self.fail is not None:
            raise self.fail

    def skip(self) -> None:
        self._check("skip")

    def kick(self, ban_minutes: int = 0) -> None:
        self._check("kick", str(ban_minutes))

    def remove(self, file: str) -> None:
        self._check("remove", file)
        if file not in self.queue:
            raise ControlError(f"{file} is not queued", 404)
        self.queue.remove(file)

    def move(self, file: str, index: int) -> None:
        self._check("move", file, str(index))
        if file not in self.queue:
            raise ControlError(f"{file} is not queued", 404)
        self.queue.remove(file)
        self.queue.insert(index, file)

    def enqueue(self, file: str) -> None:
        self._check("enqueue", file)
        self.queue.append(file)

    def library(self, query: str = "", limit: int = 100) -> dict[str, Any]:
        files = sorted({*self.queue, "a.mp3", "new/e.mp3", "new/f.mp3"})
        words = query.casefold().split()
        found = [f for f in files if all(w in f.casefold() for w in words)]
        return {
            "files": [{"file": f, "queued": f in self.queue} for f in found[:limit]],
            "total": len(found),
        }

    def upload(self, filename: str, data: BinaryIO, length: int) -> str:
        self._check("upload", filename, str(length))
        target = self.folder / filename
        try:
            with open(target, "wb") as out:
                while chunk := data.read(1 << 20):
                    self.largest_read = max(self.largest_read, len(chunk))
                    self.reads += 1
                    out.write(chunk)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return filename


@pytest.fixture
def rock(tmp_path: Path) -> FakeStation:
    folder = tmp_path / "rock"
    folder.mkdir()
    return FakeStation("rock", folder)


@pytest.fixture
def jazz(tmp_path: Path) -> FakeStation:
    folder = tmp_path / "jazz"
    folder.mkdir()
    return FakeStation("jazz", folder)


def serve(
    stations: list[FakeStation], address: tuple[str, int] = ("127.0.0.1", 0), **kwargs: Any
) -> ControlServer:
    kwargs.setdefault("token", TOKEN)
    server = ControlServer(address, stations, **kwargs)
    server.start()
    return server


@pytest.fixture
def server(rock: FakeStation, jazz: FakeStation) -> Iterator[ControlServer]:
    with serve(
        [rock, jazz], metrics=lambda: (b"pushsource_up 1\n", "text/plain; version=0.0.4")
    ) as running:
        yield running


def call(
    server: ControlServer,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    *,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
) -> tuple[int, http.client.HTTPResponse, bytes]:
    """One request on a fresh connection: (status, response, body)."""
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=body, headers=sent)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, response, data


def call_json(server: ControlServer, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
    status, response, data = call(server, method, path, *args, **kwargs)
    assert response.getheader("Content-Type") == "application/json; charset=utf-8", data
    return status, json.loads(data)


# --- reading ------------------------------------------------------------------------------


def test_page_and_its_files(server: ControlServer) -> None:
    status, response, html = call(server, "GET", "/")
    assert status == 200
    assert response.getheader("Content-Type") == "text/html; charset=utf-8"
    assert response.getheader("Server") == "pushsource"  # no Python version on show
    assert "script-src 'self'" in response.getheader("Content-Security-Policy", "")
    assert b'src="/app.js"' in html and b'href="/style.css"' in html
    for path, kind, marker in (
        ("/app.js", "text/javascript", b"/api/stations"),
        ("/style.css", "text/css", b".queue"),
    ):
        status, response, data = call(server, "GET", path)
        assert status == 200 and response.getheader("Content-Type", "").startswith(kind)
        assert marker in data


def embedded_status(page: bytes) -> tuple[bytes, Any]:
    """The page without its embedded status, and that status (parsed)."""
    start = page.index(b'<script id="initial-status" type="application/json">')
    begin = page.index(b">", start) + 1
    end = page.index(b"</script>", begin)
    return page[:begin] + page[end:], json.loads(page[begin:end])


def test_page_uses_no_external_urls(server: ControlServer) -> None:
    for path in ("/", "/app.js", "/style.css"):
        _, _, data = call(server, "GET", path)
        if path == "/":  # the stations' listen URLs are data there, not loaded
            data, _ = embedded_status(data)
        assert b"http://" not in data and b"https://" not in data, path


def test_page_embeds_the_stations_summary(server: ControlServer, rock: FakeStation) -> None:
    rock.history = [{"file": "x.mp3", "title": "</script><script>alert(1)</script>"}]
    rock.queue.append("</script>.mp3")
    _, _, page = call(server, "GET", "/")
    _, embedded = embedded_status(page)  # one </script>: the title did not close it
    _, _, listed = call(server, "GET", "/api/stations?summary=1")
    assert embedded == json.loads(listed)
    first = embedded["stations"][0]
    assert first["id"] == "rock" and first["queue_length"] == 4
    assert "queue" not in first and "history" not in first
    _, _, full = call(server, "GET", "/api/stations")
    assert json.loads(full)["stations"][0]["queue"][-1] == {"file": "</script>.mp3"}


def test_playlists_name_the_listen_url(server: ControlServer) -> None:
    status, response, body = call(server, "GET", "/listen/rock.m3u")
    assert status == 200 and response.getheader("Content-Type").startswith("audio/x-mpegurl")
    assert body.decode() == "#EXTM3U\n#EXTINF:-1,Rock\nhttp://127.0.0.1:8000/rock\n"
    status, response, body = call(server, "GET", "/listen/rock.pls")
    assert status == 200 and response.getheader("Content-Type").startswith("audio/x-scpls")
    assert "File1=http://127.0.0.1:8000/rock\nTitle1=Rock\n" in body.decode()
    assert call(server, "GET", "/listen/rock.mp3")[0] == 404
    assert call(server, "GET", "/listen/nope.m3u")[0] == 404
    assert call(server, "POST", "/listen/rock.m3u")[0] == 405


def test_head_answers_headers_only(server: ControlServer) -> None:
    for path in ("/", "/api/stations", "/api/stations/rock"):
        _, got, full = call(server, "GET", path)
        status, response, data = call(server, "HEAD", path)
        assert status == 200 and data == b""
        assert response.getheader("Content-Length") == str(len(full))
        assert response.getheader("Content-Type") == got.getheader("Content-Type")


def test_list_and_one_station(server: ControlServer, rock: FakeStation) -> None:
    status, body = call_json(server, "GET", "/api/stations", token=None)
    assert status == 200
    assert [s["id"] for s in body["stations"]] == ["rock", "jazz"]
    assert body["stations"][0] == rock.status()
    status, body = call_json(server, "GET", "/api/stations/rock", token=None)
    assert status == 200 and body == rock.status()
    assert body["now_playing"]["title"] == "Artist - Ünïcode"


def test_unknown_station_is_404(server: ControlServer) -> None:
    for method, path, payload in (
        ("GET", "/api/stations/pop", None),
        ("POST", "/api/stations/pop/skip", None),
        ("POST", "/api/stations/pop/queue", {"file": "a.mp3"}),
    ):
        status, body = call_json(server, method, path, payload)
        assert status == 404 and body == {"error": "no station 'pop'"}, path
    status, _, _ = call(server, "PUT", "/api/stations/pop/files/a.mp3", b"x")
    assert status == 404


def test_metrics(server: ControlServer, rock: FakeStation) -> None:
    status, response, data = call(server, "GET", "/metrics", token=None)
    assert status == 200 and data == b"pushsource_up 1\n"
    assert response.getheader("Content-Type") == "text/plain; version=0.0.4"
    with serve([rock]) as bare:
        status, body = call_json(bare, "GET", "/metrics")
        assert status == 404 and body == {"error": "metrics are off"}


def test_unknown_routes_and_methods(server: ControlServer) -> None:
    for path in ("/nope", "/api", "/api/stations/rock/nope", "/api/stations/rock/queue/x/y"):
        status, body = call_json(server, "GET", path)
        assert status == 404 and "error" in body, path
    for method, path, allowed in (
        ("POST", "/", "GET, HEAD"),
        ("DELETE", "/api/stations", "GET, HEAD"),
        ("POST", "/api/stations/rock", "GET, HEAD"),
        ("GET", "/api/stations/rock/skip", "POST"),
        ("GET", "/api/stations/rock/files/a.mp3", "PUT"),
        ("PATCH", "/metrics", "GET, HEAD"),
    ):
        status, response, data = call(server, method, path)
        assert status == 405, (method, path)
        assert response.getheader("Allow") == allowed
        assert "error" in json.loads(data)


def test_no_cors(server: ControlServer) -> None:
    _, response, _ = call(server, "GET", "/api/stations", headers={"Origin": "http://evil.test"})
    assert response.getheader("Access-Control-Allow-Origin") is None
    status, _, _ = call(server, "OPTIONS", "/api/stations/rock/skip")
    assert status == 405


# --- auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "this needs 'Authorization: Bearer TOKEN'"),
        ({"Authorization": "Basic " + TOKEN}, "this needs 'Authorization: Bearer TOKEN'"),
        ({"Authorization": "Bearer "}, "this needs 'Authorization: Bearer TOKEN'"),
        ({"Authorization": "Bearer wrong"}, "wrong token"),
        ({"Authorization": "Bearer " + TOKEN + "x"}, "wrong token"),
    ],
)
def test_actions_need_the_token(
    server: ControlServer, rock: FakeStation, headers: dict[str, str], reason: str
) -> None:
    for method, path, payload in (
        ("POST", "/api/stations/rock/skip", None),
        ("POST", "/api/stations/rock/queue", {"file": "a.mp3"}),
        ("POST", "/api/stations/rock/queue/move", {"file": "d.mp3", "index": 0}),
        ("POST", "/api/stations/rock/queue/remove", {"file": "b.mp3"}),
    ):
        status, response, data = call(server, method, path, payload, token=None, headers=headers)
        assert status == 401 and json.loads(data) == {"error": reason}, path
        assert response.getheader("WWW-Authenticate", "").startswith("Bearer")
    status, _, _ = call(
        server, "PUT", "/api/stations/rock/files/x.mp3", b"abc", token=None, headers=headers
    )
    assert status == 401
    assert rock.calls == []
    assert not (rock.folder / "x.mp3").exists()


def test_scheme_is_case_insensitive(server: ControlServer, rock: FakeStation) -> None:
    status, _, _ = call(
        server, "POST", "/api/stations/rock/skip", token=None,
        headers={"Authorization": "bearer " + TOKEN},
    )  # fmt: skip
    assert status == 200 and rock.calls == [("skip",)]


def test_no_token_configured_turns_actions_off(rock: FakeStation) -> None:
    with serve([rock], token=None) as server:
        status, body = call_json(server, "POST", "/api/stations/rock/skip")
        assert status == 403 and body == {"error": "control actions are off: set a token"}
        status, _, _ = call(server, "PUT", "/api/stations/rock/files/a.mp3", b"abc")
        assert status == 403
        status, _ = call_json(server, "GET", "/api/stations/rock", token=None)
        assert status == 200
    assert rock.calls == []


def test_token_never_logged(
    rock: FakeStation, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG, logger="pushsource")
    with serve([rock]) as server:
        assert TOKEN not in repr(server)
        call(server, "POST", "/api/stations/rock/skip")
        call(server, "POST", "/api/stations/rock/skip", token=TOKEN[:-1])
        call(server, "POST", "/api/stations/rock/queue", b"{bad json")
        call(server, "PUT", "/api/stations/rock/files/up.mp3", b"data")
        rock.fail = RuntimeError("boom")
        call(server, "POST", "/api/stations/rock/skip")
    text = caplog.text
    capture_output("test_token_never_logged log", text)
    assert "/api/stations/rock/skip" in text  # requests are logged, at debug
    assert "station rock: uploaded up.mp3 (4 bytes) (from 127.0.0.1)" in text
    assert TOKEN not in text and TOKEN[:-1] not in text
    assert all(r.levelno == logging.DEBUG for r in caplog.records if "HTTP/1.1" in r.message)


# --- actions --------------------------------------------------------------------------------


def test_skip(server: ControlServer, rock: FakeStation, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pushsource")
    status, body = call_json(server, "POST", "/api/stations/rock/skip")
    assert status == 200 and body == rock.status()
    assert rock.calls == [("skip",)]
    # One line: the station, what was skipped, who asked.
    told = [r for r in caplog.records if r.levelno == logging.INFO]
    assert [r.getMessage() for r in told] == [
        "station rock: skipped Artist - Ünïcode by hand (from 127.0.0.1)"
    ]
    assert (told[0].event, told[0].title) == ("skip", "Artist - Ünïcode")  # type: ignore[attr-defined]


def test_skip_takes_an_empty_or_object_body(server: ControlServer, rock: FakeStation) -> None:
    assert call(server, "POST", "/api/stations/rock/skip", b"{}")[0] == 200
    assert call(server, "POST", "/api/stations/rock/skip", b"[]")[0] == 400
    assert rock.calls == [("skip",)]


def test_kick_takes_ban_minutes_and_says_so(
    server: ControlServer, rock: FakeStation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pushsource")
    assert call_json(server, "POST", "/api/stations/rock/live/kick")[0] == 200
    status, _ = call_json(server, "POST", "/api/stations/rock/live/kick", {"ban_minutes": 30})
    assert status == 200
    for bad in (-1, 7 * 24 * 60 + 1, "30", True):
        status, body = call_json(
            server, "POST", "/api/stations/rock/live/kick", {"ban_minutes": bad}
        )
        assert status == 400 and "ban_minutes" in body["error"], bad
    assert rock.calls == [("kick", "0"), ("kick", "30")]
    told = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert told == [
        "station rock: hung up on the live DJ (from 127.0.0.1)",
        "station rock: hung up on the live DJ, refused for 30 min (from 127.0.0.1)",
    ]


def test_enqueue_move_remove(server: ControlServer, rock: FakeStation) -> None:
    status, body = call_json(server, "POST", "/api/stations/rock/queue", {"file": "new.mp3"})
    assert status == 200
    assert [q["file"] for q in body["queue"]] == ["b.mp3", "sub/c.flac", "d.mp3", "new.mp3"]
    status, body = call_json(
        server, "POST", "/api/stations/rock/queue/move", {"file": "new.mp3", "index": 0}
    )
    assert status == 200
    assert [q["file"] for q in body["queue"]] == ["new.mp3", "b.mp3", "sub/c.flac", "d.mp3"]
    status, body = call_json(
        server, "POST", "/api/stations/rock/queue/remove", {"file": "sub/c.flac"}
    )
    assert status == 200
    assert [q["file"] for q in body["queue"]] == ["new.mp3", "b.mp3", "d.mp3"]
    assert rock.calls == [
        ("enqueue", "new.mp3"),
        ("move", "new.mp3", "0"),
        ("remove", "sub/c.flac"),
    ]


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("queue", b"{not json", "the body is not JSON"),
        ("queue", b"\xff\xfe", "the body is not JSON"),
        ("queue", b'["a.mp3"]', "the body must be a JSON object"),
        ("queue", b"{}", "'file' must be a string"),
        ("queue", b'{"file": 3}', "'file' must be a string"),
        ("queue", b'{"file": ""}', "'file' must not be empty"),
        ("queue/remove", b'{"file": null}', "'file' must be a string"),
        ("queue/move", b'{"file": "b.mp3"}', "'index' must be an integer"),
        ("queue/move", b'{"file": "b.mp3", "index": "1"}', "'index' must be an integer"),
        ("queue/move", b'{"file": "b.mp3", "index": true}', "'index' must be an integer"),
        ("queue/move", b'{"file": "b.mp3", "index": 1.5}', "'index' must be an integer"),
    ],
)
def test_bad_bodies(
    server: ControlServer, rock: FakeStation, path: str, body: bytes, reason: str
) -> None:
    status, answer = call_json(server, "POST", f"/api/stations/rock/{path}", body)
    assert status == 400 and answer["error"].startswith(reason)
    assert rock.calls == []


def test_big_json_body_is_refused(server: ControlServer, rock: FakeStation) -> None:
    payload = json.dumps({"file": "x" * 100_000}).encode()
    status, answer = call_json(server, "POST", "/api/stations/rock/queue", payload)
    assert status == 413 and "limited" in answer["error"]
    assert rock.calls == []


@pytest.mark.parametrize("code", [400, 404, 409])
def test_control_errors_keep_their_status(
    server: ControlServer, rock: FakeStation, code: int
) -> None:
    rock.fail = ControlError(f"cannot, {code}", code)
    status, body = call_json(server, "POST", "/api/stations/rock/skip")
    assert (status, body) == (code, {"error": f"cannot, {code}"})


def test_unknown_file_is_404(server: ControlServer) -> None:
    status, body = call_json(server, "POST", "/api/stations/rock/queue/remove", {"file": "zz.mp3"})
    assert (status, body) == (404, {"error": "zz.mp3 is not queued"})


def test_unexpected_errors_are_500_and_logged(
    server: ControlServer, rock: FakeStation, caplog: pytest.LogCaptureFixture
) -> None:
    rock.fail = RuntimeError("station exploded")
    status, body = call_json(server, "POST", "/api/stations/rock/skip")
    assert (status, body) == (500, {"error": "internal error, see the log"})
    assert "station exploded" in caplog.text
    # and the server goes on
    rock.fail = None
    assert call(server, "POST", "/api/stations/rock/skip")[0] == 200


# --- uploads --------------------------------------------------------------------------------


def test_upload_streams_to_the_station(server: ControlServer, rock: FakeStation) -> None:
    payload = bytes(range(256)) * (12 * 1024)  # 3 MiB
    status, _, data = call(server, "PUT", "/api/stations/rock/files/New%20Song.mp3", payload)
    assert status == 201 and json.loads(data) == {"file": "New Song.mp3"}
    assert (rock.folder / "New Song.mp3").read_bytes() == payload
    assert rock.calls == [("upload", "New Song.mp3", str(len(payload)))]
    # It came in pieces, as the station read them, not as one body in memory.
    assert rock.reads > 1 and rock.largest_read <= 64 * 1024


def test_upload_name_in_utf8(server: ControlServer, rock: FakeStation) -> None:
    status, _, data = call(server, "PUT", "/api/stations/rock/files/%E6%9D%B1%E4%BA%AC.mp3", b"x")
    assert status == 201 and json.loads(data) == {"file": "東京.mp3"}
    assert (rock.folder / "東京.mp3").read_bytes() == b"x"


@pytest.mark.parametrize(
    "name",
    ["..", "%2E%2E", ".", "a%2Fb.mp3", "..%2Fescape.mp3", ".hidden.mp3", "a%5Cb.mp3", "a%00b", ""],
)
def test_upload_names_that_are_not_plain(
    server: ControlServer, rock: FakeStation, name: str
) -> None:
    status, body = call_json(server, "PUT", f"/api/stations/rock/files/{name}", b"data")
    assert status == 400, body
    assert rock.calls == []
    assert [p.name for p in rock.folder.parent.rglob("*") if p.is_file()] == []


def test_upload_path_with_more_segments_is_404(server: ControlServer, rock: FakeStation) -> None:
    status, _ = call_json(server, "PUT", "/api/stations/rock/files/sub/a.mp3", b"data")
    assert status == 404 and rock.calls == []


def test_check_upload_name() -> None:
    assert check_upload_name("a b (1).mp3") == "a b (1).mp3"
    for bad in ("", ".", "..", "a/b", "a\\b", ".x", "a\nb", "x" * 256):
        with pytest.raises(ControlError) as caught:
            check_upload_name(bad)
        assert caught.value.status == 400


def test_upload_over_the_cap_is_refused_unread(rock: FakeStation) -> None:
    with serve([rock], max_upload=1000) as server:
        status, body = call_json(server, "PUT", "/api/stations/rock/files/big.mp3", b"x" * 1001)
        assert status == 413 and body == {"error": "uploads are limited to 1000 bytes"}
        assert call(server, "PUT", "/api/stations/rock/files/ok.mp3", b"x" * 1000)[0] == 201
    assert rock.calls == [("upload", "ok.mp3", "1000")]


def read_answer(sock: socket.socket, *, to_the_end: bool = False) -> bytes:
    """One answer (to its Content-Length), or everything until the server closes."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
        head, blank, rest = answer.partition(b"\r\n\r\n")
        if blank and not to_the_end:
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if len(rest) >= length:
                break
    return answer


def raw_exchange(server: ControlServer, request: bytes, *, then_close_write: bool = False) -> bytes:
    """Send raw bytes and read the answer (until the server closes, after
    ``then_close_write``)."""
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(request)
        if then_close_write:
            sock.shutdown(socket.SHUT_WR)
        return read_answer(sock, to_the_end=then_close_write)


def test_huge_upload_refused_before_the_body_with_expect_100(rock: FakeStation) -> None:
    """A client that asks first (Expect: 100-continue, as curl does) is refused
    before it sends a byte of the body."""
    with serve([rock], max_upload=1 << 20) as server:
        answer = raw_exchange(
            server,
            b"PUT /api/stations/rock/files/huge.mp3 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Content-Length: 10737418240\r\nExpect: 100-continue\r\n\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert b"100 Continue" not in answer
        answer = raw_exchange(
            server,
            b"PUT /api/stations/rock/files/huge.mp3 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: 10\r\nExpect: 100-continue\r\n\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 401 ")
    assert rock.calls == []


def test_expect_100_then_upload(server: ControlServer, rock: FakeStation) -> None:
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(
            b"PUT /api/stations/rock/files/ask.mp3 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"hello")
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 201 ")
    assert (rock.folder / "ask.mp3").read_bytes() == b"hello"


def test_upload_without_length_is_411(server: ControlServer, rock: FakeStation) -> None:
    answer = raw_exchange(
        server,
        b"PUT /api/stations/rock/files/c.mp3 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 411 ") and b"Content-Length" in answer
    assert rock.calls == []


def test_upload_cut_short_leaves_no_file(server: ControlServer, rock: FakeStation) -> None:
    answer = raw_exchange(
        server,
        b"PUT /api/stations/rock/files/cut.mp3 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
        b"Content-Length: 100000\r\n\r\n" + b"x" * 5000,
        then_close_write=True,
    )
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"the upload ended after 5000 of 100000 bytes" in answer
    assert not (rock.folder / "cut.mp3").exists()


def test_stalled_upload_is_dropped(rock: FakeStation) -> None:
    with serve([rock], timeout=0.5) as server:
        answer = raw_exchange(
            server,
            b"PUT /api/stations/rock/files/slow.mp3 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Content-Length: 100000\r\n\r\n" + b"x" * 10,
        )
    assert answer == b""  # closed without an answer
    assert not (rock.folder / "slow.mp3").exists()


# --- robustness -----------------------------------------------------------------------------


def test_slow_client_is_dropped(rock: FakeStation) -> None:
    with (
        serve([rock], timeout=0.5) as server,
        socket.create_connection(server.address, timeout=10) as sock,
    ):
        sock.sendall(b"GET /api/stations HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the end
        assert sock.recv(100) == b""


def test_garbage_requests_get_json(server: ControlServer) -> None:
    # No version: an HTTP/0.9 answer, a body without a status line.
    assert json.loads(raw_exchange(server, b"NONSENSE\r\n\r\n")) == {
        "error": "Bad request syntax ('NONSENSE')"
    }
    answer = raw_exchange(
        server, b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n", then_close_write=True
    )
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]


def test_keep_alive_and_closing_after_an_unread_body(
    server: ControlServer, rock: FakeStation
) -> None:
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    for _ in range(3):
        conn.request("GET", "/api/stations/rock")
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["id"] == "rock"
    # A body the server did not read must not be taken for the next request.
    conn.request("POST", "/api/stations/rock/skip", body=b"GET / HTTP/1.1\r\n\r\n")
    response = conn.getresponse()
    assert response.status == 401 and response.getheader("Connection") == "close"
    response.read()
    conn.close()


def test_too_many_connections_get_503(rock: FakeStation) -> None:
    """Only when every slot is serving a request (here: an upload's body) is a
    newcomer turned away; an idle keep-alive connection makes room instead."""
    with (
        serve([rock], max_connections=1) as server,
        socket.create_connection(server.address, timeout=10) as first,
    ):
        first.sendall(b"GET /api/stations HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_answer(first).startswith(b"HTTP/1.1 200 ")  # idle now (keep-alive)
        # The server marks it idle as its answer goes out; on a busy machine
        # the mark may trail the answer by a moment, so ask again (a few ms).
        deadline = time.monotonic() + 5
        while True:
            answer = raw_exchange(server, b"GET /api/stations HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            if not answer.startswith(b"HTTP/1.1 503 ") or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert first.recv(100) == b""  # the idle one made room
    with (
        serve([rock], max_connections=1) as server,
        socket.create_connection(server.address, timeout=10) as uploading,
    ):
        uploading.sendall(
            b"PUT /api/stations/rock/files/up.mp3 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Content-Length: 100000\r\n\r\n" + b"x" * 10
        )
        deadline = time.monotonic() + 5
        while not rock.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        answer = raw_exchange(server, b"GET /api/stations HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {
            "error": "too many connections, try again"
        }


def test_close_drops_open_connections(rock: FakeStation) -> None:
    server = serve([rock])
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"GET /api/stations HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_answer(sock).startswith(b"HTTP/1.1 200 ")
        server.close()
        assert sock.recv(100) == b""
    with pytest.raises(OSError):
        socket.create_connection(server.address, timeout=2).close()


def test_concurrent_requests(server: ControlServer) -> None:
    results: list[int] = []

    def fetch() -> None:
        results.append(call(server, "GET", "/api/stations")[0])

    threads = [threading.Thread(target=fetch) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 20


def test_station_ids_are_checked(rock: FakeStation, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="used twice"):
        ControlServer(("127.0.0.1", 0), [rock, FakeStation("rock", tmp_path)], token=TOKEN)
    with pytest.raises(ConfigError, match="station id 'a/b'"):
        ControlServer(("127.0.0.1", 0), [FakeStation("a/b", tmp_path)], token=TOKEN)


def test_port_zero_picks_a_free_port(rock: FakeStation) -> None:
    with serve([rock]) as one, serve([rock]) as two:
        assert one.address[1] != 0 and two.address[1] != 0
        assert one.address != two.address


def test_address_in_use_is_one_clear_error(rock: FakeStation) -> None:
    with serve([rock]) as running:
        host, port = running.address
        with pytest.raises(ConfigError, match=rf"control API: cannot listen on {host}:{port}: "):
            ControlServer((host, port), [rock], token=TOKEN)


def test_ipv6_loopback(rock: FakeStation) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        server = serve([rock], address=("::1", 0))
    except ConfigError as error:
        pytest.skip(f"no IPv6 loopback here: {error}")
    with server:
        conn = http.client.HTTPConnection("::1", server.address[1], timeout=10)
        conn.request("GET", "/api/stations/rock")
        assert json.loads(conn.getresponse().read())["id"] == "rock"
        conn.close()


def test_library_search(server: ControlServer) -> None:
    status, _, body = call(server, "GET", "/api/stations/rock/library?q=NEW%20f", token=None)
    assert status == 200
    assert json.loads(body) == {"files": [{"file": "new/f.mp3", "queued": False}], "total": 1}
    _, _, body = call(server, "GET", "/api/stations/rock/library")
    assert json.loads(body)["total"] == 6
    assert call(server, "POST", "/api/stations/rock/library")[0] == 405


def test_a_playlist_lists_the_same_stream_on_other_servers_after_it() -> None:
    from pushsource.ops.control import playlist

    text = playlist("m3u", "Rock", "http://a/rock", "http://b/rock", "http://a/rock")
    assert text == "#EXTM3U\n#EXTINF:-1,Rock\nhttp://a/rock\n#EXTINF:-1,Rock\nhttp://b/rock\n"
    pls = playlist("pls", "Rock", "http://a/rock", "http://b/rock")
    assert pls.startswith("[playlist]\nNumberOfEntries=2\nFile1=http://a/rock\n")
    assert "File2=http://b/rock\nTitle2=Rock\nLength2=-1\nVersion=2\n" in pls


def test_an_action_refused_for_what_the_station_does_is_a_line_too(
    server: ControlServer, rock: FakeStation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pushsource")
    rock.fail = ControlError("alice is live: skip acts on the folder's tracks", 409)
    status, body = call_json(server, "POST", "/api/stations/rock/skip")
    assert status == 409 and body == {"error": "alice is live: skip acts on the folder's tracks"}
    told = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert told == [
        "station rock: refused skip: alice is live: skip acts on the folder's tracks"
        " (from 127.0.0.1)"
    ]
