"""Dead air without decoding: which frames are digital silence (real lame,
ffmpeg and sox frames), trimming a track's silent ends (the reservoir kept,
the result decoding cleanly), and the alarm in virtual time."""

from __future__ import annotations

import logging
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from pushsource.core.effects import Cued
from pushsource.core.frames import silent_frame
from pushsource.core.gain import frame_silent, plan_of, silent_runs
from pushsource.core.splice import main_data_begin
from pushsource.core.station import Pacing, StationMachine
from pushsource.workers.feed import Feed, ListSource, read_chunk
from pushsource.workers.tracks import Track
from tests.support.sim import BATCH, FORMAT, FRAME, LEAD, Sim
from tests.synth import make_frames

RATE = 44100


def _wav(
    path: Path, parts: Sequence[tuple[str, float]], rate: int = RATE, channels: int = 2
) -> Path:
    """A WAVE of ``parts`` in order: ("silence", s), ("tone", s) at -6 dBFS,
    ("tone70", s) at -70 dBFS, ("dither90", s): white noise at -90 dBFS,
    ("dithered", s): sox's silence as it makes it unless told not to (one step
    of dither: near-silence). No dither added by sox otherwise (-D)."""
    pieces = []
    for n, (kind, seconds) in enumerate(parts):
        piece = path.with_name(f"{path.stem}-{n}.wav")
        synth = ["sox", "-D", "-n", "-r", str(rate), "-c", str(channels), "-b", "16", str(piece)]
        if kind == "silence":
            cmd = [*synth, "trim", "0", str(seconds)]
        elif kind == "dithered":  # sox's own silence: one step of dither
            cmd = [c for c in synth if c != "-D"] + ["trim", "0", str(seconds)]
        elif kind == "tone":
            cmd = [*synth, "synth", str(seconds), "sine", "440", "vol", "-6dB"]
        elif kind == "tone70":
            cmd = [*synth, "synth", str(seconds), "sine", "1000", "vol", "-70dB"]
        else:
            cmd = [*synth, "synth", str(seconds), "whitenoise", "vol", "-90dB"]
        subprocess.run(cmd, check=True, capture_output=True)
        pieces.append(str(piece))
    if len(pieces) == 1:
        return Path(pieces[0])
    subprocess.run(["sox", "-D", *pieces, str(path)], check=True, capture_output=True)
    return path


ENCODERS = {
    "lame-cbr128": (RATE, 2, lambda w, o: ["lame", "--quiet", "-b", "128", w, o]),
    "lame-v2": (RATE, 2, lambda w, o: ["lame", "--quiet", "-V2", w, o]),
    "lame-mono64": (RATE, 1, lambda w, o: ["lame", "--quiet", "-m", "m", "-b", "64", w, o]),
    "lame-mpeg2": (22050, 2, lambda w, o: ["lame", "--quiet", "-b", "64", w, o]),
    "ffmpeg": (
        RATE,
        2,
        lambda w, o: [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            w,
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
            o,
        ],
    ),
    "sox": (RATE, 2, lambda w, o: ["sox", "-D", w, "-C", "128", o]),
}


def _encode(tmp_path: Path, name: str, encoder: str, parts: Sequence[tuple[str, float]]) -> Path:
    rate, channels, command = ENCODERS[encoder]
    wav = _wav(tmp_path / f"{name}.wav", parts, rate, channels)
    mp3 = tmp_path / f"{name}.mp3"
    subprocess.run(command(str(wav), str(mp3)), check=True, capture_output=True)
    return mp3


def _frames(path: Path) -> tuple[bytes, list[int]]:
    """The audio frames of ``path`` (tags and the info frame left out)."""
    track = Track(path).open()
    chunk = read_chunk(track, 1 << 20)
    track.close()
    assert chunk.last
    return chunk.data, list(chunk.ends)


def _silent(path: Path) -> list[bool]:
    data, ends = _frames(path)
    starts = [0, *ends[:-1]]
    return [frame_silent(data, at) for at in starts]


