"""Splice-clean cuts end to end: a real icecast2, the real CLI, a real
listener's recording decoded by mpg123 and ffmpeg with not one complaint,
wherever the stream switched: a DJ (ffmpeg) taking the station over and
handing it back (the folder goes on mid-track), Icecast killed and restarted
(the station goes on mid-track on a new connection), a skip.

The tracks are noise, which keeps lame's bit reservoir full: cut anywhere, the
frames after the cut point back into bytes before it.

A listener who joins a stream already going gets Icecast's burst from wherever
it happens to start, and a decoder may rightly stumble on the first frames of
that (not a cut of ours). So each listener here hears its stream from the
first byte: it is started before the station (or before Icecast is back), and
asks until the mount is there; the recording is checked to start where the
track (or the connection) does.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import StartPushsource
from tests.support.icecast import IcecastServer, free_port
from tests.support.listener import Listener
from tests.support.media import (
    decoder_errors,
    make_noise_mp3,
    reservoir_begin,
    side_info_span,
    walk_mpeg_frames,
)
from tests.test_live_e2e import GRACE, run_dj, start_station, wait_port
from tests.test_reconnect_e2e import RATE, own_icecast, state_env, url, wait_for_log

__all__ = ["own_icecast"]  # a fixture, used by name

pytestmark = pytest.mark.integration


def overreach(data: bytes) -> list[int]:
    """The frames of ``data`` (frames back to back from its first byte) whose
    main data starts before the data does: main_data_begin over the main-data
    bytes of the frames before them in it."""
    frames, _ = walk_mpeg_frames(data)
    got, out = 0, []
    for n, (pos, header) in enumerate(frames):
        if reservoir_begin(data, pos) > got:
            out.append(n)
        got += header.length - side_info_span(data, pos)[1]
    return out


def whole_frames(data: bytes) -> bytes:
    """``data`` up to the end of its last whole frame (from a frame at byte 0)."""
    return data[: walk_mpeg_frames(data)[1]]


def settled(*paths: Path) -> None:
    """Files an hour old: the station goes on air with the first, not silence."""
    an_hour_ago = time.time() - 3600
    for path in paths:
        os.utime(path, (an_hour_ago, an_hour_ago))


def decodes_cleanly(data: bytes, path: Path) -> None:
    path.write_bytes(data)
    assert decoder_errors(path) == ""


def test_a_dj_takes_over_and_hands_back_and_the_recording_decodes_cleanly(
    tmp_path: Path,
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
) -> None:
    folder = tmp_path / "music"
    folder.mkdir()
    track = make_noise_mp3(folder / "noise.mp3", 30.0)
    settled(folder / "noise.mp3")
    live_file = tmp_path / "live.mp3"
    live = make_noise_mp3(live_file, 3.0, color="whitenoise")
    port = free_port()
    with Listener(icecast.port, unique_mount, connect_timeout=20) as listener:
        start_station(start_pushsource, icecast, folder, unique_mount, port)
        listener.wait_for_audio(int(1.5 * RATE), 20)
        wait_port(port)
        dj = run_dj(tmp_path, "ffmpeg", port, live_file)
        assert dj.wait(20) == 0
        # The grace (silence), then the folder again mid-track, for a second or so.
        listener.wait_for_audio(len(listener.audio) + int((GRACE + 1.5) * RATE), 15)
        assert not listener.closed.is_set()
        audio = bytes(listener.audio)
    begin = audio.find(track[:2048])
    assert begin >= 0, "the listener did not hear the station from its first frame"
    audio = audio[begin:]
    assert live[8000:12000] in audio, "the DJ was never on air"
    tail = whole_frames(audio)[-6000:]
    assert tail in track and track.index(tail) > 3 * RATE, "the folder did not take back"
    decodes_cleanly(whole_frames(audio), tmp_path / "recording.mp3")


def test_icecast_killed_and_restarted_the_track_goes_on_cleanly(
    own_icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
) -> None:
    server = own_icecast
    server.start()
    folder = tmp_path / "music"
    folder.mkdir()
    track = make_noise_mp3(folder / "noise.mp3", 20.0)
    settled(folder / "noise.mp3")
    with Listener(server.port, unique_mount, connect_timeout=20) as first:
        run = start_pushsource(
            "stream", folder, url(server.port, unique_mount), env=state_env(tmp_path)
        )
        first.wait_for_audio(int(1.5 * RATE), 15)
        server.kill()
        first.wait_closed(5)
    wait_for_log(run, r"connection to 127\.0\.0\.1:\d+ lost.*\(attempt 1\)$", 5)
    time.sleep(1.0)
    server.start()
    # Asking until the mount is there, the listener gets Icecast's burst from
    # the new connection's first byte.
    with Listener(server.port, unique_mount, connect_timeout=20) as second:
        second.wait_for_audio(2 * RATE, 15)
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait(15) == 0, run.describe()
    before, after = whole_frames(bytes(first.audio)), whole_frames(bytes(second.audio))
    assert track.startswith(before)
    assert after[8000:12000] in track and track.index(after[8000:12000]) > RATE, "not mid-track"
    # No frame of the new connection points before its first byte...
    assert overreach(after) == []
    decodes_cleanly(after, tmp_path / "after.mp3")
    # ...and a player that heard both, one after the other, decodes them cleanly too.
    decodes_cleanly(before + after, tmp_path / "across.mp3")


def test_a_skip_decodes_cleanly(
    tmp_path: Path,
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
) -> None:
    folder = tmp_path / "music"
    folder.mkdir()
    first = make_noise_mp3(folder / "a.mp3", 20.0)
    second = make_noise_mp3(folder / "b.mp3", 6.0, color="brownnoise")
    settled(folder / "a.mp3", folder / "b.mp3")
    with Listener(icecast.port, unique_mount, connect_timeout=20) as listener:
        run = start_pushsource(
            "stream",
            folder,
            url(icecast.port, unique_mount),
            "--once",
            env=state_env(tmp_path),
        )
        listener.wait_for_audio(int(1.5 * RATE), 20)
        run.proc.send_signal(signal.SIGUSR1)
        listener.wait_for_title("b", 10)
        listener.wait_for_audio(len(listener.audio) + 2 * RATE, 15)
        audio = bytes(listener.audio)
    run.proc.send_signal(signal.SIGTERM)
    run.wait(15)
    begin = audio.find(first[:2048])
    assert begin >= 0, "the listener did not hear the station from its first frame"
    audio = whole_frames(audio[begin:])
    cut = audio.index(second[:20_000])  # the next track from its first frame, untouched
    assert cut < 4 * RATE and first.startswith(audio[:cut])
    decodes_cleanly(audio, tmp_path / "recording.mp3")
