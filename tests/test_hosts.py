"""Hosts the resolver refuses before it asks DNS ("a..b": Python's IDNA codec
raises UnicodeError; a NUL: ValueError), and control characters in a URL: one
line naming the key at load (exit 2), and a told failure if one still reaches
a lookup, never a connection that waits for ever."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pushsource.core.target import IcecastTarget
from pushsource.engine.source import check_source
from pushsource.engine.watch import ServerWatch
from pushsource.errors import IcecastError
from tests.support.aio import run
from tests.support.media import make_clean_mp3

RunPushsource = Callable[..., subprocess.CompletedProcess[str]]

#: TOML string escapes, written into the config as they are.
BAD_URLS = {
    "empty label": r"icecast://source:pw@a..b:8000/m",
    "NUL in the host": r"icecast://source:pw@127.0.0.1\u0000:8000/m",
    "line break in the mount": r"icecast://source:pw@127.0.0.1:8000/m\r\nX",
    "line break and space in the mount": r"icecast://source:pw@127.0.0.1:8000/m\r\n X",
    "SHOUTcast, empty label": r"shoutcast://pw@a..b:8000/",
}
GOOD_URL = "icecast://source:pw@127.0.0.1:9/m"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    music = tmp_path / "music"
    music.mkdir()
    make_clean_mp3(music / "a.mp3", 0.3)
    return music


def _config(tmp_path: Path, folder: Path, url: str, output: str | None = None) -> Path:
    text = f'[[station]]\nfolder = "{folder}"\nurl = "{url}"\nstate = "{tmp_path}/s.json"\n'
    if output is not None:
        text += f'[[station.output]]\nurl = "{output}"\n'
    path = tmp_path / "pushsource.toml"
    path.write_text(text, "utf-8")
    return path


def _one_line(done: subprocess.CompletedProcess[str], *wanted: str) -> None:
    assert done.returncode == 2, done.stderr
    # check says a station's problem on stdout, then its tally.
    tally = ": 1 station: 0 ok, 1 with errors"
    lines = done.stderr.splitlines() + [
        line for line in done.stdout.splitlines() if not line.endswith(tally)
    ]
    assert len(lines) == 1, done.stderr
    assert all(w in lines[0] for w in wanted), lines[0]
    assert "\x00" not in lines[0] and "Traceback" not in done.stderr
    assert ":pw@" not in lines[0]  # the password stays out


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_a_bad_host_or_a_control_character_is_one_line_at_load(
    run_pushsource: RunPushsource, tmp_path: Path, folder: Path, command: str, url: str
) -> None:
    config = _config(tmp_path, folder, url)
    done = run_pushsource(command, "--config", config, timeout=20)
    _one_line(done, "station 1", 'key "url"')


@pytest.mark.parametrize("command", ["check", "run"])
def test_an_outputs_bad_host_is_one_line_at_load(
    run_pushsource: RunPushsource, tmp_path: Path, folder: Path, command: str
) -> None:
    config = _config(tmp_path, folder, GOOD_URL, "icecast://source:pw@a..b:8000/m2")
    done = run_pushsource(command, "--config", config, timeout=20)
    _one_line(done, "output 1", 'key "url"', "'a..b' is not a host name")


def test_stream_refuses_a_bad_host_at_once(run_pushsource: RunPushsource, folder: Path) -> None:
    done = run_pushsource("stream", folder, "icecast://source:pw@a..b:8000/m", timeout=20)
    _one_line(done, "bad Icecast URL", "'a..b' is not a host name")
    output = "icecast://source:pw@x..y:8000/m2"
    done = run_pushsource("stream", folder, GOOD_URL, "--output", output, timeout=20)
    _one_line(done, "--output 1", "'x..y' is not a host name")


# --- if one reaches a lookup anyway (the target built by hand) ------------------------------

UNENCODABLE = ["a..b", "127.0.0.1\x00"]


@pytest.mark.parametrize("host", UNENCODABLE, ids=["empty label", "NUL"])
def test_the_source_socket_tells_an_unencodable_host_as_a_failure(host: str) -> None:
    target = IcecastTarget(host, 9, "/m", password="pw")
    # Before: the connecting task died with UnicodeError (or ValueError) and
    # nobody was told; check_source waited 3 * timeout + 1 s for "did not answer".
    with pytest.raises(IcecastError) as caught:
        check_source(target, timeout=1.0)
    message = str(caught.value)
    assert "not a host name" in message, message
    assert message.isprintable(), message  # one line, the NUL escaped


@pytest.mark.parametrize("host", UNENCODABLE, ids=["empty label", "NUL"])
def test_the_server_watch_tells_an_unencodable_host_as_a_failed_probe(host: str) -> None:
    async def main() -> str | None:
        target = IcecastTarget(host, 9, "/m", password="pw")
        return await ServerWatch(asyncio.get_running_loop(), target).probe(timeout=1.0)

    why = run(main())
    assert why is not None and "not a host name" in why, why
