"""Only files of the station's folder reach the air: links out of it, hidden and
non-audio files, aliases of a queued file and state-file paths outside it are
refused, and a refusal does not tell whether an outside path exists."""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pushsource.engine.loop import Engine
from pushsource.errors import ControlError
from pushsource.ops.runner import StationRunner, _restore
from pushsource.ops.settings import StationSettings
from pushsource.workers.folder import FolderQueue, inside, playable, scan
from pushsource.workers.icecast import parse_target
from pushsource.workers.state import FileStamp, PlayState, save_state
from tests.support.media import make_clean_mp3


def wait_for(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _old(path: Path) -> None:
    then = time.time() - 3600
    os.utime(path, (then, then), follow_symlinks=False)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """music/ with a.mp3, b.mp3 and .hidden.mp3, notes.txt; outside/ with x.mp3."""
    music, outside = tmp_path / "music", tmp_path / "outside"
    music.mkdir()
    outside.mkdir()
    for name in ("a", "b", ".hidden"):
        make_clean_mp3(music / f"{name}.mp3", 0.3, freq=300)
        _old(music / f"{name}.mp3")
    (music / "notes.txt").write_text("not audio")
    make_clean_mp3(outside / "x.mp3", 0.3, freq=400)
    (music / "out.mp3").symlink_to(outside / "x.mp3")
    (music / "outdir").symlink_to(outside, target_is_directory=True)
    (music / "etc.mp3").symlink_to("/etc")
    (music / "alias.mp3").symlink_to(music / "a.mp3")
    (music / "text.mp3").symlink_to(music / "notes.txt")
    for link in ("out.mp3", "outdir", "etc.mp3", "alias.mp3", "text.mp3"):
        _old(music / link)
    return music, outside


def test_scan_never_follows_links(layout: tuple[Path, Path]) -> None:
    music, _ = layout
    os.link(music / "b.mp3", music / "c.mp3")  # a hard link: the same file once
    assert [p.name for p in scan(music)] == ["a.mp3", "b.mp3"]


def test_inside_and_playable(layout: tuple[Path, Path]) -> None:
    music, _ = layout
    assert inside(music, music / "a.mp3") == (music / "a.mp3").resolve()
    assert inside(music, music / "out.mp3") is None
    assert inside(music, music / "outdir" / "x.mp3") is None
    assert inside(music, music / ".." / "outside" / "x.mp3") is None
    assert inside(music, music) is None
    assert playable(music, music / "alias.mp3") == (music / "a.mp3").resolve()
    for name in (".hidden.mp3", "notes.txt", "text.mp3", "etc.mp3", "missing.mp3"):
        assert playable(music, music / name) is None, name
    loop = music / "loop.mp3"
    loop.symlink_to(loop)
    assert inside(music, loop) is None and playable(music, loop) is None


@pytest.fixture
def runner(layout: tuple[Path, Path], tmp_path: Path) -> Iterator[StationRunner]:
    music, _ = layout
    settings = StationSettings(
        folder=music,
        url="icecast://source:pw@127.0.0.1:9/rock",
        state=tmp_path / "state.json",
        cache=tmp_path / "cache",
    )
    engine = Engine().start()
    station = StationRunner(settings, {}, engine=engine)
    # The folder's first walk, as start() would, but the station never connects.
    station._setup()
    station.feed.refresh()
    yield station
    engine.stop()
    station.close()


def _queue(runner: StationRunner) -> list[str]:
    return [entry["file"] for entry in runner.status()["queue"]]


def test_the_queue_holds_only_files_of_the_folder(
    layout: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "pushsource")
    music, _ = layout
    settings = StationSettings(
        folder=music, url="icecast://source:pw@127.0.0.1:9/rock", state=tmp_path / "s.json"
    )
    engine = Engine().start()
    runner = StationRunner(settings, {}, engine=engine)
    try:
        runner._setup()
        runner.feed.refresh()
        wait_for(lambda: len(_queue(runner)) == 2)
        time.sleep(0.3)  # nothing else arrives
        assert _queue(runner) == ["a.mp3", "b.mp3"]
    finally:
        engine.stop()
        runner.close()
    said = [r.getMessage() for r in caplog.records if "symbolic links" in r.getMessage()]
    assert len(said) == 1 and "left out 5 symbolic links" in said[0], said


@pytest.mark.parametrize(
    "file",
    [
        "out.mp3",
        "outdir/x.mp3",
        "etc.mp3",
        ".hidden.mp3",
        "notes.txt",
        "text.mp3",
        "etc.mp3/passwd",
    ],
)
def test_enqueue_refuses_like_a_missing_file(runner: StationRunner, file: str) -> None:
    wait_for(lambda: len(_queue(runner)) == 2)
    runner.remove("a.mp3")
    wait_for(lambda: _queue(runner) == ["b.mp3"])
    with pytest.raises(ControlError) as missing:
        runner.enqueue("no-such-file.mp3")
    with pytest.raises(ControlError) as refused:
        runner.enqueue(file)
    assert refused.value.status == missing.value.status == 404
    assert str(refused.value).replace(file, "?") == str(missing.value).replace(
        "no-such-file.mp3", "?"
    )
    assert _queue(runner) == ["b.mp3"]


def test_an_alias_of_a_queued_file_is_not_queued_again(runner: StationRunner) -> None:
    wait_for(lambda: len(_queue(runner)) == 2)
    with pytest.raises(ControlError) as twice:
        runner.enqueue("alias.mp3")
    assert twice.value.status == 409
    with pytest.raises(ControlError) as twice_by_path:
        runner.enqueue("./a.mp3")
    assert twice_by_path.value.status == 409
    with pytest.raises(ControlError) as not_queued:  # move/remove: the same rules
        runner.move("out.mp3", 0)
    assert not_queued.value.status == 404


def test_upload_refuses_twins_and_bidi_names(runner: StationRunner) -> None:
    data = (runner.folder / "a.mp3").read_bytes()
    runner.upload("caf\u00e9.mp3", io.BytesIO(data), len(data))
    for name, status in (
        ("cafe\u0301.mp3", 409),  # NFD twin of the NFC name
        ("evil\u202egpj.mp3", 400),
        ("tab\there.mp3", 400),
    ):
        with pytest.raises(ControlError) as refused:
            runner.upload(name, io.BytesIO(data), len(data))
        assert refused.value.status == status, name


def test_state_paths_outside_the_folder_are_not_resumed(
    layout: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    music, outside = layout
    state = tmp_path / "state.json"
    x = outside / "x.mp3"
    save_state(
        state,
        PlayState(
            queue=[
                str(x),
                str(music / "out.mp3"),
                str(music / "b.mp3"),
                str(music / ".hidden.mp3"),
            ],
            current=str(x),
            current_offset=417,
            current_stamp=FileStamp.of(x),
        ),
    )
    caplog.set_level(logging.WARNING, "pushsource")
    target = parse_target("icecast://source:pw@127.0.0.1:9/rock")
    keeper, resume = _restore(state, target, music.resolve())
    assert resume == []
    assert keeper.state.queue == [str(music / "b.mp3")]
    assert [r.getMessage() for r in caplog.records if "state file" in r.getMessage()]
    # The same file inside the folder is resumed.
    save_state(
        state,
        PlayState(
            current=str(music / "a.mp3"),
            current_offset=417,
            current_stamp=FileStamp.of(music / "a.mp3"),
        ),
    )
    assert _restore(state, target, music.resolve())[1] == [(music / "a.mp3", 417)]


def test_links_that_appear_later_are_not_queued(tmp_path: Path) -> None:
    music, outside = tmp_path / "music", tmp_path / "outside"
    music.mkdir()
    outside.mkdir()
    make_clean_mp3(outside / "x.mp3", 0.3, freq=400)
    queue = FolderQueue(music, settle=0.3)
    queue.start()
    try:
        (music / "out.mp3").symlink_to(outside / "x.mp3")
        (music / "shadow").symlink_to(outside, target_is_directory=True)
        make_clean_mp3(music / "real.mp3", 0.3, freq=300)
        got = queue.get(timeout=5)
        assert got is not None and got.name == "real.mp3"
        assert queue.get(timeout=1.0) is None  # the links never come
        queue.rescan()  # a walk takes the real file again, never the links
        again = [p.name for p in iter(lambda: queue.get(timeout=1.0), None)]
        assert set(again) <= {"real.mp3"}, again
    finally:
        queue.stop()


def test_a_queued_file_replaced_by_a_link_out_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    music, outside = tmp_path / "music", tmp_path / "outside"
    music.mkdir()
    outside.mkdir()
    make_clean_mp3(outside / "x.mp3", 0.3, freq=400)
    for name in ("a", "b"):
        make_clean_mp3(music / f"{name}.mp3", 0.3, freq=300)
        _old(music / f"{name}.mp3")
    queue = FolderQueue(music, settle=30)  # nothing settles during the test
    queue.start()
    try:
        wait_for(lambda: len(queue.queued()) == 2)
        (music / "a.mp3").unlink()
        (music / "a.mp3").symlink_to(outside / "x.mp3")
        got = queue.get(timeout=5)
        assert got is not None and got.name == "b.mp3"
    finally:
        queue.stop()
