"""What C code writes to fd 2 (libvlc's plugins: libmpg123 prints a line for
every damaged frame it decodes, whatever libvlc's --quiet says) reaches the
log as records of its own: a damaged MP3 measured by libvlc for --loudness
leaves ``--log-format json`` with nothing but JSON lines."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.conftest import StartPushsource
from tests.support.icecast import IcecastServer
from tests.support.listener import Listener
from tests.support.malformed import split_frames
from tests.support.media import make_track_at

pytestmark = pytest.mark.integration


def make_damaged(path: Path) -> None:
    """Valid frame headers (pushsource plays every frame), side info and main
    data of every fifth frame random: libmpg123 complains as it decodes."""
    frames = split_frames(path, make_track_at(path, -20, 3))
    rng = random.Random(20)
    for n in range(3, len(frames), 5):
        frame = frames[n]
        frames[n] = frame[:4] + rng.randbytes(116) + frame[120:]
    path.write_bytes(b"".join(frames))


@pytest.mark.parametrize("verbose", [False, True], ids=["info", "debug"])
def test_libvlc_stderr_on_a_damaged_file_leaves_only_json_lines(
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
    verbose: bool,
) -> None:
    music = tmp_path / "music"
    music.mkdir()
    make_damaged(music / "damaged.mp3")
    url = f"icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}"
    listener = Listener(icecast.port, unique_mount, connect_timeout=30).start()
    try:
        process = start_pushsource(
            "stream", music, url, "--once", "--loudness", "-18", "--cache", tmp_path / "cache",
            "--log-format", "json", *(["-v"] if verbose else []),
        )  # fmt: skip
        assert process.wait(30) == 0, process.describe()
        listener.wait_closed(10)
    finally:
        listener.stop()
    assert listener.audio, "the damaged file played"

    lines = process.stderr.splitlines()
    assert lines, process.describe()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}\n{process.describe()}")
    assert all(isinstance(record, dict) for record in records)
    assert any("measured damaged.mp3" in record["message"] for record in records), lines
    native = [record for record in records if record["logger"] == "pushsource.stderr"]
    if verbose:  # what libmpg123 said is there, one debug record a line
        assert native and all(record["level"] == "debug" for record in native), lines
        assert any("libmpg123" in record["message"] for record in native), lines
    else:
        assert native == []
