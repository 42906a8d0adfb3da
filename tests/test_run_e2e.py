"""``pushsource run --config``: several stations in one process, against a real
icecast2, and ``pushsource check``."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.conftest import SECRET_PASSWORD, StartPushsource, register_secret
from tests.support.icecast import IcecastServer
from tests.support.listener import Listener
from tests.support.media import make_clean_mp3

pytestmark = pytest.mark.integration


def folder_of(tmp_path: Path, name: str, seconds: float, freq: int) -> tuple[Path, bytes]:
    folder = tmp_path / name
    folder.mkdir()
    audio = make_clean_mp3(folder / f"{name}.mp3", seconds, freq=freq)
    an_hour_ago = time.time() - 3600
    os.utime(folder / f"{name}.mp3", (an_hour_ago, an_hour_ago))
    return folder, audio


def test_stations_run_side_by_side_and_a_failing_one_stops_alone(
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
) -> None:
    _rock, rock_audio = folder_of(tmp_path, "rock", 4.0, 330)
    _jazz, jazz_audio = folder_of(tmp_path, "jazz", 4.0, 550)
    _bad, _ = folder_of(tmp_path, "bad", 1.0, 770)
    register_secret(SECRET_PASSWORD)
    config = tmp_path / "stations.toml"
    base = f"icecast://source@127.0.0.1:{icecast.port}{unique_mount}"
    config.write_text(
        f"""
[[station]]
id = "rock"
folder = "rock"
url = "{base}-rock"
password = "${{GOOD_PASSWORD}}"
name = "Rock"
once = true

[[station]]
id = "jazz"
folder = "jazz"
url = "{base}-jazz"
password = "${{GOOD_PASSWORD}}"
once = true

[[station]]
id = "bad"
folder = "bad"
url = "{base}-bad"
password = "${{BAD_PASSWORD}}"
""",
        encoding="utf-8",
    )
    env = {"GOOD_PASSWORD": "hackme", "BAD_PASSWORD": SECRET_PASSWORD}
    with (
        Listener(icecast.port, f"{unique_mount}-rock", connect_timeout=20) as rock_ear,
        Listener(icecast.port, f"{unique_mount}-jazz", connect_timeout=20) as jazz_ear,
    ):
        run = start_pushsource("run", "--config", config, "--no-console", env=env)
        status = run.wait(30)
        rock_ear.wait_closed(10)
        jazz_ear.wait_closed(10)
    # Both good stations played all of their file, the bad one said why and stopped.
    assert rock_audio in rock_ear.audio
    assert jazz_audio in jazz_ear.audio
    assert rock_ear.titles[0][1] == "rock"
    err = run.stderr
    assert status == 2, run.describe()
    bad_lines = [line for line in err.splitlines() if "[bad]" in line and "ERROR" in line]
    assert len(bad_lines) == 1, err
    assert "authentication failed" in bad_lines[0]
    assert any("[rock] playing rock" in line for line in err.splitlines()), err
    assert any("[jazz] playing jazz" in line for line in err.splitlines()), err
    assert SECRET_PASSWORD not in err


def test_config_error_exits_2_before_connecting(
    icecast: IcecastServer, unique_mount: str, run_pushsource: object, tmp_path: Path
) -> None:
    (tmp_path / "music").mkdir()
    config = tmp_path / "stations.toml"
    config.write_text(
        f"""
[[station]]
folder = "music"
url = "icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}"
name = "Good"
[[station]]
folder = "music"
name = "Typo"
url = "icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}-2"
sample_rate = 48000
""",
        encoding="utf-8",
    )
    done = run_pushsource("run", "--config", config)  # type: ignore[operator]
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f'pushsource: error: {config}: station 2 ("Typo"): unknown key "sample_rate" '
        '(did you mean "samplerate"?)'
    ]
    assert icecast.source(unique_mount) is None


def test_check_tells_good_and_bad_credentials_apart(
    icecast: IcecastServer, unique_mount: str, run_pushsource: object, tmp_path: Path
) -> None:
    (tmp_path / "music").mkdir()
    register_secret(SECRET_PASSWORD)
    config = tmp_path / "stations.toml"
    base = f"icecast://source@127.0.0.1:{icecast.port}{unique_mount}"
    config.write_text(
        f"""
[[station]]
id = "good"
folder = "music"
url = "{base}-good"
password = "hackme"
[[station.output]]
url = "{base}-good-64"
bitrate = 64
[[station.output]]
url = "{base}-good-b"
password = "{SECRET_PASSWORD}"
[[station]]
id = "wrong"
folder = "music"
url = "{base}-wrong"
password = "{SECRET_PASSWORD}"
[[station]]
id = "gone"
folder = "music"
url = "icecast://source:hackme@127.0.0.1:1/nothing-listens"
""",
        encoding="utf-8",
    )
    done = run_pushsource("check", "--config", config)  # type: ignore[operator]
    out = done.stdout.splitlines()
    assert done.returncode == 2, done.stdout + done.stderr
    # The problems, then the tally; what is ok only counted.
    assert len(out) == 4, done.stdout
    assert out[0].startswith("good output 2: error:") and "401" in out[0]
    assert out[1].startswith("wrong: error:") and "401" in out[1]
    assert out[2].startswith("gone: error: cannot reach")
    assert out[3] == f"{config}: 3 stations: 0 ok, 3 with errors"
    assert SECRET_PASSWORD not in done.stdout + done.stderr
    # --verbose: a line for each login that went well too.
    done = run_pushsource("check", "--config", config, "-v")  # type: ignore[operator]
    out = done.stdout.splitlines()
    assert out[0].startswith("good: ok:")
    assert out[1].startswith("good output 1: ok:") and "-good-64" in out[1]
    assert out[2].startswith("good output 2: error:")
    assert SECRET_PASSWORD not in done.stdout + done.stderr


def test_json_logs(
    icecast: IcecastServer, unique_mount: str, run_pushsource: object, tmp_path: Path
) -> None:
    music, _ = folder_of(tmp_path, "music", 1.0, 440)
    url = f"icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}"
    done = run_pushsource(  # type: ignore[operator]
        "stream", music, url, "--once", "--log-format", "json", timeout=30
    )
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    assert entries, done.stderr
    assert all({"time", "level", "message"} <= entry.keys() for entry in entries)
    assert any(entry["message"].startswith("playing music") for entry in entries)
    assert all(
        entry.get("station") == unique_mount.strip("/")
        for entry in entries
        if entry["message"].startswith("playing")
    )


def test_a_terminal_gets_live_lines_and_a_pipe_only_log_lines(
    icecast: IcecastServer, unique_mount: str, tmp_path: Path
) -> None:
    import pty
    import subprocess

    from tests.conftest import pushsource_command, pushsource_env

    music, _ = folder_of(tmp_path, "music", 3.0, 440)
    url = f"icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}"
    leader, follower = pty.openpty()
    env = pushsource_env({"COLUMNS": "150", "TERM": "xterm"})
    proc = subprocess.Popen(
        pushsource_command("stream", music, url, "--once"),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the other end closed: the process is done
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(10) == 0
    os.close(leader)
    raw = seen.decode("utf-8", "replace")
    assert "\x1b[" in raw  # drawn in place with terminal escapes
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    # rich redraws a status line: a progress bar with the title, the state, the queue.
    assert "on air" in text
    assert "] 0:01/0:03 music" in text, text[-2000:]
    assert "(queue 0)" in text
    assert "playing music" in text  # the log lines still show, above the live line
