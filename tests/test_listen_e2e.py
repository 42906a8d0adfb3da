"""``pushsource listen``, end to end: the CLI streams two titled tracks into a real
icecast2 and ``pushsource listen --no-audio`` (real libvlc) reports each title."""

from __future__ import annotations

import io
import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pushsource.errors import ConfigError
from pushsource.ops.listen import _clock, listen, listener_url
from tests.conftest import StartPushsource
from tests.support.icecast import IcecastServer, free_port
from tests.support.media import make_titled_tracks

RunPushsource = Callable[..., subprocess.CompletedProcess[str]]
LINE = re.compile(r"^\[(\d+):(\d\d)\] (.+)$")


@pytest.mark.integration
def test_listen_reports_each_title_in_order(
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    run_pushsource: RunPushsource,
    tmp_path: Path,
) -> None:
    titles = [("Listen Artist", "First Title"), ("Sigur Rós", "Ágætis byrjun")]
    make_titled_tracks(tmp_path / "music", titles, seconds=3.0)
    source = start_pushsource(
        "stream",
        tmp_path / "music",
        f"icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}",
        "--once",
    )
    icecast.wait_for_mount(unique_mount, timeout=10)
    heard = run_pushsource(
        "listen",
        f"http://127.0.0.1:{icecast.port}{unique_mount}",
        "--no-audio",
        "--duration",
        "30",
        timeout=60,
    )
    assert source.wait(30) == 0, source.describe()

    output = f"--- stdout ---\n{heard.stdout}\n--- stderr ---\n{heard.stderr}"
    # The stream ends when pushsource leaves, well before --duration.
    assert heard.returncode == 0, output
    matches = [LINE.match(line) for line in heard.stdout.splitlines()]
    assert all(matches), output
    lines = [(int(m[1]) * 60 + int(m[2]), m[3]) for m in matches if m]
    assert [title for _, title in lines] == [f"{a} - {t}" for a, t in titles], output
    (first, _), (second, _) = lines
    assert first <= 2 and 1 <= second - first <= 5, output
    assert heard.stderr.strip().endswith("the stream ended"), output


@pytest.mark.integration
def test_listen_stops_when_told(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    """In-process: the stop event ends listen() promptly, with status 0."""
    make_titled_tracks(tmp_path / "music", [("Stop", "Me")], seconds=10.0)
    start_pushsource(
        "stream",
        tmp_path / "music",
        f"icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}",
        "--once",
    )
    icecast.wait_for_mount(unique_mount, timeout=10)
    out, err, stop = io.StringIO(), io.StringIO(), threading.Event()
    status: list[int] = []
    url = f"http://127.0.0.1:{icecast.port}{unique_mount}"
    worker = threading.Thread(
        target=lambda: status.append(listen(url, audio=False, out=out, err=err, stop=stop))
    )
    worker.start()
    deadline = time.monotonic() + 10
    while "Stop - Me" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    worker.join(5)
    assert not worker.is_alive()
    assert status == [0] and err.getvalue() == ""
    assert LINE.match(out.getvalue().strip()), out.getvalue()


@pytest.mark.integration
def test_listen_to_a_mount_that_does_not_exist(
    icecast: IcecastServer, run_pushsource: RunPushsource
) -> None:
    url = f"http://127.0.0.1:{icecast.port}/no-such-mount"
    started = time.monotonic()
    heard = run_pushsource("listen", url, "--no-audio", timeout=30)
    took = time.monotonic() - started
    assert heard.returncode == 1, heard
    assert heard.stdout == ""
    assert heard.stderr.splitlines() == [
        f"pushsource: error: cannot play {url}: the server answered 404 File Not Found"
    ]
    assert took < 10


def test_listen_to_nothing_listening(run_pushsource: RunPushsource) -> None:
    url = f"http://127.0.0.1:{free_port()}/stream"
    heard = run_pushsource("listen", url, "--no-audio", timeout=30)
    assert heard.returncode == 1
    assert heard.stderr.splitlines() == [
        f"pushsource: error: cannot play {url}: connection refused"
    ]


@pytest.mark.parametrize(
    ("url", "plain"),
    [
        ("http://example.org/live", "http://example.org/live"),
        ("http://example.org:8080/live.mp3?x=1", "http://example.org:8080/live.mp3?x=1"),
        ("icecast://source:hackme@example.org/live", "http://example.org:8000/live"),
        ("icecast://example.org:9000/live", "http://example.org:9000/live"),
        ("https://u:p@example.org/live", "https://example.org/live"),
        ("http://[::1]:8000/live", "http://[::1]:8000/live"),
    ],
)
def test_listener_url(url: str, plain: str) -> None:
    assert listener_url(url) == plain


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.org/live", "scheme must be"),
        ("http:///live", "no host"),
        ("http://example.org", "give a mount"),
        ("http://example.org:99999/live", "bad URL"),
    ],
)
def test_listener_url_refuses(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        listener_url(url)


def test_bad_arguments_are_usage_errors(run_pushsource: RunPushsource) -> None:
    assert run_pushsource("listen", "ftp://x/y").returncode == 2
    assert run_pushsource("listen", "http://x/y", "--duration", "0").returncode == 2


def test_clock() -> None:
    assert [_clock(s) for s in (0, 59.9, 61, 3599, 3600, 3725)] == [
        "0:00",
        "0:59",
        "1:01",
        "59:59",
        "1:00:00",
        "1:02:05",
    ]


@pytest.mark.integration
def test_listen_without_a_sound_device_says_so_in_one_line(
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    run_pushsource: RunPushsource,
    tmp_path: Path,
) -> None:
    from pushsource.ops.listen import sound_output_available

    if sound_output_available():
        pytest.skip("this machine has a sound device")
    make_titled_tracks(tmp_path / "music", [("Quiet Artist", "No Card")], seconds=3.0)
    source = start_pushsource(
        "stream",
        tmp_path / "music",
        f"icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}",
        "--once",
    )
    icecast.wait_for_mount(unique_mount, timeout=10)
    heard = run_pushsource(
        "listen", f"http://127.0.0.1:{icecast.port}{unique_mount}", "--duration", "30", timeout=60
    )
    assert source.wait(30) == 0, source.describe()
    assert heard.returncode == 0, heard
    assert heard.stdout.splitlines()[-1].endswith("] Quiet Artist - No Card"), heard
    # One line says why there is no sound; alsa-lib's own complaints stay away.
    assert "ALSA" not in heard.stderr, heard.stderr
    assert heard.stderr.splitlines()[0] == (
        "pushsource: no sound device here: decoding without sound"
    ), heard.stderr


def test_sound_output_is_found_by_a_pulse_server_or_an_alsa_device(tmp_path: Path) -> None:
    from pushsource.ops.listen import sound_output_available

    empty = {"XDG_RUNTIME_DIR": str(tmp_path)}
    assert sound_output_available({"PULSE_SERVER": "unix:/x", **empty})
    (tmp_path / "pipewire-0").touch()
    assert sound_output_available(empty)
