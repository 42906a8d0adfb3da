"""SHOUTcast v1 outputs against a real server: Debian's Icecast 2.4.4 with a
``<shoutcast-mount>``, which takes SHOUTcast v1 sources on its port + 1 and
their titles by ``/admin.cgi`` (PeerServer(..., shoutcast=True), mount /shout).

Measured there (and asserted below): a right password is answered
``OK2\\r\\nicy-caps:11\\r\\n\\r\\n``; a wrong one gets the connection closed
without a word; a second source on the mount gets ``OK2``, then an HTTP 403
"Mountpoint in use" after its icy-* lines. admin.cgi takes no charset: the
title's bytes go to listeners as sent (UTF-8), and the status reads them in
the mount's ``<charset>`` (ISO-8859-1 unless set).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import SECRET_PASSWORD, StartPushsource, register_secret, run_pushsource
from tests.support.compat import passed
from tests.support.listener import Listener
from tests.support.media import make_clean_mp3, make_titled_tracks
from tests.support.servers import PeerServer
from tests.test_listeners_e2e import metric
from tests.test_reconnect_e2e import (
    SKIP_SLACK,
    assert_resumed,
    reconnects,
    state_env,
    wait_for_log,
    wait_until,
)
from tests.test_web_e2e import free_port, get_json

pytestmark = pytest.mark.integration

MOUNT = "/shout"  # PeerServer's <shoutcast-mount>
UTF8_MOUNT = f"<mount><mount-name>{MOUNT}</mount-name><charset>UTF-8</charset></mount>"
TITLE = ("Sigur Rós", "東京")
WRONG_PASSWORD = "Wr0ng-sh0utcast-Pq9"
register_secret(WRONG_PASSWORD)


def shoutcast_url(server: PeerServer, path: str = MOUNT, password: str | None = None) -> str:
    secret = server.source_password if password is None else password
    return f"shoutcast://{quote(secret, safe='')}@127.0.0.1:{server.port}{path}"


def start_server(extra: str = "") -> PeerServer:
    server = PeerServer(
        "2.4.4",
        source_password=SECRET_PASSWORD,
        admin_password="adm1n",
        shoutcast=True,
        extra=extra,
    )
    server.start()
    return server


@pytest.fixture(scope="module")
def utf8_server() -> Iterator[PeerServer]:
    """Icecast 2.4.4 whose SHOUTcast mount says <charset>UTF-8</charset>."""
    server = start_server(UTF8_MOUNT)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def stock_server() -> Iterator[PeerServer]:
    """Icecast 2.4.4 with nothing but the <shoutcast-mount>."""
    server = start_server()
    try:
        yield server
    finally:
        server.close()


def wait_off_air(server: PeerServer) -> None:
    """The mount is free again (each test leaves it so for the next)."""
    wait_until(lambda: MOUNT not in server.mounts(), 10, f"{MOUNT} to be free")


def talk(port: int, data: bytes, timeout: float = 1.0) -> bytes:
    """Send data to port, return what comes back until a close or a quiet second."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        got = b""
        try:
            while chunk := sock.recv(4096):
                got += chunk
        except TimeoutError:
            return got + b"<quiet>"
        return got + b"<closed>"


def test_icecast_speaks_shoutcast_v1_on_port_plus_one(stock_server: PeerServer) -> None:
    """What the protocol module is built on, measured with a raw socket."""
    port = stock_server.shoutcast_port
    assert talk(port, WRONG_PASSWORD.encode() + b"\r\n") == b"<closed>"
    assert talk(port, SECRET_PASSWORD.encode() + b"\r\n") == b"OK2\r\nicy-caps:11\r\n\r\n<quiet>"


