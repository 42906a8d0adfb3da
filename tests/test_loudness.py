# mutagen ships py.typed but leaves its tag constructors unannotated.
# mypy: disallow-untyped-calls=False
"""A track's gain (pushsource.workers.loudness): ReplayGain tags written by
mutagen into real files, measurements by the real libvlc and libebur128 set
against ffmpeg's ebur128 filter, the cache, and the gain applied to a Track."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mutagen.apev2 import APEv2
from mutagen.easyid3 import EasyID3
from mutagen.flac import FLAC
from mutagen.id3 import ID3, RVA2, TXXX

from pushsource.core.frames import header_for
from pushsource.core.gain import DB_PER_STEP, PEAK_LIMIT, apply_gain, steps_for
from pushsource.workers.loudness import Leveller, Loudness, doubt, gain_for, read_replaygain
from pushsource.workers.tracks import Track
from tests.support.media import decode_mp3, ebur128, make_clean_mp3, make_track_at, run_tool

#: Real time: waits on sockets, timers or a browser (make test-fast leaves it out).
pytestmark = pytest.mark.slow

STATION = header_for(44100, 2, 128)

# -- the steps (pure) ---------------------------------------------------------------


@given(st.floats(-60, 60), st.one_of(st.none(), st.floats(1e-4, 4.0)))
def test_steps_are_the_nearest_and_never_push_the_peak_over(
    gain: float, peak: float | None
) -> None:
    steps = steps_for(gain, peak)
    nearest = round(gain / DB_PER_STEP)
    if nearest <= 0:
        assert steps == nearest  # turning down needs no peak
    elif peak is None:
        assert steps == 0  # turning up blind could clip
    else:
        assert 0 <= steps <= nearest
        if steps > 0:
            assert peak * 2 ** (steps / 4) <= PEAK_LIMIT * (1 + 1e-9)
        if steps < nearest:  # held back: one more step would go over
            assert peak * 2 ** ((steps + 1) / 4) > PEAK_LIMIT


@pytest.mark.parametrize("peak", [0.0, -0.0, -1.0, -1e-9])
def test_a_peak_of_zero_or_below_allows_no_gain(peak: float) -> None:
    # No sound peaks at or below 0: such a peak is unknown, not a licence.
    assert steps_for(60.0, peak) == 0
    assert steps_for(-6.0, peak) == round(-6.0 / DB_PER_STEP)


def test_silence_gets_no_gain() -> None:
    assert gain_for(-18, Loudness(-math.inf, 0.0), "measured").steps == 0


def test_a_replaygain_tag_is_re_referenced_to_the_target() -> None:
    # ReplayGain 2.0: -6.5 dB brings the track to -18 LUFS, so it is at -11.5.
    tagged = Loudness(-18 + 6.5, 0.99)
    assert gain_for(-18, tagged, "tag").wanted_db == pytest.approx(-6.5)
    assert gain_for(-18, tagged, "tag").steps == round(-6.5 / DB_PER_STEP) == -4
    assert gain_for(-14, tagged, "tag").wanted_db == pytest.approx(-2.5)
    assert gain_for(-23, tagged, "tag").steps == round(-11.5 / DB_PER_STEP)


def test_a_limited_gain_says_so() -> None:
    gain = gain_for(-18, Loudness(-30.0, 0.5), "measured")
    assert gain.wanted_db == pytest.approx(12.0)
    assert gain.steps == 3  # 0.5 * 2^(3/4) = 0.84; 2^(4/4) would be 1.0
    assert gain.limited
    assert "held back from +12.0 dB by its peak" in gain.describe()
    assert gain.describe().startswith("gain +4.5 dB: measured -30.0 LUFS, held back")


# -- tags, written by mutagen into real files ------------------------------------------


@pytest.fixture
def mp3(tmp_path: Path) -> Path:
    path = tmp_path / "track.mp3"
    make_clean_mp3(path, 0.5)
    return path


@pytest.mark.parametrize(
    ("gain", "peak"),
    [
        ("REPLAYGAIN_TRACK_GAIN", "REPLAYGAIN_TRACK_PEAK"),
        ("replaygain_track_gain", "replaygain_track_peak"),
        ("ReplayGain_Track_Gain", "ReplayGain_Track_Peak"),
    ],
)
def test_txxx_in_any_case(mp3: Path, gain: str, peak: str) -> None:
    tags = ID3()
    tags.add(TXXX(encoding=3, desc="REPLAYGAIN_ALBUM_GAIN", text=["-9.00 dB"]))
    tags.add(TXXX(encoding=3, desc=gain, text=["-6.54 dB"]))
    tags.add(TXXX(encoding=3, desc=peak, text=["0.988525"]))
    tags.save(mp3, v2_version=3)
    assert read_replaygain(mp3) == Loudness(-18 + 6.54, 0.988525)


def test_rva2_as_easyid3_writes_it(mp3: Path) -> None:
    easy = EasyID3()
    easy["replaygain_track_gain"] = "+3.25 dB"
    easy["replaygain_track_peak"] = "0.5"
    easy["replaygain_album_gain"] = "-1 dB"
    easy.save(mp3)
    assert {f.desc for f in ID3(mp3).getall("RVA2")} == {"track", "album"}
    assert not ID3(mp3).getall("TXXX")  # EasyID3 writes RVA2 only
    found = read_replaygain(mp3)
    assert found is not None
    assert found.lufs == pytest.approx(-18 - 3.25, abs=0.01)  # RVA2 keeps 1/512 dB
    assert found.peak == pytest.approx(0.5, abs=1e-4)


def test_rva2_without_a_peak(mp3: Path) -> None:
    tags = ID3()
    tags.add(RVA2(desc="track", channel=1, gain=-2.0, peak=0.0))
    tags.save(mp3)
    assert read_replaygain(mp3) == Loudness(-16.0, None)


@pytest.mark.parametrize("peak", ["0.000000", "0", "-1", "-0.5"])
def test_a_tag_peak_of_zero_or_below_is_no_peak(mp3: Path, peak: str) -> None:
    tags = ID3()
    tags.add(TXXX(encoding=3, desc="REPLAYGAIN_TRACK_GAIN", text=["+6.00 dB"]))
    tags.add(TXXX(encoding=3, desc="REPLAYGAIN_TRACK_PEAK", text=[peak]))
    tags.save(mp3)
    assert read_replaygain(mp3) == Loudness(-24.0, None)


@pytest.mark.parametrize(
    ("gain", "peak"),
    [
        (60.0, None),
        (60.0, 0.0001),  # consistent, but no music needs +60 dB
        (24.1, 0.05),
        (20.0, 0.0001),  # -38 LUFS cannot peak at -80 dBFS
        (-20.0, 0.01),  # +2 LUFS cannot peak at -40 dBFS
    ],
)
def test_a_tag_that_cannot_be_right_is_doubted(gain: float, peak: float | None) -> None:
    assert doubt(Loudness(-18 - gain, peak)) is not None


@pytest.mark.parametrize(
    ("gain", "peak"),
    [
        (-6.54, 0.988525),
        (2.0, 0.25),
        (24.0, None),
        (20.0, 0.05),  # a very quiet track
        (-14.0, 1.0),  # a brick-walled master: -4 LUFS at full scale
        (-12.0, 0.5),  # louder than its peak, as a square wave can be
        (0.0, 1.2),  # a float decoder's peak over full scale
    ],
)
def test_a_tag_that_may_be_right_is_believed(gain: float, peak: float | None) -> None:
    assert doubt(Loudness(-18 - gain, peak)) is None


def test_apev2(mp3: Path) -> None:
    tags = APEv2()
    tags["REPLAYGAIN_TRACK_GAIN"] = "-1,50 dB"  # a decimal comma, as some taggers write
    tags["Replaygain_Track_Peak"] = "1.2"
    tags.save(mp3)
    assert read_replaygain(mp3) == Loudness(-16.5, 1.2)


def test_flac_vorbis_comment(tmp_path: Path) -> None:
    path = tmp_path / "track.flac"
    run_tool("sox", "-n", "-r", "44100", "-c", "2", "-b", "16", path, "synth", "0.3", "sine", "440")
    flac = FLAC(path)
    flac["replaygain_track_gain"] = "-7.1 dB"
    flac.save()
    assert read_replaygain(path) == Loudness(-10.9, None)


@pytest.mark.parametrize("text", ["loud", "", "-inf dB", "nan", "dB"])
def test_what_is_not_a_gain_is_no_tag(mp3: Path, text: str) -> None:
    tags = ID3()
    tags.add(TXXX(encoding=3, desc="REPLAYGAIN_TRACK_GAIN", text=[text]))
    tags.save(mp3)
    assert read_replaygain(mp3) is None


def test_album_gain_alone_and_no_tags_are_no_track_gain(mp3: Path, tmp_path: Path) -> None:
    assert read_replaygain(mp3) is None
    tags = ID3()
    tags.add(TXXX(encoding=3, desc="REPLAYGAIN_ALBUM_GAIN", text=["-3 dB"]))
    tags.save(mp3)
    assert read_replaygain(mp3) is None
    assert read_replaygain(tmp_path / "missing.mp3") is None


# -- measuring: libvlc decodes, libebur128 measures; ffmpeg checks ----------------------


@pytest.fixture
def leveller(tmp_path: Path) -> Iterator[Leveller]:
    made = Leveller(-18.0, tmp_path / "cache" / "loudness")
    yield made
    made.close()


@pytest.mark.parametrize(
    ("lufs", "rate", "channels", "bitrate"),
    [(-30, 44100, 2, 128), (-12, 44100, 2, 128), (-20, 22050, 1, 64)],
    ids=["quiet", "loud", "mono-22k"],
)
def test_measured_like_ffmpeg_measures(
    tmp_path: Path, leveller: Leveller, lufs: float, rate: int, channels: int, bitrate: int
) -> None:
    path = tmp_path / "track.mp3"
    make_track_at(path, lufs, 5, samplerate=rate, channels=channels, lame_args=["-b", str(bitrate)])
    want = ebur128(path)
    got = leveller.measure(path, header_for(rate, channels, bitrate))
    assert got.lufs == pytest.approx(want.lufs, abs=0.3)
    assert got.peak is not None
    assert 20 * math.log10(got.peak) == pytest.approx(want.peak_dbfs, abs=0.3)


def test_measured_once_then_from_the_cache(tmp_path: Path, leveller: Leveller) -> None:
    path = tmp_path / "track.mp3"
    make_track_at(path, -25, 3)
    first = leveller.measure(path, STATION)
    assert leveller.measurements == 1
    again = Leveller(-14.0, leveller.cache_dir)  # a restart, another target: same file
    try:
        assert again.measure(path, STATION) == first
        assert again.measurements == 0
    finally:
        again.close()
    make_track_at(path, -15, 3)  # a new version of the file
    os.utime(path, ns=(1, 1))
    assert leveller.measure(path, STATION).lufs == pytest.approx(-15, abs=0.3)
    assert leveller.measurements == 2


def test_prune_keeps_what_is_still_there(tmp_path: Path, leveller: Leveller) -> None:
    kept, gone = tmp_path / "kept.mp3", tmp_path / "gone.mp3"
    make_track_at(kept, -20, 2)
    shutil.copy(kept, gone)
    leveller.measure(kept, STATION)
    leveller.measure(gone, STATION)
    (leveller.cache_dir / "junk.json").write_text("{not json")
    gone.unlink()
    assert leveller.prune() == 2
    assert len(list(leveller.cache_dir.glob("*.json"))) == 1
    leveller.measure(kept, STATION)
    assert leveller.measurements == 2  # still cached


def test_a_tag_with_a_peak_needs_no_decode(mp3: Path, leveller: Leveller) -> None:
    tags = ID3()
    tags.add(TXXX(encoding=3, desc="REPLAYGAIN_TRACK_GAIN", text=["+2.00 dB"]))
    tags.add(TXXX(encoding=3, desc="REPLAYGAIN_TRACK_PEAK", text=["0.25"]))
    tags.save(mp3)
    gain = leveller.gain(mp3, mp3, STATION)
    assert gain is not None and gain.source == "tag"
    assert gain.steps == round(2.0 / DB_PER_STEP)
    assert leveller.measurements == 0


def test_a_tag_without_a_peak_is_held_by_the_measured_peak(
    tmp_path: Path, leveller: Leveller
) -> None:
    path = tmp_path / "track.mp3"
    make_track_at(path, -12, 3, sound=("sine", "500"))  # peak about -11 dBFS
    tags = ID3()
    tags.add(TXXX(encoding=3, desc="REPLAYGAIN_TRACK_GAIN", text=["+20 dB"]))  # a wrong tag
    tags.save(path)
    gain = leveller.gain(path, path, STATION)
    assert gain is not None and gain.source == "tag" and gain.limited
    assert leveller.measurements == 1
    assert gain.peak is not None and gain.peak * 10 ** (gain.db / 20) <= PEAK_LIMIT


@pytest.mark.parametrize("peak", ["0.000000", "-1"])
def test_a_tag_peak_of_zero_or_below_is_measured_instead(
    tmp_path: Path, leveller: Leveller, peak: str
) -> None:
    path = tmp_path / "track.mp3"
    frames = make_track_at(path, -12, 3, sound=("sine", "500"))  # peak about -11 dBFS
    tags = ID3()
    tags.add(TXXX(encoding=3, desc="REPLAYGAIN_TRACK_GAIN", text=["+20 dB"]))  # a wrong tag
    tags.add(TXXX(encoding=3, desc="REPLAYGAIN_TRACK_PEAK", text=[peak]))
    tags.save(path)
    gain = leveller.gain(path, path, STATION)
    assert gain is not None and gain.source == "tag" and gain.limited
    assert leveller.measurements == 1
    assert gain.peak is not None and gain.peak * 10 ** (gain.db / 20) <= PEAK_LIMIT
    decoded = decode_mp3(apply_gain(frames, gain.steps), tmp_path)
    samples = memoryview(decoded.pcm).cast("h")
    assert max(max(samples), -min(samples)) < 32767


@pytest.mark.parametrize("peak", ["0.000000", "-1", "0.0001"])
def test_a_tag_asking_for_60_db_is_not_believed(
    tmp_path: Path, leveller: Leveller, caplog: pytest.LogCaptureFixture, peak: str
) -> None:
    path = tmp_path / "track.mp3"
    frames = make_track_at(path, -20, 3)
    tags = ID3()
    tags.add(TXXX(encoding=3, desc="REPLAYGAIN_TRACK_GAIN", text=["+60.00 dB"]))
    tags.add(TXXX(encoding=3, desc="REPLAYGAIN_TRACK_PEAK", text=[peak]))
    tags.save(path)
    with caplog.at_level(logging.WARNING, "pushsource.loudness"):
        gain = leveller.gain(path, path, STATION)
    assert gain is not None and gain.source == "measured"
    assert gain.loudness == pytest.approx(-20, abs=0.5)
    assert gain.steps == round(2 / DB_PER_STEP)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        f"{path}: ReplayGain tag not believed (it asks for +60.0 dB, more than +24 dB): "
        "measured instead"
    ]
    decoded = decode_mp3(apply_gain(frames, gain.steps), tmp_path)
    samples = memoryview(decoded.pcm).cast("h")
    assert max(max(samples), -min(samples)) < 32767


def test_a_full_scale_square_wave_is_believed(tmp_path: Path, leveller: Leveller) -> None:
    """The loudest a track can be over its peak: a tag that measures so is right."""
    wav, path = tmp_path / "square.wav", tmp_path / "square.mp3"
    run_tool("sox", "-R", "-n", "-r", "44100", "-c", "2", "-b", "16", wav,
             "synth", "3", "square", "5000", "gain", "-n", "-0.5")  # fmt: skip
    run_tool("lame", "--quiet", "-t", "-b", "320", wav, path)
    measured = leveller.measure(path, STATION)
    assert measured.peak is not None and measured.lufs > 20 * math.log10(measured.peak) + 3
    assert doubt(measured) is None


def test_a_gain_held_by_the_peak_does_not_clip_when_decoded(
    tmp_path: Path, leveller: Leveller
) -> None:
    """A quiet track with one loud click: most of the gain would clip it."""
    path = tmp_path / "clicky.mp3"
    wav = tmp_path / "clicky.wav"
    run_tool("sox", "-R", "-n", "-r", "44100", "-c", "2", "-b", "16", tmp_path / "noise.wav",
             "synth", "4", "pinknoise", "vol", "0.05")  # fmt: skip
    run_tool("sox", "-R", "-n", "-r", "44100", "-c", "2", "-b", "16", tmp_path / "click.wav",
             "synth", "0.002", "square", "500", "vol", "0.3")  # fmt: skip
    run_tool("sox", tmp_path / "noise.wav", tmp_path / "click.wav", tmp_path / "noise.wav", wav)
    run_tool("lame", "--quiet", "-t", "-b", "128", wav, path)
    gain = leveller.gain(path, path, STATION)
    assert gain is not None and gain.source == "measured"
    assert gain.limited and gain.steps > 0
    levelled = apply_gain(path.read_bytes(), gain.steps)
    decoded = decode_mp3(levelled, tmp_path)
    samples = memoryview(decoded.pcm).cast("h")
    assert max(max(samples), -min(samples)) < 32767
    # And one step more would have clipped: the limit is not just timid.
    louder = decode_mp3(apply_gain(path.read_bytes(), gain.steps + 2), tmp_path, "louder")
    samples = memoryview(louder.pcm).cast("h")
    assert max(max(samples), -min(samples)) >= 32767


def test_what_cannot_be_measured_plays_as_it_is(
    tmp_path: Path, leveller: Leveller, caplog: pytest.LogCaptureFixture
) -> None:
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(os.urandom(3000))
    with caplog.at_level(logging.WARNING, "pushsource.loudness"):
        assert leveller.gain(junk, junk, STATION) is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "plays without levelling" in warnings[0].getMessage()


# -- a Track hands out levelled frames --------------------------------------------------


def test_a_track_with_a_gain_hands_out_levelled_frames(tmp_path: Path) -> None:
    path = tmp_path / "track.mp3"
    frames = make_track_at(path, -25, 3)
    gain = gain_for(-18, Loudness(-25.0, 0.2), "measured")
    assert gain.steps == 5
    plain, levelled = Track(path, chunk=4096).open(), Track(path, chunk=4096, gain=gain).open()
    assert (plain.gain_steps, plain.gain_db) == (0, None)
    assert levelled.gain_steps == 5 and levelled.gain_db == pytest.approx(5 * DB_PER_STEP)
    got_plain, got_levelled = bytearray(), bytearray()
    while (run := plain.next_run(7)) is not None:
        other = levelled.next_run(7)
        assert other is not None and (other.offset, other.count) == (run.offset, run.count)
        assert levelled.position == plain.position
        got_plain += run.data
        got_levelled += other.data
    assert levelled.next_run(7) is None
    assert bytes(got_plain) == frames
    assert bytes(got_levelled) == apply_gain(frames, 5) != frames


# -- beside conversion: the gain of what will play -----------------------------------


def test_a_converted_file_is_measured_after_conversion(tmp_path: Path) -> None:
    from pushsource.workers.transcode import Resolver, StationFormat, Transcoder

    fmt = StationFormat()
    source = tmp_path / "music" / "track.flac"
    source.parent.mkdir()
    run_tool("sox", "-R", "-n", "-r", "48000", "-c", "2", "-b", "16", source,
             "synth", "3", "pinknoise", "vol", "0.05")  # fmt: skip
    tagged = tmp_path / "music" / "tagged.flac"
    shutil.copy(source, tagged)
    flac = FLAC(tagged)
    flac["REPLAYGAIN_TRACK_GAIN"] = "-3.00 dB"
    flac.save()
    leveller = Leveller(-18.0, tmp_path / "cache" / "loudness")
    with Transcoder(tmp_path / "cache", fmt) as transcoder:
        resolver = Resolver(fmt, transcoder, leveller=leveller)
        try:
            play = resolver.prepare(source)
            assert play != source and play.parent == transcoder.cache_dir
            gain = resolver.gain(source)
            assert gain is not None and gain.source == "measured"
            entries = [json.loads(p.read_text()) for p in leveller.cache_dir.glob("*.json")]
            assert [entry["source"] for entry in entries] == [str(play.resolve())]
            assert gain.loudness == pytest.approx(ebur128(play).lufs, abs=0.3)
            resolver.prepare(tagged)  # converted too, but its tag says it all
            tag_gain = resolver.gain(tagged)
            assert tag_gain is not None and tag_gain.source == "tag"
            assert tag_gain.steps == round(-3 / DB_PER_STEP)
            assert leveller.measurements == 1
        finally:
            leveller.close()
    with Transcoder(tmp_path / "cache", fmt) as transcoder:
        plain = Resolver(fmt, transcoder)
        plain.prepare(source)
        assert plain.gain(source) is None  # no loudness setting: no gain
