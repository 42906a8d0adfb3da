"""A file whose name is not UTF-8 (bytes Python holds as surrogate escapes),
played by ``pushsource run`` into a real icecast2: the control API, the page
and /metrics answer as usual (they answered 500 for every station while the
name was in one station's queue or history), and show the name escaped as
the log does (``\\udcff``), which reads back as the same name."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import StartPushsource
from tests.support.icecast import IcecastServer, free_port
from tests.support.media import make_clean_mp3
from tests.test_web_e2e import wait_until

pytestmark = pytest.mark.integration

ODD = b"bad\xff\xfeutf8.mp3"
NAME = os.fsdecode(ODD)  # "bad\udcff\udcfeutf8.mp3"
SHOWN = rb"bad\udcff\udcfeutf8.mp3"  # in a JSON body, as in the log


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read()


def test_a_name_that_is_not_utf8_never_makes_the_api_answer_500(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    odd, plain = tmp_path / "odd", tmp_path / "plain"
    odd.mkdir()
    plain.mkdir()
    make_clean_mp3(Path(os.fsdecode(bytes(odd) + b"/" + ODD)), 1.0, freq=330)
    make_clean_mp3(odd / "zz-after.mp3", 20.0, freq=440)
    make_clean_mp3(plain / "only.mp3", 20.0, freq=550)
    port = free_port()
    config = tmp_path / "stations.toml"
    server = f"icecast://source:hackme@127.0.0.1:{icecast.port}"
    config.write_text(
        f'[control]\nlisten = "127.0.0.1:{port}"\n'
        f'[[station]]\nid = "odd"\nfolder = "odd"\nurl = "{server}{unique_mount}"\n'
        'state = "odd.json"\n'
        f'[[station]]\nid = "plain"\nfolder = "plain"\nurl = "{server}{unique_mount}-2"\n'
        'state = "plain.json"\n',
        "utf-8",
    )
    run = start_pushsource("run", "--config", config)
    base = f"http://127.0.0.1:{port}"

    def odd_listed() -> bytes | None:
        # An HTTPError (the 500) is an OSError: wait_until keeps asking.
        status, body = _get(f"{base}/api/stations")
        return body if status == 200 and SHOWN in body else None

    body = wait_until("/api/stations naming the odd file", odd_listed, 30)
    stations = {s["id"]: s for s in json.loads(body)["stations"]}
    odd_status = stations["odd"]
    named = [odd_status["now_playing"]] + odd_status["queue"] + odd_status["history"]
    assert NAME in [entry["file"] for entry in named if entry], body  # the same name read back
    for path in ("/api/stations/odd", "/api/stations/plain", "/api/stations?summary=1", "/"):
        status, _ = _get(base + path)
        assert status == 200, path
    status, library = _get(f"{base}/api/stations/odd/library")
    assert status == 200 and SHOWN in library
    assert NAME in [f["file"] for f in json.loads(library)["files"]]
    status, metrics = _get(f"{base}/metrics")
    assert status == 200 and b'station="odd"' in metrics
    run.terminate()
    assert "Traceback" not in run.stderr and "UnicodeEncodeError" not in run.stderr, run.describe()
    saved = (tmp_path / "odd.json").read_bytes()  # the state file keeps the name, escaped
    assert SHOWN in saved and saved.isascii()
