"""Never knocked over, end to end: malformed files among good ones, and files
deleted or replaced under the station, streamed by the CLI into a real icecast2
while a listener records. Every bad file is skipped with one warning naming it,
the good audio arrives byte-exact and in order, and the recording decodes cleanly."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pushsource.core.frames import header_for, silent_frame
from tests.conftest import StartPushsource, secret_url
from tests.support.icecast import IcecastServer
from tests.support.listener import Listener
from tests.support.malformed import (
    CASES,
    Malformed,
    build_malformed,
    find_frame_run,
    frame_length_at,
    frame_run_at,
    split_frames,
)
from tests.support.media import (
    audio_seconds,
    decode_mp3,
    make_clean_mp3,
    probe_packets,
    unmend,
)

pytestmark = pytest.mark.integration

LEAD = 0.5  # seconds pushsource sends ahead of real time
GOOD_SECONDS = 0.5


@dataclass(frozen=True)
class BadFolder:
    folder: Path
    #: Good and malformed files, in play (name) order.
    entries: list[Malformed]

    @property
    def expected(self) -> bytes:
        """Everything a listener must get, in order (each entry's bytes are known)."""
        return b"".join(e.expect_prefix or b"" for e in self.entries)


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory: pytest.TempPathFactory) -> BadFolder:
    """The malformed corpus as 02-, 04-, ... with good files at 01, 11, 21 and 99."""
    folder = tmp_path_factory.mktemp("bad-input")
    entries = []
    for entry in build_malformed(folder, first_number=2, step=2):
        if entry.expect_prefix is None:  # converted by libvlc (a WAV named .mp3):
            entry.path.unlink()  # not byte-predictable; test_transcode covers it
            continue
        entries.append(entry)
    for number in (1, 11, 21, 99):
        path = folder / f"{number:02d}-good.mp3"
        audio = make_clean_mp3(path, GOOD_SECONDS, freq=200 + 10 * number)
        entries.append(Malformed("good", path, True, audio))
    entries.sort(key=lambda e: e.path.name.casefold())
    assert all(e.expect_prefix is not None for e in entries), "every case here is predictable"
    return BadFolder(folder, entries)


def _id3_end(data: bytes) -> int:
    size = data[6:10]
    return 10 + (size[0] << 21 | size[1] << 14 | size[2] << 7 | size[3])


def _rate_index(data: bytes, at: int) -> int:
    return (data[at + 2] >> 2) & 3


#: Per case: does the file really hold the trap it is named after?
TRAPS: dict[str, Callable[[bytes, bytes], bool]] = {
    "corrupt-headers": lambda data, want: frame_run_at(data, 0) == 10 and len(data) > len(want),
    "inserted-junk": lambda data, want: (
        frame_run_at(data, 0) == 4 and data.count(0xFF) > want.count(0xFF) + 20
    ),
    "id3-past-end": lambda data, want: data.startswith(b"ID3") and _id3_end(data) > len(data),
    "ape-bogus-size": lambda data, want: (
        data[len(want) : len(want) + 8] == b"APETAGEX"
        and int.from_bytes(data[len(want) + 12 : len(want) + 16], "little") > len(data)
    ),
    "fake-sync-cover": lambda data, want: (
        (run := find_frame_run(data[: _id3_end(data)], 5)) is not None
        and _rate_index(data, run) == 1  # 48 kHz inside the tag; 44.1 kHz after it
        and data.endswith(want)
    ),
    "rate-change": lambda data, want: (
        frame_run_at(data, len(want)) >= 3 and _rate_index(data, len(want)) == 1
    ),
    "channels-change": lambda data, want: (
        frame_run_at(data, len(want)) >= 3 and data[len(want) + 3] >> 6 == 3  # mono
    ),
    "empty": lambda data, want: data == b"",
    "text": lambda data, want: data.decode("ascii").count("\n") > 10,
    "truncated-mid-frame": lambda data, want: (
        (length := frame_length_at(data, len(want))) is not None
        and 0 < len(data) - len(want) < length
    ),
    "truncated-in-tag": lambda data, want: _id3_end(data) > len(data),
    "no-frames": lambda data, want: find_frame_run(data, 3) is None and data.count(0xFF) > 500,
    "png": lambda data, want: data.startswith(b"\x89PNG\r\n\x1a\n"),
}


