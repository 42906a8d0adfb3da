"""Never knocked over: pushsource against an icecast2 that dies, resets, hangs or refuses.

Each test drives the real CLI against a real icecast2 (its own when the test
kills or restarts it), sometimes through tests/support/proxy.py, and checks
with ICY listeners what reaches the audience: after a reconnect the stream
goes on at a frame boundary of the same track, byte-exact, where the last
listener left off (give or take Icecast's 1400-byte block and one batch),
with the title sent again and the pacing started afresh. (After a stall, what
sat in the kernels' buffers is gone: that test measures and prints how much.)

Known product bugs turn a test into an expected failure (known_bug) only after
every other check in it has passed.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PushsourceProcess, StartPushsource
from tests.support.icecast import DEFAULT_TEMPLATE, IcecastServer, free_port, temp_icecast
from tests.support.listener import Listener
from tests.support.media import (
    Fixture,
    make_clean_mp3,
    make_titled_tracks,
    probe_packets,
    unmend,
)
from tests.support.proxy import TcpProxy

pytestmark = pytest.mark.integration

RATE = 16_000  # bytes per second of the 128 kbps tracks made here
LEAD = 0.5  # seconds pushsource sends ahead of real time (its default)
BLOCK = 1400  # Icecast relays source data in blocks of this size
#: How much a listener after a reconnect may hear again of what one before it
#: heard: one Icecast block and one batch (0.05 s, rounded up for a late wake-up).
REPLAY_SLACK = BLOCK + int(0.1 * RATE)
#: How much of what was sent before a kill or a reset a listener may never hear:
#: Icecast's partial block, and at most the lead in flight.
SKIP_SLACK = BLOCK + int(LEAD * RATE)
PROBE = 2000  # bytes of a recording looked up in the tracks to find where it starts
MENDED = 4096  # bytes at the start of a recording that may differ (silenced frames)

RECONNECT = re.compile(
    # The first attempt of an outage is a warning, the others debug lines (-v).
    r" (?:WARNING|DEBUG) (?P<why>.+); reconnecting in (?P<delay>\d+\.\d) s"
    r" \(attempt (?P<attempt>\d+)\)$",
    re.M,
)


# --- helpers ---------------------------------------------------------------------------


def state_env(tmp_path: Path) -> dict[str, str]:
    """Every pushsource run keeps its play state under tmp_path, never in a home."""
    return {"XDG_STATE_HOME": str(tmp_path / "state")}


def url(port: int, mount: str, password: str = "hackme") -> str:
    return f"icecast://source:{password}@127.0.0.1:{port}{mount}"


def wait_until(
    done: Callable[[], object], timeout: float, what: str, why: Callable[[], str] = str
) -> float:
    """Poll ``done`` until it is true; returns when it became so (time.monotonic())."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}\n{why()}")
        time.sleep(0.02)
    return time.monotonic()


def wait_for_log(run: PushsourceProcess, pattern: str, timeout: float, count: int = 1) -> float:
    """Wait until ``pattern`` (a regex) matched ``count`` lines of pushsource's log."""
    return wait_until(
        lambda: len(re.findall(pattern, run.stderr, re.M)) >= count,
        timeout,
        f"{count} log lines matching {pattern!r}",
        run.describe,
    )


@dataclass(frozen=True)
class Reconnect:
    attempt: int
    delay: float
    why: str


def reconnects(log: str) -> list[Reconnect]:
    return [
        Reconnect(int(m["attempt"]), float(m["delay"]), m["why"]) for m in RECONNECT.finditer(log)
    ]


def assert_backoff(found: list[Reconnect], log: str) -> None:
    """Attempts counted 1, 2, ...; a server that does not answer (a lost or
    refused connection) is tried again within a second, about once a second,
    however long it is down: backoff is for servers that answer with a refusal."""
    assert [r.attempt for r in found] == list(range(1, len(found) + 1)), log
    for r in found:
        if "in use" in r.why or "refused the source" in r.why:
            # An answer that refuses: delay k drawn from [b/2, b], b = min(30, 2**(k-1)).
            low, high = min(30.0, 2.0 ** (r.attempt - 1)) / 2, min(30.0, 2.0 ** (r.attempt - 1))
        else:
            low, high = 0.8, 1.0
        assert low - 0.05 <= r.delay <= high + 0.05, f"attempt {r.attempt}: {r.delay} s\n{log}"


