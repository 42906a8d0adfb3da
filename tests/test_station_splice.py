"""Splice-clean cuts in the station machine, in virtual time, with real lame
frames (pink noise: the bit reservoir full, most frames' main data starting
hundreds of bytes back). Wherever the stream switches (a DJ takes over and
hands back, a track goes on mid-way on a new connection or after a restart,
silence for late frames and then the track again), what the station sends
decodes without an error, no frame points back past a switch, and only the
frames that did were silenced.

The check (``audit``) finds the switches on its own: each frame sent is
traced to its source frame (by its main data, which the repair keeps) and a
cut is where a frame does not follow its predecessor in the same source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from pushsource.core import effects as fx
from pushsource.core.effects import Span
from pushsource.workers.feed import ListSource
from tests.support.media import decoder_errors, make_noise_mp3, reservoir_begin, walk_mpeg_frames
from tests.support.sim import make
from tests.test_live import SILENCE, dj, with_live

SIDE_END = 4 + 32  # MPEG-1 stereo, no CRC: the station's format (FORMAT)


def _frames(data: bytes) -> list[bytes]:
    walked, end = walk_mpeg_frames(data)
    assert end == len(data)
    return [data[pos : pos + h.length] for pos, h in walked]


@pytest.fixture(scope="module")
def noise(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """Two noise tracks in the station's format (44.1 kHz stereo 128 kbps)."""
    directory = tmp_path_factory.mktemp("noise")
    return (
        make_noise_mp3(directory / "a.mp3", 20.0),
        make_noise_mp3(directory / "b.mp3", 8.0, color="whitenoise"),
    )


@dataclass
class Audit:
    cuts: int  # switches between sources (or positions), silence counting as one
    silenced: int  # frames whose side info the station rewrote


def audit(stream: bytes, sources: list[bytes], tmp_path: Path, name: str) -> Audit:
    """Every frame of ``stream`` is machine silence, a source frame as it was,
    or a source frame silenced because it pointed back past a cut (and only
    then); nothing points past a cut; mpg123 and ffmpeg decode it cleanly."""
    where: dict[bytes, tuple[int, int]] = {}
    originals: list[list[bytes]] = []
    for n, source in enumerate(sources):
        frames = _frames(source)
        originals.append(frames)
        for i, frame in enumerate(frames):
            where[frame[SIDE_END:]] = (n, i)
    last: tuple[int, int] | None = None
    got = cuts = silenced = 0
    for frame in _frames(stream):
        if frame == SILENCE:
            last = None
            continue
        assert frame[SIDE_END:] in where, "a frame from no source"
        n, i = where[frame[SIDE_END:]]
        if last != (n, i - 1):
            cuts += 1
            got = 0
        original = originals[n][i]
        begin = reservoir_begin(frame, 0)
        assert begin <= got, f"frame {i} of source {n} points {begin} bytes back, {got} were sent"
        if frame != original:
            silenced += 1
            assert reservoir_begin(original, 0) > got, "silenced, yet it did not need it"
            assert not any(frame[5:SIDE_END]), "silenced: its side info is zero"
        got += len(frame) - SIDE_END
        last = (n, i)
    path = tmp_path / f"{name}.mp3"
    path.write_bytes(stream)
    assert decoder_errors(path) == ""
    return Audit(cuts, silenced)


def test_a_dj_takes_over_and_hands_back_mid_track(
    tmp_path: Path, noise: tuple[bytes, bytes]
) -> None:
    folder, live = noise
    (tmp_path / "a.mp3").write_bytes(folder)
    sim = with_live(make(ListSource([tmp_path / "a.mp3"])))
    t0 = sim.now
    dj(sim, t0 + 4.0, _frames(live)[:120])  # about 3 s, then the grace (silence), then back
    sim.run()
    [conn] = sim.conns
    stream = conn.stream()
    result = audit(stream, [folder, live], tmp_path, "dj")
    # The folder from its start, the DJ, the folder again after the grace.
    assert result.cuts == 3
    assert result.silenced >= 1
    assert sim.machine._splicer.silenced == result.silenced


def test_a_track_goes_on_mid_way_on_a_new_connection(
    tmp_path: Path, noise: tuple[bytes, bytes]
) -> None:
    folder, _ = noise
    (tmp_path / "a.mp3").write_bytes(folder)
    sim = make(
        ListSource([tmp_path / "a.mp3"]),
        plan=lambda n: ("accept", 40) if n == 1 else "accept",
    )
    sim.run()
    first, second = sim.conns
    # A listener on the new connection gets it from its first byte.
    result = audit(second.stream(), [folder], tmp_path, "reconnect")
    assert result.cuts == 1 and result.silenced >= 1
    assert second.stream()[4:] != folder[len(first.stream()) + 4 :][: len(second.stream()) - 4]


