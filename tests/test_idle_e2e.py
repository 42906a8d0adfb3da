"""What a station does when its queue runs dry, end to end against a real
icecast2: ``--idle silence`` keeps the mount and its listeners with silent
frames, ``--idle loop`` replays the library (``--shuffle``: in random order,
no track twice in a row), ``--idle stop`` closes the stream until a file
arrives. Files are dropped in the way a careful copier does it: written under
a hidden name, then renamed into place.

Every track is a ``lame -t`` MP3 in the station format, so it passes through
byte for byte and the recording tells exactly what played, silence included.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import PushsourceProcess, StartPushsource
from tests.support.icecast import IcecastServer
from tests.support.listener import Listener
from tests.support.media import (
    Tagged,
    decode_mp3,
    make_tagged_audio,
    mpeg_header_at,
    walk_mpeg_frames,
)

pytestmark = pytest.mark.integration

#: Long enough that each title reaches the listener (ICY metadata comes every
#: 16000 audio bytes, about 1 s at 128 kbps).
SECONDS = 2.5
#: Longer than Icecast's <source-timeout> (10 s).
IDLE = 12.0
#: From the rename of a file into the folder to the first byte of its audio
#: at the listener: one batch (100 ms) plus the watcher, the cue on the
#: workers and Icecast's 1400-byte relay blocks.
DROP_TO_AIR = 1.5
STATION = "Idle Test Radio"
SILENCE = "silence"


def source_url(icecast: IcecastServer, mount: str) -> str:
    return f"icecast://source:hackme@127.0.0.1:{icecast.port}{mount}"


def track(folder: Path, name: str, title: str, freq: int, seconds: float = SECONDS) -> Tagged:
    """A tagged MP3 already in the folder when the station starts (old enough
    to count as complete at once)."""
    made = make_tagged_audio(folder / name, seconds, artist="Idle", title=title, freq=freq)
    old = time.time() - 60
    os.utime(made.path, (old, old))
    return made


def drop_in(
    folder: Path, name: str, title: str, freq: int, seconds: float = SECONDS
) -> tuple[Tagged, float]:
    """Write a tagged MP3 under a hidden name, rename it into place; the file
    and time.monotonic() just before the rename."""
    hidden = folder / f".incoming-{name}"
    made = make_tagged_audio(hidden, seconds, artist="Idle", title=title, freq=freq)
    target = folder / name
    renamed_at = time.monotonic()
    os.rename(hidden, target)
    return replace(made, path=target), renamed_at


def frames_of(made: Tagged) -> bytes:
    assert made.audio is not None, made.path
    return made.audio


def distinct_titles(titles: list[tuple[int, str]]) -> list[str]:
    seen: list[str] = []
    for _, title in titles:
        if not seen or seen[-1] != title:
            seen.append(title)
    return seen


def play_sequence(audio: bytes, tracks: dict[str, bytes]) -> list[str]:
    """What a recording holds, in order: a track's name for each whole copy of
    its frames, ``name…`` for a copy cut short (by a stop, or where the
    recording ends), "silence" for each run of silent frames (a header and
    nothing but zero bytes), "other" for any other frames and "junk" for
    bytes that are not a frame."""
    sequence: list[str] = []
    pos = 0
    while pos < len(audio):
        name = next((n for n, frames in tracks.items() if audio.startswith(frames, pos)), None)
        if name is not None:
            sequence.append(name)
            pos += len(tracks[name])
            continue
        header = mpeg_header_at(audio, pos)
        if header is None:
            sequence.append("junk")
            break
        frame = audio[pos : pos + header.length]
        if frame[4:].count(0) == len(frame) - 4:
            if not sequence or sequence[-1] != SILENCE:
                sequence.append(SILENCE)
            pos += header.length
            continue
        cut = max(tracks, key=lambda n: _common_prefix(audio, pos, tracks[n]))
        whole_frames = _frame_prefix(tracks[cut], _common_prefix(audio, pos, tracks[cut]))
        if whole_frames >= 1400:  # more than a frame or two that any encode may share
            sequence.append(f"{cut}…")
            pos += whole_frames
            continue
        if not sequence or sequence[-1] != "other":
            sequence.append("other")
        pos += header.length
    return sequence


def _common_prefix(audio: bytes, pos: int, frames: bytes) -> int:
    """How many bytes from ``audio[pos]`` on are the same as the start of ``frames``."""
    low, high = 0, min(len(frames), len(audio) - pos)
    while low < high:
        mid = (low + high + 1) // 2
        if audio[pos : pos + mid] == frames[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


def _frame_prefix(frames: bytes, length: int) -> int:
    """The length of the whole frames of ``frames`` within its first ``length`` bytes."""
    pos = 0
    while (header := mpeg_header_at(frames, pos)) is not None and pos + header.length <= length:
        pos += header.length
    return pos


def wait_until(what: str, done: Callable[[], bool], timeout: float, listener: Listener) -> None:
    """Poll ``done`` until it holds; fail at the deadline or if the listener is cut off."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline or listener.closed.is_set() or listener.error:
            raise AssertionError(
                f"waited {timeout} s for {what}: closed={listener.closed.is_set()} "
                f"error={listener.error!r} audio={len(listener.audio)} titles={listener.titles}"
            )
        time.sleep(0.02)


