"""DJ sets recorded (issue 22, item 4), without a server: the record path's
template and its checks at config load; in virtual time, the station machine's
batches during a set (and only those) into one file per set; a path that
cannot be written, a full disk and a disk that falls behind each cost the
recording one line, never the set; the history links to the file and the
control API serves only such files."""

from __future__ import annotations

import calendar
import http.client
import itertools
import json
import logging
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from mutagen.id3 import ID3

from pushsource.core import effects as fx
from pushsource.core.frames import parse_header
from pushsource.core.live import Live
from pushsource.engine.loop import Engine
from pushsource.errors import ConfigError
from pushsource.ops.cli import build_parser, stream_settings
from pushsource.ops.config import load_config
from pushsource.ops.control import ControlServer
from pushsource.ops.runner import StationRunner
from pushsource.ops.settings import LiveSettings, StationSettings
from pushsource.workers.feed import ListSource
from pushsource.workers.recorder import (
    Recording,
    RecordTemplate,
    RecordWriter,
    SetRecorder,
    safe_part,
)
from tests.support.disk import fill, small_tmpfs
from tests.support.sim import FRAME, Sim, make, write
from tests.synth import make_frames
from tests.test_live import SILENCE, dj, with_live

START = float(calendar.timegm((2026, 12, 7, 6, 30, 0)))


# --- the template -------------------------------------------------------------------------


def test_placeholders_are_filled_in() -> None:
    template = RecordTemplate("/srv/sets/{station}/{start}-{user}.mp3")
    path = template.render("rock", "alice", START)
    assert path == Path("/srv/sets/rock/2026-12-07T06-30-00Z-alice.mp3")
    assert template.root == Path("/srv/sets")
    assert template.name_of(path) == "rock/2026-12-07T06-30-00Z-alice.mp3"
    # Plain braces, written doubled, stay braces.
    assert RecordTemplate("/r/{{x}}-{user}.mp3").render("s", "bob", START) == Path("/r/{x}-bob.mp3")


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("../../etc/passwd", "_.._etc_passwd"),
        ("..", "_"),
        (".hidden", "hidden"),
        ("a/b\\c", "a_b_c"),
        ("dj\nnew line", "dj_new line"),
        ("", "_"),
        ("Zoë 😀", "Zoë 😀"),
        ("x" * 300, "x" * 100),
    ],
)
def test_a_user_cannot_leave_its_folder(user: str, expected: str) -> None:
    assert safe_part(user) == expected
    template = RecordTemplate("/srv/sets/{user}/{start}.mp3")
    path = template.render("rock", user, START)
    assert path.parent.parent == Path("/srv/sets")  # one component, whatever the name
    assert ".." not in path.parts


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("/srv/{dj}/{start}.mp3", "unknown placeholder {dj}"),
        ("/srv/{}.mp3", "unknown placeholder {}"),
        ("/srv/{0}.mp3", "unknown placeholder {0}"),
        ("/srv/{user.name}.mp3", "unknown placeholder {user.name}"),
        ("/srv/{user.mp3", "expected '}'"),
        ("/srv/user}.mp3", "Single '}'"),
        ("/srv/{start:%Y}.mp3", "takes no format"),
        ("/srv/{user!r}.mp3", "takes no format"),
        ("/srv/sets/", "names a folder"),
        ("  ", "empty"),
    ],
)
def test_a_bad_template_is_one_line(template: str, says: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        RecordTemplate(template)
    message = str(caught.value)
    assert says in message and "\n" not in message


def live_config(tmp_path: Path, record: str) -> Path:
    (tmp_path / "rock").mkdir(exist_ok=True)
    path = tmp_path / "stations.toml"
    path.write_text(
        f"""
[[station]]
folder = "rock"
url = "icecast://source:hackme@127.0.0.1:8000/rock"

[station.live]
listen = "127.0.0.1:8010"
users = {{ alice = "pw-alice-1" }}
record = "{record}"
""",
        encoding="utf-8",
    )
    return path


def test_record_key_in_the_config_is_relative_to_its_folder(tmp_path: Path) -> None:
    config = load_config(live_config(tmp_path, "sets/{station}/{start}-{user}.mp3"), {})
    live = config.stations[0].live
    assert isinstance(live, LiveSettings)
    assert live.record == str(tmp_path / "sets/{station}/{start}-{user}.mp3")


def test_an_unknown_placeholder_is_refused_at_config_load(tmp_path: Path) -> None:
    path = live_config(tmp_path, "sets/{dj}-{start}.mp3")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    message = str(caught.value)
    assert 'key "record"' in message and "unknown placeholder {dj}" in message
    assert "\n" not in message and "pw-alice-1" not in message


def test_live_record_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "music").mkdir()
    monkeypatch.chdir(tmp_path)
    base = ["stream", "music", "icecast://source:pw@127.0.0.1:8000/rock"]
    live = ["--live-listen", "127.0.0.1:8010", "--live-user", "alice:pw"]
    args = build_parser().parse_args([*base, *live, "--live-record", "sets/{user}.mp3"])
    settings = stream_settings(args)
    assert settings.live is not None
    assert settings.live.record == str(tmp_path / "sets/{user}.mp3")
    with pytest.raises(ConfigError, match=r"--live-record: unknown placeholder \{who\}"):
        stream_settings(build_parser().parse_args([*base, *live, "--live-record", "{who}.mp3"]))
    with pytest.raises(ConfigError, match="--live-record needs --live-listen"):
        stream_settings(build_parser().parse_args([*base, "--live-record", "{user}.mp3"]))