def frame_starts(tracks: list[Fixture], tmp_path: Path) -> set[int]:
    """Where each MPEG frame starts in the tracks' audio laid end to end (by ffprobe)."""
    starts: set[int] = set()
    base = 0
    for n, track in enumerate(tracks):
        path = tmp_path / f"frames-{n}.mp3"
        path.write_bytes(track.audio)
        starts.update(base + packet.pos for packet in probe_packets(path))
        base += len(track.audio)
    return starts


def locate(recording: bytes, expected: bytes) -> int:
    """Where in ``expected`` the recording starts. Raises AssertionError.
    Looked up by bytes past the first MENDED: a new connection's first frames
    may point back into the bit reservoir, past its first byte, and go out
    silenced (pushsource.core.splice; assert_continues checks them)."""
    probe = recording[MENDED : MENDED + PROBE]
    assert len(probe) == PROBE, f"only {len(recording)} bytes recorded"
    found = [m.start() - MENDED for m in re.finditer(re.escape(probe), expected)]
    assert len(found) == 1, f"the recording's bytes {MENDED}+{PROBE} are at {found} in the tracks"
    return found[0]


def where(tracks: list[Fixture], offset: int) -> str:
    for track in tracks:
        if offset < len(track.audio):
            return f"{track.path.name} at byte {offset} of {len(track.audio)}"
        offset -= len(track.audio)
    return f"{offset} bytes past the tracks"


def assert_continues(
    recording: bytes, expected: bytes, start: int, tracks: list[Fixture], *, to_the_end: bool = True
) -> None:
    """The recording is expected[start:], byte for byte, to the end of the tracks
    (``to_the_end``), else for as long as it goes."""
    want = expected[start:] if to_the_end else expected[start : start + len(recording)]
    got = unmend(recording[: len(want)], want)  # a new connection's first frames
    if got == want:
        return
    first = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), len(got))
    raise AssertionError(
        f"recorded {len(recording)} bytes from {where(tracks, start)}: differs from the tracks "
        f"at {where(tracks, start + first)} (recording byte {first} of {len(want)} due)"
    )


def assert_paced(arrivals: list[tuple[float, int]], total: int) -> None:
    """Each of the first ``total`` bytes arrives when its audio is due, give or take
    a second: the schedule started afresh, with no burst to catch up on the outage."""
    received = [(t, n) for t, n in arrivals if n > 0]
    end = next(t for t, n in received if n >= total)
    for t, n in received:
        if n < total:
            due = end - (total - n) / RATE
            assert abs(t - due) <= 1.0, f"byte {n} of {total} came {t - due:+.2f} s off its time"


def assert_resumed(
    recording: bytes, tracks: list[Fixture], heard: int, tmp_path: Path, *, to_the_end: bool = True
) -> int:
    """A listener after a reconnect hears the first track from a frame boundary
    no earlier than where the last listener left off (``heard``, less the slack),
    then everything after it byte for byte. Returns where it started."""
    expected = b"".join(t.audio for t in tracks)
    start = locate(recording, expected)
    assert start in frame_starts(tracks, tmp_path), f"{where(tracks, start)} is no frame boundary"
    assert start < len(tracks[0].audio), f"resumed in the wrong track: {where(tracks, start)}"
    assert start >= heard - REPLAY_SLACK, f"replayed {heard - start} bytes the first listener had"
    assert_continues(recording, expected, start, tracks, to_the_end=to_the_end)
    return start


def known_bug(shows: bool, reason: str) -> None:
    """Called after every other check passed: a known product bug that shows
    makes the test an expected failure (XFAIL, with the reason in the summary)."""
    if shows:
        pytest.xfail(reason)


def source_name(server: IcecastServer, mount: str) -> str | None:
    found = server.source(mount)
    return None if found is None else str(found.get("server_name"))