def wait_for_bytes(listener: Listener, needle: bytes, start: int, timeout: float) -> int:
    """Where ``needle`` first shows in the recording at or after ``start``."""
    found: list[int] = []

    def seen() -> bool:
        at = bytes(listener.audio).find(needle, start)
        if at >= 0:
            found.append(at)
        return at >= 0

    wait_until(f"{len(needle)} bytes of a track", seen, timeout, listener)
    return found[0]


def arrival(listener: Listener, offset: int) -> float:
    """time.monotonic() at which the listener received audio byte ``offset``."""
    return next(t for t, received in listener.arrivals if received > offset)


def stop(run: PushsourceProcess) -> None:
    """SIGTERM: pushsource finishes the batch in flight, closes cleanly, exits 0."""
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait(15) == 0, run.describe()


def assert_station_format(audio: bytes, tmp_path: Path) -> None:
    """The whole recording is 44.1 kHz stereo 128 kbps Layer III frames, back to
    back, and decodes without an error (but for a last frame Icecast cut)."""
    frames, end = walk_mpeg_frames(audio)
    assert len(audio) - end < 1441, f"not a frame at byte {end} of {len(audio)}"
    formats = {(h.sample_rate, h.channels, h.bitrate, h.layer) for _, h in frames}
    assert formats == {(44100, 2, 128, 3)}, formats
    decoded = decode_mp3(audio[:end], tmp_path)
    assert decoded.errors == "", decoded.errors


