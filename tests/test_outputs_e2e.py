"""Several outputs per station, end to end: one timeline on three mounts of
two real icecast2 servers (the station's own at 128 kbps, the same frames on
a second server, and 64 kbps 22.05 kHz mono converted with the real libvlc),
heard by three real listeners; then the second server is killed and the
other two play on untouched, and when it is back its output rejoins at the
station's position.

The oracles are independent of pushsource's frame parser: the header walk in
tests.support.media, the files' own bytes, and the converted copies in the
cache (found by their title tag, read with mutagen)."""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from pathlib import Path

import mutagen
import pytest

from tests.conftest import StartPushsource, register_secret
from tests.support.icecast import DEFAULT_TEMPLATE, IcecastServer
from tests.support.listener import Listener
from tests.support.media import make_titled_tracks, walk_mpeg_frames

pytestmark = pytest.mark.integration

#: Icecast's ICY metadata interval (icecast.xml): audio bytes between titles.
METAINT = 16000
TITLES = [("Outputs", "One"), ("Outputs", "Two"), ("Outputs", "Three"), ("Outputs", "Four")]
SECONDS = 7.0  # longer than a first read of a converted copy (6 s): the rest is read as it plays


def url(server: IcecastServer, mount: str) -> str:
    return f"icecast://source:hackme@127.0.0.1:{server.port}{mount}"


def first_title_at(listener: Listener, title: str) -> int:
    """The audio offset where ``title`` first reached the listener."""
    return next(at for at, t in listener.titles if t == title)


def distinct(titles: list[tuple[int, str]]) -> list[str]:
    seen: list[str] = []
    for _, title in titles:
        if title and (not seen or seen[-1] != title):
            seen.append(title)
    return seen


def converted_copies(cache: Path) -> dict[str, bytes]:
    """The 64 kbps copies in the cache, by title: their audio frames only."""
    copies = {}
    for path in cache.glob("64k-22050-1/*.mp3"):
        tags = mutagen.File(path)
        assert tags is not None and tags.tags is not None, path
        title = str(tags.tags["TIT2"])
        data = path.read_bytes()
        begin = _audio_start(data)
        frames, end = walk_mpeg_frames(data[begin:])
        assert frames, path
        copies[title] = data[begin : begin + end]
    return copies


def _audio_start(data: bytes) -> int:
    if data[:3] == b"ID3":
        size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
        return 10 + size
    return 0


def test_three_outputs_one_timeline_and_one_server_lost(
    tmp_path: Path, icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource
) -> None:
    folder = tmp_path / "music"
    tracks = make_titled_tracks(folder, TITLES, seconds=SECONDS)
    titles = [f"{artist} - {title}" for artist, title in TITLES]
    cache = tmp_path / "cache"
    workdir = Path(tempfile.mkdtemp(prefix="pushsource-icecast-second-"))
    second = IcecastServer(DEFAULT_TEMPLATE, workdir)
    second.start()
    low = f"{unique_mount}-64"
    try:
        with (
            Listener(icecast.port, unique_mount) as main,
            Listener(icecast.port, low) as phone,
            Listener(second.port, unique_mount) as backup,
        ):
            proc = start_pushsource(
                "stream",
                folder,
                url(icecast, unique_mount),
                "--once",
                "--cache",
                cache,
                "--output",
                f"{url(icecast, low)} bitrate=64 samplerate=22050 channels=1",
                "--output",
                url(second, unique_mount),
            )
            for listener in (main, phone, backup):
                listener.wait_for_title(titles[1], 30)
            # Titles inside the stream come within a block of the track's
            # start: let some of Two reach the backup's listener first.
            backup.wait_for_audio(backup.wait_for_title(titles[1], 1) + 8000, 10)
            # Two has started everywhere: the second server goes away at once,
            # and comes back a moment later.
            killed_at = len(main.audio)
            second.kill()
            time.sleep(1.5)
            second.start()
            with Listener(second.port, unique_mount) as rejoined:
                rejoined.wait_for_title(titles[3], 30)
                assert proc.wait(60) == 0, proc.describe()
                rejoined.wait_closed(10)
            main.wait_closed(10)
            phone.wait_closed(10)
        heard = {"main": bytes(main.audio), "phone": bytes(phone.audio)}
        backup_audio = bytes(backup.audio)
        again = bytes(rejoined.audio)
    finally:
        second.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    # The station's own output: every track whole, byte for byte, in order.
    at = [heard["main"].find(t.audio) for t in tracks]
    assert all(a >= 0 for a in at) and at == sorted(at), at
    assert killed_at < at[3], "the second server was killed before the last track"
    # Back to back: nothing lost or inserted around the kill.
    assert all(at[n + 1] == at[n] + len(tracks[n].audio) for n in range(3)), at
    frames, end = walk_mpeg_frames(heard["main"][at[0] :])
    assert {(h.sample_rate, h.channels, h.bitrate) for _, h in frames} == {(44100, 2, 128)}
    assert at[0] + end >= at[3] + len(tracks[3].audio)
    assert distinct(main.titles) == titles

    # The second server, till it was killed: the same frames as the first.
    start = backup_audio.find(tracks[0].audio[:4000])
    assert start >= 0, "the first track never reached the second server's listener"
    assert backup_audio.find(tracks[1].audio[:4000]) > start
    frames, end = walk_mpeg_frames(backup_audio[start:])
    assert {(h.sample_rate, h.channels, h.bitrate) for _, h in frames} == {(44100, 2, 128)}
    assert start + end > len(backup_audio) - 1500  # whole frames till the server died
    same = backup_audio[start : start + 60_000]
    assert len(same) == 60_000 and same in heard["main"]
    assert distinct(backup.titles)[:2] == titles[:2]

    # Back on air, the second server's output rejoined at the station's
    # position (it is radio: no catching up): the last track whole, its
    # title; not the first track again.
    assert tracks[3].audio in again and tracks[0].audio[:4000] not in again
    assert titles[3] in distinct(rejoined.titles)

    # 64 kbps: its own format throughout (a header walk from the first frame),
    # each track's converted copy in order, frames as converted.
    phone_audio = heard["phone"]
    frames, end = walk_mpeg_frames(phone_audio)
    assert frames and {(h.sample_rate, h.channels, h.bitrate) for _, h in frames} == {
        (22050, 1, 64)
    }
    assert end > len(phone_audio) - 300
    copies = converted_copies(cache)
    assert sorted(copies) == sorted(titles)
    # A run from inside each copy (the ends may be trimmed by a frame or two
    # to keep the outputs on one timeline).
    spots = [phone_audio.find(copies[t][2000:10000]) for t in titles]
    assert all(s >= 0 for s in spots) and spots == sorted(spots), spots
    assert distinct(phone.titles) == titles

    # One timeline: each title within one metaint of its track's first
    # frame, on each output, measured in seconds of that output's audio.
    for n, title in enumerate(titles):
        main_delay = (first_title_at(main, title) - at[n]) / (128 * 125)
        phone_start = phone_audio.find(copies[title][:2000])
        assert phone_start >= 0, f"the start of {title}'s copy is not in the 64 kbps stream"
        phone_delay = (first_title_at(phone, title) - phone_start) / (64 * 125)
        for delay, rate in ((main_delay, 128), (phone_delay, 64)):
            assert -0.6 <= delay <= METAINT / (rate * 125) + 0.6, (title, main_delay, phone_delay)
        assert abs(main_delay - phone_delay) <= METAINT / (64 * 125), (title, phone_delay)
        if n < 2:
            backup_start = backup_audio.find(tracks[n].audio[:4000])
            backup_delay = (first_title_at(backup, title) - backup_start) / (128 * 125)
            assert abs(backup_delay - main_delay) <= METAINT / (128 * 125), (title, backup_delay)

    # The lost server cost the others nothing: one line for it, no gap.
    err = proc.stderr
    # One conversion per track for the 64 kbps output (the others pass through).
    for track in tracks:
        lines = [line for line in err.splitlines() if f"converted {track.path}" in line]
        assert len(lines) == 1, (track.path, lines)
    gone = [
        line
        for line in err.splitlines()
        if f"output 127.0.0.1:{second.port}" in line and "WARNING" in line
    ]
    # Lost, then refused: a line for each reason, not one per attempt (about 1/s).
    assert 1 <= len(gone) <= 3 and "reconnecting" in gone[0], gone
    back = [line for line in err.splitlines() if "is on air again" in line]
    assert len(back) == 1 and f"127.0.0.1:{second.port}" in back[0], back
    main_server = f"127.0.0.1:{icecast.port}"
    assert not [line for line in err.splitlines() if "WARNING" in line and main_server in line]