@pytest.fixture
def own_icecast() -> Iterator[IcecastServer]:
    """An icecast2 of this test's own, to kill and restart (not started yet)."""
    with temp_icecast("reconnect", start=False) as server:
        yield server


def two_tracks(tmp_path: Path, name: str, seconds: float = 4.0) -> list[Fixture]:
    return make_titled_tracks(tmp_path / "music", [(name, "first"), (name, "second")], seconds)


def one_track(tmp_path: Path, seconds: float) -> Fixture:
    """tmp_path/music/tone.mp3: nothing but audio frames, titled "tone"."""
    (tmp_path / "music").mkdir()
    path = tmp_path / "music" / "tone.mp3"
    return Fixture(path, make_clean_mp3(path, seconds), "tone", seconds)


# --- a. icecast2 killed and restarted ----------------------------------------------------


def test_kill_9_and_restart_resumes_the_same_track(
    own_icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
) -> None:
    server = own_icecast
    server.start()
    tracks = two_tracks(tmp_path, "Killed")
    expected = b"".join(t.audio for t in tracks)
    with Listener(server.port, unique_mount, connect_timeout=20) as first:
        run = start_pushsource(
            "-v", "stream", tmp_path / "music", url(server.port, unique_mount), "--once",
            env=state_env(tmp_path),
        )  # fmt: skip
        first.wait_for_audio(int(1.5 * RATE), 15)
        server.kill()
        killed_at = time.monotonic()
        first.wait_closed(5)
    heard = len(first.audio)
    assert bytes(first.audio) == expected[:heard]
    wait_for_log(run, r"connection to 127\.0\.0\.1:\d+ lost.*\(attempt 1\)$", 5)

    time.sleep(max(0.0, killed_at + 2.0 - time.monotonic()))  # the outage: about 2 s
    starting_at = time.monotonic()
    server.start()
    up_at = time.monotonic()
    with Listener(server.port, unique_mount, connect_timeout=20) as second:
        assert run.wait(30) == 0, run.describe()
        second.wait_closed(10)
    log = run.stderr

    # One line per failed attempt: the lost connection, then one per refusal; the
    # delays were really waited (the last refusal came while Icecast was down, the
    # next try once it was up).
    found = reconnects(log)
    assert len(found) >= 2, log
    assert_backoff(found, log)
    assert re.match(r"connection to 127\.0\.0\.1:\d+ lost", found[0].why), log
    for r in found[1:]:
        assert re.fullmatch(
            rf"cannot connect to 127\.0\.0\.1:{server.port}: Connection refused", r.why
        ), log
    delays = [r.delay for r in found]
    assert sum(delays[:-1]) <= up_at - killed_at + 0.3, (delays, up_at - killed_at, log)
    assert sum(delays) >= starting_at - killed_at - 0.5, (delays, starting_at - killed_at, log)

    # No track restarted, none skipped: each "playing" once, one "resuming" in between.
    assert log.count("INFO playing Killed - first ") == 1, log
    assert log.count("INFO playing Killed - second ") == 1, log
    assert len(re.findall(r"INFO resuming Killed - first at about \d+:\d\d$", log, re.M)) == 1, log

    start = assert_resumed(bytes(second.audio), tracks, heard, tmp_path)
    assert start <= heard + SKIP_SLACK, f"skipped {start - heard} bytes nobody heard"
    second.wait_for_title("Killed - first", 1)
    second.wait_for_title("Killed - second", 1)
    assert_paced(second.arrivals, len(expected) - start)
    print(
        f"\nkill -9: first listener had {heard} bytes, the second started at {start} "
        f"({start - heard:+d}); retries {delays}"
    )


