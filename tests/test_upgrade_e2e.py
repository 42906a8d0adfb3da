"""SIGUSR2 and ``pushsource restart``: pushsource execs itself anew in place
(same PID), and the new image goes on with the old one's source connections
at their next byte: Icecast sees no new source, a listener hears every frame
once, in order, with no gap over 250 ms, and it decodes clean."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from pushsource.core.frames import END, Frame, FrameParser
from pushsource.ops.trial import encode_tone
from tests.conftest import PushsourceProcess, StartPushsource, run_pushsource
from tests.support.icecast import IcecastServer, free_port, temp_icecast
from tests.support.listener import Listener
from tests.support.media import decoder_errors

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The longest a listener may wait for bytes across a restart.
MOST_GAP = 0.25
#: Audio bytes a listener must hear after a restart: about 6 s at 128 kbps,
#: past the old image's frames (at most 3 s and the lead) into the new one's.
AFTER = 100_000


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.02)


def sweep(path: Path, seconds: float, low: int, high: int) -> bytes:
    """A sine sweep: every frame differs from every other, so a frame sent
    twice or left out shows. The file is nothing but its frames."""
    data = encode_tone(
        path,
        seconds,
        sound=("sine", f"{low}-{high}"),
        samplerate=44100,
        channels=2,
        lame_args=["-t", "-b", "128"],
    )
    an_hour_ago = time.time() - 3600
    os.utime(path, (an_hour_ago, an_hour_ago))  # settled: ready at once
    return data


def logins(server: IcecastServer, mount: str) -> int:
    """Source logins Icecast logged for ``mount`` (connection.c, at info)."""
    return sum(
        1
        for line in server.error_log().splitlines()
        if "Source logging in" in line and f'"{mount}"' in line
    )


def longest_gap(ear: Listener, after: float) -> float:
    """The longest wait between two arrivals from ``after`` (monotonic) on."""
    times = [t for t, _ in ear.arrivals if t >= after]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def assert_contiguous(heard: bytes, played: bytes) -> None:
    """The listener's bytes are one run of the files' frames: nothing sent
    twice, nothing left out (from its second KB: Icecast starts a listener
    anywhere in a frame)."""
    body = heard[2000:]
    start = played.find(body[:4000])
    assert start >= 0, "the listener's audio is not the files'"
    same = played[start : start + len(body)]
    assert len(same) == len(body), "the track ran out while the test listened"
    if same != body:
        where = next(n for n, (x, y) in enumerate(zip(same, body, strict=False)) if x != y)
        raise AssertionError(f"a frame repeated or left out at byte {where} of {len(body)}")


def decodes_clean(heard: bytes, tmp_path: Path, name: str) -> None:
    """ffmpeg -v error and mpg123 find nothing wrong in what the listener
    heard (from the station's first byte: it listened before it began), up
    to its last whole frame (the recording stops where the test stopped)."""
    parser = FrameParser()
    parser.feed(heard)
    parser.feed(b"")
    end = 0
    while (event := parser.next_event()) is not END:
        if isinstance(event, Frame):
            end = event.offset + len(event.data)
    heard = heard[:end]
    path = tmp_path / f"{name}.mp3"
    path.write_bytes(heard)
    errors = decoder_errors(path)
    if errors and os.environ.get("UPGRADE_DEBUG"):
        Path(f"/tmp/upgrade-{name}.mp3").write_bytes(heard)
    assert errors == ""


def restart_through(
    run: PushsourceProcess,
    ears: list[Listener],
    server: IcecastServer,
    mounts: list[str],
    *,
    times: int = 1,
    send: object = None,
    each: int = 1,
) -> float:
    """SIGUSR2 ``times`` in a row (each once the last was carried on), then
    enough audio; checks the PID and Icecast's logins. The longest gap heard."""
    pid = run.proc.pid
    before = [logins(server, mount) for mount in mounts]
    starts = [(server.source(mount) or {}).get("stream_start") for mount in mounts]
    signalled = time.monotonic()
    done = run.stderr.count("carried on:")
    for n in range(times):
        if send is None:
            run.proc.send_signal(signal.SIGUSR2)
        else:
            send()  # type: ignore[operator]
        want = done + (n + 1) * len(mounts) * each
        try:
            wait_for(lambda want=want: run.stderr.count("carried on:") >= want, 15, "new image")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{run.describe()}") from None
    for ear in ears:
        ear.wait_for_audio(len(ear.audio) + AFTER, 15)
    assert run.proc.poll() is None, run.describe()
    assert run.proc.pid == pid
    assert [logins(server, mount) for mount in mounts] == before, "a new source login"
    now = [(server.source(mount) or {}).get("stream_start") for mount in mounts]
    assert now == starts, "Icecast saw a new source"
    if os.environ.get("UPGRADE_DEBUG"):
        for ear in ears:
            times = [t for t, _ in ear.arrivals if t >= signalled - 1.0]
            big = [
                (round(a - signalled, 3), round(b - a, 3))
                for a, b in itertools.pairwise(times)
                if b - a > 0.09
            ]
            print("gaps (at, length):", big)
    return max(longest_gap(ear, signalled - 1.0) for ear in ears)


def test_sigusr2_keeps_the_pid_the_source_and_every_frame(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    music = tmp_path / "music"
    music.mkdir()
    played = sweep(music / "a.mp3", 14.0, 200, 4000) + sweep(music / "b.mp3", 14.0, 4000, 300)
    url = f"icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}"
    with Listener(icecast.port, unique_mount, connect_timeout=20) as ear:  # from the first byte
        run = start_pushsource(
            "stream", music, url, "--state", tmp_path / "state.json", "--cache", tmp_path, "--fresh"
        )
        ear.wait_for_audio(40_000, 20)
        gap = restart_through(run, [ear], icecast, [unique_mount])
        heard = bytes(ear.audio)
    print(f"longest gap across the restart: {gap * 1000:.0f} ms")
    assert gap <= MOST_GAP, gap
    assert_contiguous(heard, played)
    decodes_clean(heard, tmp_path, "heard")
    assert "--fresh: forgot" not in run.stderr.split("restarting in place")[1], "state forgotten"


def test_a_second_sigusr2_right_after_and_pushsource_restart(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    music = tmp_path / "music"
    music.mkdir()
    played = sweep(music / "a.mp3", 60.0, 300, 5000)
    url = f"icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}"
    with Listener(icecast.port, unique_mount, connect_timeout=20) as ear:
        run = start_pushsource(
            "stream", music, url, "--state", tmp_path / "s.json", "--cache", tmp_path
        )
        ear.wait_for_audio(30_000, 20)
        gap = restart_through(run, [ear], icecast, [unique_mount], times=2)

        def command() -> None:
            done = run_pushsource("restart", "--pid", str(run.proc.pid))
            assert done.returncode == 0, done.stderr
            assert f"sent SIGUSR2 to pushsource (PID {run.proc.pid})" in done.stdout

        gap = max(gap, restart_through(run, [ear], icecast, [unique_mount], send=command))

        def twice() -> None:
            # The second while the new image starts: kept, and done once it is up.
            execs = run.stderr.count("restarting in place")
            run.proc.send_signal(signal.SIGUSR2)
            wait_for(lambda: run.stderr.count("restarting in place") > execs, 10, "the exec")
            run.proc.send_signal(signal.SIGUSR2)

        gap = max(gap, restart_through(run, [ear], icecast, [unique_mount], send=twice, each=2))
        assert run.stderr.count("restarting in place") == 5
        heard = bytes(ear.audio)
    print(f"longest gap across the restart: {gap * 1000:.0f} ms")
    assert gap <= MOST_GAP, gap
    assert_contiguous(heard, played)
    decodes_clean(heard, tmp_path, "heard")


def _config(
    path: Path, port: int, mount: str, control: int, harbor: int, broken: bool = False
) -> None:
    stations = "".join(
        f"""
[[station]]
id = "{sid}"
folder = "{sid}"
url = "icecast://source:hackme@127.0.0.1:{port}{mount}-{sid}"
state = "{sid}.state.json"
cache = "cache-{sid}"
"""
        for sid in ("one", "two", "three")
    )
    stations += f'[station.live]\nlisten = "127.0.0.1:{harbor}"\nusers = {{ dj = "pw" }}\n'

    control_table = f'[control]\nlisten = "127.0.0.1:{control}"\n'
    path.write_text(control_table + stations + ("\n[[station]]\nid = 1\n" if broken else ""))


def _api_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/stations", timeout=1) as reply:
            json.load(reply)
        return True
    except OSError:
        return False


def test_run_with_three_stations_and_the_control_api(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    played = {}
    for n, sid in enumerate(("one", "two", "three")):
        (tmp_path / sid).mkdir()
        played[sid] = sweep(tmp_path / sid / f"{sid}.mp3", 40.0, 200 + 100 * n, 5000 - 300 * n)
    control, harbor = free_port(), free_port()
    config = tmp_path / "stations.toml"
    _config(config, icecast.port, unique_mount, control, harbor)
    mounts = [f"{unique_mount}-{sid}" for sid in played]
    with (
        Listener(icecast.port, mounts[0], connect_timeout=20) as one,
        Listener(icecast.port, mounts[1], connect_timeout=20) as two,
        Listener(icecast.port, mounts[2], connect_timeout=20) as three,
    ):
        run = start_pushsource("run", "--config", config)
        ears = [one, two, three]
        for ear in ears:
            ear.wait_for_audio(30_000, 20)
        wait_for(lambda: _api_up(control), 5, "the control API")

        def send() -> None:
            run.proc.send_signal(signal.SIGUSR2)
            # The control API answers again within 2 s of the exec; its socket
            # and the harbor's listen all along (a connection made during the
            # exec waits in the queue: never refused).
            try:
                wait_for(lambda: "restarting in place" in run.stderr, 10, "the exec")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{run.describe()}") from None
            execed = time.monotonic()
            early = [
                socket.create_connection(("127.0.0.1", p), timeout=2) for p in (control, harbor)
            ]
            wait_for(lambda: _api_up(control), 2, "the control API back")
            assert time.monotonic() - execed <= 2.0
            early[0].sendall(b"GET /api/stations HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            early[0].settimeout(2)
            assert b" 200 " in early[0].recv(100).split(b"\r\n")[0], "the queued request"
            for sock in early:
                sock.close()

        gap = restart_through(run, ears, icecast, mounts, send=send)

        # A config that does not check out: refused with one line, the old image goes on.
        _config(config, icecast.port, unique_mount, control, harbor, broken=True)
        heard_before = [len(ear.audio) for ear in ears]
        run.proc.send_signal(signal.SIGUSR2)
        wait_for(lambda: "restart refused:" in run.stderr, 30, "the refusal")
        for ear, had in zip(ears, heard_before, strict=True):
            ear.wait_for_audio(had + 30_000, 10)
        assert run.stderr.count("restarting in place") == 1
        refusal = [line for line in run.stderr.splitlines() if "restart refused:" in line]
        assert len(refusal) == 1, refusal
        assert _api_up(control)
        assert "cannot listen" not in run.stderr
        heard = [bytes(ear.audio) for ear in ears]
    print(f"longest gap across the restart: {gap * 1000:.0f} ms")
    assert gap <= MOST_GAP, gap
    for sid, audio in zip(played, heard, strict=True):
        assert_contiguous(audio, played[sid])
    decodes_clean(heard[0], tmp_path, "one")


def test_a_tls_connection_reconnects_and_goes_on(
    unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    """TLS state cannot cross an exec: that station logs in again, as after a
    drop, and goes on in its track (the listener, on plain HTTP, is moved to
    the fallback and back, or reconnects)."""
    music = tmp_path / "music"
    music.mkdir()
    played = sweep(music / "a.mp3", 30.0, 250, 4500)
    with temp_icecast("upgrade-tls", tls=True) as server:
        pem = server.certificate
        found = re.search(
            r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n",
            pem.read_text("ascii"),
            re.S,
        )
        assert found is not None
        ca = tmp_path / "ca.crt"
        ca.write_text(found.group(0), "ascii")
        env = {"SSL_CERT_FILE": str(ca), "REQUESTS_CA_BUNDLE": str(ca), "SSL_CERT_DIR": ""}
        url = f"https://source:hackme@127.0.0.1:{server.tls_port}{unique_mount}"
        run = start_pushsource("stream", music, url, "--state", tmp_path / "s.json", env=env)
        server.wait_for_mount(unique_mount, 20)
        wait_for(lambda: "playing a" in run.stderr, 10, "the track")
        time.sleep(2.0)
        before = logins(server, unique_mount)
        run.proc.send_signal(signal.SIGUSR2)
        wait_for(lambda: "restarting in place" in run.stderr, 15, "the exec")
        assert "0 stations carried on, 1 reconnect" in run.stderr, run.describe()
        wait_for(lambda: logins(server, unique_mount) == before + 1, 10, "the new login")
        wait_for(lambda: run.stderr.count("resuming a") >= 1, 10, "the track going on")
        with Listener(server.port, unique_mount, connect_timeout=10) as ear:
            ear.wait_for_audio(20_000, 10)
            heard = bytes(ear.audio)
        assert run.proc.poll() is None, run.describe()
    assert played.find(heard[4000:8000]) > 0, "not in the track"


def test_a_once_run_goes_on_and_plays_nothing_again(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    music = tmp_path / "music"
    music.mkdir()
    a = sweep(music / "a.mp3", 4.0, 300, 3000)
    played = a + sweep(music / "b.mp3", 12.0, 3000, 400)
    url = f"icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}"
    with Listener(icecast.port, unique_mount, connect_timeout=20) as ear:
        run = start_pushsource("stream", music, url, "--once")
        ear.wait_for_audio(len(a) + 16_000, 20)  # b under way: a played before the restart
        restart_through(run, [ear], icecast, [unique_mount])
        assert run.wait(30) == 0, run.describe()
        ear.wait_closed(10)
        heard = bytes(ear.audio)
    # a, b, then the end: a is not played again after the restart.
    assert_contiguous(heard[: len(played)], played)
    assert heard.count(a[20_000:24_000]) == 1
    assert run.stderr.count("playing a") == 1, run.stderr
