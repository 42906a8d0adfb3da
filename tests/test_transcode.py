"""One station format: needs_transcoding and the libvlc Transcoder, on real files
made at test time with sox, lame and ffmpeg, converted by the real libvlc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pushsource.core.frames import Frame
from pushsource.errors import CacheError, ConfigError, TrackError
from pushsource.workers.tracks import Track, read_info
from pushsource.workers.transcode import StationFormat, Transcoder, _frames, needs_transcoding
from tests.support.disk import fill, small_tmpfs
from tests.support.media import make_clean_mp3, run_tool

SECONDS = 1.5
#: VLC 3.0's transcode chain drops up to ~0.1 s at the start and ~0.2 s at the
#: end; lame adds ~25 ms of delay.
TOLERANCE = 0.3


@dataclass(frozen=True)
class Input:
    path: Path
    seconds: float


def _wav(path: Path, seconds: float, rate: int, channels: int, freq: int = 440) -> None:
    run_tool(
        "sox", "-R", "-n", "-r", str(rate), "-c", str(channels), "-b", "16", path,
        "synth", str(seconds), "sine", str(freq), "vol", "0.5",
    )  # fmt: skip


def _encoded(path: Path, seconds: float, *codec: str, rate: int = 48000, channels: int = 2) -> None:
    """A tone encoded by ffmpeg with the given codec arguments."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "in.wav"
        _wav(wav, seconds, rate, channels)
        run_tool("ffmpeg", "-v", "error", "-y", "-i", wav, *codec, path)


def _mp3(rate: int, channels: int, bitrate: int) -> Callable[[Path, float], None]:
    def make(path: Path, seconds: float) -> None:
        make_clean_mp3(path, seconds, samplerate=rate, channels=channels, bitrate=bitrate)

    return make


def _ffmpeg(*codec: str, rate: int = 48000, channels: int = 2) -> Callable[[Path, float], None]:
    def make(path: Path, seconds: float) -> None:
        _encoded(path, seconds, *codec, rate=rate, channels=channels)

    return make


#: name -> (file name, builder)
BUILDERS: dict[str, tuple[str, Callable[[Path, float], None]]] = {
    "mp3-44k-stereo": ("a.mp3", _mp3(44100, 2, 128)),
    "mp3-48k-mono": ("b.mp3", _mp3(48000, 1, 64)),
    "mp3-22k": ("c.mp3", _mp3(22050, 2, 64)),
    "wav": ("d.wav", lambda path, seconds: _wav(path, seconds, 48000, 2)),
    "flac": ("e.flac", _ffmpeg("-c:a", "flac", rate=96000, channels=1)),
    "ogg-vorbis": ("f.ogg", _ffmpeg("-c:a", "libvorbis")),
    "opus": ("g.opus", _ffmpeg("-c:a", "libopus")),
    "m4a": ("h.m4a", _ffmpeg("-c:a", "aac", rate=22050)),
}
CONVERTED = [name for name in BUILDERS if name != "mp3-44k-stereo"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Input]:
    folder = tmp_path_factory.mktemp("inputs")
    made = {}
    for name, (file_name, build) in BUILDERS.items():
        build(folder / file_name, SECONDS)
        made[name] = Input(folder / file_name, SECONDS)
    return made


@pytest.fixture
def transcoder(tmp_path: Path) -> Iterator[Transcoder]:
    with Transcoder(tmp_path / "cache", StationFormat()) as made:
        yield made


def frames_of(path: Path) -> list[Frame]:
    return list(_frames(path))


def cache_files(transcoder: Transcoder) -> list[str]:
    return sorted(p.name for p in transcoder.cache_dir.iterdir())


def assert_only_finished_entries(transcoder: Transcoder) -> None:
    """Nothing in the cache but <key>.mp3 + <key>.json pairs."""
    names = cache_files(transcoder) if transcoder.cache_dir.exists() else []
    mp3s = {n[:-4] for n in names if n.endswith(".mp3")}
    jsons = {n[:-5] for n in names if n.endswith(".json")}
    assert mp3s == jsons and len(names) == 2 * len(mp3s), names


