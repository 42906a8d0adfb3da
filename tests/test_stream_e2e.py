"""pushsource end to end: the CLI streams a folder into a real icecast2, a listener records it."""

from __future__ import annotations

import bisect
import shutil
import subprocess
import wave
from collections.abc import Callable
from pathlib import Path

import pytest

import pushsource
from pushsource.core.frames import parse_header
from tests.conftest import StartPushsource
from tests.support.icecast import IcecastServer
from tests.support.listener import Listener
from tests.support.media import Fixture, make_clean_mp3, make_titled_tracks, probe_packets

pytestmark = pytest.mark.integration

RunPushsource = Callable[..., subprocess.CompletedProcess[str]]
LEAD = 0.5  # seconds pushsource sends ahead of real time
BLOCK = 1400  # Icecast relays source data in blocks of this size


def source_url(icecast: IcecastServer, mount: str, password: str | None = "hackme") -> str:
    auth = "source" if password is None else f"source:{password}"
    return f"icecast://{auth}@127.0.0.1:{icecast.port}{mount}"


def where(corpus: list[Fixture], offset: int) -> str:
    """Which fixture, and where in it, a stream offset falls."""
    for fixture in corpus:
        if offset < len(fixture.audio):
            return f"{fixture.path.name} at byte {offset} of {len(fixture.audio)}"
        offset -= len(fixture.audio)
    return f"{offset} bytes past the corpus"


def assert_starts_with(audio: bytes, expected: bytes, corpus: list[Fixture]) -> None:
    if audio.startswith(expected):
        return
    first = next(
        (i for i, (a, b) in enumerate(zip(audio, expected, strict=False)) if a != b), len(audio)
    )
    raise AssertionError(
        f"got {len(audio)} bytes, want {len(expected)} first; first difference at {first}: "
        f"{where(corpus, first)}"
    )


def decode(mp3: bytes, tmp_path: Path, name: str) -> tuple[str, int, bytes]:
    """ffmpeg's error output, and the decoded audio: sample frames, 16-bit PCM.

    WAV because ffmpeg's null muxer complains about timestamps when the sample
    rate changes mid-stream, which the corpus does on purpose.
    """
    source, target = tmp_path / f"{name}.mp3", tmp_path / f"{name}.wav"
    source.write_bytes(mp3)
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "mp3", "-i", source, "-f", "wav", "-y", target],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    with wave.open(str(target), "rb") as decoded:
        assert decoded.getsampwidth() == 2
        frames = decoded.getnframes()
        return done.stderr, frames, decoded.readframes(frames)


def assert_only_silent_frames(audio: bytes, corpus: list[Fixture], tmp_path: Path) -> None:
    """What follows the corpus is whole silent frames, and the whole recording decodes."""
    expected_length = sum(len(f.audio) for f in corpus)
    tail = audio[expected_length:]
    if tail:
        (tmp_path / "tail.mp3").write_bytes(tail)
        packets = probe_packets(tmp_path / "tail.mp3")
        starts = [p.pos for p in packets]
        assert starts == [0] + [p.pos + p.size for p in packets[:-1]], "junk between frames"
        assert packets[-1].pos + packets[-1].size == len(tail)
        # Icecast ends the recording on a block boundary, likely inside the last
        # silent frame, and ffmpeg rightly reports a cut frame: leave it out.
        tail = tail[: packets[-1].pos]
    errors, _, _ = decode(audio[:expected_length] + tail, tmp_path, "recording")
    assert errors == ""
    # Decode the tail after the last track so the decoder has its history;
    # skip two frames of it, where the last track's sound still rings out.
    _, alone, _ = decode(corpus[-1].audio, tmp_path, "last")
    _, joined, pcm = decode(corpus[-1].audio + tail, tmp_path, "last-and-tail")
    samples = memoryview(pcm).cast("h")
    channels = len(samples) // joined
    silence = samples[(alone + 2 * 1152) * channels :]
    peak = max((abs(s) for s in silence), default=0)
    assert peak <= 64, f"the {len(silence)} samples after the corpus are not silent: peak {peak}"


