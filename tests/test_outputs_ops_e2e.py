"""What operators see of several outputs, end to end: a real icecast2 for the
station's own mount and a second one for the same stream, ``pushsource run
--config`` with its control server, a real listener on the second. The API
and /metrics must say per output what Icecast says (on air, listeners), and,
once the second server is killed, that this output alone is reconnecting."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartPushsource
from tests.support.icecast import DEFAULT_TEMPLATE, IcecastServer
from tests.support.listener import Listener
from tests.support.media import make_clean_mp3
from tests.test_listeners_e2e import icecast_listeners, metric
from tests.test_web_e2e import free_port, get_json, wait_until

pytestmark = pytest.mark.integration


def test_each_output_in_the_api_and_metrics(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    folder = tmp_path / "music"
    folder.mkdir()
    make_clean_mp3(folder / "long.mp3", 60.0, freq=440)
    workdir = Path(tempfile.mkdtemp(prefix="pushsource-icecast-second-"))
    second = IcecastServer(DEFAULT_TEMPLATE, workdir)
    second.start()
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

[[station.output]]
url = "icecast://source:hackme@127.0.0.1:{second.port}{unique_mount}"
""",
        encoding="utf-8",
    )
    base = f"http://127.0.0.1:{port}"
    api = f"{base}/api/stations/rock"
    own = f'mount="{unique_mount}",server="127.0.0.1:{icecast.port}",station="rock"'
    other = f'mount="{unique_mount}",server="127.0.0.1:{second.port}",station="rock"'

    def outputs() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = get_json(api)["outputs"]
        return found

    process = start_pushsource("run", "--config", config)
    listener: Listener | None = None
    try:
        wait_until(
            "both outputs on air",
            lambda: [o["state"] for o in outputs()] == ["on air", "on air"],
            30,
        )
        listener = Listener(second.port, unique_mount, connect_timeout=15).start()
        listener.wait_connected(15)
        listener.wait_for_audio(4096, 10)
        # Icecast's own count lags its new client a moment (its stats thread).
        wait_until(
            "Icecast counting the listener",
            lambda: icecast_listeners(second, unique_mount) == 1,
            timeout=5,
        )
        # Each server's count, read by its own watch (within its 6 s).
        wait_until(
            "the listener on the second server's output",
            lambda: [o["listeners"] for o in outputs()] == [0, 1],
            timeout=15,
        )
        assert metric(base, f"pushsource_output_listeners{{{own}}}") == 0.0
        assert metric(base, f"pushsource_output_listeners{{{other}}}") == 1.0
        assert metric(base, f"pushsource_output_up{{{own}}}") == 1.0
        assert metric(base, f"pushsource_output_up{{{other}}}") == 1.0
        info = (
            'pushsource_output_info{bitrate="128",channels="2",converted="false",'
            f'mount="{unique_mount}",samplerate="44100",server="127.0.0.1:{second.port}",'
            'station="rock"}'
        )
        assert metric(base, info) == 1.0
        # The listener has had audio from that output: its bytes are counted
        # (the metrics' snapshot may be a moment older than the listener's bytes).
        heard = len(listener.audio)
        wait_until(
            "the output's bytes counted",
            lambda: (metric(base, f"pushsource_output_bytes_sent_total{{{other}}}") or 0) >= heard,
            timeout=5,
        )

        second.kill()
        wait_until(
            "the second output alone reconnecting",
            lambda: [o["state"] for o in outputs()] == ["on air", "reconnecting"],
            30,
        )
        lost = outputs()[1]
        assert lost["reconnects"] == 1 and lost["error"], lost
        assert get_json(api)["connection"]["state"] == "on air"
        assert metric(base, f"pushsource_output_up{{{other}}}") == 0.0
        assert metric(base, f"pushsource_output_reconnects_total{{{other}}}") == 1.0
        assert metric(base, f"pushsource_output_reconnects_total{{{own}}}") == 0.0
        assert metric(base, f"pushsource_output_up{{{own}}}") == 1.0
    except BaseException:
        print(process.describe())
        raise
    finally:
        if listener is not None:
            listener.stop()
        second.stop()
        shutil.rmtree(workdir, ignore_errors=True)