def test_a_wrong_password_on_one_output_costs_that_output_only(
    tmp_path: Path, icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource
) -> None:
    folder = tmp_path / "music"
    [track] = make_titled_tracks(folder, [("Outputs", "Refused")], seconds=3.0)
    wrong = "n0t-the-s0urce-pw"
    register_secret(wrong)
    with Listener(icecast.port, unique_mount) as main:
        proc = start_pushsource(
            "stream",
            folder,
            url(icecast, unique_mount),
            "--once",
            "--output",
            f"icecast://source:{wrong}@127.0.0.1:{icecast.port}{unique_mount}-b",
        )
        assert proc.wait(30) == 2, proc.describe()  # the station played; the status says it
        main.wait_closed(10)
    assert track.audio in bytes(main.audio)
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"output {unique_mount}-b stopped" in errors[0], errors
    assert "401" in errors[0] or "authentication" in errors[0]
    assert icecast.source(f"{unique_mount}-b") is None


def test_a_slow_output_costs_the_others_nothing(
    tmp_path: Path, icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource
) -> None:
    """An output whose server stops reading (a proxy in front of it stalls,
    as a hung Icecast would, with a 16 KiB receive buffer) is dropped when its
    bytes pile up; the station's own mount plays on, on time, whole."""
    from tests.support.proxy import TcpProxy

    folder = tmp_path / "music"
    [track] = make_titled_tracks(folder, [("Outputs", "Slow")], seconds=14.0)
    slow = f"{unique_mount}-slow"
    with (
        TcpProxy(icecast.port, rcvbuf=16 * 1024) as proxy,
        Listener(icecast.port, unique_mount) as main,
    ):
        proc = start_pushsource(
            "stream",
            folder,
            url(icecast, unique_mount),
            "--once",
            "--output",
            f"icecast://source:hackme@127.0.0.1:{proxy.port}{slow}",
        )
        main.wait_for_audio(3 * 128 * 125, 20)
        proxy.stall()
        stalled = len(main.audio)
        deadline = time.monotonic() + 15
        while f"output 127.0.0.1:{proxy.port}{slow}" not in proc.stderr:
            assert time.monotonic() < deadline, proc.describe()
            time.sleep(0.05)
        assert proc.wait(40) == 0, proc.describe()
        main.wait_closed(10)
    audio = bytes(main.audio)
    assert track.audio in audio and len(audio) > stalled
    # No gap at the station's own listener while the other output was stuck:
    # its bytes kept coming about every relay block (87.5 ms at 128 kbps).
    times = [t for t, _ in main.arrivals]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < 1.5, max(gaps)  # a stall would be 5 s and more
    lost = [line for line in proc.stderr.splitlines() if f"127.0.0.1:{proxy.port}" in line]
    assert lost and "WARNING" in lost[0], lost
