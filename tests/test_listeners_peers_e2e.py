"""Listener counts on every server kind: ``pushsource run`` with its control
API, a real listener, and Icecast 2.4.4, 2.5.0 or icecast-kh (stock configs,
tests/support/servers.py). 2.4.4 and 2.5.0 list the mount in
/status-json.xsl; kh has no such page (404), so the watch asks
/admin/stats?mount= with the station's own source login (the admin password
is another one). The API must show what the server itself counts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import StartPushsource
from tests.support.compat import passed
from tests.support.listener import Listener
from tests.support.media import make_clean_mp3
from tests.support.servers import PeerServer
from tests.test_listeners_e2e import metric
from tests.test_web_e2e import free_port, get_json, wait_until

pytestmark = pytest.mark.integration


def test_the_api_counts_a_listener_on_every_server(
    peer_server: PeerServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    server = peer_server
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
url = "{server.source_url(unique_mount)}"
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
        wait_until("0 listeners", lambda: get_json(api)["listeners"] == 0, timeout=10)
        status = get_json(api)
        assert status["listeners_note"] is None
        assert status["outputs"][0]["listeners"] == 0
        assert status["outputs"][0]["listeners_note"] is None
        assert metric(base, gauge) == 0.0
        listener = Listener(server.port, unique_mount, connect_timeout=15).start()
        listener.wait_connected(15)
        listener.wait_for_audio(4096, 10)
        server.wait_for_listeners(unique_mount, 1, timeout=5)  # the server's own count
        counted = time.monotonic()
        wait_until("1 listener in the API", lambda: get_json(api)["listeners"] == 1, timeout=15)
        took = time.monotonic() - counted
        print(f"{server.kind}: the API showed the listener {took:.1f} s after the server did")
        assert took <= 6.0 + 1.5 + 1.0  # 4 probes of 1.5 s, one more, and the poll
        assert get_json(api)["outputs"][0]["listeners"] == 1
        assert metric(base, gauge) == 1.0
        listener.stop()
        listener = None
        wait_until("0 listeners again", lambda: get_json(api)["listeners"] == 0, timeout=15)
        # Where the counts came from: kh's /admin/stats, the others' status page.
        asked = f"GET /admin/stats?mount={unique_mount} "
        if server.kind == "kh":
            wait_until("the stats requests logged", lambda: asked in server.access_log(), 5)
        else:
            assert asked not in server.access_log()
        passed(server.kind, "listener counts")
    except BaseException:
        print(process.describe())
        print(server.error_log()[-3000:])
        raise
    finally:
        if listener is not None:
            listener.stop()