# --- in virtual time: the set's batches, and only those -------------------------------------


class NowWriter(RecordWriter):
    """The writer's jobs at once, on the caller's thread (virtual time)."""

    def submit(self, job: Callable[[], object]) -> None:
        job()


class Heard:
    """The station's recording events, as the runner hears them."""

    def __init__(self) -> None:
        self.opened: list[Recording] = []
        self.ended: list[Recording] = []

    def recording_opened(self, rec: Recording) -> None:
        self.opened.append(rec)

    def recording_ended(self, rec: Recording) -> None:
        self.ended.append(rec)


class RecordingSim(Sim):
    """The Sim, with a SetRecorder fed as engine/station.py's StationDriver
    feeds it: each Send that went out with the machine's ``airing``, each
    title set during a set, a check after each step, close at the end."""

    recorder: SetRecorder

    def apply(self, effects: list[fx.Effect]) -> None:
        m = self.machine
        for effect in effects:
            if isinstance(effect, fx.Send) and self.conns and self.conns[-1].closed is None:
                airing = m.airing
                self.recorder.sent(
                    airing, airing.user if airing else None, effect.data, effect.frames
                )
            elif isinstance(effect, fx.SetTitle) and m.live is not None and m.live.on_air:
                self.recorder.title(m.live, effect.title)
        super().apply(effects)
        live = m.live
        on = live is not None and live.on_air
        self.recorder.check(live if on else None, live.user if on and live else None)
        if self.finished is not None:
            self.recorder.close()


def recording_sim(
    tmp_path: Path,
    source: ListSource,
    writer: RecordWriter | None = None,
    template: str = "sets/{station}/{start}-{user}.mp3",
) -> tuple[RecordingSim, Heard]:
    plain = with_live(make(source))
    sim = RecordingSim(plain.machine, plain.feed, plain.plan)
    heard = Heard()
    sim.recorder = SetRecorder(
        RecordTemplate(str(tmp_path / template)),
        "rock",
        writer or NowWriter(),
        frame_seconds=FRAME,
        bytes_per_second=16000,
        call=lambda fn, *args: fn(*args),
        events=heard,
        wall=lambda: sim.now - 1000.0 + START,
    )
    return sim, heard


def frames_of(path: Path) -> bytes:
    """A recording's audio: what follows its ID3 tag; checks the tag is there."""
    data = path.read_bytes()
    assert data[:3] == b"ID3"
    size = sum((b & 0x7F) << (7 * (3 - n)) for n, b in enumerate(data[6:10])) + 10
    return data[size:]


