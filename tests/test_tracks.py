# mutagen ships py.typed but leaves its tag constructors unannotated.
# mypy: disallow-untyped-calls=False
"""One file of the queue (pushsource.workers.tracks): every bad file is refused by
Track.open() with a TrackError that names it and says why, before a frame is
sent; after that next_frame() never raises, whatever happens to the file; and
read_info() finds a title in whatever tags there are, or in the name, without
raising."""

from __future__ import annotations

import errno
import logging
import os
import random
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mutagen.apev2 import APEv2
from mutagen.id3 import ID3, TIT2, TPE1

from pushsource.core.frames import Frame
from pushsource.errors import TrackError
from pushsource.workers.tracks import Track, read_info
from tests.support.malformed import (
    ape_tag,
    apic_frame,
    id3v24_tag,
    png_image,
    split_frames,
    text_frame,
)
from tests.support.media import make_clean_mp3
from tests.synth import apev2, id3v1, id3v2, make_frames

# -- helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The frames of a real 0.4 s lame -t encode (nothing but frames)."""
    path = tmp_path_factory.mktemp("clean") / "clean.mp3"
    return split_frames(path, make_clean_mp3(path, 0.4, freq=660))


def frames_of(track: Track, limit: int = 100_000) -> list[Frame]:
    """Every frame next_frame() hands out, the first included."""
    frames: list[Frame] = []
    while (frame := track.next_frame()) is not None:
        frames.append(frame)
        assert len(frames) < limit, "next_frame() does not end"
    return frames


def refusal(path: Path) -> TrackError:
    """The TrackError Track(path).open() raises (failing the test if it opens)."""
    with pytest.raises(TrackError) as caught:
        Track(path).open()
    error = caught.value
    assert error.path == path
    assert error.reason.strip() and "\n" not in error.reason
    assert str(error) == f"{path}: {error.reason}"
    return error


OpenFunction = Callable[..., Any]


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[IO[bytes]]:
    """The files Path.open() opens during the test, to check they get closed."""
    files: list[IO[bytes]] = []
    real_open: OpenFunction = Path.open

    def recording_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, *args, **kwargs)
        files.append(handle)
        return handle

    monkeypatch.setattr(Path, "open", recording_open)
    return files


# -- files refused before their first frame ------------------------------------------


RANDOM_NO_FF = random.Random(3).randbytes(5000).replace(b"\xff", b"\x00")
NO_FRAME = r"^no MPEG audio frame found in \d+ bytes \(at byte \d+\)$"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(b"", r"^no MPEG audio frame found in 0 bytes \(at byte 0\)$", id="empty"),
        pytest.param(b"Just some text, named .mp3.\n" * 40, NO_FRAME, id="text"),
        pytest.param(id3v2(bytes(2000)), NO_FRAME, id="id3-only"),
        pytest.param(
            id3v24_tag([text_frame(b"TIT2", "Only A Tag")], size=1 << 20) + bytes(500),
            NO_FRAME,
            id="id3-past-the-end",
        ),
        pytest.param(png_image(), NO_FRAME, id="png"),
        pytest.param(RANDOM_NO_FF, NO_FRAME, id="random-bytes"),
        pytest.param(id3v1() + apev2(), NO_FRAME, id="tags-only"),
    ],
)
def test_a_file_without_audio_is_refused(
    tmp_path: Path, opened: list[IO[bytes]], content: bytes, reason: str
) -> None:
    path = tmp_path / "bad.mp3"
    path.write_bytes(content)
    error = refusal(path)
    assert re.match(reason, error.reason), error.reason
    assert all(f.closed for f in opened), "the refused file was left open"


def test_a_file_cut_inside_its_tag_is_refused(tmp_path: Path, clean: list[bytes]) -> None:
    tag = id3v24_tag([text_frame(b"TIT2", "Cut"), apic_frame(bytes(4000))])
    path = tmp_path / "cut.mp3"
    path.write_bytes((tag + b"".join(clean))[:2000])
    assert "no MPEG audio frame found" in refusal(path).reason


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    reason = refusal(tmp_path / "never-there.mp3").reason
    assert any(word in reason.lower() for word in ("gone", "no such file", "not found")), reason


def test_a_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "album.mp3"
    folder.mkdir()
    assert "directory" in refusal(folder).reason.lower()


def test_an_unreadable_file_is_refused(
    tmp_path: Path, clean: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As root, chmod 000 does not stop a read: make open() fail as it would.
    path = tmp_path / "locked.mp3"
    path.write_bytes(b"".join(clean))
    real_open: OpenFunction = Path.open

    def denying_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denying_open)
    assert refusal(path).reason == "Permission denied"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_a_chmod_000_file_is_refused(tmp_path: Path, clean: list[bytes]) -> None:
    path = tmp_path / "locked.mp3"
    path.write_bytes(b"".join(clean))
    path.chmod(0)
    assert refusal(path).reason == "Permission denied"


