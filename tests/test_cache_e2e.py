"""A cache that cannot be written, end to end: a converted 64 kbps output
whose copies do not fit (a real full tmpfs) or cannot be made at all (a file
where the cache folder should be) goes silent with one line naming the disk's
error; the station's own mount, heard by a real listener on a real icecast2,
plays every track whole."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import StartPushsource
from tests.support.disk import fill, small_tmpfs
from tests.support.icecast import IcecastServer
from tests.support.listener import Listener
from tests.support.media import make_titled_tracks, walk_mpeg_frames

pytestmark = pytest.mark.integration

TITLES = [("Cache", "One"), ("Cache", "Two"), ("Cache", "Three")]


@contextmanager
def broken_cache(kind: str, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A cache folder that cannot take the conversions, and the error it gives."""
    if kind == "full":
        with small_tmpfs(300) as disk:
            fill(disk, 16 * 1024)
            yield disk / "cache", "[Errno 28] No space left on device"
    else:
        blocked = tmp_path / "not-a-folder"
        blocked.write_text("where the cache folder should be")
        yield blocked, "[Errno 20] Not a directory"


@pytest.mark.parametrize("kind", ["full", "a file"])
def test_a_cache_that_cannot_be_written_silences_its_output_only(
    kind: str,
    tmp_path: Path,
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
) -> None:
    folder = tmp_path / "music"
    tracks = make_titled_tracks(folder, TITLES, seconds=3.0)
    low = f"{unique_mount}-64"
    base = f"icecast://source:hackme@127.0.0.1:{icecast.port}"
    with (
        broken_cache(kind, tmp_path) as (cache, error),
        Listener(icecast.port, unique_mount) as main,
        Listener(icecast.port, low) as phone,
    ):
        proc = start_pushsource(
            "stream",
            folder,
            f"{base}{unique_mount}",
            "--once",
            "--cache",
            cache,
            "--output",
            f"{base}{low} bitrate=64 samplerate=22050 channels=1",
        )
        assert proc.wait(60) == 0, proc.describe()
        main.wait_closed(10)
        phone.wait_closed(10)
    heard = bytes(main.audio)
    at = [heard.find(track.audio) for track in tracks]
    assert all(a >= 0 for a in at) and at == sorted(at), (at, proc.describe())
    # The 64 kbps output stayed on air, in its own format: silence.
    frames, _ = walk_mpeg_frames(bytes(phone.audio))
    assert len(frames) * 1152 / 22050 >= 8.0, len(frames)
    assert {(h.sample_rate, h.channels, h.bitrate) for _, h in frames} == {(22050, 1, 64)}
    lines = [line for line in proc.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert len(lines) == 1, lines
    assert "64 kbps" in lines[0] and "silent" in lines[0] and error in lines[0], lines