def assert_real_time(arrivals: list[tuple[float, int]], corpus: list[Fixture]) -> None:
    """Each byte arrives when its audio is due, give or take a second, after the burst."""
    ends, times = [0], [0.0]
    for fixture in corpus:
        ends.append(ends[-1] + len(fixture.audio))
        times.append(times[-1] + fixture.seconds)

    def media_time(offset: int) -> float:  # linear inside a fixture: close enough for VBR
        i = min(bisect.bisect_right(ends, offset), len(ends) - 1)
        span = ends[i] - ends[i - 1]
        return times[i - 1] + (times[i] - times[i - 1]) * (offset - ends[i - 1]) / span

    total = times[-1]
    received = [(t, n) for t, n in arrivals if n > 0]
    last = next(t for t, n in received if n >= ends[-1])
    wall = last - received[0][0]
    assert abs(wall - (total - LEAD)) <= 1.0, f"{total:.2f} s of audio took {wall:.2f} s"
    for t, n in received:
        if n <= ends[-1]:
            due = last - (total - media_time(n))
            assert abs(t - due) <= 1.0, f"byte {n} came {t - due:+.2f} s off its time"


def by_format(corpus: list[Fixture]) -> dict[tuple[int, int], list[Fixture]]:
    """The corpus grouped by (sample rate, channels): a station passes through
    only the files in its own format, and converts the rest."""
    groups: dict[tuple[int, int], list[Fixture]] = {}
    for fixture in corpus:
        header = parse_header(fixture.audio)
        assert header is not None, fixture.path
        groups.setdefault((header.sample_rate, header.channels), []).append(fixture)
    return groups


@pytest.mark.parametrize("fmt", [(44100, 2), (22050, 2), (44100, 1)], ids=str)
def test_corpus_streams_byte_exact_in_real_time(
    icecast: IcecastServer,
    corpus: list[Fixture],
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
    fmt: tuple[int, int],
) -> None:
    fixtures = by_format(corpus)[fmt]
    folder = tmp_path / "music"
    folder.mkdir()
    for fixture in fixtures:
        shutil.copy2(fixture.path, folder / fixture.path.name)
    total = sum(f.seconds for f in fixtures)
    rate, channels = fmt
    bitrate = "128" if rate == 44100 else "64"
    with Listener(icecast.port, unique_mount, connect_timeout=20) as listener:
        run = start_pushsource(
            "stream", folder, source_url(icecast, unique_mount), "--once",
            "--samplerate", str(rate), "--channels", str(channels), "--bitrate", bitrate,
        )  # fmt: skip
        assert run.wait(total + 30) == 0, run.describe()
        listener.wait_closed(10)
    assert listener.error is None
    assert "converted" not in run.stderr, run.describe()  # all of them pass through
    audio = bytes(listener.audio)
    assert_starts_with(audio, b"".join(f.audio for f in fixtures), fixtures)
    assert_only_silent_frames(audio, fixtures, tmp_path)
    assert_real_time(listener.arrivals, fixtures)


TITLES = [
    ("東京事変", "群青日和"),
    ("Sigur Rós", "Ágætis byrjun"),
    ("Emoji Band", "Dancing 💃 Queen 🎶"),
    ("AC/DC & Friends", "Rock'n'Roll = 100% ; a+b"),
]


