"""A DJ set recorded, end to end (issue 22, item 4): a real icecast2,
``pushsource stream --live-record``, a real ffmpeg DJ with a title for a few
seconds and a real listener. The file decodes cleanly, holds exactly the bytes
the listener heard from the DJ's takeover to the folder's return (Icecast
relays what it got), and the history links to it, served by the control API."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from mutagen.id3 import ID3

from pushsource.core.frames import END, Frame, FrameParser
from tests.conftest import PushsourceProcess, StartPushsource
from tests.support.icecast import IcecastServer, free_port
from tests.support.listener import Listener
from tests.support.media import make_clean_mp3, make_titled_tracks, unmend
from tests.test_live_e2e import GRACE, api, run_dj, set_title, start_station, wait_port
from tests.test_record import frames_of

pytestmark = pytest.mark.integration

FRAME = 1152 / 44100


def test_a_set_is_recorded_as_the_listener_heard_it_and_the_history_links_it(
    tmp_path: Path,
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
) -> None:
    folder = tmp_path / "music"
    [track] = make_titled_tracks(folder, [("Folder", "Long One")], seconds=40)
    tone = tmp_path / "tone.mp3"
    dj_audio = make_clean_mp3(tone, 5.0, freq=880)
    port, control = free_port(), free_port()
    sets = tmp_path / "sets"
    started: list[PushsourceProcess] = []

    def start(*args: str | Path, env: dict[str, str] | None = None) -> PushsourceProcess:
        started.append(start_pushsource(*args, env=env))
        return started[-1]

    start_station(
        start,
        icecast,
        folder,
        unique_mount,
        port,
        "--control",
        f"127.0.0.1:{control}",
        "--live-record",
        str(sets / "{station}/{start}-{user}.mp3"),
        env={"PUSHSOURCE_TOKEN": "kick-T0ken-x"},
    )
    base = f"http://127.0.0.1:{control}"
    with Listener(icecast.port, unique_mount) as listener:
        listener.wait_for_title("Folder - Long One", 20)
        wait_port(port)
        time.sleep(2)  # some of the folder first
        assert set_title(port, "Alice - Recorded Tune").startswith(b"HTTP/1.0 200 OK")
        dj = run_dj(tmp_path, "ffmpeg", port, tone)
        listener.wait_for_title("Alice - Recorded Tune", 10)
        assert dj.wait(20) == 0
        listener.wait_for_title("Folder - Long One", 10)  # the grace is over
        start = bytes(listener.audio).find(dj_audio[4096:8192])
        assert start > 0, "the DJ's frames never reached the listener"
        listener.wait_for_audio(start + len(dj_audio) + 64_000, 15)
        heard = bytes(listener.audio)
    _, listing = api(base + "/api/stations", "")
    [status] = listing["stations"]  # type: ignore[misc]
    entry = next(e for e in status["history"] if e["title"] == "Alice - Recorded Tune")
    [path] = (sets / status["id"]).iterdir()
    assert entry["live"] == "alice" and entry["recording"] == str(path)
    assert path.name.endswith("Z-alice.mp3")
    # It decodes cleanly.
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert decoded.returncode == 0 and decoded.stderr == "", decoded.stderr
    # Its frames are what the listener heard of the set, from the frame after
    # the folder's last before the takeover to the frame before the folder's
    # first after it: nothing missing, nothing more.
    audio = frames_of(path)
    cut = heard.index(audio)
    prefix = heard[:cut]
    played = prefix[prefix.find(track.audio[:2048]) :]
    assert len(played) > 20_000 and track.audio.startswith(played)
    resumed = track.audio[len(played) :][:20_000]
    assert unmend(heard[cut + len(audio) :], resumed).startswith(resumed)
    # Its length: the DJ's audio and the grace after it (within the lead).
    parser = FrameParser()
    parser.feed(audio)
    parser.feed(b"")
    frames = []
    while (event := parser.next_event()) is not END:
        assert isinstance(event, Frame), f"not a frame in the recording: {event}"
        frames.append(event)
    assert sum(len(f.data) for f in frames) == len(audio)  # frames, nothing else
    dj_frames = sum(1 for f in frames if f.data in dj_audio)
    seconds = len(frames) * FRAME
    assert dj_frames * FRAME > 4.5  # the DJ's, then the grace's silence
    assert 5.0 + GRACE - 0.6 < seconds < 5.0 + GRACE + 0.6, seconds
    # The history's link serves it, byte for byte.
    with urllib.request.urlopen(base + entry["recording_url"], timeout=10) as reply:
        assert reply.headers["Content-Type"] == "audio/mpeg"
        assert reply.read() == path.read_bytes()
    # Its tag, finished when the set ended, and a line at each end of it.
    tag = ID3(path)
    assert str(tag["TIT2"]) == "Alice - Recorded Tune" and str(tag["TPE1"]) == "alice"
    log = started[0].stderr
    assert f"recording alice's set to {path}" in log and f"recorded alice's set: {path}" in log
