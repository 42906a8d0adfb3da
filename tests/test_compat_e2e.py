"""Every server a station pushes to: the same checks against Icecast 2.4.4
(Debian 12's), Icecast 2.5.0 and icecast-kh, each real and on a stock config
(no ``<charset>``, no mounts of its own).

Each test runs once per server (the ``peer_server`` fixture, or a server of
its own where the test kills it) and, when it passes, marks its cell of the
README's compatibility table (``make compat`` prints it; see
tests/support/compat.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PushsourceProcess, StartPushsource
from tests.support.compat import passed
from tests.support.icecast import free_port
from tests.support.listener import Listener
from tests.support.media import Fixture, make_clean_mp3, make_titled_tracks
from tests.support.servers import PeerServer
from tests.test_live_e2e import run_dj, set_title, start_station, wait_port
from tests.test_reconnect_e2e import (
    RATE,
    SKIP_SLACK,
    assert_continues,
    assert_resumed,
    locate,
    state_env,
    wait_for_log,
)

pytestmark = pytest.mark.integration

#: Titles no server may bend: Latin-1 and beyond, an apostrophe, an emoji.
TITLES = [("Sigur Rós", "Hoppípolla · 東京"), ("Björk", "It's Oh So Quiet 🎧")]
#: Where a listener may first see a track's title, past the track's first byte:
#: our ICY interval, one of Icecast's 1400-byte blocks, the listener's own
#: interval (16000 on every server here) and a block of slack.
TITLE_SLACK = 1024 + 1400 + 16000 + 1400


def tracks(tmp_path: Path, seconds: float = 3.0) -> list[Fixture]:
    return make_titled_tracks(tmp_path / "music", TITLES, seconds)


def stream(
    start_pushsource: StartPushsource, tmp_path: Path, url: str, *extra: str
) -> PushsourceProcess:
    return start_pushsource(
        "stream", tmp_path / "music", url, "--once", *extra, env=state_env(tmp_path)
    )


def assert_heard_with_titles(listener: Listener, fixtures: list[Fixture]) -> None:
    """The listener heard the tracks' frames byte for byte to the end, and
    each title, byte-exact, at its track's start."""
    expected = b"".join(f.audio for f in fixtures)
    audio = bytes(listener.audio)
    start = locate(audio, expected)
    assert_continues(audio, expected, start, fixtures)
    titles = {title: at for at, title in reversed(listener.titles)}  # first arrival
    boundary = -start
    for fixture in fixtures:
        assert fixture.title in titles, (fixture.title, listener.titles)
        if boundary > 0:  # a track that started while the listener listened
            at = titles[fixture.title]
            assert boundary <= at <= boundary + TITLE_SLACK, (fixture.title, at, boundary)
        boundary += len(fixture.audio)
    assert listener.headers.get("icy-metaint"), listener.headers


def no_server_errors(server: PeerServer) -> None:
    """Icecast 2.5 logs EROR (and turns the mount red) for a title request it
    calls legacy; nothing here may cause one."""
    if server.kind == "2.5.0":
        # Not ours: 2.5 logs util_http_select_best for its 404 page, which the
        # test's listener gets while it waits for the mount.
        errors = [
            line
            for line in server.error_log().splitlines()
            if "EROR" in line and "util_http_select_best" not in line
        ]
        assert errors == [], errors


@pytest.fixture
def own_server(request: pytest.FixtureRequest) -> Iterator[PeerServer]:
    """A server of this test's own kind (param), to kill and restart."""
    server = PeerServer(request.param)
    try:
        yield server
    finally:
        server.close()


KINDS = pytest.mark.parametrize(
    "own_server", ["2.4.4", "2.5.0", "kh"], indirect=True, ids=lambda k: f"icecast-{k}"
)


def test_on_air_frames_and_titles_byte_exact(
    peer_server: PeerServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
) -> None:
    fixtures = tracks(tmp_path)
    with Listener(peer_server.port, unique_mount, connect_timeout=20) as listener:
        run = stream(start_pushsource, tmp_path, peer_server.source_url(unique_mount))
        listener.wait_for_title(fixtures[0].title or "", 15)
        # The server's own status shows it too; on a stock config (no
        # <charset>) it reads the title's bytes as ISO-8859-1 there, while
        # listeners get them as sent.
        # (Its statistics are a thread of their own: they may show it a
        # moment after a listener got it.)
        title = fixtures[0].title or ""
        expected = (title, title.encode().decode("latin-1"))
        deadline = time.monotonic() + 3.0
        while (shown := peer_server.title(unique_mount)) not in expected:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert shown in expected, (shown, title)
        assert run.wait(30) == 0, run.describe()
        listener.wait_closed(10)
    assert_heard_with_titles(listener, fixtures)
    assert "could not set the title" not in run.stderr
    no_server_errors(peer_server)
    passed(peer_server.kind, "handshake")
    passed(peer_server.kind, "titles")


