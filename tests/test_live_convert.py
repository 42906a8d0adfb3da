"""The pieces of live conversion: what a DJ's first bytes are (pass through,
convert, refuse), the intake that routes a body accordingly, libvlc's
converter on real Ogg Vorbis and on garbage, and the station machine taking
converted audio (in bursts) through the same hold, pacing and splicer as
pass-through audio, in virtual time."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from pushsource.core import liveformat as lf
from pushsource.core.frames import FrameHeader, parse_header
from pushsource.core.live import LIVE_SLACK
from pushsource.engine.harbor import Harbor, LiveInput
from pushsource.engine.loop import Engine
from pushsource.workers.feed import ListSource
from pushsource.workers.liveconvert import Intake, LiveConverter
from tests.support.media import make_noise_mp3
from tests.support.sim import FRAME, Sim, make, write
from tests.synth import Spec, make_frames
from tests.test_live import GRACE, SILENCE, with_live
from tests.test_station_splice import _frames, audit

TAKES = "MP3 (audio/mpeg) at 44100 Hz stereo"


def decide(first: bytes, *, convert: bool = True, ended: bool = False) -> object:
    return lf.decide(
        first, sample_rate=44100, channels=2, takes=TAKES, convert=convert, ended=ended
    )


# -- the Content-Type, in the head


def test_the_content_type_refuses_only_what_cannot_be_converted() -> None:
    for kind in (None, "audio/mpeg", "audio/ogg", "application/ogg", "audio/aac", "audio/opus"):
        assert lf.check_type(kind, takes=TAKES, convert=True) is None, kind
    assert lf.check_type("application/octet-stream", takes=TAKES, convert=True) is None
    refused = lf.check_type("video/mp4", takes=TAKES, convert=True)
    assert refused == lf.Refuse(
        415, f"this station takes {TAKES} or MP3 at any rate, Ogg Vorbis, Opus and AAC, "
        "not video/mp4",
    )  # fmt: skip
    # Conversion off: MP3 only, and the line says why.
    assert lf.check_type("audio/mpeg", takes=TAKES, convert=False) is None
    off = lf.check_type("audio/ogg", takes=TAKES, convert=False)
    assert off is not None and off.status == 415 and "conversion is off" in off.line
    assert lf.check_type("text/html", takes=TAKES, convert=False) == lf.Refuse(
        415, f"this station takes {TAKES}, not text/html"
    )


# -- the first bytes


def ogg_page(payload: bytes) -> bytes:
    return b"OggS\x00\x02" + bytes(20) + b"\x01" + bytes([len(payload)]) + payload


ADTS = bytes([0xFF, 0xF1, 0x50, 0x80, 0x02, 0x1F, 0xFC]) + bytes(64)


@pytest.mark.parametrize(
    ("first", "want"),
    [
        (ogg_page(b"\x01vorbis" + bytes(23)), lf.Convert(lf.Kind.OGG, "Ogg Vorbis")),
        (ogg_page(b"OpusHead" + bytes(11)), lf.Convert(lf.Kind.OGG, "Ogg Opus")),
        (ogg_page(b"\x7fFLAC" + bytes(20)), lf.Convert(lf.Kind.OGG, "Ogg")),
        (ADTS, lf.Convert(lf.Kind.AAC, "AAC (ADTS)")),
        (b"".join(make_frames(8)), lf.Pass()),
        (
            b"".join(make_frames(8, Spec(rate_index=1, mono=True))),
            lf.Convert(lf.Kind.MP3, "MP3 at 48000 Hz mono"),
        ),
        (
            b"".join(make_frames(8, Spec(version="2", rate_index=0, bitrate_index=8))),
            lf.Convert(lf.Kind.MP3, "MP3 at 22050 Hz stereo"),
        ),
        (
            b"".join(make_frames(8, Spec(layer=2))),
            lf.Convert(lf.Kind.MP3, "MPEG layer 2 at 44100 Hz stereo"),
        ),
        (
            b"".join(make_frames(8, Spec(mono=True))),
            lf.Convert(lf.Kind.MP3, "MP3 at 44100 Hz mono"),
        ),
    ],
)
def test_the_first_bytes_decide(first: bytes, want: lf.Decision) -> None:
    assert decide(first) == want
    # Byte by byte too: nothing is decided before the bytes say it.
    for n in range(1, len(first)):
        got = decide(first[:n])
        assert got in (lf.NEED_MORE, want), (n, got)
    if isinstance(want, lf.Convert):  # conversion off: refused, saying what it was
        refused = decide(first, convert=False)
        assert isinstance(refused, lf.Refuse) and refused.status == 415
        assert want.what in refused.line and "conversion is off" in refused.line


def test_station_mp3_after_an_id3_tag_passes_cover_art_and_all() -> None:
    tag = b"ID3\x04\x00\x00\x00\x00\x02\x00" + bytes(256)
    assert decide(tag + b"".join(make_frames(8))) == lf.Pass()
    # A tag larger than the sniff limit (a file's cover art, as ezstream sends it).
    size = 200_000
    synchsafe = bytes((size >> s) & 0x7F for s in (21, 14, 7, 0))
    big = b"ID3\x04\x00\x00" + synchsafe + bytes(size)
    assert decide(big[: lf.SNIFF_LIMIT + 10]) is lf.NEED_MORE
    assert decide(big + b"".join(make_frames(8))) == lf.Pass()


def test_no_audio_is_refused_after_the_sniff_limit_or_at_the_end() -> None:
    junk = bytes(range(0, 250)) * 200  # no frame sync
    assert decide(junk[:1000]) is lf.NEED_MORE
    refused = decide(junk[: lf.SNIFF_LIMIT])
    assert refused == lf.Refuse(
        415, f"no audio this station can take in the first {lf.SNIFF_LIMIT} bytes"
    )
    assert decide(junk[:1000], ended=True) == lf.Refuse(
        415, "no audio this station can take in the first 1000 bytes"
    )


# -- the intake: routing a body


class FakeConverter:
    def __init__(self) -> None:
        self.fed: list[bytes] = []
        self.dropped = 0
        self.stopped = False
        self._name = "fake"

    def feed(self, data: bytes) -> bool:
        self.fed.append(data)
        return True

    def stop(self) -> None:
        self.stopped = True


def intake(convert: bool = True) -> tuple[Intake, list[object]]:
    calls: list[object] = []
    converter = FakeConverter()

    def start(decision: lf.Convert) -> LiveConverter:
        calls.append(decision)
        calls.append(converter)
        return converter  # type: ignore[return-value]

    made = Intake(
        sample_rate=44100, channels=2, takes=TAKES, convert=convert, start=start,
        refuse=calls.append,
    )  # fmt: skip
    return made, calls


def test_station_mp3_passes_byte_for_byte_once_sniffed() -> None:
    body = b"".join(make_frames(40))
    got: list[bytes] = []
    take, calls = intake()
    for at in range(0, len(body), 100):  # in pieces that cut frames
        got += take.take(body[at : at + 100])
    got += take.take(b"")
    assert take.passing and calls == []
    assert b"".join(got) == body and got[-1] == b""  # the end is passed on last


def test_other_audio_goes_to_the_converter_all_of_it_in_order() -> None:
    body = b"".join(make_frames(40, Spec(rate_index=1)))
    take, calls = intake()
    for at in range(0, len(body), 100):
        assert take.take(body[at : at + 100]) == []
    assert take.take(b"") == []
    decision, converter = calls
    assert decision == lf.Convert(lf.Kind.MP3, "MP3 at 48000 Hz stereo")
    assert isinstance(converter, FakeConverter)
    assert b"".join(converter.fed) == body and converter.fed[-1] == b""
    take.close()
    assert converter.stopped


def test_a_short_body_of_other_audio_is_converted_to_its_end() -> None:
    body = ogg_page(b"\x01vorbis" + bytes(23))[:10]  # "OggS" is enough to know
    take, calls = intake()
    take.take(body)
    take.take(b"")
    converter = calls[1]
    assert isinstance(converter, FakeConverter) and converter.fed == [body, b""]


def test_what_cannot_be_taken_is_refused_once_and_the_rest_ignored() -> None:
    take, calls = intake(convert=False)
    body = b"".join(make_frames(20, Spec(mono=True)))
    assert take.take(body) == []
    [refused] = calls
    assert isinstance(refused, lf.Refuse) and "MP3 at 44100 Hz mono" in refused.line
    assert take.take(body) == [] and take.take(b"") == [] and len(calls) == 1


# -- libvlc's converter, for real


def run_converter(
    data: bytes, *, chunk: int = 4096
) -> tuple[list[FrameHeader], list[bytes], list[str]]:
    headers: list[FrameHeader] = []
    frames: list[bytes] = []
    failed: list[str] = []
    threads: set[str] = set()

    def hand(header: FrameHeader, batch: list[bytes]) -> None:
        threads.add(threading.current_thread().name)
        headers.append(header)
        frames.extend(batch)

    converter = LiveConverter(44100, 2, 128, hand=hand, failed=failed.append, name="t")
    converter.start()
    for at in range(0, len(data), chunk):
        assert converter.feed(data[at : at + chunk])
    converter.feed(b"")
    assert converter.join(30)
    assert threads <= {"pushsource-live-t"}  # never the caller's (the engine's) thread
    return headers, frames, failed


def test_ogg_vorbis_comes_out_as_station_mp3_frames(tmp_path: Path) -> None:
    ogg = tmp_path / "in.ogg"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
         "sine=frequency=1000:sample_rate=48000:duration=4", "-ac", "1", "-c:a", "libvorbis",
         str(ogg)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    headers, frames, failed = run_converter(ogg.read_bytes())
    assert failed == []
    assert {(h.layer, h.sample_rate, h.channels, h.bitrate) for h in headers} == {
        (3, 44100, 2, 128)
    }
    for frame in frames:
        header = parse_header(frame)
        assert header is not None and header.length == len(frame)
    # All of it but what libvlc loses at the ends (see transcode.py): 4 s.
    assert 3.5 <= len(frames) * FRAME <= 4.1


def test_what_libvlc_cannot_decode_fails_once_with_a_line() -> None:
    garbage = b"OggS" + bytes((i * 7919) % 251 for i in range(200_000))
    _headers, frames, failed = run_converter(garbage)
    assert frames == [] and len(failed) == 1
    assert "no audio came out of it" in failed[0] or "cannot decode" in failed[0]


# -- converted audio in the station machine (virtual time)


def converted_dj(
    sim: Sim, start: float, frames: list[bytes], *, every: float, user: str = "alice"
) -> None:
    """A converted DJ: their frames come ``every`` seconds, that much audio at once."""
    header = parse_header(frames[0])
    assert header is not None
    per = round(every / FRAME)
    m = sim.machine
    sim.schedule(start - 0.2, lambda: sim.step(m.live_start, user))

    def send(i: int) -> None:
        sim.step(m.live_audio, header, frames[i : i + per], True)
        if i + per < len(frames):
            sim.schedule(sim.now + every, lambda: send(i + per))
        else:
            sim.step(m.live_end)

    sim.schedule(start, lambda: send(0))


@pytest.mark.parametrize("every", [0.5, 1.0, 3.0])
def test_bursts_of_converted_audio_play_whole_with_no_gap(tmp_path: Path, every: float) -> None:
    folder = write(tmp_path / "a.mp3", make_frames(1500))
    sim = with_live(make(ListSource([tmp_path / "a.mp3"])))
    sim.machine._grace = 2.0  # shorter than a 3 s burst: they do not "go quiet" between
    dj_frames = make_frames(int(12 / FRAME), seed=17)
    converted_dj(sim, sim.now + 5.0, dj_frames, every=every)
    sim.run()
    [conn] = sim.conns
    stream = conn.stream()
    live = b"".join(dj_frames)
    assert live in stream  # every frame, in order, no silence or drop between
    cut = stream.index(live)
    assert folder.startswith(stream[:cut])
    live_state = sim.machine.live
    assert live_state is None  # handed back after the set
    titles = [title for _, title in sim.titles]
    assert titles.count("Live: alice") == 1 and titles[-1] == "a"


def test_converted_audio_takes_over_with_its_second_burst(tmp_path: Path) -> None:
    write(tmp_path / "a.mp3", make_frames(1500))
    sim = with_live(make(ListSource([tmp_path / "a.mp3"])))
    header = parse_header(make_frames(1)[0])
    assert header is not None
    m = sim.machine
    t0 = sim.now
    first, second = make_frames(40, seed=21), make_frames(40, seed=22)
    seen: dict[str, tuple[bool, int, float]] = {}

    def look(when: str) -> None:
        live = m.live
        assert live is not None
        seen[when] = (live.on_air, live.dropped, live.burst)

    sim.schedule(t0 + 4.8, lambda: sim.step(m.live_start, "alice"))
    sim.schedule(t0 + 5.0, lambda: sim.step(m.live_audio, header, first, True))
    sim.schedule(t0 + 5.9, lambda: look("one burst"))
    sim.schedule(t0 + 6.0, lambda: sim.step(m.live_audio, header, second, True))
    sim.schedule(t0 + 6.1, lambda: look("two"))
    sim.schedule(t0 + 6.2, lambda: sim.step(m.live_end))
    sim.run()
    assert seen["one burst"][0] is False  # one burst says nothing yet
    on_air, dropped, burst = seen["two"]
    # On air, and held a burst longer than pass-through audio: nothing dropped.
    assert on_air and dropped == 0 and burst == pytest.approx(1.0, abs=0.05) and burst > LIVE_SLACK
    stream = sim.conns[-1].stream()
    assert b"".join(first + second) in stream


def test_a_converted_takeover_is_splice_clean(tmp_path: Path) -> None:
    """Real lame frames out of libvlc (noise: the bit reservoir full), in
    bursts: the takeover and the hand-back go through the splicer, and what
    the station sends decodes cleanly."""
    folder = make_noise_mp3(tmp_path / "a.mp3", 20.0)
    source = make_noise_mp3(tmp_path / "dj.mp3", 6.0, samplerate=48000, channels=1)
    _headers, converted, failed = run_converter(source)
    assert failed == [] and len(converted) > 150
    sim = with_live(make(ListSource([tmp_path / "a.mp3"])))
    converted_dj(sim, sim.now + 4.0, converted[:160], every=1.0)
    sim.run()
    [conn] = sim.conns
    stream = conn.stream()
    result = audit(stream, [folder, b"".join(converted)], tmp_path, "converted")
    assert result.cuts >= 3 and result.silenced >= 1  # folder, DJ, (grace), folder
    assert sim.machine._splicer.silenced == result.silenced
    assert _frames(stream).count(SILENCE) * FRAME <= GRACE + 1.0


# -- the convert key


def test_conversion_is_on_by_default_and_convert_false_turns_it_off(tmp_path: Path) -> None:
    from pushsource.errors import ConfigError
    from pushsource.ops.config import load_config
    from tests.test_live_config import ENV, config

    on = config(tmp_path, 'listen = "8010"\nusers = { alice = "pw" }')
    [station] = load_config(on, ENV).stations
    assert station.live is not None and station.live.convert is True
    off = config(tmp_path, 'listen = "8010"\nusers = { alice = "pw" }\nconvert = false')
    [station] = load_config(off, ENV).stations
    assert station.live is not None and station.live.convert is False
    bad = config(tmp_path, 'listen = "8010"\nusers = { alice = "pw" }\nconvert = "yes"')
    with pytest.raises(ConfigError) as info:
        load_config(bad, ENV)
    assert 'key "convert" must be true or false' in str(info.value)


# -- the harbor's hook: a real server and engine, a recording station


def test_the_harbor_converts_off_the_engine_thread_and_a_kick_stops_it(tmp_path: Path) -> None:
    from tests.test_harbor_server import AUTH, Recorder, connect

    engine = Engine().start()
    recorder = Recorder()
    server = Harbor(engine, "127.0.0.1", 0)
    live = LiveInput(
        station="rock", mount="/live", users={"alice": "s3cret-pw"}, sample_rate=44100,
        channels=2, machine=recorder, step=lambda event, *args: event(*args),
    )  # fmt: skip
    server.add(live)
    server.start()
    body = make_noise_mp3(tmp_path / "dj.mp3", 20.0, samplerate=48000, channels=1)
    try:
        with connect(server) as sock:
            sock.sendall(f"SOURCE /live HTTP/1.0\r\nAuthorization: Basic {AUTH}\r\n\r\n".encode())
            assert sock.recv(100) == b"HTTP/1.0 200 OK\r\n\r\n"
            sock.sendall(body[: len(body) // 4])  # 5 s of it, at once
            recorder.wait("live_audio", 10)
            assert live.input_format == "MP3 at 48000 Hz mono, converted"
            converter = live.dj._intake.converter if live.dj and live.dj._intake else None
            assert converter is not None
            assert engine.run(lambda: live.kick()) == "alice"
            assert converter.join(10)  # the conversion ends with the set
            sock.settimeout(5)
            assert sock.recv(100) == b""
        recorder.wait("live_end")
        audio = [args for name, args in recorder.events if name == "live_audio"]
        for header, frames, converted in audio:
            assert (header.sample_rate, header.channels, header.bitrate) == (44100, 2, 128)
            assert converted is True and all(parse_header(f) is not None for f in frames)
        names = [name for name, _ in recorder.events]
        assert names[0] == "live_start" and "live_kick" in names
        # Nothing was handed after the kick.
        assert names.index("live_kick") > max(i for i, n in enumerate(names) if n == "live_audio")
    finally:
        server.close()
        engine.stop()
