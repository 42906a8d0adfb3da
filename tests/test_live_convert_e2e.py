"""Any encoder's format, end to end: real ffmpeg DJs sending MP3 at 48 kHz mono,
Ogg Vorbis, Ogg Opus and AAC to pushsource's live input are converted live to
the station's 44.1 kHz stereo MP3; a real listener on a real icecast2 hears
the DJ's 1 kHz tone in frames that are all 44.1 kHz stereo and decode without
error, then the folder again. What libvlc cannot convert is refused with a
status and a line the encoder shows."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import random
import re
import struct
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from pushsource.core.frames import END, NEED_DATA, Frame, FrameParser
from tests.conftest import StartPushsource
from tests.support.icecast import IcecastServer, free_port
from tests.support.listener import Listener
from tests.support.media import decode_mp3, make_clean_mp3, make_titled_tracks
from tests.test_live_e2e import (
    DJ_PASSWORD,
    GRACE,
    run_dj,
    set_title,
    start_station,
    wait_port,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RATE = 44100
STEP = 0.25  # seconds per window of the listener's recording
FOLDER_TONE = 440  # make_titled_tracks' first track

#: ffmpeg's codec options and the Content-Type and muxer it sends them with.
CODECS = {
    "mp3-48k-mono": (["-ac", "1", "-c:a", "libmp3lame", "-b:a", "64k"], "audio/mpeg", "mp3"),
    "vorbis": (["-ac", "2", "-c:a", "libvorbis", "-b:a", "128k"], "audio/ogg", "ogg"),
    "opus": (["-ac", "2", "-c:a", "libopus", "-b:a", "96k"], "audio/ogg", "ogg"),
    "aac": (["-ac", "2", "-c:a", "aac", "-b:a", "128k"], "audio/aac", "adts"),
}


def ffmpeg_dj(port: int, codec: str, seconds: float) -> subprocess.Popen[bytes]:
    """An ffmpeg DJ sending a 1 kHz tone made at 48 kHz, in real time."""
    options, content_type, muxer = CODECS[codec]
    source = f"sine=frequency=1000:sample_rate=48000:duration={seconds}"
    url = f"icecast://alice:{DJ_PASSWORD}@127.0.0.1:{port}/live"
    return subprocess.Popen(
        ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", source, *options,
         "-content_type", content_type, "-f", muxer, url],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def frame_formats(stream: bytes) -> tuple[set[tuple[int, int]], int]:
    """The (sample rate, channels) of every MPEG frame in the recording, and how
    many frames; anything but the cut first bytes that is not a frame fails."""
    parser = FrameParser()
    parser.feed(stream)
    parser.feed(b"")
    formats: set[tuple[int, int]] = set()
    frames = 0
    while (event := parser.next_event()) is not END:
        assert event is not NEED_DATA
        if isinstance(event, Frame):
            formats.add((event.header.sample_rate, event.header.channels))
            frames += 1
        else:  # the listener joined, and left, mid-frame: only the two ends are cut
            at_end = event.offset + event.length == len(stream)
            assert (frames == 0 or at_end) and event.length < 3000, event
    return formats, frames


def tones(pcm: bytes, channels: int) -> list[tuple[float, float]]:
    """(frequency by zero crossings, RMS level) of the left channel, per STEP s."""
    left = struct.unpack(f"<{len(pcm) // 2}h", pcm)[::channels]
    size = int(RATE * STEP)
    out = []
    for at in range(0, len(left) - size + 1, size):
        window = left[at : at + size]
        crossings = sum(1 for a, b in itertools.pairwise(window) if (a < 0) != (b < 0))
        level = math.sqrt(sum(v * v for v in window) / size) / 32768
        out.append((crossings / 2 / STEP, level))
    return out


def longest_run(windows: list[tuple[float, float]], freq: float) -> tuple[int, int]:
    """The longest run of windows holding ``freq`` (start index, length)."""
    best, start, run = (0, 0), 0, 0
    for i, (f, level) in enumerate(windows):
        if abs(f - freq) <= freq * 0.02 and level > 0.02:
            if run == 0:
                start = i
            run += 1
            best = max(best, (start, run), key=lambda r: r[1])
        else:
            run = 0
    return best


def timeline(windows: list[tuple[float, float]]) -> str:
    """The recording in words, for failures: "F12 T40 S4 F8": runs of folder
    tone, DJ tone, silence and anything else (?), in windows of STEP s."""
    runs: list[list[object]] = []
    for f, level in windows:
        mark = "S" if level <= 0.02 else "T" if abs(f - 1000) <= 20 else "?"
        if mark == "?" and abs(f - FOLDER_TONE) <= 9:
            mark = "F"
        if runs and runs[-1][0] == mark:
            runs[-1][1] = int(str(runs[-1][1])) + 1
        else:
            runs.append([mark, 1])
    return " ".join(f"{m}{n}" for m, n in runs)


def dj_set(
    tmp_path: Path,
    icecast: IcecastServer,
    mount: str,
    start_pushsource: StartPushsource,
    codec: str,
    seconds: float,
    launch: Callable[[int], subprocess.Popen[bytes]] | None = None,
    title: str = "Alice - Tone",
    during: Callable[[], None] | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[bytes, list[str], str]:
    """Folder, then an ffmpeg DJ in ``codec`` (or ``launch(port)``'s) with a
    title, then the folder back: the listener's recording, the titles it saw,
    and pushsource's log."""
    folder = tmp_path / "music"
    make_titled_tracks(folder, [("Folder", "Long One")], seconds=60)
    port = free_port()
    start_station(start_pushsource, icecast, folder, mount, port, *extra)
    with Listener(icecast.port, mount) as listener:
        listener.wait_for_title("Folder - Long One", 20)
        wait_port(port)
        time.sleep(2)  # some of the folder first
        if launch is None:  # (ezstream sends its own)
            assert set_title(port, title).startswith(b"HTTP/1.0 200 OK")
        dj = launch(port) if launch is not None else ffmpeg_dj(port, codec, seconds)
        listener.wait_for_title(title, 10)
        if during is not None:
            during()
        assert dj.wait(seconds + 15) == 0, dj.stderr.read() if dj.stderr else ""
        deadline = time.monotonic() + GRACE + 15  # the folder's title again, after the DJ's
        while [t for _, t in listener.titles if t][-1] != "Folder - Long One":
            assert time.monotonic() < deadline, listener.titles
            time.sleep(0.1)
        size = len(listener.audio)
        listener.wait_for_audio(size + 6 * 16_000, 15)  # the folder back, for seconds
        assert not listener.closed.is_set()
        audio = bytes(listener.audio)
        titles = [t for _, t in listener.titles if t]
    log = "".join(p.read_text() for p in tmp_path.glob("pushsource-*.err"))
    return audio, titles, log


def check_set(
    audio: bytes, titles: list[str], tmp_path: Path, hold: float, title: str = "Alice - Tone"
) -> None:
    formats, frames = frame_formats(audio)
    assert formats == {(RATE, 2)} and frames > 15 * RATE / 1152
    decoded = decode_mp3(audio, tmp_path)
    assert decoded.errors == "" and decoded.channels == 2
    windows = tones(decoded.pcm, decoded.channels)
    start, run = longest_run(windows, 1000)
    assert run * STEP >= hold, f"the DJ's tone held {run * STEP} s: {timeline(windows)}"
    before = longest_run(windows[:start], FOLDER_TONE)[1]
    after = longest_run(windows[start + run :], FOLDER_TONE)[1]
    assert before * STEP >= 1.5 and after * STEP >= 2, timeline(windows)
    i = titles.index(title)
    assert titles[i:] == [title, "Folder - Long One"]


def test_an_ffmpeg_dj_at_48k_mono_is_heard_at_44k1_stereo_and_the_folder_comes_back(
    tmp_path: Path, icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource
) -> None:
    control = free_port()
    seen: list[dict[str, object]] = []

    def look() -> None:  # what the control API says during the set
        with urllib.request.urlopen(f"http://127.0.0.1:{control}/api/stations", timeout=5) as r:
            seen.append(json.load(r)["stations"][0]["live"])

    audio, titles, log = dj_set(
        tmp_path, icecast, unique_mount, start_pushsource, "mp3-48k-mono", 13,
        during=look, extra=("--control", f"127.0.0.1:{control}"),
    )  # fmt: skip
    [live] = seen
    assert live["on_air"] and live["input"] == "MP3 at 48000 Hz mono, converted"
    assert live["format"] == {"bitrate": 128, "samplerate": 44100, "channels": 2}
    check_set(audio, titles, tmp_path, hold=10)
    assert "sends MP3 at 48000 Hz mono: converting it" in log
    assert "first converted frames" in log and "hanging up" not in log


def test_ezstream_at_22k05_mono_is_converted_not_cut(
    tmp_path: Path, icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource
) -> None:
    """libshout is answered 200 before its first byte: the format it sends
    must be taken then (it was cut, and the encoder saw only a broken pipe)."""
    tone = tmp_path / "tone.mp3"
    make_clean_mp3(tone, 9.0, freq=1000, samplerate=22050, channels=1, bitrate=64)
    audio, titles, log = dj_set(
        tmp_path, icecast, unique_mount, start_pushsource, "", 9,
        launch=lambda port: run_dj(tmp_path, "ezstream", port, tone), title=" - ",
    )  # fmt: skip
    print(log)
    check_set(audio, titles, tmp_path, hold=6, title=" - ")  # ezstream's: no tags
    assert "sends MP3 at 22050 Hz mono: converting it" in log


@pytest.mark.parametrize("codec", ["vorbis", "opus", "aac"])
def test_ogg_vorbis_opus_and_aac_from_ffmpeg_are_converted(
    codec: str,
    tmp_path: Path,
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
) -> None:
    audio, titles, log = dj_set(tmp_path, icecast, unique_mount, start_pushsource, codec, 12)
    print(log)
    check_set(audio, titles, tmp_path, hold=5)
    assert "converting it" in log


def curl_dj(port: int, content_type: str, body: bytes) -> str:
    """curl -T - (chunked, Expect: 100-continue) streaming ``body`` as
    ``content_type`` at about 200 KB/s, as an encoder would, until curl stops;
    what curl prints: the answer's body, then its status."""
    curl = subprocess.Popen(
        ["curl", "-sS", "-T", "-", "-H", f"Content-Type: {content_type}",
         "-u", f"alice:{DJ_PASSWORD}", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}/live"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert curl.stdin is not None and curl.stdout is not None
    with contextlib.suppress(BrokenPipeError):
        for at in range(0, len(body), 4096):
            if curl.poll() is not None:
                break
            curl.stdin.write(body[at : at + 4096])
            curl.stdin.flush()
            time.sleep(0.02)
        curl.stdin.close()
    out = curl.stdout.read().decode()
    curl.wait(10)
    return out


def test_what_cannot_be_converted_is_refused_with_a_status_and_a_line_the_encoder_shows(
    tmp_path: Path, icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource
) -> None:
    folder = tmp_path / "music"
    make_titled_tracks(folder, [("Folder", "Long One")], seconds=30)
    port = free_port()
    start_station(start_pushsource, icecast, folder, unique_mount, port)
    wait_port(port)
    noise = bytes(random.Random(7).getrandbits(8) for _ in range(200_000))
    noise = noise.replace(b"\xff", b"\x00")  # no frame sync at all, by chance or not
    with Listener(icecast.port, unique_mount) as listener:
        listener.wait_for_title("Folder - Long One", 20)
        # A type libvlc cannot decode: refused in the head, before any answer.
        answer = curl_dj(port, "video/mp4", noise)
        assert answer.endswith("\n415"), answer
        assert "not video/mp4\n\n415" in answer and answer.count("\n") == 2
        # Labelled MP3, but no audio in it: a 415 after the 100 Continue (the
        # encoder waits for the final answer), never a 200 and a broken pipe.
        answer = curl_dj(port, "audio/mpeg", noise)
        assert re.fullmatch(r"no audio this station can take in the first \d+ bytes\n\n415", answer)
        # An Ogg page, then garbage: libvlc tries and finds nothing to decode.
        answer = curl_dj(port, "application/ogg", b"OggS" + noise * 10)
        assert answer.endswith("\n415") and "no audio came out of it" in answer, answer
        time.sleep(1)
        titles = [t for _, t in listener.titles if t]
        assert not listener.closed.is_set()
    # The folder went on: no DJ ever took over.
    assert set(titles) == {"Folder - Long One"}
    log = "".join(p.read_text() for p in tmp_path.glob("pushsource-*.err"))
    assert "takes over" not in log
    assert "live: refused 127.0.0.1: alice: this station takes" in log  # (a line a minute)
    assert log.count("live: refused alice:") == 2
