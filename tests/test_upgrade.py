"""Restart in place without a server: a station machine's place handed to a
new one (virtual time), the ICY place carried on by a new writer, the bridge's
sends, finding the running process and the check of the new image."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pushsource.core import effects as fx
from pushsource.core.icy import IcyWriter
from pushsource.core.station import Carried, Tail
from pushsource.errors import ConfigError
from pushsource.ops import handover
from pushsource.workers.feed import ListSource
from tests.support.sim import FRAME, LEAD, Sim, make, write
from tests.synth import id3v2, make_frames


def _until(sim: Sim, when: float, then: object = None) -> None:
    """Run ``sim`` until virtual time ``when`` (then call ``then``)."""

    def stop() -> None:
        if then is not None:
            then()  # type: ignore[operator]
        sim.finished = fx.Finished(None)

    sim.schedule(when, stop)
    sim.run()


@pytest.mark.parametrize("metaint", [None, 1024])
def test_a_new_machine_goes_on_at_the_next_frame_on_the_old_clock(
    tmp_path: Path, metaint: int | None
) -> None:
    path = tmp_path / "a.mp3"
    audio = write(path, make_frames(500), before=id3v2(bytes(300)))
    old = make(ListSource([path]), metaint=metaint)
    tails: list[Tail | None] = []
    _until(old, old.now + 3.0, lambda: tails.append(old.machine.hand_over()))
    [tail] = tails
    assert tail is not None and tail.resume is not None
    [conn] = old.conns
    before = conn.stream()
    # The tail is the frames after the last one sent, from memory, due from
    # where the old clock is; it ends where the new machine goes on.
    assert audio.startswith(before + tail.data)
    assert tail.due == pytest.approx(conn.opened + len(conn.frames()) * FRAME)
    assert tail.sent == len(before)
    assert tail.ends[-1] == len(tail.data)
    tag = path.stat().st_size - len(audio)
    assert tail.resume[1] == tag + len(before) + len(tail.data)
    assert old.machine.hand_over() == tail, "hand_over changed the machine"

    new = make(ListSource([path]), metaint=metaint)
    new.now = old.now
    resume = Path(tail.resume[0]), tail.resume[1], tail.resume[2]
    new.machine.go_on_at(resume)
    due = tail.due + len(tail.ends) * tail.duration
    carried = Carried(due, tail.sent + len(tail.data), tail.wire, None, resume[:2])
    new.machine.carry_on(carried)
    _until(new, old.now + 8.0)
    [again] = new.conns
    after = again.frames()
    # Every frame once, in order, unmended (no cut: the listeners have the
    # frames before), and none sent more than the lead ahead of its time.
    assert audio.startswith(before + tail.data + again.stream())
    assert len(after) > 100
    for n, (when, _frame) in enumerate(after):
        assert when >= due + n * FRAME - LEAD - 1e-9
    assert new.started and new.started[0].resumed


def test_no_hand_over_when_off_air_or_stopping(tmp_path: Path) -> None:
    path = tmp_path / "a.mp3"
    write(path, make_frames(200))
    sim = make(ListSource([path]))
    assert sim.machine.hand_over() is None  # not on air yet
    got: list[Tail | None] = []

    def stop_then_ask() -> None:
        sim.apply(sim.machine.stop(sim.now))
        got.append(sim.machine.hand_over())

    _until(sim, sim.now + 1.0, stop_then_ask)
    assert got == [None]


def test_an_icy_writer_goes_on_where_another_stopped() -> None:
    audio = bytes(range(256)) * 40
    whole = IcyWriter(1024)
    whole.title("One")
    first = whole.wrap(audio[:3333])
    whole.title("Two", at=500)  # due inside the part the other writer sends
    rest_whole = whole.wrap(audio[3333:])

    part = IcyWriter(1024)
    part.title("One")
    assert part.wrap(audio[:3333]) == first
    part.title("Two", at=500)
    later = IcyWriter(1024)
    later.go_on(part.audio % 1024, part.audio % 1024, part.last_title)
    for at, title in part.pending():
        later.title(title, at)
    assert later.wrap(audio[3333:]) == rest_whole


def test_the_bridge_sends_what_is_due_and_records_the_rest() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(1.0)
        data = b"".join(bytes([n]) * 100 for n in range(10))
        ends = [100 * (n + 1) for n in range(10)]
        now = time.monotonic()
        feed = handover._Feed(
            ("one", "icecast://h:8000/m"), ours, data, ends, 0.1, now + 0.25, 0.5,
            1000, 1010, IcyWriter(64), ("/music/a.mp3", 5000, 12.0),
        )  # fmt: skip
        feed.pump(now)  # due within the lead: frames 0-2 (now+0.25 .. now+0.45)
        assert feed.frames == 3
        theirs.settimeout(1.0)
        wire = theirs.recv(10_000)
        assert len(wire) == feed.bridged == 300 + 300 // 64  # a zero block per 64 bytes
        record = feed.record()
        assert record["sent"] == 1300 and record["wire"] == 1010 + feed.bridged
        assert record["due"] == pytest.approx(now + 0.25 + 0.3)
        assert record["ends"] == [100 * n for n in range(1, 8)]
        assert feed.rest_data() == data[300:]
        assert record["phase"] == 300 % 64


def test_find_running_by_pid_and_by_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a running pushsource"):
        handover.find_running(os.getpid())
    config = tmp_path / "stations.toml"
    # A stand-in whose command line reads like a pushsource run (sh's $0 and args).
    fake = subprocess.Popen(
        ["/bin/sh", "-c", "sleep 30; true", "pushsource", "run", "--config", str(config)],
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 5
        while handover._pushsource_args(fake.pid) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert handover.find_running(fake.pid) == fake.pid
        assert handover.find_running(None, config) == fake.pid
        with pytest.raises(ConfigError, match="no running pushsource"):
            handover.find_running(None, tmp_path / "other.toml")
    finally:
        fake.kill()
        fake.wait()


def test_the_new_image_is_checked_before_any_exec(tmp_path: Path) -> None:
    (tmp_path / "music").mkdir()
    config = tmp_path / "stations.toml"
    config.write_text(
        '[[station]]\nid = "a"\nfolder = "music"\nurl = "icecast://source:pw@127.0.0.1:9/a"\n'
    )
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path.cwd()), env_path]))
    try:
        assert handover.check_new_image(["run", "--config", str(config)]) is None
        config.write_text(config.read_text() + "bitrate = 1000\n")
        problem = handover.check_new_image(["run", "--config", str(config)])
        assert problem is not None and "bitrate" in problem and "\n" not in problem
        assert "pw" not in problem
        assert handover.check_new_image(["stream"]) is not None  # a usage error
    finally:
        os.environ["PYTHONPATH"] = env_path
    assert sys.executable  # the child runs this interpreter
