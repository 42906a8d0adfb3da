"""One station format, end to end: a folder of MP3s at other rates and channel
counts, FLAC, Ogg Vorbis, Opus, M4A and WAV streams through a real icecast2 as
one MP3 stream in the station's format, converted with the real libvlc.

The oracles are independent of pushsource's frame parser: a header walk built
on tests.synth (the standards' formulas) and ffprobe's decoded frames.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pushsource.ops.trial import tag_mp3
from tests.conftest import StartPushsource
from tests.support.icecast import IcecastServer
from tests.support.listener import Listener
from tests.support.media import (
    Tagged,
    decode_mp3,
    make_free_format,
    make_tagged_audio,
    mpeg_header_at,
    probe_frames,
    walk_mpeg_frames,
)

pytestmark = pytest.mark.integration

#: Long enough that each title reaches the listener: Icecast sends ICY
#: metadata every 16000 audio bytes, about 1 s at 128 kbps.
SECONDS = 2.5
#: VLC 3.0's transcode chain loses up to about 0.3 s of each converted file
#: (see pushsource/transcode.py); allow a little more.
CONVERSION_LOSS = 0.35
STATION = "One Format FM"
_CONVERTED = re.compile(r"converted (.+) \((\d+\.\d) s of audio in (\d+\.\d) s, (\d+)x\)")


def source_url(icecast: IcecastServer, mount: str) -> str:
    return f"icecast://source:hackme@127.0.0.1:{icecast.port}{mount}"


def distinct_titles(titles: list[tuple[int, str]]) -> list[str]:
    """The titles a listener saw, each run of repeats as one."""
    seen: list[str] = []
    for _, title in titles:
        if not seen or seen[-1] != title:
            seen.append(title)
    return seen


def station_frames(audio: bytes, fmt: tuple[int, int, int], tmp_path: Path) -> bytes:
    """Check that ``audio`` (a whole recording) is nothing but Layer III frames
    of ``fmt`` (sample rate, channels, kbps), back to back from its first byte,
    by a header walk and by ffprobe; return it without the last frame if
    Icecast cut that one short (it ends a stream on a 1400-byte block)."""
    rate, channels, bitrate = fmt
    frames, end = walk_mpeg_frames(audio)
    assert frames, f"no MPEG frame at the start of the recording: {audio[:16].hex()}"
    if end < len(audio):
        cut = mpeg_header_at(audio, end)
        assert cut is not None and end + cut.length > len(audio), (
            f"not a frame at byte {end} of {len(audio)}: {audio[end : end + 8].hex()}"
        )
    wrong = [
        (pos, (h.sample_rate, h.channels, h.bitrate, h.layer))
        for pos, h in frames
        if (h.sample_rate, h.channels, h.bitrate, h.layer) != (rate, channels, bitrate, 3)
    ]
    assert not wrong, f"{len(wrong)} of {len(frames)} frames not {fmt} Layer III: {wrong[:5]}"
    whole = audio[:end]
    path = tmp_path / "recording.mp3"
    path.write_bytes(whole)
    probed = probe_frames(path)
    assert {(f.sample_rate, f.channels) for f in probed} == {(rate, channels)}, (
        f"ffprobe: {sorted({(f.sample_rate, f.channels) for f in probed})}"
    )
    assert abs(len(probed) - len(frames)) <= 1, (len(probed), len(frames))
    decoded = decode_mp3(whole, tmp_path)
    assert decoded.errors == "", decoded.errors
    assert decoded.channels == channels
    return whole


def conversions(stderr: str) -> dict[str, tuple[float, float]]:
    """File name -> (seconds of audio, seconds taken), from the conversion log lines."""
    found = {}
    for match in _CONVERTED.finditer(stderr):
        found[Path(match.group(1)).name] = (float(match.group(2)), float(match.group(3)))
    return found


def stream_once(
    icecast: IcecastServer,
    mount: str,
    start_pushsource: StartPushsource,
    folder: Path,
    cache: Path,
    seconds: float,
    *options: str,
) -> tuple[Listener, str]:
    """Stream the folder once with a listener from the first byte; its stderr."""
    with Listener(icecast.port, mount, connect_timeout=20) as listener:
        run = start_pushsource(
            "stream", folder, source_url(icecast, mount), "--once",
            "--cache", cache, "--name", STATION, *options,
        )  # fmt: skip
        assert run.wait(seconds + 30) == 0, run.describe()
        listener.wait_closed(10)
    assert listener.error is None, listener.error
    return listener, run.stderr


def test_mixed_folder_is_one_stream_in_the_station_format(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    folder, cache = tmp_path / "music", tmp_path / "cache"
    folder.mkdir()
    native = make_tagged_audio(
        folder / "01-native.mp3", SECONDS, artist="Native", title="MP3 44.1 kHz stereo", freq=440
    )
    tracks: list[Tagged] = [
        native,
        make_tagged_audio(
            folder / "02-mono.mp3", SECONDS, artist="Mono", title="MP3 48 kHz", freq=550,
            samplerate=48000, channels=1, bitrate=64,
        ),
        make_tagged_audio(
            folder / "03-lossless.flac", SECONDS, artist="Sigur Rós", title="FLAC ✓", freq=660,
            samplerate=48000,
        ),
        make_tagged_audio(
            folder / "05-vorbis.ogg", SECONDS, artist="東京事変", title="Ogg Vorbis", freq=770,
            samplerate=22050, channels=1,
        ),
        make_tagged_audio(  # tagged in an "id3 " chunk
            folder / "06-pcm.wav", SECONDS, artist="Wave Artist", title="PCM 🎶", freq=880,
        ),
    ]  # fmt: skip
    (folder / "04-broken.ogg").write_text("this is not audio at all\n" * 40, "utf-8")
    expected_titles = [t.title for t in tracks]

    listener, stderr = stream_once(
        icecast, unique_mount, start_pushsource, folder, cache, len(tracks) * SECONDS
    )
    audio = bytes(listener.audio)
    whole = station_frames(audio, (44100, 2, 128), tmp_path)

    # The MP3 already in the station format passes through untouched.
    assert native.audio is not None
    assert whole.startswith(native.audio), "the 44.1 kHz MP3's frames were changed"
    # Every file but the broken one plays, in name order, with its tags' title,
    # and with no gap (a gap would show the station name as the title).
    assert distinct_titles(listener.titles) == expected_titles, listener.titles
    recorded = len(walk_mpeg_frames(whole)[0]) * 1152 / 44100
    total = len(tracks) * SECONDS
    low = total - CONVERSION_LOSS * (len(tracks) - 1)
    assert low <= recorded <= total + 0.5, f"{recorded:.2f} s recorded of {total:.2f} s"

    # The file libvlc cannot decode is skipped with one line naming it.
    lines = [line for line in stderr.splitlines() if "04-broken.ogg" in line]
    assert len(lines) == 1 and "skipped" in lines[0], stderr

    # Converted ahead of play time, each once, into --cache.
    converted = conversions(stderr)
    assert sorted(converted) == sorted(t.path.name for t in tracks[1:]), stderr
    assert len(list(cache.glob("*.mp3"))) == len(tracks) - 1, sorted(cache.iterdir())
    for name, (audio_seconds, took) in sorted(converted.items()):
        print(f"converted {name}: {audio_seconds:.1f} s of audio in {took:.1f} s")
    print(f"recorded {recorded:.2f} s for {total:.2f} s of sources")


def test_another_station_format(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    """22.05 kHz mono at 64 kbps: even a 44.1 kHz stereo MP3 is converted."""
    folder, cache = tmp_path / "music", tmp_path / "cache"
    folder.mkdir()
    tracks = [
        make_tagged_audio(
            folder / "01-stereo.mp3", SECONDS, artist="Stereo", title="MP3 44.1 kHz", freq=500
        ),
        make_tagged_audio(
            folder / "02-opus.opus", SECONDS, artist="Opus", title="48 kHz", freq=600,
            samplerate=48000,
        ),
        make_tagged_audio(
            folder / "03-aac.m4a", SECONDS, artist="AAC", title="M4A 44.1 kHz", freq=700
        ),
    ]  # fmt: skip
    listener, stderr = stream_once(
        icecast, unique_mount, start_pushsource, folder, cache, len(tracks) * SECONDS,
        "--samplerate", "22050", "--channels", "1", "--bitrate", "64",
    )  # fmt: skip
    assert listener.headers.get("icy-br") == "64", listener.headers
    whole = station_frames(bytes(listener.audio), (22050, 1, 64), tmp_path)
    assert distinct_titles(listener.titles) == [t.title for t in tracks], listener.titles
    recorded = len(walk_mpeg_frames(whole)[0]) * 576 / 22050
    total = len(tracks) * SECONDS
    low = total - CONVERSION_LOSS * len(tracks)
    assert low <= recorded <= total + 0.5, f"{recorded:.2f} s recorded of {total:.2f} s"
    assert sorted(conversions(stderr)) == sorted(t.path.name for t in tracks), stderr


def test_a_free_format_mp3_is_converted_and_plays(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    """lame --freeformat -b 400: same rate, channels and layer as the station,
    but no bitrate in its headers (ffmpeg cannot even decode it): converted to
    the station's 128 kbps, where it used to be skipped."""
    folder, cache = tmp_path / "music", tmp_path / "cache"
    folder.mkdir()
    native = make_tagged_audio(
        folder / "01-native.mp3", SECONDS, artist="Native", title="CBR", freq=440
    )
    free = folder / "02-free.mp3"
    make_free_format(free, SECONDS, freq=660)
    tag_mp3(free, "Free Artist", "Free Format")
    listener, stderr = stream_once(
        icecast, unique_mount, start_pushsource, folder, cache, 2 * SECONDS
    )
    # Decoded by ffmpeg without an error, every frame a 128 kbps station frame.
    whole = station_frames(bytes(listener.audio), (44100, 2, 128), tmp_path)
    assert distinct_titles(listener.titles) == [native.title, "Free Artist - Free Format"]
    assert "skipped" not in stderr, stderr
    assert sorted(conversions(stderr)) == ["02-free.mp3"], stderr
    recorded = len(walk_mpeg_frames(whole)[0]) * 1152 / 44100
    low = 2 * SECONDS - CONVERSION_LOSS
    assert low <= recorded <= 2 * SECONDS + 0.5, f"{recorded:.2f} s recorded"


def test_ffprobe_sees_a_format_change(tmp_path: Path) -> None:
    """The oracle can fail: a 48 kHz frame among 44.1 kHz ones is found by both checks."""
    a = make_tagged_audio(tmp_path / "a.mp3", 0.3, artist="a", title="a")
    b = make_tagged_audio(tmp_path / "b.mp3", 0.3, artist="b", title="b", samplerate=48000)
    assert a.audio is not None and b.audio is not None
    with pytest.raises(AssertionError, match="not"):
        station_frames(a.audio + b.audio, (44100, 2, 128), tmp_path)
    mixed = tmp_path / "mixed.mp3"
    mixed.write_bytes(a.audio + b.audio)
    assert {f.sample_rate for f in probe_frames(mixed)} == {44100, 48000}