@pytest.mark.parametrize("case", [name for name, _ in CASES if name != "wav"])
def test_malformed_fixtures_carry_their_traps(bad_folder: BadFolder, case: str) -> None:
    (entry,) = [e for e in bad_folder.entries if e.name == case]
    want = entry.expect_prefix or b""
    if case == "album":
        assert entry.path.is_dir() and entry.plays is not None
        assert entry.plays.read_bytes() == want
    elif case == "unreadable":
        assert not os.access(entry.path, os.R_OK)
    else:
        assert TRAPS[case](entry.path.read_bytes(), want)


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " WARNING " in line]


def naming(lines: list[str], path: Path) -> list[str]:
    """The lines about path itself (not about a file inside it, were it a folder)."""
    return [line for line in lines if f" {path}: " in line or line.endswith(f" {path}")]


def assert_stream_is(audio: bytes, entries: list[Malformed]) -> int:
    """audio starts with every entry's bytes, in order; returns where they end.
    Where a file's frames break off (a damaged header, junk between frames) the
    frames after it may point back into bytes that never go out: those the
    station mended (core.splice: silenced, their bytes kept) count as theirs."""
    at = 0
    for entry in entries:
        want = entry.expect_prefix or b""
        got = unmend(audio[at : at + len(want)], want, frames=len(want))
        if got != want:
            first = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), 0)
            raise AssertionError(
                f"{entry.path.name} ({entry.name}): want {len(want)} bytes at {at}, "
                f"got {len(got)}; first difference at byte {first} of it"
            )
        at += len(want)
    return at


def whole_tail(tail: bytes, directory: Path) -> bytes:
    """The silent frames after the last track, without the last one: Icecast ends
    a recording on a 1400-byte block boundary, so that one is likely cut."""
    if not tail:
        return b""
    (directory / "tail.mp3").write_bytes(tail)
    packets = probe_packets(directory / "tail.mp3")
    starts = [p.pos for p in packets]
    assert starts == [0] + [p.pos + p.size for p in packets[:-1]], "junk between frames"
    assert packets[-1].pos + packets[-1].size == len(tail)
    return tail[: packets[-1].pos]


def assert_no_gap(arrivals: list[tuple[float, int]], upto: int, longest: float) -> None:
    """No pause longer than ``longest`` s while the first ``upto`` bytes came in."""
    times = [t for t, n in arrivals if 0 < n <= upto]
    pauses = [b - a for a, b in itertools.pairwise(times)]
    assert max(pauses, default=0.0) <= longest, f"the stream paused {max(pauses):.2f} s"


def test_bad_files_are_skipped_and_the_rest_streams_clean(
    secret_icecast: IcecastServer,
    bad_folder: BadFolder,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
) -> None:
    expected = bad_folder.expected
    seconds = audio_seconds(expected)
    with Listener(secret_icecast.port, unique_mount, connect_timeout=20) as listener:
        run = start_pushsource(
            "stream", bad_folder.folder, secret_url(secret_icecast, unique_mount), "--once"
        )
        assert run.wait(seconds + 30) == 0, run.describe()
        listener.wait_closed(10)
    assert listener.error is None
    assert "Traceback" not in run.stderr, run.describe()

    # One warning per unplayable file, naming it and why; none about the others
    # but the one per file that changes format midway.
    warnings = warnings_of(run.stderr)
    for entry in bad_folder.entries:
        about = naming(warnings, entry.path)
        if not entry.playable:
            assert len(about) == 1, f"{entry.name}: {about}\n{run.describe()}"
            assert f" skipped {entry.path}: " in about[0]
            assert about[0].split(f" skipped {entry.path}: ", 1)[1].strip(), "no reason given"
        else:
            assert len(about) == len(entry.notes), f"{entry.name}: {about}"
            for line, note in zip(about, entry.notes, strict=True):
                assert line.endswith(f"{entry.path}: {note}"), line
    unplayable = sum(not e.playable for e in bad_folder.entries)
    assert len(warnings) == unplayable + sum(len(e.notes) for e in bad_folder.entries), warnings

    audio = bytes(listener.audio)
    end = assert_stream_is(audio, bad_folder.entries)
    goods = [e.expect_prefix or b"" for e in bad_folder.entries if e.name == "good"]
    places = [audio.find(good) for good in goods]
    assert -1 not in places and places == sorted(places), "good files missing or out of order"

    decoded = decode_mp3(audio[:end] + whole_tail(audio[end:], tmp_path), tmp_path, "recording")
    assert decoded.errors == ""
    assert decoded.channels == 2

    for entry in bad_folder.entries:
        for forbidden in entry.forbidden:
            assert forbidden not in audio, f"{entry.name}: {forbidden[:40]!r} reached a listener"
    for marker in (b"APETAGEX", b"ID3\x04\x00", b"ID3\x03\x00", b"LYRICSBEGIN", b"\x89PNG"):
        assert marker not in audio, f"{marker!r} reached a listener"

    assert_no_gap(listener.arrivals, end, longest=LEAD)


