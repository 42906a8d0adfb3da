"""Listener counts end to end: a real icecast2, ``pushsource run --config``
with its control server, and a real listener; the API and /metrics must say
what Icecast's own /status-json.xsl says, within the watch's 6 s (it reads
the counts every 4th probe, a probe every 1.5 s)."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartPushsource
from tests.support.icecast import IcecastServer
from tests.support.listener import Listener
from tests.support.media import make_clean_mp3
from tests.test_web_e2e import free_port, get_json, wait_until

pytestmark = pytest.mark.integration


def metric(base: str, name: str) -> float | None:
    with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def icecast_listeners(icecast: IcecastServer, mount: str) -> int | None:
    url = f"http://127.0.0.1:{icecast.port}/status-json.xsl"
    with urllib.request.urlopen(url, timeout=5) as response:
        stats: Any = json.load(response)["icestats"]
    sources = stats.get("source", [])
    for source in sources if isinstance(sources, list) else [sources]:
        if str(source.get("listenurl", "")).endswith(mount):
            return int(source["listeners"])
    return None


def test_a_listener_shows_in_the_api_and_metrics(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    folder = tmp_path / "music"
    folder.mkdir()
    make_clean_mp3(folder / "long.mp3", 60.0, freq=440)
    port = free_port()
    config = tmp_path / "stations.toml"
    config.write_text(
        f"""
[control]
listen = "127.0.0.1:{port}"

[[station]]
id = "rock"
folder = "music"
url = "icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}"
state = "state.json"
""",
        encoding="utf-8",
    )
    process = start_pushsource("run", "--config", config)
    base = f"http://127.0.0.1:{port}"
    api = f"{base}/api/stations/rock"
    gauge = 'pushsource_listeners{station="rock"}'
    listener: Listener | None = None
    try:
        wait_until(
            "the station on air", lambda: get_json(api)["connection"]["state"] == "on air", 30
        )
        # Nobody listens yet: 0, once the watch has read the status.
        wait_until("0 listeners", lambda: get_json(api)["listeners"] == 0, timeout=10)
        assert metric(base, gauge) == 0.0
        listener = Listener(icecast.port, unique_mount, connect_timeout=15).start()
        listener.wait_connected(15)
        listener.wait_for_audio(4096, 10)
        # Icecast's own count lags its new client a moment (its stats thread).
        wait_until(
            "Icecast counting the listener",
            lambda: icecast_listeners(icecast, unique_mount) == 1,
            timeout=5,
        )
        connected = time.monotonic()
        wait_until("1 listener in the API", lambda: get_json(api)["listeners"] == 1, timeout=15)
        took = time.monotonic() - connected
        assert metric(base, gauge) == 1.0
        print(f"the API showed the listener {took:.1f} s after Icecast did")
        assert took <= 6.0 + 1.5 + 1.0  # 4 probes of 1.5 s, one more, and the poll
        listener.stop()
        listener = None
        wait_until("0 listeners again", lambda: get_json(api)["listeners"] == 0, timeout=15)
        assert metric(base, gauge) == 0.0
    except BaseException:
        print(process.describe())
        raise
    finally:
        if listener is not None:
            listener.stop()