def ffprobe_stream(path: Path) -> dict[str, object]:
    out = run_tool(
        "ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
        "stream=codec_name,sample_rate,channels", "-of", "json", path,
    )  # fmt: skip
    streams = json.loads(out)["streams"]
    assert len(streams) == 1
    return dict(streams[0])


# --- the format -----------------------------------------------------------------------


def test_station_format_defaults_and_audio_info() -> None:
    fmt = StationFormat()
    assert (fmt.sample_rate, fmt.channels, fmt.bitrate) == (44100, 2, 128)
    assert fmt.audio_info() == "bitrate=128;samplerate=44100;channels=2"
    assert StationFormat(22050, 1, 64).audio_info() == "bitrate=64;samplerate=22050;channels=1"


@pytest.mark.parametrize(
    ("rate", "channels", "bitrate", "words"),
    [
        (44000, 2, 128, "no 44000 Hz sample rate"),
        (44100, 6, 128, "1 or 2 channels, not 6"),
        (44100, 2, 8, "no 8 kbps bitrate"),  # MPEG-2 only
        (22050, 2, 320, "no 320 kbps bitrate"),  # MPEG-1 only
    ],
)
def test_station_format_refuses_what_mp3_cannot_carry(
    rate: int, channels: int, bitrate: int, words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        StationFormat(rate, channels, bitrate)


# --- needs_transcoding ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("mp3-44k-stereo", False), *((name, True) for name in CONVERTED)],
)
def test_needs_transcoding(inputs: dict[str, Input], name: str, expected: bool) -> None:
    assert needs_transcoding(inputs[name].path, StationFormat()) is expected


def test_needs_transcoding_strict_bitrate(inputs: dict[str, Input]) -> None:
    path = inputs["mp3-44k-stereo"].path  # lame -t -b 128: CBR without an Info frame
    assert needs_transcoding(path, StationFormat(), strict_bitrate=True) is False
    assert needs_transcoding(path, StationFormat(bitrate=192), strict_bitrate=False) is False
    assert needs_transcoding(path, StationFormat(bitrate=192), strict_bitrate=True) is True


def test_needs_transcoding_strict_bitrate_refuses_vbr(tmp_path: Path) -> None:
    path = tmp_path / "vbr.mp3"
    make_clean_mp3(path, SECONDS, bitrate=None, extra_lame_args=["-V", "2"])
    assert needs_transcoding(path, StationFormat()) is False
    assert needs_transcoding(path, StationFormat(), strict_bitrate=True) is True


def test_needs_transcoding_leaves_unknown_content_to_libvlc(tmp_path: Path) -> None:
    text = tmp_path / "notes.ogg"
    text.write_text("not audio at all\n")
    assert needs_transcoding(text, StationFormat()) is True


def test_a_file_named_mp3_without_frames_is_refused_with_the_parser_reason(
    tmp_path: Path,
) -> None:
    text = tmp_path / "notes.mp3"
    text.write_text("not audio at all\n")
    with pytest.raises(TrackError, match=r"no MPEG audio frame found in 17 bytes \(at byte 17\)"):
        needs_transcoding(text, StationFormat())


def test_needs_transcoding_raises_for_what_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(TrackError, match="file is gone"):
        needs_transcoding(tmp_path / "missing.mp3", StationFormat())
    with pytest.raises(TrackError, match="is a directory"):
        needs_transcoding(tmp_path, StationFormat())


# --- converting ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONVERTED)
def test_convert_gives_station_format_frames(
    inputs: dict[str, Input], transcoder: Transcoder, name: str
) -> None:
    source = inputs[name]
    started = time.monotonic()
    out = transcoder.convert(source.path)
    took = time.monotonic() - started
    print(
        f"\n{name}: {source.seconds:.1f} s converted in {took:.2f} s ({source.seconds / took:.0f}x)"
    )

    assert out.parent == transcoder.cache_dir and out.suffix == ".mp3"
    frames = frames_of(out)
    fmt = transcoder.format
    assert frames, "no frames"
    wrong = [f.header for f in frames if not fmt.matches(f)]
    assert not wrong, f"{len(wrong)} of {len(frames)} frames not in the station format: {wrong[0]}"
    assert {f.header.bitrate for f in frames} == {fmt.bitrate}
    seconds = sum(f.header.duration for f in frames)
    assert abs(seconds - source.seconds) <= TOLERANCE, f"{seconds:.3f} s of {source.seconds} s"
    # ffprobe agrees, and the station reads the source's title from the cache file.
    assert ffprobe_stream(out) == {"codec_name": "mp3", "sample_rate": "44100", "channels": 2}
    track = Track(out).open()
    track.close()
    assert track.info.title == read_info(source.path).title == source.path.stem
    assert_only_finished_entries(transcoder)