def test_a_folder_goes_on_air_byte_exact_with_its_utf8_titles(
    utf8_server: PeerServer, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    server = utf8_server
    tracks = make_titled_tracks(tmp_path / "music", [TITLE, ("Second", "Track")], 4.0)
    expected = b"".join(t.audio for t in tracks)
    with Listener(server.port, MOUNT, connect_timeout=20) as listener:
        run = start_pushsource(
            "stream", "--once", tmp_path / "music", shoutcast_url(server), env=state_env(tmp_path)
        )
        wait_until(
            lambda: server.title(MOUNT) == "Sigur Rós - 東京", 10, "the title in the status",
            run.describe,
        )  # fmt: skip
        assert run.wait(30) == 0, run.describe()
        listener.wait_closed(10)
    # From the first frame on, nothing lost (Icecast drops audio that comes
    # with the icy-* lines: pushsource waits for it to read them alone).
    assert bytes(listener.audio[: len(expected)]) == expected
    assert [title for _, title in listener.titles] == ["Sigur Rós - 東京", "Second - Track"]
    assert listener.blocks[0].startswith("StreamTitle='Sigur Rós - 東京';".encode())
    log = run.stderr
    assert "WARNING" not in log and "ERROR" not in log, log
    assert "playing Sigur Rós - 東京" in log
    wait_off_air(server)


def test_a_stock_icecast_shows_admin_titles_as_latin_1(
    stock_server: PeerServer, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    """admin.cgi has no charset parameter: with no <charset> on the mount,
    Icecast's status reads the UTF-8 title as ISO-8859-1; its listeners
    still get the bytes as sent."""
    server = stock_server
    tracks = make_titled_tracks(tmp_path / "music", [TITLE], 3.0)
    mojibake = "Sigur Rós - 東京".encode().decode("latin-1")
    with Listener(server.port, MOUNT, connect_timeout=20) as listener:
        # No path: pushsource calls the stream "/", Icecast puts it on /shout.
        run = start_pushsource(
            "stream", "--once", tmp_path / "music", shoutcast_url(server, ""),
            env=state_env(tmp_path),
        )  # fmt: skip
        wait_until(lambda: server.title(MOUNT) == mojibake, 10, "the title", run.describe)
        assert run.wait(30) == 0, run.describe()
        listener.wait_closed(10)
    assert bytes(listener.audio[: len(tracks[0].audio)]) == tracks[0].audio
    assert [title for _, title in listener.titles] == ["Sigur Rós - 東京"]
    assert listener.blocks[0].startswith("StreamTitle='Sigur Rós - 東京';".encode())
    wait_off_air(server)
    passed("shoutcast", "handshake")
    passed("shoutcast", "titles")


def test_a_wrong_password_exits_2_with_one_clear_line(
    stock_server: PeerServer, tmp_path: Path
) -> None:
    make_titled_tracks(tmp_path / "music", [TITLE], 1.0)
    started = time.monotonic()
    done = run_pushsource(
        "stream", "--once", tmp_path / "music",
        shoutcast_url(stock_server, password=WRONG_PASSWORD), env=state_env(tmp_path),
    )  # fmt: skip
    assert done.returncode == 2, done
    assert time.monotonic() - started < 15  # at once, not after retries
    port = stock_server.shoutcast_port
    assert done.stderr == (
        f"pushsource: error: authentication failed for the SHOUTcast source on "
        f"127.0.0.1:{port}: the server hung up on the password\n"
    ), done.stderr
    assert WRONG_PASSWORD not in done.stdout + done.stderr


def test_check_passes_with_the_right_password_and_says_no_to_a_wrong_one(
    stock_server: PeerServer, tmp_path: Path
) -> None:
    (tmp_path / "music").mkdir()
    config = tmp_path / "stations.toml"
    for password, status in ((SECRET_PASSWORD, 0), (WRONG_PASSWORD, 2)):
        config.write_text(
            f'[[station]]\nfolder = "music"\nurl = "shoutcast://127.0.0.1:{stock_server.port}"\n'
            f'password = "{password}"\n',
            "utf-8",
        )
        done = run_pushsource("check", "--config", config, "-v", env=state_env(tmp_path))
        assert done.returncode == status, done
        assert password not in done.stdout + done.stderr
        if status == 0:
            assert f"shoutcast://127.0.0.1:{stock_server.port} accepts the source" in done.stdout
        else:
            assert "authentication failed for the SHOUTcast source" in done.stdout
    wait_off_air(stock_server)
    passed("shoutcast", "check")


def test_a_second_source_on_the_mount_is_refused_as_in_use(
    stock_server: PeerServer, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    """Icecast says "Mountpoint in use" only after OK2 and the icy-* lines:
    the second source is refused before it goes on air, and retries."""
    make_titled_tracks(tmp_path / "music", [TITLE], 6.0)
    env = state_env(tmp_path)
    first = start_pushsource("stream", "--once", tmp_path / "music", shoutcast_url(stock_server))
    stock_server.wait_for_mount(MOUNT)
    second = start_pushsource(
        "-v", "stream", "--once", tmp_path / "music", shoutcast_url(stock_server), env=env
    )
    wait_for_log(second, r"mountpoint /shout is in use; reconnecting in .*\(attempt 1\)$", 10)
    assert "on air" not in second.stderr.lower(), second.describe()
    assert first.wait(30) == 0, first.describe()
    second.terminate()
    wait_off_air(stock_server)


@pytest.fixture
def own_server() -> Iterator[PeerServer]:
    """A server of this test's own, to kill and restart (started)."""
    server = start_server()
    try:
        yield server
    finally:
        server.close()


def test_kill_9_and_restart_resumes_the_same_track(
    own_server: PeerServer, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    server = own_server
    tracks = make_titled_tracks(
        tmp_path / "music", [("Killed", "first"), ("Killed", "second")], 4.0
    )
    expected = b"".join(t.audio for t in tracks)
    with Listener(server.port, MOUNT, connect_timeout=20) as first:
        run = start_pushsource(  # -v: every attempt is a debug line
            "-v", "stream", "--once", tmp_path / "music", shoutcast_url(server),
            env=state_env(tmp_path),
        )  # fmt: skip
        first.wait_for_audio(int(1.5 * 16_000), 15)
        server.kill()
        first.wait_closed(5)
    heard = len(first.audio)
    assert bytes(first.audio) == expected[:heard]
    source_port = server.shoutcast_port
    wait_for_log(run, rf"connection to 127\.0\.0\.1:{source_port} lost.*\(attempt 1\)$", 5)
    time.sleep(2.0)  # the outage
    server.start()
    with Listener(server.port, MOUNT, connect_timeout=20) as second:
        assert run.wait(30) == 0, run.describe()
        second.wait_closed(10)
    log = run.stderr
    found = reconnects(log)
    assert len(found) >= 2, log
    for r in found[1:]:
        assert re.fullmatch(rf"cannot connect to 127\.0\.0\.1:{source_port}: .+", r.why), log
    assert log.count("INFO playing Killed - first ") == 1, log
    assert log.count("INFO playing Killed - second ") == 1, log
    assert len(re.findall(r"INFO resuming Killed - first at about \d+:\d\d$", log, re.M)) == 1, log
    start = assert_resumed(bytes(second.audio), tracks, heard, tmp_path)
    assert start <= heard + SKIP_SLACK, f"skipped {start - heard} bytes nobody heard"
    second.wait_for_title("Killed - first", 1)  # sent again by admin.cgi
    second.wait_for_title("Killed - second", 1)
    print(f"\nSHOUTcast kill -9: the first listener had {heard} bytes, the second from {start}")
    passed("shoutcast", "reconnect")


def test_a_shoutcast_output_of_an_icecast_station(
    stock_server: PeerServer, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    """``[[station.output]]``: the station's own mount by PUT, the same audio
    and titles on the server's SHOUTcast mount, with the station's password
    (same server: nothing is sent elsewhere unasked)."""
    server = stock_server
    tracks = make_titled_tracks(tmp_path / "music", [TITLE, ("Second", "Track")], 3.0)
    expected = b"".join(t.audio for t in tracks)
    config = tmp_path / "stations.toml"
    config.write_text(
        f"""
[[station]]
folder = "music"
url = "icecast://source@127.0.0.1:{server.port}/main"
password = "{SECRET_PASSWORD}"
once = true

[[station.output]]
url = "shoutcast://127.0.0.1:{server.port}{MOUNT}"
""",
        "utf-8",
    )
    with (
        Listener(server.port, "/main", connect_timeout=20) as main,
        Listener(server.port, MOUNT, connect_timeout=20) as shout,
    ):
        run = start_pushsource("run", "--config", config, env=state_env(tmp_path))
        assert run.wait(30) == 0, run.describe()
        main.wait_closed(10)
        shout.wait_closed(10)
    for listener in (main, shout):
        assert bytes(listener.audio[: len(expected)]) == expected, listener.mount
        assert [t for _, t in listener.titles] == ["Sigur Rós - 東京", "Second - Track"]
    assert "WARNING" not in run.stderr and "ERROR" not in run.stderr, run.stderr
    wait_off_air(server)
    passed("shoutcast", "second output")


def test_the_api_counts_the_listeners_of_the_shoutcast_mount(
    stock_server: PeerServer, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    """The mount in the URL is the one the server's status lists."""
    server = stock_server
    (tmp_path / "music").mkdir()
    make_titled_tracks(tmp_path / "music", [TITLE], 30.0)
    port = free_port()
    config = tmp_path / "stations.toml"
    config.write_text(
        f"""
[control]
listen = "127.0.0.1:{port}"

[[station]]
id = "shout"
folder = "music"
url = "{shoutcast_url(server)}"
state = "state.json"
""",
        "utf-8",
    )
    run = start_pushsource("run", "--config", config, env=state_env(tmp_path))
    base = f"http://127.0.0.1:{port}"
    api = f"{base}/api/stations/shout"

    def listeners() -> object:
        try:
            return get_json(api)["listeners"]
        except OSError:
            return None

    wait_until(lambda: listeners() == 0, 30, "0 listeners in the API", run.describe)
    status = get_json(api)
    assert status["mount"] == MOUNT and status["listen_url"].endswith(f":{server.port}{MOUNT}")
    with Listener(server.port, MOUNT, connect_timeout=15) as listener:
        listener.wait_for_audio(4096, 10)
        server.wait_for_listeners(MOUNT, 1, timeout=5)
        wait_until(lambda: listeners() == 1, 15, "1 listener in the API", run.describe)
        assert metric(base, 'pushsource_listeners{station="shout"}') == 1.0
    run.terminate()
    wait_off_air(server)
    passed("shoutcast", "listener counts")


def test_a_live_dj_takes_over_a_shoutcast_station(
    utf8_server: PeerServer, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    from tests.test_live_e2e import DJ_PASSWORD, GRACE, run_dj, set_title, wait_port

    server = utf8_server
    folder = tmp_path / "music"
    [track] = make_titled_tracks(folder, [("Folder", "Long One")], seconds=30)
    tone = tmp_path / "tone.mp3"
    live_audio = make_clean_mp3(tone, 4.0, freq=880)
    port = free_port()
    register_secret(DJ_PASSWORD)
    run = start_pushsource(
        "stream", folder, shoutcast_url(server), "--live-listen", f"127.0.0.1:{port}",
        "--live-mount", "/live", "--live-user", f"alice:{DJ_PASSWORD}",
        "--live-grace", str(GRACE), env=state_env(tmp_path),
    )  # fmt: skip
    with Listener(server.port, MOUNT, connect_timeout=20) as listener:
        listener.wait_for_title("Folder - Long One", 20)
        wait_port(port)
        time.sleep(2)  # some of the folder first
        assert set_title(port, "Alice - Première 東京").startswith(b"HTTP/1.0 200 OK")
        dj = run_dj(tmp_path, "ffmpeg", port, tone)
        listener.wait_for_title("Alice - Première 東京", 15)  # by admin.cgi, UTF-8 as sent
        assert dj.wait(20) == 0
        start = bytes(listener.audio).find(live_audio[:4096])
        assert start > 0, "the DJ's frames never reached the listener"
        listener.wait_for_audio(start + len(live_audio) + 16_000, 15)
        audio = bytes(listener.audio)
    assert live_audio in audio, "the DJ's frames differ on the way"
    assert track.audio[:16_000] in audio  # the folder's frames before the DJ's
    run.terminate()
    assert run.wait(10) == 0, run.describe()
    wait_off_air(server)
    passed("shoutcast", "live DJ")