def test_titles_arrive_utf8_when_each_track_starts(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    tracks = make_titled_tracks(tmp_path / "music", TITLES)
    with Listener(icecast.port, unique_mount, connect_timeout=20) as listener:
        run = start_pushsource(
            "stream", tmp_path / "music", source_url(icecast, unique_mount), "--once"
        )
        assert run.wait(sum(t.seconds for t in tracks) + 30) == 0, run.describe()
        listener.wait_closed(10)
    assert_starts_with(bytes(listener.audio), b"".join(t.audio for t in tracks), tracks)

    firsts: list[tuple[int, str]] = []  # where each new title first arrived
    for offset, title in listener.titles:
        if title and (not firsts or firsts[-1][1] != title):
            firsts.append((offset, title))
    assert [t for _, t in firsts] == [f"{a} - {t}" for a, t in TITLES], listener.titles

    metaint = int(listener.headers["icy-metaint"])
    start = 0
    for track, (offset, title) in zip(tracks, firsts, strict=True):
        # Icecast tags whole 1400-byte blocks with the title current when the
        # block fills and shows it at the next metaint boundary.
        assert offset >= start - 2 * BLOCK, f"{title!r} at {offset}, before its track ({start})"
        late = start + metaint + BLOCK + 16000  # 16000 bytes: 1 s of 128 kbps
        assert offset <= late, f"{title!r} at {offset}, long after its track began ({start})"
        start += len(track.audio)


@pytest.fixture(scope="module")
def one_track(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("one-track")
    make_clean_mp3(folder / "tone.mp3", 1.0)
    return folder


WRONG = "Wr0ng-pa55-xyzzy"


@pytest.mark.parametrize("given_by", ["url", "env", "file"])
def test_wrong_password_exits_2_without_showing_it(
    icecast: IcecastServer,
    one_track: Path,
    unique_mount: str,
    run_pushsource: RunPushsource,
    tmp_path: Path,
    given_by: str,
) -> None:
    args, env = password_args(icecast, unique_mount, WRONG, given_by, tmp_path)
    done = run_pushsource("stream", one_track, *args, "--once", env=env, timeout=30)
    assert done.returncode == 2, done
    assert f"authentication failed for source user on {unique_mount}" in done.stderr
    assert WRONG not in done.stdout + done.stderr


@pytest.mark.parametrize("given_by", ["env", "file"])
def test_password_from_env_or_file_works(
    icecast: IcecastServer,
    one_track: Path,
    unique_mount: str,
    run_pushsource: RunPushsource,
    tmp_path: Path,
    given_by: str,
) -> None:
    args, env = password_args(icecast, unique_mount, "hackme", given_by, tmp_path)
    with Listener(icecast.port, unique_mount, connect_timeout=20) as listener:
        done = run_pushsource("stream", one_track, *args, "--once", env=env, timeout=30)
        listener.wait_closed(10)
    assert done.returncode == 0, done
    assert "hackme" not in done.stdout + done.stderr
    assert bytes(listener.audio).startswith((one_track / "tone.mp3").read_bytes())


def password_args(
    icecast: IcecastServer, mount: str, password: str, given_by: str, tmp_path: Path
) -> tuple[list[str], dict[str, str]]:
    if given_by == "url":
        return [source_url(icecast, mount, password)], {}
    if given_by == "env":
        return [source_url(icecast, mount, None)], {"PUSHSOURCE_PASSWORD": password}
    secret = tmp_path / "password"
    secret.touch(mode=0o600)
    secret.write_text(password + "\n", "utf-8")  # as `echo` writes it
    return [source_url(icecast, mount, None), "--password-file", str(secret)], {}


def test_version_and_help(run_pushsource: RunPushsource) -> None:
    version = run_pushsource("--version")
    assert version.returncode == 0, version
    assert pushsource.__version__ in version.stdout
    helped = run_pushsource("--help")
    assert helped.returncode == 0, helped
    assert "stream" in helped.stdout


@pytest.mark.parametrize(
    "url",
    [
        "ftp://source:Sekr1t-9@127.0.0.1:8000/m",
        "icecast://source:Sekr1t-9@127.0.0.1:notaport/m",
        "icecast://source:Sekr1t-9@:8000/m",
        "icecast://source:Sekr1t-9@127.0.0.1:8000",
        "icecast://source:Sekr1t-9@127.0.0.1:8000/",
        "not a url",
    ],
)
def test_malformed_url_exits_2_with_one_line(
    one_track: Path, run_pushsource: RunPushsource, url: str
) -> None:
    done = run_pushsource("stream", one_track, url, "--once", timeout=30)
    assert done.returncode == 2, done
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Sekr1t-9" not in done.stdout + done.stderr