@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_digital_silence_is_silent_near_silence_and_tone_are_not(
    tmp_path: Path, encoder: str
) -> None:
    for kind, want in (("silence", True), ("dither90", False), ("tone70", False), ("tone", False)):
        flags = _silent(_encode(tmp_path, kind, encoder, [(kind, 3.0)]))
        inner = flags[3:-3]  # the encoder's first and last frames left out
        assert len(inner) > 50
        assert all(flag is want for flag in inner), (kind, flags.count(True), len(flags))


def test_silent_runs_find_the_silence_inside_music(tmp_path: Path) -> None:
    mp3 = _encode(tmp_path, "mix", "lame-cbr128", [("tone", 2), ("silence", 3), ("tone", 2)])
    data, ends = _frames(mp3)
    runs = silent_runs(data, ends)
    frame = 1152 / RATE
    long = [(a, b) for a, b in runs if (b - a) * frame > 1.0]
    assert len(long) == 1
    start, stop = long[0]
    assert abs(start * frame - 2.0) < 0.1 and abs((stop - start) * frame - 3.0) < 0.15
    # The chunks the workers read carry the same runs.
    track = Track(mp3).open()
    chunk = read_chunk(track, 10_000)
    track.close()
    assert chunk.silent == runs


# -- trimming ----------------------------------------------------------------


def _feed(path: Path, trim: bool = True) -> Feed:
    return Feed(
        ListSource([path]),
        resolve=lambda p: p,
        prepare=lambda p: p,
        was_played=lambda p: False,
        mark_played=lambda p: None,
        unplayable=lambda exc: None,
        trim=trim,
    )


def _play(feed: Feed, resume: tuple[Path, int] | None = None) -> tuple[Cued, bytes]:
    """Cue the track and read it all, as the station would (80-frame chunks)."""
    result = feed.cue(resume, chunk=80)
    assert result.track is not None
    cued = result.track
    chunk = cued.chunk
    data = chunk.data
    while not chunk.last:
        chunk = feed.read(cued.handle, 80)
        data += chunk.data
    feed.release(cued.handle)
    return cued, data