def test_a_track_resumed_after_a_restart(tmp_path: Path, noise: tuple[bytes, bytes]) -> None:
    folder, _ = noise
    path = tmp_path / "a.mp3"
    path.write_bytes(folder)
    frames = _frames(folder)
    at = sum(len(f) for f in frames[:300])
    sim = make(ListSource([]), resume=[(path, at)])
    sim.run()
    [conn] = sim.conns
    stream = conn.stream()
    assert folder[at + 2000 :] in stream  # on from there (its first frames mended)
    result = audit(stream, [folder], tmp_path, "restart")
    assert result.cuts == 1 and result.silenced >= 1


def test_late_frames_get_silence_and_the_track_goes_on_cleanly(
    tmp_path: Path, noise: tuple[bytes, bytes]
) -> None:
    folder, _ = noise
    (tmp_path / "a.mp3").write_bytes(folder)
    sim = make(ListSource([tmp_path / "a.mp3"]))
    real = sim.apply
    delayed: list[fx.Read] = []

    def apply(effects: list[fx.Effect]) -> None:
        keep = []
        for e in effects:
            if isinstance(e, fx.Read) and not delayed:
                delayed.append(e)
                chunk = sim.feed.read(e.handle, e.frames)
                sim.schedule(
                    sim.now + 6.0, lambda h=e.handle, c=chunk: sim.step(sim.machine.read, h, c)
                )
            else:
                keep.append(e)
        real(keep)

    sim.apply = apply  # type: ignore[method-assign]
    sim.run()
    stream = sim.conns[0].stream()
    assert SILENCE * 10 in stream
    result = audit(stream, [folder], tmp_path, "late")
    assert result.cuts == 2 and result.silenced >= 1


def test_a_new_track_from_its_first_frame_is_not_touched(
    tmp_path: Path, noise: tuple[bytes, bytes]
) -> None:
    a, b = noise
    (tmp_path / "a.mp3").write_bytes(b)
    second = b"".join(_frames(a)[:150])
    (tmp_path / "b.mp3").write_bytes(second)
    sim = make(ListSource(sorted(tmp_path.iterdir())))
    sim.run()
    stream = sim.conns[0].stream()
    assert stream.startswith(b + second)
    assert sim.machine._splicer.silenced == 0


# -- an output in another format: the Reframer's cuts --------------------------


def test_a_converted_output_mends_its_own_cuts(tmp_path: Path) -> None:
    """An output at 22.05 kHz mono 64 kbps: its copy of the track from the
    start, then a jump in it (the station resumed elsewhere in the track),
    then silence (the DJ, whose audio it has no copy of) and the copy again
    where it was left, then a new connection mid-copy."""
    from pushsource.core.frames import header_for, silent_frame
    from pushsource.core.outputs import Reframer
    from tests.test_outputs import alt_of, cued

    data = make_noise_mp3(tmp_path / "low.mp3", 10.0, samplerate=22050, channels=1,
                          lame_args=("-b", "64"))  # fmt: skip
    frames = _frames(data)
    low = header_for(22050, 1, 64)
    track = cued({"low": alt_of(frames)})
    reframer = Reframer("low", low)
    d = low.duration
    silence = silent_frame(low)
    spans = [
        Span(track, 0.0, 40 * d),
        Span(track, 40 * d, 20 * d),  # on from there: no cut
        Span(track, 150 * d, 30 * d),  # a jump
        Span(None, 0.0, 20 * d),  # silence
        Span(track, 180 * d, 30 * d),  # the copy again, where it was left
    ]
    stream = b"".join(reframer.frames([span])[0] for span in spans)
    reframer.cut()  # a new connection: its listener's stream starts here
    rejoined = reframer.frames([Span(track, 210 * d, 40 * d)])[0]
    side = 4 + 9  # MPEG-2 mono side info

    def check(out: bytes, cuts_expected: int) -> None:
        where = {f[side:]: i for i, f in enumerate(frames)}
        # A frame made whole (core.splice.made_whole: its reservoir moved
        # into it at a higher bitrate) keeps its side info but main_data_begin.
        by_side = {f[5:side]: i for i, f in enumerate(frames)}
        last, got, cuts, mended = None, 0, 0, 0
        for frame in _frames(out):
            if frame == silence:
                last = None
                continue
            whole = frame[side:] not in where
            i = by_side[frame[5:side]] if whole else where[frame[side:]]
            if last != i - 1:
                cuts, got = cuts + 1, 0
            assert reservoir_begin(frame, 0) <= got
            if whole:
                mended += 1
                assert reservoir_begin(frame, 0) == 0 < reservoir_begin(frames[i], 0)
                assert len(frame) > len(frames[i])
            elif frame != frames[i]:
                mended += 1
                assert reservoir_begin(frames[i], 0) > got
            got += len(frame) - side
            last = i
        assert cuts == cuts_expected and mended >= cuts_expected - 1

    check(stream, 3)
    check(rejoined, 1)
    path = tmp_path / "out.mp3"
    path.write_bytes(stream + rejoined)
    assert decoder_errors(path) == ""
