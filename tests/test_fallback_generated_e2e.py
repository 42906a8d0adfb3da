"""The crash fallback set up for you, with a real icecast2 2.4.4: the icecast.xml
and silence files `make station` writes (pushsource.ops.icecastconf, the step
`make -n station` shows) and those `pushsource icecast-config` writes for two
stations of different formats keep a real listener connected through a
``kill -9`` of pushsource, hearing silence of its own stream's format; and
``pushsource check --icecast-config`` passes such a config and names a mount
whose file went missing."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pushsource.ops.icecastconf import silence
from tests.conftest import StartPushsource
from tests.support.icecast import DEFAULT_TEMPLATE, IcecastServer
from tests.support.listener import Listener
from tests.support.media import make_clean_mp3, walk_mpeg_frames
from tests.test_icecastconf import make_station_commands

pytestmark = pytest.mark.integration

Run = Callable[..., subprocess.CompletedProcess[str]]
OUTAGE = 3.0  # seconds the listener must stay after the kill


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pushsource-fallback-gen-"))  # icecast2 runs as nobody
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def start_icecast(config: Path, workdir: Path) -> IcecastServer:
    server = IcecastServer(config, workdir)
    try:
        server.start()
    except RuntimeError as error:  # icecast2 2.4.4 now and then dies of SIGSEGV starting
        if "exited with -11" not in str(error):
            raise
        server.start()
    return server


def frames(data: bytes) -> list[bytes]:
    found, _ = walk_mpeg_frames(data)
    ends = [pos for pos, _ in found] + [len(data)]
    return [data[a:b] for a, b in itertools.pairwise(ends)]


def stays_through_a_kill(
    proc: subprocess.Popen[bytes], listeners: dict[Listener, bytes]
) -> dict[Listener, int]:
    """kill -9 pushsource; each listener must stay OUTAGE seconds and get its
    silent frame (its format's). Returns the bytes each got meanwhile."""
    proc.kill()  # no goodbye: the source connections just die
    proc.wait(10)
    at = {listener: len(listener.audio) for listener in listeners}
    time.sleep(OUTAGE)
    got = {}
    for listener, silent in listeners.items():
        assert not listener.closed.is_set(), "a listener was dropped with the source"
        after = bytes(listener.audio[at[listener] :])
        assert silent in after, f"no silence of the stream's format in {len(after)} bytes"
        got[listener] = len(after)
    return got


def test_make_station_keeps_a_listener_through_a_kill_9(
    work: Path, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    """Set up as `make station` sets it up: its fallback step (from `make -n
    station`) on the shipped icecast.xml, then Icecast from what it wrote."""
    fallback, _station = make_station_commands()
    shutil.copy(DEFAULT_TEMPLATE, work / "icecast.xml")
    done = subprocess.run(
        [sys.executable, *fallback[1:]], cwd=work, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    config = work / fallback[fallback.index("--out") + 1]
    icecast = start_icecast(config, work / "icecast")
    try:
        music = tmp_path / "music"
        music.mkdir()
        make_clean_mp3(music / "tone.mp3", 30.0, freq=523)
        url = f"icecast://source:hackme@127.0.0.1:{icecast.port}/stream"
        first = start_pushsource("stream", music, url, "--state", tmp_path / "state.json")
        icecast.wait_for_mount("/stream", timeout=20)
        with Listener(icecast.port, "/stream", connect_timeout=20) as listener:
            listener.wait_connected(10)
            listener.wait_for_audio(64_000, 15)
            got = stays_through_a_kill(first.proc, {listener: frames(silence(44100, 2))[0]})
        # 320 kbps silence for 3 s, less what Icecast sends ahead: well over 32 kB.
        assert got[listener] > 32_000, got
        print(f"make station: {got[listener]} bytes of silence in the {OUTAGE:.0f} s after kill -9")
    finally:
        icecast.stop()


STATIONS = """
[[station]]
id = "music"
folder = "{music}"
url = "icecast://source:hackme@127.0.0.1:{port}/music"

[[station]]
id = "talk"
folder = "{talk}"
url = "icecast://source:hackme@127.0.0.1:{port}/talk"
samplerate = 48000
channels = 1
"""


def test_icecast_config_keeps_listeners_of_two_formats_through_a_kill_9(
    work: Path, start_pushsource: StartPushsource, run_pushsource: Run, tmp_path: Path
) -> None:
    music, talk = tmp_path / "music", tmp_path / "talk"
    music.mkdir()
    talk.mkdir()
    make_clean_mp3(music / "a.mp3", 30.0, freq=440)
    make_clean_mp3(talk / "b.mp3", 30.0, freq=660, samplerate=48000, channels=1, bitrate=64)
    # The port is known once Icecast runs; the mounts and formats before.
    stations = tmp_path / "stations.toml"
    stations.write_text(STATIONS.format(music=music, talk=talk, port=8000), "utf-8")
    config, web = work / "icecast.xml", work / "web"
    done = run_pushsource(
        "icecast-config", "--stations", stations, "--template", DEFAULT_TEMPLATE,
        "--out", config, "--webroot", web,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in web.glob("silence-*")) == [
        "silence-44100-2.mp3",
        "silence-48000-1.mp3",
    ]
    icecast = start_icecast(config, work / "icecast")
    try:
        stations.write_text(STATIONS.format(music=music, talk=talk, port=icecast.port), "utf-8")
        checked = run_pushsource("check", "--config", stations, "--icecast-config", config)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "every mount has its fallback" in checked.stdout
        run = start_pushsource("run", "--config", stations)
        for mount in ("/music", "/talk"):
            icecast.wait_for_mount(mount, timeout=20)
        with (
            Listener(icecast.port, "/music", connect_timeout=20) as on_music,
            Listener(icecast.port, "/talk", connect_timeout=20) as on_talk,
        ):
            for listener in (on_music, on_talk):
                listener.wait_connected(10)
                listener.wait_for_audio(16_000, 15)
            got = stays_through_a_kill(
                run.proc,
                {
                    on_music: frames(silence(44100, 2))[0],
                    on_talk: frames(silence(48000, 1))[0],
                },
            )
        print(
            f"icecast-config: {got[on_music]} bytes of 44.1 kHz stereo and {got[on_talk]} of "
            f"48 kHz mono silence in the {OUTAGE:.0f} s after kill -9"
        )
        # A file gone from the webroot: check names the station it would drop.
        (web / "silence-48000-1.mp3").unlink()
        checked = run_pushsource("check", "--config", stations, "--icecast-config", config)
        assert checked.returncode == 2, checked.stdout + checked.stderr
        lines = [line for line in checked.stdout.splitlines() if ": error: " in line]
        assert len(lines) == 1 and lines[0].startswith("talk: error: /talk: the fallback")
        assert "1 fallback problem" in checked.stdout.splitlines()[-1]
    finally:
        icecast.stop()