def _wait_until(
    check: Callable[[], bool], timeout: float, what: str, context: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}\n{context()}"
        time.sleep(0.02)


def test_files_deleted_or_replaced_under_the_station(
    secret_icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
) -> None:
    """While the first file plays: it is rewritten as text in place, a queued file
    is deleted, another queued one is replaced by text, and a good one is moved in.
    The station plays on: what it already read of the first, nothing of the
    deleted one, one warning for each rewritten one, then the new file."""
    folder = tmp_path / "music"
    folder.mkdir()
    playing, deleted, replaced = (folder / f"{n}.mp3" for n in ("01-playing", "02-gone", "03-text"))
    # 320 kbps for 3 s: more than the first read of the file, so the rewrite bites.
    playing_audio = make_clean_mp3(playing, 3.0, freq=300, bitrate=320)
    deleted_audio = make_clean_mp3(deleted, GOOD_SECONDS, freq=500)
    make_clean_mp3(replaced, GOOD_SECONDS, freq=700)
    an_hour_ago = time.time() - 3600  # so they are ready at once, not settling
    for path in (playing, deleted, replaced):
        os.utime(path, (an_hour_ago, an_hour_ago))
    final = folder / "04-final.mp3"
    staged = folder / ".04-final.mp3"  # hidden: not queued until renamed
    final_audio = make_clean_mp3(staged, 1.0, freq=900)

    with Listener(secret_icecast.port, unique_mount, connect_timeout=20) as listener:
        run = start_pushsource(
            "stream", folder, secret_url(secret_icecast, unique_mount), "--settle", "0.5"
        )
        listener.wait_for_audio(4000, 20)  # the first file is open and playing
        playing.write_text("rewritten while it played\n" * 4, "utf-8")  # same inode, shorter
        deleted.unlink()
        replaced.write_text("replaced by text while queued\n" * 4, "utf-8")
        staged.rename(final)  # renamed in the folder: ready at once, no settling
        _wait_until(
            lambda: final_audio in listener.audio, 20, "the final file to be heard", run.describe
        )
        assert not listener.closed.is_set(), "the station hung up before the final file"
        run.proc.send_signal(signal.SIGTERM)
        assert run.wait(15) == 0, run.describe()
        listener.wait_closed(10)
    assert listener.error is None
    assert "Traceback" not in run.stderr, run.describe()

    audio = bytes(listener.audio)
    start = audio.find(final_audio)
    # Whole frames from the start of the first file, up to where it was cut off,
    # then (idle policy "silence") silent frames until the final file came.
    played = audio[:start]
    silence = silent_frame(header_for(44100, 2, 128))
    while played.endswith(silence) and not playing_audio.startswith(played):
        played = played[: -len(silence)]
    assert played and playing_audio.startswith(played), "the first file's audio is mangled"
    (tmp_path / "original.mp3").write_bytes(playing_audio)
    ends = list(
        itertools.accumulate(len(f) for f in split_frames(tmp_path / "original.mp3", playing_audio))
    )
    assert len(played) in ends, "the first file was cut inside a frame"
    assert deleted_audio[:2000] not in audio, "the deleted file was played"

    warnings = warnings_of(run.stderr)
    assert len(naming(warnings, deleted)) <= 1, warnings
    for rewritten in (replaced, playing):
        about = naming(warnings, rewritten)
        assert len(about) == 1, f"{rewritten.name}: {about}\n{run.describe()}"

    end = start + len(final_audio)
    decoded = decode_mp3(audio[:end] + whole_tail(audio[end:], tmp_path), tmp_path, "recording")
    assert decoded.errors == ""
    assert_no_gap(listener.arrivals, end, longest=LEAD)