def test_convert_to_another_format(inputs: dict[str, Input], tmp_path: Path) -> None:
    fmt = StationFormat(sample_rate=48000, channels=1, bitrate=96)
    with Transcoder(tmp_path / "cache", fmt) as transcoder:
        out = transcoder.convert(inputs["ogg-vorbis"].path)
    frames = frames_of(out)
    assert frames and all(
        (f.header.sample_rate, f.header.channels, f.header.bitrate) == (48000, 1, 96)
        for f in frames
    )
    assert ffprobe_stream(out) == {"codec_name": "mp3", "sample_rate": "48000", "channels": 1}


def test_convert_keeps_the_tags_title(tmp_path: Path, transcoder: Transcoder) -> None:
    source = tmp_path / "tagged.flac"
    _encoded(source, SECONDS, "-c:a", "flac", "-metadata", "artist=Sigur Rós", "-metadata",
             "title=Ágætis byrjun")  # fmt: skip
    out = transcoder.convert(source)
    assert read_info(out).title == "Sigur Rós - Ágætis byrjun"


def test_convert_measures_speed(tmp_path: Path, transcoder: Transcoder) -> None:
    """Not a timing assertion: prints how much faster than real time libvlc runs."""
    source = tmp_path / "long.flac"
    _encoded(source, 20, "-c:a", "flac")
    started = time.monotonic()
    out = transcoder.convert(source)
    took = time.monotonic() - started
    seconds = sum(f.header.duration for f in frames_of(out))
    print(f"\nconversion speed: {seconds:.1f} s of FLAC in {took:.2f} s = {seconds / took:.0f}x")
    assert abs(seconds - 20) <= TOLERANCE


def test_video_tracks_are_left_out(tmp_path: Path, transcoder: Transcoder) -> None:
    source = tmp_path / "clip.mp4"
    run_tool(
        "ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=duration=1.5:size=64x64",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=1.5", "-c:v", "mpeg4", "-c:a", "aac",
        "-shortest", source,
    )  # fmt: skip
    out = transcoder.convert(source)
    data = out.read_bytes()
    frames = frames_of(out)
    tag_size = frames[0].offset  # the ID3v2 title tag comes first
    assert sum(len(f.data) for f in frames) == len(data) - tag_size, "bytes that are not frames"


def test_odd_characters_in_paths(inputs: dict[str, Input], tmp_path: Path) -> None:
    """Quotes, braces and commas mean something in a libvlc sout chain."""
    odd = tmp_path / 'we"ird, {dir} \\ #1'
    odd.mkdir()
    source = odd / "a 'song', {1} #%20.flac"
    source.write_bytes(inputs["flac"].path.read_bytes())
    with Transcoder(odd / "cache {x}", StationFormat()) as transcoder:
        out = transcoder.convert(source)
        assert frames_of(out)
        assert_only_finished_entries(transcoder)


# --- the cache -------------------------------------------------------------------------------


def test_second_convert_is_a_cache_hit(inputs: dict[str, Input], transcoder: Transcoder) -> None:
    source = inputs["wav"].path
    first = transcoder.convert(source)
    made = first.stat().st_mtime_ns
    started = time.monotonic()
    again = transcoder.convert(source)
    assert time.monotonic() - started < 0.1
    assert again == first and again.stat().st_mtime_ns == made
    assert transcoder.conversions == 1
    # A new Transcoder on the same directory finds it too.
    with Transcoder(transcoder.cache_dir, transcoder.format) as other:
        assert other.convert(source) == first and other.conversions == 0


def test_the_format_is_part_of_the_key(inputs: dict[str, Input], tmp_path: Path) -> None:
    source = inputs["wav"].path
    with (
        Transcoder(tmp_path, StationFormat()) as a,
        Transcoder(tmp_path, StationFormat(48000)) as b,
    ):
        assert a.convert(source) != b.convert(source)