def test_kill_9_and_restart_goes_on_with_the_tracks_frames_not_silence(
    own_icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
) -> None:
    """Without --once the station is back on air as soon as Icecast is: the
    track that was playing reopens during the backoff, so the new source
    connection starts with its frames (a listener there hears no silence
    first), and the log says nothing of an empty queue."""
    server = own_icecast
    server.start()
    tracks = two_tracks(tmp_path, "Killed", seconds=6.0)
    expected = b"".join(t.audio for t in tracks)
    an_hour_ago = time.time() - 3600
    for track in tracks:  # settled: on air with the first file, not silence
        os.utime(track.path, (an_hour_ago, an_hour_ago))
    with Listener(server.port, unique_mount, connect_timeout=20) as first:
        run = start_pushsource(
            "stream", tmp_path / "music", url(server.port, unique_mount),
            env=state_env(tmp_path),
        )  # fmt: skip
        first.wait_for_audio(int(1.5 * RATE), 15)
        server.kill()
        first.wait_closed(5)
    assert bytes(first.audio) == expected[: len(first.audio)]
    heard = len(first.audio)
    wait_for_log(run, r"connection to 127\.0\.0\.1:\d+ lost.*\(attempt 1\)$", 5)
    time.sleep(1.0)
    server.start()
    # The listener asks until the mount is there: it gets Icecast's burst
    # from the new connection's first byte.
    with Listener(server.port, unique_mount, connect_timeout=20) as second:
        second.wait_for_audio(3 * RATE, 15)
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait(15) == 0, run.describe()
    log = run.stderr
    recording = bytes(second.audio)
    start = locate(recording, expected)  # fails on silent frames first
    assert heard - REPLAY_SLACK <= start <= heard + SKIP_SLACK, (start, heard, log)
    assert_continues(recording, expected, start, tracks, to_the_end=False)
    assert len(re.findall(r"INFO resuming Killed - first at about \d+:\d\d$", log, re.M)) == 1
    assert "queue empty" not in log, log


# --- b. the connection reset by the network ------------------------------------------------


def test_reset_connection_resumes_within_a_second_or_so(
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
) -> None:
    tracks = two_tracks(tmp_path, "Reset")
    expected = b"".join(t.audio for t in tracks)
    with TcpProxy(icecast.port) as proxy:
        with Listener(icecast.port, unique_mount, connect_timeout=20) as first:
            run = start_pushsource(
                "-v", "stream", tmp_path / "music", url(proxy.port, unique_mount), "--once",
                env=state_env(tmp_path),
            )  # fmt: skip
            first.wait_for_audio(int(1.5 * RATE), 15)
            cut_at = time.monotonic()
            assert proxy.cut() >= 1
            # Icecast drops the listeners with the source (no fallback mount):
            # a listener after the reset is a new one.
            first.wait_closed(5)
        heard = len(first.audio)
        with Listener(icecast.port, unique_mount, connect_timeout=20) as second:
            back_at = wait_until(
                lambda: len(proxy.requests("PUT")) >= 2, 5, "a new PUT", run.describe
            )
            assert run.wait(30) == 0, run.describe()
            second.wait_closed(10)
    log = run.stderr
    assert back_at - cut_at <= 1.5, f"reconnected {back_at - cut_at:.2f} s after the reset\n{log}"
    found = reconnects(log)
    assert len(found) == 1, log
    assert found[0].attempt == 1 and found[0].delay <= 1.0, log
    assert re.match(rf"connection to 127\.0\.0\.1:{proxy.port} lost", found[0].why), log
    assert log.count("INFO playing Reset - first ") == 1, log
    assert log.count("INFO resuming Reset - first at about ") == 1, log

    start = assert_resumed(bytes(second.audio), tracks, heard, tmp_path)
    assert start <= heard + SKIP_SLACK, f"skipped {start - heard} bytes nobody heard"
    second.wait_for_title("Reset - first", 1)
    assert_paced(second.arrivals, len(expected) - start)
    print(
        f"\nreset: first listener had {heard} bytes, the second started at {start} "
        f"({start - heard:+d}); new PUT {back_at - cut_at:.2f} s after the reset"
    )


# --- c. a server that stops reading -------------------------------------------------------

LOST = r"WARNING connection to 127\.0\.0\.1:\d+ (lost|timed out)"
DETECTION_BOUND = 30.0  # seconds: generous; Icecast's own source-timeout is 10 s