def test_a_file_replaced_by_text_after_it_was_queued_is_refused(
    tmp_path: Path, clean: list[bytes]
) -> None:
    path = tmp_path / "queued.mp3"
    path.write_bytes(b"".join(clean))
    track = Track(path)  # queued...
    path.write_text("replaced\n", "utf-8")  # ...then replaced before it plays
    with pytest.raises(TrackError, match="no MPEG audio frame found"):
        track.open()


# -- what happens to a file while it plays ---------------------------------------------


def test_a_good_file_gives_exactly_its_frames(tmp_path: Path, clean: list[bytes]) -> None:
    path = tmp_path / "good.mp3"
    path.write_bytes(b"".join(clean))
    assert [f.data for f in frames_of(Track(path, chunk=1000).open())] == clean


def test_a_file_deleted_while_playing_plays_to_its_end(tmp_path: Path, clean: list[bytes]) -> None:
    path = tmp_path / "deleted.mp3"
    path.write_bytes(b"".join(clean))
    track = Track(path, chunk=1000).open()
    path.unlink()
    assert [f.data for f in frames_of(track)] == clean


def test_a_file_renamed_over_while_playing_plays_its_old_content(
    tmp_path: Path, clean: list[bytes]
) -> None:
    path = tmp_path / "replaced.mp3"
    path.write_bytes(b"".join(clean))
    track = Track(path, chunk=1000).open()
    (tmp_path / "new.mp3").write_text("new content\n", "utf-8")
    (tmp_path / "new.mp3").replace(path)
    assert [f.data for f in frames_of(track)] == clean


def test_a_file_truncated_while_playing_ends_early_with_whole_frames(
    tmp_path: Path, clean: list[bytes]
) -> None:
    path = tmp_path / "truncated.mp3"
    path.write_bytes(b"".join(clean))
    track = Track(path, chunk=1000).open()
    head = [track.next_frame() for _ in range(2)]
    path.write_text("rewritten in place\n", "utf-8")  # same inode, shorter
    got = [f.data for f in head if f is not None] + [f.data for f in frames_of(track)]
    assert 2 <= len(got) < len(clean)
    assert got == clean[: len(got)]


class FaultyFile:
    """A file whose reads come back short, and fail with EIO after ``good_reads``."""

    def __init__(self, real: IO[bytes], *, short: int, good_reads: int | None) -> None:
        self._real = real
        self._short = short
        self._left = good_reads
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        if self._left is not None:
            if self._left == 0:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            self._left -= 1
        limit = self._short if size < 0 else min(size, self._short)
        return self._real.read(limit)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._real.seek(offset, whence)

    def close(self) -> None:
        self.closed = True
        self._real.close()

    def __enter__(self) -> FaultyFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def faulty_open(
    target: Path, short: int, good_reads: int | None, made: list[FaultyFile]
) -> Callable[..., Any]:
    real_open: OpenFunction = Path.open

    def open_(self: Path, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, *args, **kwargs)
        if self != target:
            return handle
        made.append(FaultyFile(handle, short=short, good_reads=good_reads))
        return made[-1]

    return open_