def test_silence_keeps_the_mount_and_music_resumes_when_a_file_arrives(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    folder = tmp_path / "music"
    folder.mkdir()
    first = track(folder, "01-first.mp3", "Before The Silence", 440)
    with Listener(icecast.port, unique_mount, connect_timeout=20) as listener:
        run = start_pushsource(
            "stream", folder, source_url(icecast, unique_mount),
            "--cache", tmp_path / "cache", "--name", STATION,
        )  # fmt: skip
        listener.wait_for_title(first.title, 20)
        listener.wait_for_title(STATION, SECONDS + 10)
        idle_from = len(listener.audio)
        assert not listener.closed.wait(IDLE), f"listener cut off while idle\n{run.describe()}"
        idle_bytes = len(listener.audio) - idle_from
        assert idle_bytes >= (IDLE - 1) * 15_000, f"{idle_bytes} bytes in {IDLE} s of idling"
        assert run.proc.poll() is None, run.describe()
        mount = icecast.source(unique_mount)
        assert mount is not None and mount.get("listeners") == 1, mount
        assert mount.get("title") == STATION, mount

        new, renamed_at = drop_in(folder, "02-new.mp3", "After The Silence", 660)
        offset = wait_for_bytes(listener, frames_of(new)[:4000], len(frames_of(first)), 10)
        drop_to_air = arrival(listener, offset) - renamed_at
        print(f"drop to air: {drop_to_air:.3f} s after {IDLE:.0f} s of silence")
        assert drop_to_air < DROP_TO_AIR, (
            f"the new file reached the listener {drop_to_air:.2f} s late"
        )
        listener.wait_for_title(new.title, SECONDS + 5)
        listener.wait_for_audio(offset + len(frames_of(new)), SECONDS + 5)
        stop(run)
        listener.wait_closed(10)

    audio = bytes(listener.audio)
    assert play_sequence(audio, {"first": frames_of(first), "new": frames_of(new)}) in (
        ["first", SILENCE, "new"],
        ["first", SILENCE, "new", SILENCE],
    )
    silence = audio[len(frames_of(first)) : offset]
    frames, end = walk_mpeg_frames(silence)
    assert end == len(silence), "the silence is not whole frames"
    assert {(h.sample_rate, h.channels) for _, h in frames} == {(44100, 2)}
    decoded = decode_mp3(silence, tmp_path, "silence")
    assert decoded.errors == "" and decoded.pcm.count(0) == len(decoded.pcm), "not silent"
    assert decoded.frames / 44100 >= IDLE
    assert_station_format(audio, tmp_path)
    titles = distinct_titles(listener.titles)
    assert titles in ([first.title, STATION, new.title], [first.title, STATION, new.title, STATION])


def test_loop_replays_the_library_and_a_new_file_plays_next(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    folder = tmp_path / "music"
    folder.mkdir()
    a = track(folder, "01-a.mp3", "Loop A", 440)
    b = track(folder, "02-b.mp3", "Loop B", 550)
    with Listener(icecast.port, unique_mount, connect_timeout=20) as listener:
        run = start_pushsource(
            "stream", folder, source_url(icecast, unique_mount),
            "--cache", tmp_path / "cache", "--name", STATION, "--idle", "loop",
        )  # fmt: skip
        replayed = [a.title, b.title, a.title]
        wait_until(
            "A, B, then A again",
            lambda: distinct_titles(listener.titles)[:3] == replayed,
            3 * SECONDS + 15,
            listener,
        )
        # The listener sees a title within about a second of its track
        # starting: pushsource is still well inside A, and C must come next.
        c, _ = drop_in(folder, "03-c.mp3", "Dropped C", 660)
        wait_until(
            "two more titles", lambda: len(distinct_titles(listener.titles)) >= 5, 30, listener
        )
        assert not listener.closed.is_set()
        stop(run)
        listener.wait_closed(10)

    titles = distinct_titles(listener.titles)
    assert titles[:4] == [a.title, b.title, a.title, c.title], titles
    assert titles[4] in (a.title, b.title), titles  # and the loop goes on
    assert STATION not in titles, "silence while looping"
    tracks = {"a": frames_of(a), "b": frames_of(b), "c": frames_of(c)}
    played = play_sequence(bytes(listener.audio), tracks)
    assert played[:4] == ["a", "b", "a", "c"], played
    assert SILENCE not in played[:5], played
    assert_station_format(bytes(listener.audio), tmp_path)


def test_shuffle_loops_in_random_order_without_a_track_twice_in_a_row(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    folder = tmp_path / "music"
    folder.mkdir()
    short = 1.0  # the recording, not the titles, says what played
    made = {name: track(folder, f"{name}.mp3", name, freq, short) for name, freq in
            (("a", 440), ("b", 550), ("c", 660))}  # fmt: skip
    tracks = {name: frames_of(t) for name, t in made.items()}
    whole = 3 + 2 * 3  # the queue, then two shuffled cycles of the library

    def played() -> list[str]:
        return [p for p in play_sequence(bytes(listener.audio), tracks) if p in tracks]

    with Listener(icecast.port, unique_mount, connect_timeout=20) as listener:
        run = start_pushsource(
            "stream", folder, source_url(icecast, unique_mount),
            "--cache", tmp_path / "cache", "--idle", "loop", "--shuffle",
        )  # fmt: skip
        wait_until(f"{whole} tracks", lambda: len(played()) >= whole, whole * short + 15, listener)
        stop(run)
        listener.wait_closed(10)

    sequence = play_sequence(bytes(listener.audio), tracks)
    assert SILENCE not in sequence[:whole], sequence
    assert sequence[:3] == ["a", "b", "c"], sequence  # new files first, in name order
    for cycle in (sequence[3:6], sequence[6:9]):
        assert sorted(cycle) == ["a", "b", "c"], f"not each file once per cycle: {sequence}"
    repeats = [i for i in range(1, whole) if sequence[i] == sequence[i - 1]]
    assert not repeats, f"a track twice in a row at {repeats}: {sequence}"


def test_stop_closes_the_stream_and_reconnects_when_a_file_arrives(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    folder = tmp_path / "music"
    folder.mkdir()
    a = track(folder, "01-a.mp3", "Before The Break", 440)
    with Listener(icecast.port, unique_mount, connect_timeout=20) as first:
        run = start_pushsource(
            "stream", folder, source_url(icecast, unique_mount),
            "--cache", tmp_path / "cache", "--name", STATION, "--idle", "stop",
        )  # fmt: skip
        first.wait_for_title(a.title, 20)
        first.wait_closed(SECONDS + 10)
    assert play_sequence(bytes(first.audio), {"a": frames_of(a)}) == ["a", SILENCE]
    assert STATION not in distinct_titles(first.titles)
    deadline = time.monotonic() + 5
    while icecast.source(unique_mount) is not None:
        assert time.monotonic() < deadline, "the mount is still up after the stream closed"
        time.sleep(0.05)
    assert run.proc.poll() is None, run.describe()
    assert "queue empty: closed the stream, waiting for files" in run.stderr

    with Listener(icecast.port, unique_mount, connect_timeout=20) as second:
        b, renamed_at = drop_in(folder, "02-b.mp3", "After The Break", 660)
        offset = wait_for_bytes(second, frames_of(b)[:4000], 0, 10)
        assert offset == 0, "the new stream does not start with the new file"
        back_on_air = arrival(second, offset) - renamed_at
        print(f"back on air: {back_on_air:.3f} s after the drop")
        assert back_on_air < 3.0
        second.wait_for_title(b.title, SECONDS + 5)
        second.wait_for_audio(len(frames_of(b)), SECONDS + 5)
        stop(run)
    assert play_sequence(bytes(second.audio), {"b": frames_of(b)})[0] == "b"
    assert_station_format(bytes(second.audio), tmp_path)


def test_a_restarted_loop_station_replays_its_library(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    folder = tmp_path / "music"
    folder.mkdir()
    a = track(folder, "01-a.mp3", "Played Before", 440)
    url = source_url(icecast, unique_mount)
    common = ("--cache", tmp_path / "cache", "--state", tmp_path / "state.json", "--name", STATION)
    with Listener(icecast.port, unique_mount, connect_timeout=20) as listener:
        run = start_pushsource("stream", folder, url, *common)
        listener.wait_for_title(a.title, 20)
        listener.wait_for_title(STATION, SECONDS + 10)  # played to its end
        stop(run)
    restarted = start_pushsource("stream", folder, url, *common, "--idle", "loop")
    # Its files are ready at once (old enough): a second is plenty to go on air.
    with Listener(icecast.port, unique_mount, connect_timeout=4) as listener:
        listener.wait_for_title(a.title, 6)
    stop(restarted)