class StalledStation:
    """pushsource streaming a long track through a proxy, first listener on Icecast."""

    def __init__(
        self,
        stack: ExitStack,
        icecast: IcecastServer,
        mount: str,
        peer_buffer: int | None,
        start_pushsource: StartPushsource,
        tmp_path: Path,
    ) -> None:
        self.icecast = icecast
        self.mount = mount
        self.peer_buffer = peer_buffer
        self.proxy = stack.enter_context(TcpProxy(icecast.port, rcvbuf=peer_buffer))
        self.first = stack.enter_context(Listener(icecast.port, mount, connect_timeout=20))
        self.run = start_pushsource(
            "-v", "stream", tmp_path / "music", url(self.proxy.port, mount), "--once",
            env=state_env(tmp_path),
        )  # fmt: skip
        stack.callback(self.run.terminate)  # before the proxy goes: no spurious loss
        self.stalled_at = 0.0

    @property
    def name(self) -> str:
        return f"{self.peer_buffer} bytes" if self.peer_buffer else "the kernel's default"

    def stall(self) -> None:
        self.stalled_at = time.monotonic()
        self.proxy.stall()

    def lost_after(self, timeout: float) -> float | None:
        """Seconds from the stall to pushsource's log line about the loss; None if
        it did not come within ``timeout`` s of the stall."""
        deadline = self.stalled_at + timeout
        while not re.search(LOST, self.run.stderr):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)
        return time.monotonic() - self.stalled_at

    def streams_on(self, tracks: list[Fixture], tmp_path: Path) -> tuple[int, int, float]:
        """Once Icecast dropped the half-open source, a new listener hears the
        track go on. Returns (bytes the first listener heard, where the second
        started, seconds from the stall until it heard 2 s of audio)."""
        # Icecast's source-timeout (10 s) drops the stalled source and its listeners.
        self.first.wait_closed(15)
        heard = len(self.first.audio)
        with Listener(self.icecast.port, self.mount, connect_timeout=20) as second:
            second.wait_for_audio(2 * RATE, 30)
            streaming_at = time.monotonic()
            second.wait_for_title("tone", 5)
        start = assert_resumed(bytes(second.audio), tracks, heard, tmp_path, to_the_end=False)
        return heard, start, streaming_at - self.stalled_at


def test_stalled_server_is_dropped_and_the_stream_goes_on(
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
) -> None:
    """The proxy stops reading from pushsource, as a hung Icecast would, and keeps
    the socket open; Icecast meanwhile hears nothing and drops that source after
    its source-timeout. Two stations side by side: one whose peer (the proxy) has
    a 16 KiB receive buffer, which shows pushsource's own timeouts at work, and
    one with the kernel's default buffer, which is what a real Icecast has."""
    tracks = [one_track(tmp_path, 40.0)]
    with ExitStack() as stack:
        small = StalledStation(
            stack, icecast, unique_mount + "-16k", 16 * 1024, start_pushsource, tmp_path
        )
        default = StalledStation(
            stack, icecast, unique_mount + "-default", None, start_pushsource, tmp_path
        )
        for station in (small, default):
            station.first.wait_for_audio(int(1.5 * RATE), 15)
        for station in (small, default):
            station.stall()

        detected = small.lost_after(DETECTION_BOUND)
        assert detected is not None, f"not noticed in {DETECTION_BOUND} s\n{small.run.describe()}"
        heard, start, back = small.streams_on(tracks, tmp_path)
        log = small.run.stderr
        found = reconnects(log)
        assert found[0].attempt == 1 and found[0].delay <= 1.0, log
        in_use = sum(r.why.startswith("mountpoint") for r in found)
        print(
            f"\nstall, peer buffer {small.name}: noticed after {detected:.1f} s, streaming "
            f"again after {back:.1f} s ({in_use} 'in use' refusals meanwhile); the first "
            f"listener had {heard} bytes, the second started at {start} ({start - heard:+d})"
        )

        late = default.lost_after(DETECTION_BOUND)
        unread = default.proxy.requests("PUT")[0].unread()
        print(
            f"stall, peer buffer {default.name}: "
            + (f"noticed after {late:.1f} s" if late is not None else
               f"not noticed in {DETECTION_BOUND:.0f} s; {unread} bytes sat unread "
               "in the peer's receive buffer")
        )  # fmt: skip
        if late is not None:
            default.streams_on(tracks, tmp_path)
    known_bug(
        late is None,
        f"a server that stops reading goes unnoticed for over {DETECTION_BOUND:.0f} s: its "
        f"kernel took in {unread} bytes ({unread / RATE:.0f} s of audio) unread, and "
        "pushsource's send timeout and TCP_USER_TIMEOUT only start once that is full "
        "(its 16 KiB SO_SNDBUF bounds its own side only)",
    )