def test_a_changed_source_gets_a_new_entry(inputs: dict[str, Input], tmp_path: Path) -> None:
    source = tmp_path / "song.ogg"
    source.write_bytes(inputs["ogg-vorbis"].path.read_bytes())
    with Transcoder(tmp_path / "cache", StationFormat()) as transcoder:
        old = transcoder.convert(source)
        _encoded(source, 1.0, "-c:a", "libvorbis")
        new = transcoder.convert(source)
        assert new != old and old.exists() and transcoder.conversions == 2
        assert abs(sum(f.header.duration for f in frames_of(new)) - 1.0) <= TOLERANCE
        # The old version is stale: prune removes it and keeps the new one.
        assert transcoder.prune([source]) == 1
        assert not old.exists() and new.exists()
        assert_only_finished_entries(transcoder)
        assert cache_files(transcoder) == sorted([new.name, new.with_suffix(".json").name])


def test_forget_removes_every_version(inputs: dict[str, Input], tmp_path: Path) -> None:
    source, other = tmp_path / "song.wav", inputs["flac"].path
    source.write_bytes(inputs["wav"].path.read_bytes())
    with Transcoder(tmp_path / "cache", StationFormat()) as transcoder:
        first = transcoder.convert(source)
        os.utime(source, ns=(1, 1))  # a new version by its stamp
        second = transcoder.convert(source)
        kept = transcoder.convert(other)
        assert first != second
        source.unlink()
        transcoder.forget(source)
        assert not first.exists() and not second.exists() and kept.exists()
        assert_only_finished_entries(transcoder)


def test_prune_removes_what_is_not_kept(inputs: dict[str, Input], tmp_path: Path) -> None:
    names = ["wav", "flac", "opus"]
    sources = [tmp_path / Path(inputs[n].path).name for n in names]
    for name, source in zip(names, sources, strict=True):
        source.write_bytes(inputs[name].path.read_bytes())
    with Transcoder(tmp_path / "cache", StationFormat()) as transcoder:
        outs = [transcoder.convert(s) for s in sources]
        (transcoder.cache_dir / ".leftover.part").write_bytes(b"half")  # a crash mid-conversion
        (transcoder.cache_dir / "orphan.mp3").write_bytes(b"no index")
        (transcoder.cache_dir / "lost.json").write_text('{"source": "/nowhere"}')
        sources[2].unlink()  # gone: pruned even if asked to keep it
        assert transcoder.prune([sources[0], sources[2]]) == 3
        assert [o.exists() for o in outs] == [True, False, False]
        assert_only_finished_entries(transcoder)
        assert transcoder.prune([sources[0]]) == 0


# --- failures --------------------------------------------------------------------------------


def test_text_file_is_refused(tmp_path: Path, transcoder: Transcoder) -> None:
    text = tmp_path / "readme.flac"
    text.write_text("this is not audio\n" * 100)
    with pytest.raises(TrackError, match="no audio") as caught:
        transcoder.convert(text)
    assert caught.value.path == text
    assert_only_finished_entries(transcoder)