def test_a_set_is_recorded_as_it_went_on_air_one_file_per_set(tmp_path: Path) -> None:
    write(tmp_path / "a.mp3", make_frames(2000))  # about 52 s
    sim, heard = recording_sim(tmp_path, ListSource([tmp_path / "a.mp3"]))
    t0 = sim.now
    one = make_frames(300, seed=17)  # about 7.8 s
    two = make_frames(200, seed=18)
    dj(sim, t0 + 5.0, one, title=(t0 + 7.0, "Alice - Tune"))
    dj(sim, t0 + 25.0, two, user="bob")  # the folder took back between them
    sim.run()
    [conn] = sim.conns
    stream = conn.stream()
    files = sorted((tmp_path / "sets/rock").iterdir())
    assert [f.name for f in files] == [
        "2026-12-07T06-30-05Z-alice.mp3",
        "2026-12-07T06-30-25Z-bob.mp3",
    ]
    assert [r.final for r in heard.opened] == files
    assert [r.error for r in heard.ended] == [None, None]
    for path, frames in zip(files, (one, two), strict=True):
        audio = frames_of(path)
        # The set as it went out: the DJ's frames (after the splice), then the
        # grace's silence, all of it in the stream at one place, byte for byte.
        at = stream.index(audio)
        assert b"".join(frames[5:]) in audio
        assert stream[at - 418 : at] not in audio  # the folder's frame before it is not
        # Its length: the set's time on air, the DJ's frames and the grace.
        seconds = len(audio) / 418 * FRAME
        assert len(frames) * FRAME + 4.5 < seconds < len(frames) * FRAME + 5.5
        assert parse_header(audio) is not None
        # What follows in the stream is the folder's, not in the file.
        assert stream[at + len(audio) : at + len(audio) + 418] != audio[-418:]
    alice = ID3(files[0])
    assert str(alice["TIT2"]) == "Alice - Tune"  # the DJ's first title
    assert str(alice["TPE1"]) == "alice"
    assert str(alice["TDRC"]) == "2026-12-07 06:30:05"
    assert "Alice - Tune" in str(alice["COMM:titles:eng"])
    assert str(ID3(files[1])["TIT2"]) == "Live: bob"  # none sent: the live title


def test_an_outage_during_a_set_is_one_file_with_what_went_out(tmp_path: Path) -> None:
    write(tmp_path / "a.mp3", make_frames(1500))

    def plan(n: int) -> str | tuple[str, int]:
        return ("accept", 200) if n == 1 else "accept"  # dropped on its 200th send

    sim, heard = recording_sim(tmp_path, ListSource([tmp_path / "a.mp3"]))
    sim.plan = plan
    frames = make_frames(600, seed=21)
    dj(sim, sim.now + 5.0, frames)
    sim.run()
    first, second = sim.conns
    assert len(heard.opened) == 1 and len(heard.ended) == 1  # one set, one file
    assert heard.opened[0].final is not None
    audio = frames_of(heard.opened[0].final)
    # What it holds: the set on the first connection, the batch handed to
    # the kernel as the connection broke (it went out, as far as we know),
    # then the set on the second.
    lost = [call[1] for call in first.calls if call[0] == "send"][-1]
    before = audio.index(lost)
    assert audio[:before] in first.stream() and audio[:before].startswith(b"".join(frames)[:0])
    assert audio[before + len(lost) :] in second.stream()
    assert b"".join(frames[-100:]) in audio