def _pcm(path: Path) -> list[int]:
    """Left channel samples, 16-bit, by ffmpeg."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-"],
        check=True,
        capture_output=True,
    ).stdout
    return list(struct.unpack(f"<{len(raw) // 2}h", raw))


def _loud_stretches(samples: list[int], rate: int) -> list[tuple[float, float]]:
    """(start, end) seconds of the stretches with sound, 10 ms blocks."""
    block = rate // 100
    out: list[tuple[float, float]] = []
    for n in range(0, len(samples), block):
        loud = max(map(abs, samples[n : n + block]), default=0) > 100
        t = n / rate
        if loud and out and abs(out[-1][1] - t) < 0.02:
            out[-1] = (out[-1][0], t + block / rate)
        elif loud:
            out.append((t, t + block / rate))
    return out


def _reservoir_ok(data: bytes) -> None:
    """No frame reaches back (main_data_begin) past the main data before it."""
    held = 0
    pos = 0
    while pos < len(data):
        assert (main_data_begin(data, pos) or 0) <= held, (pos, main_data_begin(data, pos), held)
        plan = plan_of(data[pos : pos + 4])
        held += plan.room
        pos += plan.length


def _decodes_cleanly(path: Path) -> None:
    mpg = subprocess.run(["mpg123", "-t", str(path)], capture_output=True, text=True)
    errors = [
        line
        for line in mpg.stderr.splitlines()
        if "error" in line.lower() or "warning" in line.lower()
    ]
    assert mpg.returncode == 0 and not errors, mpg.stderr
    ff = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
    )
    assert ff.returncode == 0 and ff.stderr == "", ff.stderr


@pytest.mark.parametrize("encoder", ["lame-cbr128", "lame-v2", "lame-mpeg2"])
def test_trim_drops_the_ends_keeps_the_middle_and_decodes_cleanly(
    tmp_path: Path, encoder: str, caplog: pytest.LogCaptureFixture
) -> None:
    parts = [("silence", 4), ("tone", 2), ("silence", 3), ("tone", 2), ("silence", 4)]
    mp3 = _encode(tmp_path, "track", encoder, parts)
    rate = ENCODERS[encoder][0]
    caplog.set_level(logging.INFO, "pushsource")
    cued, data = _play(_feed(mp3))
    out = tmp_path / "trimmed.mp3"
    out.write_bytes(data)
    _decodes_cleanly(out)
    # The reservoir: no frame kept reaches back into bytes trimmed (the first
    # sound frame of the file did: the case is met).
    frames, ends = _frames(mp3)
    first_sound = ends[silent_runs(frames, ends)[0][1] - 1]
    assert (main_data_begin(frames, first_sound) or 0) > 0
    _reservoir_ok(data)
    samples = _pcm(out)
    seconds = len(samples) / rate
    # 15 s less about 4 at each end; kept before the sound: the silent frames
    # holding its reservoir (511 bytes at most: 0.2 s of VBR's 32 kbps frames).
    assert 7.0 < seconds < 7.5, seconds
    loud = _loud_stretches(samples, rate)
    assert len(loud) == 2, loud
    assert loud[0][0] < 0.3  # sound from the start
    assert abs(loud[1][0] - loud[0][1] - 3.0) < 0.1  # the silence inside kept
    assert seconds - loud[1][1] < 0.2  # and none at the end
    # Elapsed time is the place in the file: the trimmed start is before it.
    assert 3.7 < cued.before < 4.1
    lines = [r.getMessage() for r in caplog.records if "trimmed" in r.getMessage()]
    assert len(lines) == 1 and "at the start" in lines[0] and "at the end" in lines[0], lines
    assert lines[0].startswith("track: trimmed ") and " 4.0 s at the end" in lines[0], lines


def test_no_trim_plays_every_frame(tmp_path: Path) -> None:
    mp3 = _encode(tmp_path, "track", "lame-cbr128", [("silence", 2), ("tone", 1), ("silence", 2)])
    _, data = _play(_feed(mp3, trim=False))
    assert data == _frames(mp3)[0]


def test_a_resumed_track_is_not_trimmed_from_its_resume_point(tmp_path: Path) -> None:
    parts = [("tone", 2), ("silence", 3), ("tone", 2), ("silence", 2)]
    mp3 = _encode(tmp_path, "track", "lame-cbr128", parts)
    data, ends = _frames(mp3)
    start = len(mp3.read_bytes()) - len(data) - 128 * 0  # no ID3v1: frames then the end
    # The offset of a frame 2.5 s in: inside the silence.
    whole = mp3.read_bytes()
    at = whole.index(data[ends[107] : ends[107] + 64])
    assert at > start
    cued, played = _play(_feed(mp3), resume=(mp3, at))
    assert cued.resumed
    assert played.startswith(whole[at : at + 417 * 10])  # silence kept from the resume point
    assert len(played) < len(whole) - at  # the end is trimmed all the same


# -- the alarm, in virtual time -----------------------------------------------


class _Lines(logging.Handler):
    """The station's lines with the virtual time each was said at."""

    def __init__(self, sim: Sim) -> None:
        super().__init__(logging.INFO)
        self.sim = sim
        self.lines: list[tuple[float, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((self.sim.now, record.levelno, record.getMessage()))


def _synth_track(path: Path, parts: Sequence[tuple[str, float]]) -> Path:
    """Frames in the station's format: random ones (sound) and silent ones."""
    frames: list[bytes] = []
    for n, (kind, seconds) in enumerate(parts):
        count = round(seconds / FRAME)
        if kind == "silence":
            frames += [silent_frame(FORMAT)] * count
        else:
            frames += make_frames(count, seed=n)
    path.write_bytes(b"".join(frames))
    return path


def _run_alarm(
    tmp_path: Path, alarm: float, parts: Sequence[tuple[str, float]]
) -> tuple[Sim, list[tuple[float, int, str]], list[tuple[float, float]]]:
    track = _synth_track(tmp_path / "track.mp3", parts)
    machine = StationMachine(
        silence=FORMAT,
        headers={},
        once=True,
        pacing=Pacing(lead=LEAD, batch=BATCH),
        silence_alarm=alarm,
    )
    sim = Sim(machine, _feed(track, trim=False))
    gauge: list[tuple[float, float]] = []
    total = sum(seconds for _, seconds in parts)
    for n in range(int(total * 4) + 8):
        when = sim.now + 0.25 * n
        sim.schedule(when, lambda: gauge.append((sim.now, machine.dead_air.seconds(sim.now))))
    handler = _Lines(sim)
    logger = logging.getLogger("pushsource")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        sim.run()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    return sim, handler.lines, gauge


def test_the_alarm_warns_once_per_run_after_its_seconds_and_sound_comes_back(
    tmp_path: Path,
) -> None:
    parts = [("tone", 3), ("silence", 8), ("tone", 3), ("silence", 2), ("tone", 2)]
    sim, lines, gauge = _run_alarm(tmp_path, 5.0, parts)
    start = sim.conns[0].chunks[0][0]  # the first byte handed over: audio time 0 then
    warnings = [(t, m) for t, level, m in lines if "dead air" in m]
    assert len(warnings) == 1, lines  # the 2 s run is under the alarm
    when, message = warnings[0]
    assert message.startswith("dead air: 5 s of silence going out (track: track [track.mp3])")
    assert [lv for _, lv, m in lines if "dead air" in m] == [logging.WARNING]
    # The silence is heard from 3 s; the warning 5 s into it (a batch late at most).
    assert 8.0 <= when - start <= 8.0 + 2 * BATCH + 0.05, when - start
    back = [(t, m) for t, _, m in lines if m.startswith("sound is back")]
    assert len(back) == 1 and back[0][1] == "sound is back after 8 s of silence", back
    # Said when the sound goes out: up to the lead before it is heard at 11 s.
    assert 11.0 - LEAD - 2 * BATCH <= back[0][0] - start <= 11.0

    # The gauge: 0 with sound, the run's length in the silence, 0 again after.
    def at(t: float) -> float:
        return min(gauge, key=lambda g: abs(g[0] - start - t))[1]

    assert at(2.0) == 0.0
    assert 2.5 < at(6.0) < 3.5 and 6.5 < at(10.0) < 7.5
    assert at(12.0) == 0.0
    assert 0.0 < at(15.5) < 2.0  # the short run counts too, with no warning
    assert at(17.0) == 0.0


def test_the_alarm_at_0_never_warns_but_the_run_is_counted(tmp_path: Path) -> None:
    _sim, lines, gauge = _run_alarm(tmp_path, 0.0, [("tone", 1), ("silence", 7), ("tone", 1)])
    assert not [m for _, _, m in lines if "dead air" in m or "sound is back" in m]
    assert max(seconds for _, seconds in gauge) > 5.0


def test_a_track_ending_in_silence_into_the_next_is_one_run(tmp_path: Path) -> None:
    first = _synth_track(tmp_path / "a.mp3", [("tone", 1), ("silence", 3)])
    second = _synth_track(tmp_path / "b.mp3", [("silence", 3), ("tone", 1)])
    machine = StationMachine(
        silence=FORMAT, headers={}, once=True, pacing=Pacing(LEAD, BATCH), silence_alarm=5.0
    )
    feed = Feed(
        ListSource([first, second]),
        resolve=lambda p: p,
        prepare=lambda p: p,
        was_played=lambda p: False,
        mark_played=lambda p: None,
        unplayable=lambda exc: None,
    )
    sim = Sim(machine, feed)
    handler = _Lines(sim)
    logger = logging.getLogger("pushsource")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        sim.run()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    dead = [m for _, _, m in handler.lines if "dead air" in m]
    assert dead == ["dead air: 5 s of silence going out (track: b [b.mp3])"], handler.lines
    assert [m for _, _, m in handler.lines if "sound is back" in m] == [
        "sound is back after 6 s of silence"
    ]