def test_truncated_flac_is_refused(inputs: dict[str, Input], tmp_path: Path) -> None:
    whole = inputs["flac"].path.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole[: len(whole) * 3 // 10])
    with Transcoder(tmp_path / "cache", StationFormat()) as transcoder:
        good = transcoder.convert(inputs["ogg-vorbis"].path)
        with pytest.raises(TrackError, match=r"decoded only .* of the 1\.5 s .*truncated"):
            transcoder.convert(cut)
        assert_only_finished_entries(transcoder)
        assert cache_files(transcoder) == sorted([good.name, good.with_suffix(".json").name])


def test_empty_and_missing_files_are_refused(tmp_path: Path, transcoder: Transcoder) -> None:
    empty = tmp_path / "empty.opus"
    empty.touch()
    with pytest.raises(TrackError, match="no audio"):
        transcoder.convert(empty)
    with pytest.raises(TrackError, match="file is gone"):
        transcoder.convert(tmp_path / "missing.flac")
    with pytest.raises(TrackError, match="not a regular file"):
        transcoder.convert(tmp_path)
    assert_only_finished_entries(transcoder)


def test_a_conversion_that_takes_too_long_is_abandoned(
    inputs: dict[str, Input], tmp_path: Path
) -> None:
    with Transcoder(tmp_path / "cache", StationFormat(), timeout=0.001) as transcoder:
        with pytest.raises(TrackError, match=r"took longer than 0\.001 s"):
            transcoder.convert(inputs["flac"].path)
        assert_only_finished_entries(transcoder)


def test_libvlc_prints_nothing(inputs: dict[str, Input], tmp_path: Path) -> None:
    """libvlc's own messages (and libmp3lame's through it) stay off stderr."""
    script = (
        "import sys; from pathlib import Path; from pushsource.errors import TrackError\n"
        "from pushsource.workers.transcode import StationFormat, Transcoder\n"
        "with Transcoder(Path(sys.argv[1]), StationFormat()) as t:\n"
        "    t.convert(Path(sys.argv[2]))\n"
        "    try: t.convert(Path(sys.argv[3]))\n"
        "    except TrackError: pass\n"
    )
    text = tmp_path / "text.ogg"
    text.write_text("no audio here")
    done = subprocess.run(
        [sys.executable, "-c", script, tmp_path / "cache", inputs["m4a"].path, text],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""


def test_a_cache_that_cannot_be_written_skips_the_file(
    inputs: dict[str, Input], tmp_path: Path
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("where the cache directory should be")
    with (
        Transcoder(blocked / "cache", StationFormat()) as transcoder,
        pytest.raises(CacheError, match=r"cannot write its conversion to .*\[Errno 20\] Not a dir"),
    ):
        transcoder.convert(inputs["wav"].path)


def test_a_full_cache_is_the_disks_fault_not_the_files(tmp_path: Path) -> None:
    """libvlc's output cut short by a full disk (a real tmpfs) is a cache
    error naming the disk's, not a file "truncated or damaged"; with room
    again, the same file converts."""
    flac = tmp_path / "long.flac"
    _encoded(flac, 20.0, "-c:a", "flac")  # 20 s: about 320 KB at 128 kbps
    with small_tmpfs(512) as disk:
        fill(disk, 40 * 1024)
        with Transcoder(disk / "cache", StationFormat()) as transcoder:
            with pytest.raises(CacheError) as caught:
                transcoder.convert(flac)
            assert "[Errno 28] No space left on device" in caught.value.reason
            assert "damaged" not in caught.value.reason
            assert_only_finished_entries(transcoder)  # no partial file left
            (disk / "filler").unlink()
            out = transcoder.convert(flac)
            assert abs(sum(f.header.duration for f in frames_of(out)) - 20.0) < TOLERANCE


def test_a_converted_file_is_said_once_and_shows_the_bitrate_sent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The Feed prepares the next file ahead of its turn and again when it
    opens it: one "converted" line, one conversion timed, and the status
    shows what goes on air (128 kbps), not the source's 320."""
    import logging

    from pushsource.workers.feed import Feed, ListSource
    from pushsource.workers.transcode import Resolver

    source = tmp_path / "loud.mp3"
    make_clean_mp3(source, SECONDS, samplerate=48000, channels=2, bitrate=320)
    assert read_info(source).bitrate == 320

    def cue_once(cache: Path) -> tuple[int, list[float], list[str]]:
        timed: list[float] = []
        with Transcoder(cache, StationFormat()) as transcoder:
            resolver = Resolver(StationFormat(), transcoder, converted=timed.append)
            feed = Feed(
                ListSource([source]),
                resolve=resolver.resolve,
                prepare=resolver.prepare,
                was_played=lambda p: False,
                mark_played=lambda p: None,
                unplayable=lambda exc: None,
            )
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="pushsource"):
                feed.prepare_next()
                cued = feed.cue(None, chunk=5).track
            assert cued is not None
            feed.release(cued.handle)
            lines = [r.getMessage() for r in caplog.records if "converted" in r.getMessage()]
            return cued.bitrate, timed, lines

    bitrate, timed, lines = cue_once(tmp_path / "cache")
    assert bitrate == 128
    assert len(timed) == 1 and len(lines) == 1, lines
    # From the cache next time: nothing converted, nothing said, the same bitrate.
    bitrate, timed, lines = cue_once(tmp_path / "cache")
    assert bitrate == 128 and timed == [] and lines == []
