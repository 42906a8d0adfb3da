"""Play state on disk: strict JSON, atomic saves, bad files moved aside, throttled saving."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushsource.workers import state as state_module
from pushsource.workers.state import (
    FileStamp,
    PlayState,
    Position,
    PositionFile,
    StateError,
    StateKeeper,
    default_state_path,
    go_on_from,
    load_state,
    save_state,
)

paths = st.text(min_size=1, max_size=20).map(lambda s: "/m/" + s.replace("\0", ""))
stamps = st.builds(FileStamp, st.integers(0, 2**40), st.integers(-(2**62), 2**62))
entries = st.fixed_dictionaries(
    {"file": st.text(max_size=10), "title": st.text(max_size=10), "started": st.text(max_size=5),
     "gain_db": st.none() | st.floats(-20, 20)},
    optional={"skipped": st.just(True)},
)  # fmt: skip


@st.composite
def play_states(draw: st.DrawFn) -> PlayState:
    current = draw(st.none() | paths)
    return PlayState(
        played=draw(st.dictionaries(paths, stamps, max_size=5)),
        queue=draw(st.lists(paths, max_size=5)),
        current=current,
        current_offset=0 if current is None else draw(st.integers(0, 2**40)),
        current_stamp=None if current is None else draw(st.none() | stamps),
        history=draw(st.lists(entries, max_size=4)),
    )


@given(play_states())
def test_json_round_trip(original: PlayState) -> None:
    text = json.dumps(original.to_json())
    back = PlayState.from_json(json.loads(text))
    assert back == original
    assert list(back.played) == list(original.played)  # order is kept


GOOD = PlayState(queue=["/m/b.mp3"], current="/m/a.mp3", current_offset=7).to_json()


BAD_VALUES: dict[str, list[object]] = {
    "version": [2, True, "1"],
    "played": [[], {"a.mp3": [1, 2]}, {"/a": [1]}, {"/a": [True, 2]}, {"/a": [-1, 2]}, {"/a": {}}],
    "queue": ["/m/b.mp3", [None], ["/m/\0.mp3"]],
    "current": [3, None],  # None: an offset without a track
    "current_offset": [-1, 1.5],
    "current_stamp": [[1, 2.0], [1, 2, 3]],
    "history": [
        {},
        [1],
        [{"file": "a.mp3"}],
        [{"file": 1, "title": "t", "started": "s"}],
        [{"file": "a", "title": "t", "started": "s", "gain_db": "loud"}],
    ],
    "surprise": [1],
}
MALFORMED: list[object] = [None, [], "x", {}, {"version": 1}] + [
    {**GOOD, key: value} for key, values in BAD_VALUES.items() for value in values
]


@pytest.mark.parametrize("data", MALFORMED)
def test_from_json_rejects_malformed_data(data: object) -> None:
    with pytest.raises(StateError):
        PlayState.from_json(data)


def test_save_then_load(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "station.json"
    latin1 = os.fsdecode(b"/m/caf\xe9.mp3")  # not UTF-8: a surrogate escape in the str
    saved = PlayState({"/m/a.mp3": FileStamp(1, 2)}, [latin1], "/m/c.mp3", 9, FileStamp(3, 4))
    save_state(path, saved)
    assert load_state(path) == saved
    assert os.fsencode(load_state(path).queue[0]) == b"/m/caf\xe9.mp3"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert os.listdir(path.parent) == ["station.json"]


def test_a_failed_replace_keeps_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "station.json"
    save_state(path, PlayState(queue=["/m/old.mp3"]))
    before = path.read_bytes()

    def crash(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StateError) as caught:
        save_state(path, PlayState(queue=["/m/new.mp3"]))
    assert caught.value.path == path
    assert "No space left on device" in str(caught.value)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["station.json"]


def test_missing_file_is_an_empty_state_and_dead_temps_go(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "station.json"
    dead = tmp_path / "station.json.tmp-999999999"  # above any pid_max
    mine = tmp_path / f"station.json.tmp-{os.getpid()}"
    other = tmp_path / "other.json.tmp-999999999"
    for f in (dead, mine, other):
        f.write_text("{")
    assert load_state(path) == PlayState()
    assert sorted(os.listdir(tmp_path)) == sorted([mine.name, other.name])
    assert caplog.records == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"\x00\xffgarbage", "not JSON"),
        (b'{"version": 1, "played"', "not JSON"),
        pytest.param(b"[" * 100_000, "not JSON", id="deep"),
        (json.dumps({**GOOD, "version": 99}).encode(), "unknown version 99"),
    ],
)
def test_a_bad_file_is_moved_aside_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, reason: str
) -> None:
    path = tmp_path / "station.json"
    path.write_bytes(content)
    with caplog.at_level(logging.DEBUG, logger="pushsource.state"):
        assert load_state(path) == PlayState()
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert str(path) in record.getMessage() and reason in record.getMessage()
    assert not path.exists()
    assert (tmp_path / "station.json.corrupt").read_bytes() == content


def test_an_older_corrupt_file_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "station.json"
    (tmp_path / "station.json.corrupt").write_text("first")
    path.write_text("second")
    load_state(path)
    assert (tmp_path / "station.json.corrupt").read_text() == "first"
    assert (tmp_path / "station.json.corrupt.1").read_text() == "second"


def test_was_played_follows_the_file_version(tmp_path: Path) -> None:
    song = tmp_path / "a.mp3"
    song.write_bytes(b"x" * 10)
    state = PlayState()
    assert not state.was_played(song)
    state.mark_played(song)
    assert state.was_played(song)
    os.utime(song, ns=(0, song.stat().st_mtime_ns + 1))
    assert not state.was_played(song)  # same size, new mtime

    state.mark_played(song)
    mtime = song.stat().st_mtime_ns
    song.write_bytes(b"y" * 11)
    os.utime(song, ns=(0, mtime))
    assert not state.was_played(song)  # same mtime, new size

    song.unlink()
    assert not state.was_played(song)
    state.mark_played(song)  # nothing to stamp: forgotten
    assert str(song) not in state.played


def test_mark_played_keeps_the_newest_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module, "PLAYED_CAP", 3)
    state = PlayState()
    for name in ["a", "b", "c", "a", "d"]:
        state.mark_played(Path("/m", name), FileStamp(1, 1))
    assert list(state.played) == ["/m/c", "/m/a", "/m/d"]


def test_default_state_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    path = default_state_path("127.0.0.1:8000/stream")
    assert path.parent == tmp_path / "xdg" / "pushsource"
    assert path.name.startswith("127.0.0.1_8000_stream-") and path.suffix == ".json"
    assert default_state_path("127.0.0.1:8000/stream") == path
    assert default_state_path("127.0.0.1:8000/stream?") != path
    assert default_state_path("127.0.0.1_8000/stream") != path
    assert len(default_state_path("h:1/" + "x" * 1000).name) < 200

    for unset in ["", "relative/dir"]:  # the XDG spec ignores relative values
        monkeypatch.setenv("XDG_STATE_HOME", unset)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        fallback = tmp_path / "home" / ".local" / "state" / "pushsource" / path.name
        assert default_state_path("127.0.0.1:8000/stream") == fallback


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_keeper_saves_changes_at_most_every_interval(tmp_path: Path) -> None:
    path, clock = tmp_path / "s.json", Clock()
    keeper = StateKeeper(path, PlayState(), interval=1.0, clock=clock)
    keeper.maybe_save()
    assert not path.exists()  # nothing changed

    keeper.state.queue.append("/m/a.mp3")
    keeper.changed()
    keeper.maybe_save()
    assert load_state(path).queue == ["/m/a.mp3"]

    keeper.state.queue.append("/m/b.mp3")
    keeper.changed()
    clock.now += 0.5
    keeper.maybe_save()
    assert load_state(path).queue == ["/m/a.mp3"]  # too soon
    clock.now += 0.5
    keeper.maybe_save()
    assert load_state(path).queue == ["/m/a.mp3", "/m/b.mp3"]
    assert not keeper.dirty

    keeper.state.current = "/m/c.mp3"
    keeper.changed()
    keeper.save_now()  # no interval for a track change
    assert load_state(path).current == "/m/c.mp3"


def test_keeper_survives_a_failing_disk_and_warns_once_a_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path, clock = tmp_path / "s.json", Clock()
    keeper = StateKeeper(path, PlayState(), clock=clock)
    real_replace = os.replace

    def full(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    caplog.set_level(logging.INFO, logger="pushsource.state")
    keeper.changed()
    for _ in range(30):  # one try a second for 30 s, and save_now on every track change
        keeper.maybe_save()
        keeper.save_now()
        clock.now += 1.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "No space left on device" in warnings[0].getMessage()
    assert keeper.dirty

    clock.now += 60.0
    keeper.maybe_save()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2

    monkeypatch.setattr(os, "replace", real_replace)
    clock.now += 1.0
    keeper.maybe_save()
    assert not keeper.dirty and load_state(path) == PlayState()
    assert "state saved to" in caplog.records[-1].getMessage()


@given(play_states(), st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3)), max_size=30))
def test_the_keeper_writes_what_to_json_says_however_played_changes(
    original: PlayState, marks: list[tuple[int, int]]
) -> None:
    # The keeper keeps the encoded "played" part between saves: after any
    # mark_played() it must still write exactly the state.
    encoder = state_module._Encoder()
    current = PlayState.from_json(original.to_json())
    for number, size in marks:
        assert json.loads(encoder.encode(current, current.snapshot())) == current.to_json()
        current.mark_played(Path(f"/m/{number}.mp3"), FileStamp(size, number))
        current.current_offset += size
    assert json.loads(encoder.encode(current, current.snapshot())) == current.to_json()


def test_keeper_does_not_rewrite_an_unchanged_state(tmp_path: Path) -> None:
    path, clock = tmp_path / "s.json", Clock()
    keeper = StateKeeper(path, PlayState(queue=["/m/a.mp3"]), interval=1.0, clock=clock)
    keeper.changed()
    keeper.save_now()
    written = os.stat(path)
    keeper.changed()  # nothing really changed (idle: the same place)
    keeper.save_now()
    assert not keeper.dirty
    assert os.stat(path).st_ino == written.st_ino  # no new file: no write, no fsync
    keeper.state.current_offset = 0
    keeper.state.current = "/m/a.mp3"
    keeper.changed()
    keeper.save_now()
    assert os.stat(path).st_ino != written.st_ino
    assert load_state(path).current == "/m/a.mp3"


def test_history_survives_a_save_and_old_files_without_it_load(tmp_path: Path) -> None:
    path = tmp_path / "station.json"
    entry = {"file": "a.mp3", "title": "Band - Song", "started": "2026-12-01T10:00:00Z",
             "gain_db": -1.5, "skipped": True}  # fmt: skip
    saved = PlayState(queue=["/m/b.mp3"], history=[entry])
    save_state(path, saved)
    assert load_state(path).history == [entry]
    # What an older pushsource wrote (no "history"): loads, with an empty history.
    old = {k: v for k, v in PlayState(queue=["/m/b.mp3"]).to_json().items() if k != "history"}
    path.write_text(json.dumps(old), "utf-8")
    loaded = load_state(path)
    assert loaded.queue == ["/m/b.mp3"] and loaded.history == []
    assert not list(tmp_path.glob("*.corrupt*"))
    # Only the newest HISTORY_CAP entries are kept.
    many = PlayState(history=[{**entry, "file": f"{n}.mp3"} for n in range(80)])
    back = PlayState.from_json(json.loads(json.dumps(many.to_json())))
    assert [e["file"] for e in back.history] == [f"{n}.mp3" for n in range(50)]


# --- the position file: where a station was when the process died ---------------------


def test_position_file_keeps_the_last_offset_of_the_playing_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json.pos"
    positions = PositionFile.open(path)
    assert positions is not None
    positions.track("/m/a.mp3", FileStamp(4171, 17), 0)
    for offset in range(0, 41730, 417):
        positions.at(offset)
    # No close, no flush: a killed process leaves the mapped page as it was.
    again = PositionFile.open(path)
    assert again is not None
    assert again.read() == Position("/m/a.mp3", FileStamp(4171, 17), 41700)
    positions.track("/m/b.mp3", FileStamp(9, 9), 835)
    assert again.read() == Position("/m/b.mp3", FileStamp(9, 9), 835)
    positions.track(None, None)
    assert again.read() is None


def test_position_file_names_not_utf8_and_too_long_ones(tmp_path: Path) -> None:
    positions = PositionFile.open(tmp_path / "p")
    assert positions is not None
    odd = os.fsdecode(b"/m/bad\xff\xfe.mp3")
    positions.track(odd, FileStamp(1, 2), 3)
    assert positions.read() == Position(odd, FileStamp(1, 2), 3)
    positions.track("/m/" + "x" * 5000, FileStamp(1, 2), 3)
    assert positions.read() is None  # the state file has it; this file does not guess


def test_position_file_half_written_record_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "p"
    positions = PositionFile.open(path)
    assert positions is not None
    positions.track("/m/a.mp3", FileStamp(1, 1), 100)
    positions.track("/m/b.mp3", FileStamp(2, 2), 200)
    positions.at(300)
    positions.close()
    raw = bytearray(path.read_bytes())
    newest = state_module._POS_SLOTS[0]  # generation 2 is in slot 0
    raw[newest + state_module._POS_HEAD.size] ^= 0xFF  # its path, as if the kill came mid-write
    path.write_bytes(bytes(raw))
    again = PositionFile.open(path)
    assert again is not None
    # The older record is whole, but the offset word belongs to the torn one.
    assert again.read() is None
    again.track("/m/c.mp3", FileStamp(3, 3), 7)  # and it goes on from there
    assert again.read() == Position("/m/c.mp3", FileStamp(3, 3), 7)


def test_position_file_that_is_not_one_is_started_afresh(tmp_path: Path) -> None:
    path = tmp_path / "p"
    path.write_bytes(b"junk" * 10)
    positions = PositionFile.open(path)
    assert positions is not None
    assert positions.read() is None
    assert path.stat().st_size == 4096
    assert PositionFile.open(tmp_path / "a-file" / "p") is not None  # directories are made
    (tmp_path / "file").write_bytes(b"")
    assert PositionFile.open(tmp_path / "file" / "p") is None  # cannot be: the state file alone


def test_go_on_from_a_newer_offset_in_the_same_file() -> None:
    state = PlayState(queue=["/m/b.mp3"], current="/m/a.mp3", current_offset=1000,
                      current_stamp=FileStamp(5, 5))  # fmt: skip
    assert go_on_from(state, Position("/m/a.mp3", FileStamp(5, 5), 9000))
    assert (state.current, state.current_offset, state.queue) == ("/m/a.mp3", 9000, ["/m/b.mp3"])
    # Another version of the file: the state's own offset stands.
    assert not go_on_from(state, Position("/m/a.mp3", FileStamp(6, 6), 100))
    assert state.current_offset == 9000
    assert not go_on_from(state, None)


def test_go_on_from_a_file_that_started_after_the_last_save(tmp_path: Path) -> None:
    a, b = tmp_path / "a.mp3", tmp_path / "b.mp3"
    a.write_bytes(b"a")
    stamp_a = FileStamp.of(a)
    state = PlayState(queue=[str(b), "/m/c.mp3"], current=str(a), current_offset=1,
                      current_stamp=stamp_a)  # fmt: skip
    assert go_on_from(state, Position(str(b), FileStamp(2, 2), 4170))
    assert (state.current, state.current_stamp, state.current_offset) == (
        str(b),
        FileStamp(2, 2),
        4170,
    )
    assert state.queue == ["/m/c.mp3"]
    assert state.was_played(a)  # it ended before b started


def test_go_on_from_a_file_that_ended_and_was_saved_since() -> None:
    state = PlayState(queue=["/m/c.mp3"], current=None)
    assert not go_on_from(state, Position("/m/b.mp3", FileStamp(2, 2), 4170))
    assert (state.current, state.queue) == (None, ["/m/c.mp3"])


def test_a_save_writes_the_snapshot_not_the_state_changed_since(tmp_path: Path) -> None:
    """The engine's thread changes the state while a worker saves it: the save
    holds one moment (the new track never with the old track's offset)."""
    state = PlayState(queue=["/m/b.mp3"], current="/m/a.mp3", current_offset=40000,
                      current_stamp=FileStamp(1, 1))  # fmt: skip
    snap = state.snapshot()
    keeper = StateKeeper(tmp_path / "s.json", state)
    # Half of a track change, as a worker might see it mid-way.
    state.current, state.current_stamp = "/m/b.mp3", FileStamp(2, 2)
    keeper.changed()
    keeper.save_now(snap)
    saved = load_state(tmp_path / "s.json")
    assert (saved.current, saved.current_offset, saved.current_stamp, saved.queue) == (
        "/m/a.mp3",
        40000,
        FileStamp(1, 1),
        ["/m/b.mp3"],
    )