def test_a_read_error_while_playing_ends_the_track_with_one_warning(
    tmp_path: Path,
    clean: list[bytes],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "failing.mp3"
    path.write_bytes(b"".join(clean))
    made: list[FaultyFile] = []
    monkeypatch.setattr(Path, "open", faulty_open(path, 1000, 3, made))
    with caplog.at_level(logging.WARNING, logger="pushsource"):
        got = [f.data for f in frames_of(Track(path, chunk=1000).open())]
    assert 1 <= len(got) < len(clean)
    assert got == clean[: len(got)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0], warnings
    assert "Input/output error" in warnings[0]
    assert made and all(f.closed for f in made)


def test_a_read_error_before_the_first_frame_is_a_refusal(
    tmp_path: Path, clean: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "failing.mp3"
    path.write_bytes(id3v2(bytes(3000)) + b"".join(clean))
    made: list[FaultyFile] = []
    monkeypatch.setattr(Path, "open", faulty_open(path, 1000, 1, made))
    assert refusal(path).reason == "Input/output error"
    assert made and all(f.closed for f in made)


# Real frames, tags and junk in any order, cut anywhere, read back in short
# pieces that may fail: open() refuses with TrackError or opens; after that
# next_frame() never raises, and every frame is one the file really holds.
_SYNTH = make_frames(8)
_PARTS = st.one_of(
    st.sampled_from(_SYNTH),
    st.lists(st.sampled_from(_SYNTH), min_size=3, max_size=6).map(b"".join),
    st.sampled_from([id3v1(), apev2(), id3v2(bytes(30)), id3v2(bytes(30))[:12]]),
    st.binary(max_size=60),
    st.just(b"\xff\xfb\x90\x64"),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(_PARTS, max_size=20),
    short=st.integers(min_value=1, max_value=700),
    good_reads=st.one_of(st.none(), st.none(), st.integers(min_value=0, max_value=12)),
)
def test_any_file_any_reads_only_track_error_escapes(
    parts: list[bytes], short: int, good_reads: int | None
) -> None:
    data = b"".join(parts)
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        path = Path(tmp) / "fuzz.mp3"
        path.write_bytes(data)
        made: list[FaultyFile] = []
        patch.setattr(Path, "open", faulty_open(path, short, good_reads, made))
        try:
            track = Track(path, chunk=512).open()
        except TrackError as error:
            event("refused")
            assert error.path == path and error.reason
            assert all(f.closed for f in made)
            return
        event("opened")
        frames = frames_of(track)
        assert frames, "open() found a frame, next_frame() did not hand it out"
        for frame in frames:
            assert data[frame.offset : frame.offset + len(frame.data)] == frame.data
        assert all(f.closed for f in made)


# -- titles ------------------------------------------------------------------------------


def tagged(path: Path, audio: bytes, *, artist: str | None, title: str | None) -> Path:
    path.write_bytes(audio)
    tags = ID3()
    if artist is not None:
        tags.add(TPE1(encoding=3, text=artist))
    if title is not None:
        tags.add(TIT2(encoding=3, text=title))
    tags.save(path, v2_version=4, v1=0)
    return path


def test_title_is_artist_and_title(tmp_path: Path, clean: list[bytes]) -> None:
    path = tagged(tmp_path / "a.mp3", b"".join(clean), artist="Sigur Rós", title="Ágætis byrjun")
    info = read_info(path)
    assert info.title == "Sigur Rós - Ágætis byrjun"
    assert info.duration is not None and abs(info.duration - 0.4) < 0.1
    assert info.bitrate == 128


def test_title_alone(tmp_path: Path, clean: list[bytes]) -> None:
    path = tagged(tmp_path / "a.mp3", b"".join(clean), artist=None, title="Just The Title")
    assert read_info(path).title == "Just The Title"


def test_artist_alone_is_not_a_title(tmp_path: Path, clean: list[bytes]) -> None:
    path = tagged(tmp_path / "03 - Named.mp3", b"".join(clean), artist="Only Artist", title=None)
    assert read_info(path).title == "03 - Named"


def test_no_tags_gives_the_file_name(tmp_path: Path, clean: list[bytes]) -> None:
    path = tmp_path / "01 Café del Mar.mp3"
    path.write_bytes(b"".join(clean))
    assert read_info(path).title == "01 Café del Mar"


def test_apev2_only(tmp_path: Path, clean: list[bytes]) -> None:
    path = tmp_path / "ape.mp3"
    path.write_bytes(b"".join(clean))
    tags = APEv2()
    tags["Artist"] = "Ape Artist"
    tags["Title"] = "Ape Title"
    tags.save(path)
    assert read_info(path).title == "Ape Artist - Ape Title"


def _broken_tags(audio: bytes) -> Iterator[tuple[str, bytes]]:
    yield "id3-size-past-end", id3v24_tag([text_frame(b"TIT2", "X")], size=1 << 27) + audio
    yield "id3-bad-encoding", id3v24_tag([(b"TIT2", b"\x09garbage")]) + audio
    yield "id3-frame-size-past-tag", id3v24_tag([(b"TIT2", b"\x03abc")])[:-2] + audio
    yield "id3-bad-version", b"ID3\x09\x00\x00\x00\x00\x00\x20" + bytes(32) + audio
    yield "ape-bogus-sizes", audio + ape_tag({"Title": "T"}, header_size=1 << 31, footer_size=3)
    yield "ape-footer-only", audio + ape_tag({"Title": "T"}, header_size=9, footer_size=9)[-32:]
    yield "cut-in-tag", (id3v24_tag([apic_frame(bytes(3000))]) + audio)[:1500]
    yield "empty", b""
    yield "text", b"not an mp3\n" * 10
    yield "png", png_image()


@pytest.mark.parametrize("case", [name for name, _ in _broken_tags(b"")])
def test_broken_tags_do_not_raise(tmp_path: Path, clean: list[bytes], case: str) -> None:
    content = dict(_broken_tags(b"".join(clean)))[case]
    path = tmp_path / f"{case}.mp3"
    path.write_bytes(content)
    info = read_info(path)
    assert isinstance(info.title, str) and info.title


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_read_info_of_no_file_does_not_raise(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nothing.mp3"
    if kind == "directory":
        path.mkdir()
    assert read_info(path).title == "nothing"


def test_a_skipped_file_is_one_warning_with_its_fields(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from pushsource.workers.tracks import skipped

    path = tmp_path / "broken.mp3"
    path.write_bytes(b"not audio")
    caplog.set_level(logging.WARNING, logger="pushsource")
    assert skipped(TrackError(path, "no MPEG audio frames"))
    assert not skipped(TrackError(path, "no MPEG audio frames"))  # once per version and reason
    (record,) = caplog.records
    fields = (record.event, record.file, record.error)  # type: ignore[attr-defined]
    assert fields == ("file_skipped", "broken.mp3", "no MPEG audio frames")