def test_check_tells_right_and_wrong_passwords(
    peer_server: PeerServer, unique_mount: str, run_pushsource: object, tmp_path: Path
) -> None:
    (tmp_path / "music").mkdir()
    url = f"icecast://source@127.0.0.1:{peer_server.port}{unique_mount}"
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    station = 'folder = "music"\nurl = "{url}"\npassword = "{pw}"\n'
    good.write_text("[[station]]\n" + station.format(url=url, pw="hackme"), "utf-8")
    bad.write_text("[[station]]\n" + station.format(url=url, pw="wrong-pw-x"), "utf-8")
    done = run_pushsource("check", "--config", good, "-v")  # type: ignore[operator]
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r": ok: .* accepts the source$", done.stdout, re.M), done.stdout
    done = run_pushsource("check", "--config", bad)  # type: ignore[operator]
    assert done.returncode == 2, done.stdout + done.stderr
    assert "authentication failed" in done.stdout and "wrong-pw-x" not in done.stdout
    no_server_errors(peer_server)
    passed(peer_server.kind, "check")


def test_a_second_output_on_the_same_server(
    peer_server: PeerServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
) -> None:
    fixtures = tracks(tmp_path)
    second = unique_mount + "-two"
    with Listener(peer_server.port, second, connect_timeout=20) as listener:
        run = stream(
            start_pushsource,
            tmp_path,
            peer_server.source_url(unique_mount),
            "--output",
            peer_server.source_url(second),
        )
        assert run.wait(30) == 0, run.describe()
        listener.wait_closed(10)
    assert_heard_with_titles(listener, fixtures)
    passed(peer_server.kind, "second output")


def test_a_live_dj_takes_over(
    peer_server: PeerServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "music"
    [track] = make_titled_tracks(folder, [("Folder", "Long Ünïcode")], seconds=30)
    tone = tmp_path / "tone.mp3"
    live_audio = make_clean_mp3(tone, 4.0, freq=880)
    port = free_port()
    start_station(start_pushsource, peer_server, folder, unique_mount, port)  # type: ignore[arg-type]
    with Listener(peer_server.port, unique_mount, connect_timeout=20) as listener:
        listener.wait_for_title("Folder - Long Ünïcode", 20)
        wait_port(port)
        time.sleep(2)  # some of the folder first
        assert set_title(port, "Alice - Première 東京").startswith(b"HTTP/1.0 200 OK")
        dj = run_dj(tmp_path, "ffmpeg", port, tone)
        listener.wait_for_title("Alice - Première 東京", 15)
        assert dj.wait(20) == 0
        start = bytes(listener.audio).find(live_audio[:4096])
        assert start > 0, "the DJ's frames never reached the listener"
        listener.wait_for_audio(start + len(live_audio) + 16_000, 15)
        audio = bytes(listener.audio)
    assert live_audio in audio, "the DJ's frames differ on the way"
    titles = [t for _, t in listener.titles]
    assert titles.index("Alice - Première 東京") > titles.index("Folder - Long Ünïcode")
    assert track.audio[:16_000] in audio  # the folder's frames before the DJ's
    no_server_errors(peer_server)
    passed(peer_server.kind, "live DJ")


@KINDS
def test_kill_9_and_restart_resumes_the_same_track(
    own_server: PeerServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
) -> None:
    server = own_server
    server.start()
    fixtures = tracks(tmp_path, seconds=4.0)
    expected = b"".join(f.audio for f in fixtures)
    with Listener(server.port, unique_mount, connect_timeout=20) as first:
        run = stream(start_pushsource, tmp_path, server.source_url(unique_mount))
        first.wait_for_audio(int(1.5 * RATE), 15)
        server.kill()
        first.wait_closed(5)
    heard = len(first.audio)
    start = locate(bytes(first.audio), expected)
    assert bytes(first.audio) == expected[start : start + heard]
    heard += start
    wait_for_log(run, r"connection to 127\.0\.0\.1:\d+ lost.*\(attempt 1\)$", 5)
    time.sleep(1.0)
    server.restart()
    with Listener(server.port, unique_mount, connect_timeout=20) as second:
        assert run.wait(30) == 0, run.describe()
        second.wait_closed(10)
    log = run.stderr
    assert log.count(f"INFO playing {fixtures[0].title} ") == 1, log
    assert log.count(f"INFO playing {fixtures[1].title} ") == 1, log
    resumed = assert_resumed(bytes(second.audio), fixtures, heard, tmp_path)
    assert resumed <= heard + SKIP_SLACK, f"skipped {resumed - heard} bytes nobody heard"
    # The title again, first thing on the new connection, then the next one's.
    titles = [t for _, t in second.titles if t]  # a listener's first may be the server's ''
    assert titles[:1] == [fixtures[0].title] and fixtures[1].title in titles, titles
    no_server_errors(server)
    passed(server.kind, "reconnect")
