"""Back-pressure on a DJ's body, end to end: curl and ffmpeg push a long
file as fast as loopback goes (no -re) into pushsource's harbor on a real station and a
real icecast2. The harbor reads it at about real time (it stops reading while
the station's buffer of the DJ's frames is full), nothing is thrown away, and
the listener hears the DJ's audio from its first frame on, in order."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import StartPushsource, register_secret
from tests.support.icecast import IcecastServer, free_port
from tests.support.listener import Listener
from tests.support.media import make_clean_mp3, make_titled_tracks
from tests.test_live_e2e import DJ_PASSWORD, wait_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BYTES_A_SECOND = 128_000 // 8  # the DJ's file: 128 kbit/s


@pytest.mark.parametrize("tool", ["curl", "ffmpeg"])
def test_a_dj_pushing_at_lan_speed_is_read_at_real_time_and_nothing_is_dropped(
    tool: str,
    tmp_path: Path,
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
) -> None:
    folder = tmp_path / "music"
    make_titled_tracks(folder, [("Folder", "Long One")], seconds=30)
    tone = tmp_path / "set.mp3"
    live_audio = make_clean_mp3(tone, 40.0, freq=660)  # 640 kB: pushed in well under a second
    port, control = free_port(), free_port()
    register_secret(DJ_PASSWORD)
    process = start_pushsource(
        "stream",
        folder,
        f"icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}",
        "--live-listen",
        f"127.0.0.1:{port}",
        "--live-mount",
        "/live",
        "--live-user",
        f"alice:{DJ_PASSWORD}",
        "--control",
        f"127.0.0.1:{control}",
    )
    with Listener(icecast.port, unique_mount) as listener:
        listener.wait_for_title("Folder - Long One", 20)
        wait_port(port)
        started = time.monotonic()
        if tool == "curl":  # a PUT with Content-Length, the file as fast as it goes
            command = [
                "curl", "-sS", "-T", str(tone), "-H", "Content-Type: audio/mpeg",
                "-u", f"alice:{DJ_PASSWORD}", f"http://127.0.0.1:{port}/live",
            ]  # fmt: skip
        else:  # ffmpeg without -re: as fast as it can copy
            url = f"icecast://alice:{DJ_PASSWORD}@127.0.0.1:{port}/live"
            command = ["ffmpeg", "-v", "error", "-i", str(tone), "-c", "copy"]
            command += ["-content_type", "audio/mpeg", "-f", "mp3", url]
        curl = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            listener.wait_for_title("Live: alice", 10)
            time.sleep(5)
            with urllib.request.urlopen(
                f"http://127.0.0.1:{control}/api/stations", timeout=5
            ) as reply:
                [status] = json.load(reply)["stations"]
            elapsed = time.monotonic() - started
            read = status["live"]["bytes_in"]
            # Real time, plus the lead and buffer the station fills at once
            # (0.5 s + 1 s) and one read's worth.
            bound = (elapsed + 1.5) * BYTES_A_SECOND + 16_384
            print(
                f"read {read} bytes in {elapsed:.1f} s (bound {bound:.0f}, file {len(live_audio)})"
            )
            if tool == "curl":  # (ffmpeg is done once the kernel's buffers hold the rest)
                assert curl.poll() is None, "the whole file was taken at once"
            assert 0 < read <= bound, f"read {read} bytes in {elapsed:.1f} s"
            heard = len(listener.audio)
            listener.wait_for_audio(heard + 2 * BYTES_A_SECOND, 10)
            audio = bytes(listener.audio)
        finally:
            curl.kill()
            curl.wait(5)
    at = audio.find(live_audio[:4096])
    assert at > 0, "the DJ's frames never reached the listener"
    dj = audio[at:]
    assert len(dj) > 5 * BYTES_A_SECOND
    # From the DJ's first frame on, their frames and nothing else: none dropped.
    assert live_audio.startswith(dj), next(i for i in range(len(dj)) if dj[i] != live_audio[i])
    log = process.stderr + process.stdout
    assert "alice takes over" in log  # its live lines are there to read
    assert "dropped" not in log