def test_stopping_during_a_set_records_no_closing_silence(tmp_path: Path) -> None:
    write(tmp_path / "a.mp3", make_frames(1500))
    sim, heard = recording_sim(tmp_path, ListSource([tmp_path / "a.mp3"]))
    frames = make_frames(600, seed=22)
    dj(sim, sim.now + 3.0, frames, leave=False)
    sim.schedule(sim.now + 8.0, lambda: sim.step(sim.machine.stop))
    sim.run()
    [rec] = heard.ended
    assert rec.final is not None
    audio = frames_of(rec.final)
    stream = sim.conns[-1].stream()
    at = stream.index(audio)
    assert b"".join(frames[5:60]) in audio
    # After it only the closing silence went out: not in the file.
    after = stream[at + len(audio) :]
    assert len(after) >= 1400 and after == SILENCE * (len(after) // len(SILENCE))


# --- the disk: unwritable, full, behind ---------------------------------------------------


def one_set(
    tmp_path: Path, template: str, writer: RecordWriter, rate: float = 16000
) -> tuple[SetRecorder, Live]:
    recorder = SetRecorder(
        RecordTemplate(template),
        "rock",
        writer,
        frame_seconds=FRAME,
        bytes_per_second=rate,
        call=lambda fn, *args: fn(*args),
        wall=lambda: START,
    )
    return recorder, Live("alice", on_air=True)


def test_an_unwritable_path_costs_one_line_not_the_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("not a folder")
    recorder, live = one_set(tmp_path, str(tmp_path / "file/{user}/{start}.mp3"), NowWriter())
    frame = make_frames(1)[0]
    with caplog.at_level(logging.INFO, logger="pushsource"):
        for _ in range(200):
            recorder.sent(live, "alice", frame * 4, 4)  # returns: the air goes on
        recorder.check(None, None)
    lines = [r.getMessage() for r in caplog.records if "record" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "not recording alice's set: cannot write" in lines[0]
    assert str(tmp_path / "file") in lines[0] and "Not a directory" in lines[0]
    assert not (tmp_path / "file").is_dir()


def test_a_read_only_folder_costs_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_tmpfs(64) as disk:
        done = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot remount read-only: {done.stderr!r}")
        recorder, live = one_set(tmp_path, str(disk / "sets/{start}.mp3"), NowWriter())
        with caplog.at_level(logging.WARNING, logger="pushsource"):
            recorder.sent(live, "alice", make_frames(1)[0], 1)
            recorder.close()
        [line] = [r.getMessage() for r in caplog.records]
        assert f"cannot write {disk / 'sets'}" in line and "Read-only file system" in line
        assert not (disk / "sets").exists()


@pytest.mark.parametrize("disk", ["unwritable", "full"])
def test_the_set_airs_whole_whatever_the_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, disk: str
) -> None:
    """In virtual time: a DJ's whole set reaches the connection, with a path
    that cannot be written or a disk that fills up during it; one line."""
    write(tmp_path / "a.mp3", make_frames(1500))
    frames = make_frames(500, seed=31)
    with small_tmpfs(256) as where:
        if disk == "full":
            fill(where, 40_000)  # the tag and about a second and a half of the set
            template = str(where / "{user}.mp3")
        else:
            (tmp_path / "file").write_text("in the way")
            template = "file/{user}.mp3"
        sim, heard = recording_sim(tmp_path, ListSource([tmp_path / "a.mp3"]), template=template)
        with caplog.at_level(logging.INFO, logger="pushsource"):
            dj(sim, sim.now + 3.0, frames)
            sim.run()
        kept = frames_of(where / "alice.mp3") if disk == "full" else b""
    stream = sim.conns[-1].stream()
    assert b"".join(frames[5:]) in stream  # the set went out whole
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    if disk == "full":
        assert "No space left on device" in warnings[0]
        assert 20_000 < len(kept) < 40_000 and kept in stream
    else:
        assert "Not a directory" in warnings[0] and heard.opened == []


def test_a_full_disk_stops_the_recording_keeping_whole_frames(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames = make_frames(2000, seed=5)
    with small_tmpfs(256) as disk:
        fill(disk, 60_000)  # room for the tag and about 140 frames
        recorder, live = one_set(tmp_path, str(disk / "{user}-{start}.mp3"), NowWriter())
        with caplog.at_level(logging.INFO, logger="pushsource"):
            for i in range(0, len(frames), 5):
                recorder.sent(live, "alice", b"".join(frames[i : i + 5]), 5)
            recorder.close()
        path = disk / "alice-2026-12-07T06-30-00Z.mp3"
        audio = frames_of(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "recording alice's set stopped at" in warnings[0]
    assert str(path) in warnings[0] and "No space left on device" in warnings[0]
    # Whole frames, the first of the set on: the batch half written is gone.
    ends = list(itertools.accumulate(len(frame) for frame in frames))
    assert len(audio) in ends and 20 < ends.index(len(audio)) < 200
    assert b"".join(frames).startswith(audio)


def test_a_writer_that_falls_behind_drops_the_recording_not_the_air(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = RecordWriter()
    gate = threading.Event()
    writer.submit(gate.wait)  # the disk hangs
    # 60 s of audio may wait for the disk: at 1000 bytes a second, the floor of 64 KiB.
    recorder, live = one_set(tmp_path, str(tmp_path / "{user}.mp3"), writer, rate=1000)
    frames = make_frames(400, seed=6)
    try:
        with caplog.at_level(logging.WARNING, logger="pushsource"):
            for i in range(0, 400, 4):
                recorder.sent(live, "alice", b"".join(frames[i : i + 4]), 4)  # never waits
        rec = recorder.current
        assert rec is not None and rec.dropped == "the disk is behind"
        assert 64 * 1024 < rec.queued <= 64 * 1024 + 4 * 418
        [line] = [r.getMessage() for r in caplog.records]
        assert "recording alice's set dropped at" in line and "the set goes on" in line
    finally:
        gate.set()
        recorder.close()
        writer.close()
    # The file keeps what was handed over before the drop, whole frames.
    assert frames_of(tmp_path / "alice.mp3") == b"".join(frames)[: rec.queued]


def test_a_file_of_that_name_is_left_alone(tmp_path: Path) -> None:
    recorder, live = one_set(tmp_path, str(tmp_path / "{user}.mp3"), NowWriter())
    (tmp_path / "alice.mp3").write_bytes(b"an older set")
    frame = make_frames(1)[0]
    recorder.sent(live, "alice", frame, 1)
    recorder.sent(Live("alice", on_air=True), "alice", frame * 2, 2)  # the next set, same second
    recorder.close()
    assert (tmp_path / "alice.mp3").read_bytes() == b"an older set"
    assert frames_of(tmp_path / "alice-2.mp3") == frame
    assert frames_of(tmp_path / "alice-3.mp3") == frame * 2


def test_the_writer_does_all_it_was_handed_before_it_stops_and_starts_again() -> None:
    writer = RecordWriter()
    gate = threading.Event()
    done: list[int] = []
    writer.submit(gate.wait)
    for n in range(3):
        writer.submit(lambda n=n: done.append(n))
    gate.set()
    writer.close()
    assert done == [0, 1, 2]
    assert not any(t.name == "pushsource-record" for t in threading.enumerate())
    writer.submit(lambda: done.append(3))  # a set after a close: a thread again
    writer.close()
    assert done == [0, 1, 2, 3]


# --- the history links to it; the control API serves it, and nothing else ----------------


@pytest.fixture
def station(tmp_path: Path) -> Iterator[StationRunner]:
    music = tmp_path / "music"
    music.mkdir()
    settings = StationSettings(
        folder=music,
        url="icecast://source:pw@127.0.0.1:9/rock",
        id="rock",
        state=tmp_path / "state.json",
        cache=tmp_path / "cache",
        live=LiveSettings(
            ("127.0.0.1", 0),
            users=(("alice", "pw"),),
            record=str(tmp_path / "sets/{station}/{start}-{user}.mp3"),
        ),
    )
    engine = Engine().start()
    runner = StationRunner(settings, {}, engine=engine)
    yield runner
    engine.stop()
    runner.close()


def get(server: ControlServer, path: str, method: str = "GET") -> tuple[int, bytes, Any]:
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    conn.request(method, path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body, response


def test_the_history_links_the_recording_and_only_it_is_served(
    station: StationRunner, tmp_path: Path
) -> None:
    live = Live("alice", on_air=True)
    path = tmp_path / "sets/rock/2026-12-07T06-30-00Z-alice.mp3"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"ID3 and frames")
    rec = Recording("rock", "alice", live, START, path, FRAME, final=path)
    station.live_title(live, "Alice - Tune")  # the set's first title, then its file opens
    station.recording_opened(rec)
    station.live_title(live, "Alice - Second")
    url = "/api/stations/rock/recordings/" + quote("rock/2026-12-07T06-30-00Z-alice.mp3", safe="")
    history = station.status()["history"]
    assert [(e["title"], e.get("recording"), e.get("recording_url")) for e in history] == [
        ("Alice - Second", str(path), url),
        ("Alice - Tune", str(path), url),
    ]
    outside = tmp_path / "secret.txt"
    outside.write_text("not a recording")
    # A history entry naming a file outside the record folder (a state file
    # edited by hand) is not served either.
    station._history.append(
        {"file": "", "title": "x", "started": "", "recording": str(outside),
         "recording_url": "/api/stations/rock/recordings/x.mp3"}
    )  # fmt: skip
    with ControlServer(("127.0.0.1", 0), [station], token=None) as server:
        server.start()
        status, body, response = get(server, url)
        assert status == 200 and body == b"ID3 and frames"
        assert response.getheader("Content-Type") == "audio/mpeg"
        assert "attachment" in response.getheader("Content-Disposition")
        status, body, response = get(server, url, "HEAD")
        assert status == 200 and body == b"" and response.getheader("Content-Length") == "14"
        base = "/api/stations/rock/recordings/"
        for name in (
            "x.mp3",  # named by the history, but outside the record folder
            quote("../../secret.txt", safe=""),
            quote(str(outside), safe=""),
            quote("rock/../../secret.txt", safe=""),
            "2026-12-07T06-30-00Z-alice.mp3",  # its base name alone
            quote("rock/2026-12-07T06-30-00Z-bob.mp3", safe=""),
        ):
            status, body, _ = get(server, base + name)
            assert status == 404 and b"not a recording" not in body, name
        status, _, _ = get(server, url, "POST")
        assert status == 405
        # The recording replaced by a link to a file outside: not followed.
        path.unlink()
        path.symlink_to(outside)
        status, body, _ = get(server, url)
        assert status == 404 and b"not a recording" not in body


@pytest.mark.parametrize("record", ["music/{start}.mp3", "{user}/{start}.mp3"])
def test_recordings_may_not_go_into_the_music_folder(tmp_path: Path, record: str) -> None:
    music = tmp_path / "music"
    music.mkdir()
    (tmp_path / "alice").symlink_to(music)  # {user}: alice's sets would land in it too
    settings = StationSettings(
        folder=music,
        url="icecast://source:pw@127.0.0.1:9/rock",
        id="rock",
        state=tmp_path / "state.json",
        cache=tmp_path / "cache",
        live=LiveSettings(
            ("127.0.0.1", 0), users=(("alice", "pw"),), record=str(tmp_path / record)
        ),
    )
    engine = Engine()
    try:
        with pytest.raises(ConfigError, match=r"in the music folder .* which would play them"):
            StationRunner(settings, {}, engine=engine)
    finally:
        engine.stop()


def test_a_set_whose_file_could_not_open_has_no_link(station: StationRunner) -> None:
    live = Live("alice", on_air=True)
    station.live_title(live, "Alice - Tune")
    rec = Recording("rock", "alice", live, START, Path("/nowhere/x.mp3"), FRAME, error="denied")
    station.recording_ended(rec)
    [entry] = station.status()["history"]
    assert "recording" not in entry and entry["live"] == "alice"


def test_the_recording_fields_survive_a_restart(tmp_path: Path) -> None:
    from pushsource.workers.state import PlayState, load_state

    state = PlayState()
    entry = {
        "file": "", "title": "Alice - Tune", "started": "2026-12-07T06:30:00Z",
        "gain_db": None, "live": "alice", "recording": "/srv/sets/a.mp3",
        "recording_url": "/api/stations/rock/recordings/a.mp3",
    }  # fmt: skip
    state.history = [entry]
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state.to_json()), encoding="utf-8")
    assert load_state(path).history == [entry]