# --- d. the mount still held by another source ------------------------------------------------


def hold_mount(port: int, mount: str, name: str) -> socket.socket:
    """A raw source PUT that Icecast accepted and that sends nothing more."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    auth = base64.b64encode(b"source:hackme").decode("ascii")
    sock.sendall(
        f"PUT {mount} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {auth}\r\n"
        f"Content-Type: audio/mpeg\r\nice-name: {name}\r\n\r\n".encode("ascii")
    )
    answer = sock.recv(1024)
    assert answer.startswith(b"HTTP/1.0 200"), answer
    return sock


def test_mount_in_use_is_retried_until_it_is_free(
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
) -> None:
    tracks = two_tracks(tmp_path, "Waiting", seconds=2.0)
    expected = b"".join(t.audio for t in tracks)
    holder = hold_mount(icecast.port, unique_mount, "holder")
    try:
        icecast.wait_for_mount(unique_mount)
        run = start_pushsource(
            "-v", "stream", tmp_path / "music", url(icecast.port, unique_mount), "--once",
            "--name", "pushsource", env=state_env(tmp_path),
        )  # fmt: skip
        wait_for_log(run, rf"mountpoint {re.escape(unique_mount)} is in use; reconnecting", 10, 2)
    finally:
        holder.close()
    wait_until(
        lambda: source_name(icecast, unique_mount) in (None, "pushsource"),
        5,
        "the holder to leave",
        run.describe,
    )
    with Listener(icecast.port, unique_mount, connect_timeout=20) as listener:
        assert run.wait(30) == 0, run.describe()
        listener.wait_closed(10)
    log = run.stderr
    found = reconnects(log)
    assert len(found) >= 2, log
    assert all(r.why == f"mountpoint {unique_mount} is in use" for r in found), log
    assert log.count("INFO playing Waiting - second ") == 1, log
    recording = bytes(listener.audio)
    start = locate(recording, expected)
    assert start < len(tracks[0].audio), f"started in the wrong track: {where(tracks, start)}"
    assert start in frame_starts(tracks, tmp_path), f"{where(tracks, start)} is no frame boundary"
    assert_continues(recording, expected, start, tracks)
    print(
        f"\nmount in use: {[(r.attempt, r.delay) for r in found]}; the listener started at {start}"
    )
    # Icecast refused every attempt before this one: nothing of the track was
    # played, so it must start at its first frame, and each refusal counts.
    numbers = [r.attempt for r in found]
    known_bug(
        start != 0 or numbers != list(range(1, len(found) + 1)) or "resuming" in log,
        f"each 403 costs audio: the listener started at {where(tracks, start)}, not at its "
        f"first frame; attempts numbered {numbers}; 'resuming' logged: {'resuming' in log}",
    )
    assert_backoff(found, log)
    assert log.count("INFO playing Waiting - first ") == 1, log


# --- e. nobody listening on the port ----------------------------------------------------------


def test_unreachable_at_start_streams_once_icecast_is_up(
    unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    tracks = two_tracks(tmp_path, "Late", seconds=2.0)
    expected = b"".join(t.audio for t in tracks)
    workdir = Path(tempfile.mkdtemp(prefix="pushsource-icecast-late-"))
    server = IcecastServer(DEFAULT_TEMPLATE, workdir, port=free_port())
    try:
        started_at = time.monotonic()
        run = start_pushsource(
            "-v", "stream", tmp_path / "music", url(server.port, unique_mount), "--once",
            env=state_env(tmp_path),
        )  # fmt: skip
        wait_for_log(run, r"cannot connect to .*\(attempt 1\)$", 10)
        time.sleep(max(0.0, started_at + 2.0 - time.monotonic()))
        server.start()
        with Listener(server.port, unique_mount, connect_timeout=20) as listener:
            assert run.wait(30) == 0, run.describe()
            listener.wait_closed(10)
        log = run.stderr
        found = reconnects(log)
        assert found, log
        assert_backoff(found, log)
        assert all(
            r.why == f"cannot connect to 127.0.0.1:{server.port}: Connection refused" for r in found
        ), log
        assert_continues(bytes(listener.audio), expected, 0, tracks)
        listener.wait_for_title("Late - first", 1)
        assert log.count("INFO playing Late - second ") == 1, log
        resuming = re.findall(r"INFO resuming Late - first at about .*", log)
        known_bug(
            bool(resuming),
            f"a track none of which was sent is logged as {resuming}, not as playing, "
            "when its first frame is not at byte 0 (an ID3v2 tag before it)",
        )
        assert log.count("INFO playing Late - first ") == 1, log
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_max_retries_gives_up(
    start_pushsource: StartPushsource, unique_mount: str, tmp_path: Path
) -> None:
    one_track(tmp_path, 1.0)
    started_at = time.monotonic()
    run = start_pushsource(
        "-v", "stream", tmp_path / "music", url(free_port(), unique_mount), "--once",
        "--max-retries", "2", env=state_env(tmp_path),
    )  # fmt: skip
    assert run.wait(10) == 1, run.describe()
    took = time.monotonic() - started_at
    log = run.stderr
    assert took < 5, f"gave up after {took:.1f} s\n{log}"
    assert [r.attempt for r in reconnects(log)] == [1, 2], log
    gave_up = re.findall(
        r"^pushsource: error: giving up after \d+ attempts: cannot connect", log, re.M
    )
    assert len(gave_up) == 1, log


# --- f. a wrong password is final --------------------------------------------------------------


def test_wrong_password_exits_2_at_once(
    icecast: IcecastServer, start_pushsource: StartPushsource, unique_mount: str, tmp_path: Path
) -> None:
    one_track(tmp_path, 3.0)
    started_at = time.monotonic()
    run = start_pushsource(
        "stream", tmp_path / "music", url(icecast.port, unique_mount, "Wr0ng-pa55-xyzzy"),
        "--once", env=state_env(tmp_path),
    )  # fmt: skip
    assert run.wait(10) == 2, run.describe()
    took = time.monotonic() - started_at
    log = run.stderr
    assert took < 2, f"took {took:.1f} s\n{log}"
    assert "reconnecting" not in log, log
    errors = [line for line in log.splitlines() if "error" in line.lower() or "WARNING" in line]
    assert errors == [
        f"pushsource: error: authentication failed for source user on {unique_mount}"
    ], log


# --- g. icecast2 frozen (SIGSTOP): it stops reading and stops answering -------------------


def test_a_frozen_icecast_is_dropped_before_its_source_timeout(
    own_icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
) -> None:
    """A hung server takes our bytes into its kernel buffers for a minute, but it
    answers no HTTP: pushsource's watchdog notices and drops the source."""
    track = one_track(tmp_path, 16.0)
    own_icecast.start()
    run = start_pushsource(
        "stream", tmp_path / "music", url(own_icecast.port, unique_mount), "--once",
        env=state_env(tmp_path),
    )  # fmt: skip
    wait_for_log(run, r"playing tone", 15)
    time.sleep(1.0)  # let it stream a while (not an assertion)
    process = own_icecast._process
    assert process is not None
    process.send_signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        noticed = wait_for_log(run, r"Icecast does not answer", 20)
    finally:
        process.send_signal(signal.SIGCONT)
    detection = noticed - frozen_at
    print(f"frozen icecast2 noticed after {detection:.1f} s")
    # Icecast's own source-timeout is 10 s; our watchdog asks every 2 s and
    # waits --timeout (5 s) for an answer.
    assert detection < 10.0, run.describe()
    wait_for_log(run, r"resuming tone", 30)
    assert run.wait(track.seconds + 30) == 0, run.describe()
