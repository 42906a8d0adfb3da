"""Going live end to end: real encoders (ffmpeg's icecast://, curl -T - chunked,
ezstream, Liquidsoap's output.icecast) as the DJ against pushsource's live
input, a real icecast2, and a listener connected the whole time: folder, then
the DJ's frames byte-exact, then the folder again, with the titles in order and
never a disconnect."""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from pushsource.core.frames import header_for, parse_header, silent_frame
from pushsource.ops.trial import tag_mp3
from tests.conftest import StartPushsource, register_secret
from tests.support.icecast import IcecastServer, free_port
from tests.support.listener import Listener
from tests.support.media import make_clean_mp3, make_titled_tracks, unmend
from tests.support.proxy import TcpProxy

pytestmark = pytest.mark.integration

DJ_PASSWORD = "dj-Pw-7fQ2x"
GRACE = 2.0


def start_station(
    start_pushsource: StartPushsource,
    icecast: IcecastServer,
    folder: Path,
    mount: str,
    port: int,
    *extra: str,
    env: dict[str, str] | None = None,
) -> None:
    register_secret(DJ_PASSWORD)
    start_pushsource(
        "stream",
        folder,
        f"icecast://source:hackme@127.0.0.1:{icecast.port}{mount}",
        "--live-listen",
        f"127.0.0.1:{port}",
        "--live-mount",
        "/live",
        "--live-user",
        f"alice:{DJ_PASSWORD}",
        "--live-grace",
        str(GRACE),
        *extra,
        env=env,
    )


def ask(port: int, request: bytes) -> bytes:
    """Send one request to the live input; the answer until it hangs up."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        out = b""
        while chunk := sock.recv(4096):
            out += chunk
        return out


def set_title(port: int, title: str) -> bytes:
    song = urllib.parse.quote(title)
    auth = base64.b64encode(f"alice:{DJ_PASSWORD}".encode()).decode()
    return ask(
        port,
        f"GET /admin/metadata?mode=updinfo&mount=/live&song={song} HTTP/1.0\r\n"
        f"Authorization: Basic {auth}\r\n\r\n".encode(),
    )


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


EZSTREAM = """<?xml version="1.0" encoding="UTF-8"?>
<ezstream>
  <servers><server>
    <protocol>HTTP</protocol><hostname>127.0.0.1</hostname><port>{port}</port>
    <user>alice</user><password>{password}</password><tls>None</tls>
    <reconnect_attempts>0</reconnect_attempts>
  </server></servers>
  <streams><stream>
    <mountpoint>/live</mountpoint><format>MP3</format>
  </stream></streams>
  <intakes><intake>
    <type>file</type><filename>{file}</filename><stream_once>Yes</stream_once>
  </intake></intakes>
  <metadata><format_str>@a@ - @t@</format_str></metadata>
</ezstream>
"""


def run_dj(tmp_path: Path, tool: str, port: int, tone: Path) -> subprocess.Popen[bytes]:
    if tool == "ezstream":  # libshout: an unauthenticated try first, 401-first titles
        config = tmp_path / "ezstream.xml"
        config.write_text(EZSTREAM.format(port=port, password=DJ_PASSWORD, file=tone))
        config.chmod(0o600)
        return subprocess.Popen(["ezstream", "-c", str(config)], stdout=subprocess.DEVNULL)
    ffmpeg = ["ffmpeg", "-v", "error", "-re", "-i", str(tone), "-c", "copy"]
    if tool == "ffmpeg":  # PUT with Expect: 100-continue, not chunked
        url = f"icecast://alice:{DJ_PASSWORD}@127.0.0.1:{port}/live"
        return subprocess.Popen([*ffmpeg, "-content_type", "audio/mpeg", "-f", "mp3", url])
    # curl -T -: a chunked PUT, fed in real time by ffmpeg -re
    feed = subprocess.Popen([*ffmpeg, "-f", "mp3", "-"], stdout=subprocess.PIPE)
    curl = subprocess.Popen(
        [
            "curl", "-sS", "-T", "-", "-H", "Content-Type: audio/mpeg",
            "-u", f"alice:{DJ_PASSWORD}", f"http://127.0.0.1:{port}/live",
        ],
        stdin=feed.stdout,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    assert feed.stdout is not None
    feed.stdout.close()
    return curl


@pytest.mark.parametrize("tool", ["ffmpeg", "curl"])
def test_a_dj_takes_over_and_the_folder_takes_back(
    tool: str,
    tmp_path: Path,
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
) -> None:
    folder = tmp_path / "music"
    [track] = make_titled_tracks(folder, [("Folder", "Long One")], seconds=40)
    tone = tmp_path / "tone.mp3"
    live_audio = make_clean_mp3(tone, 6.0, freq=880)
    port = free_port()
    start_station(start_pushsource, icecast, folder, unique_mount, port)
    with Listener(icecast.port, unique_mount) as listener:
        listener.wait_for_title("Folder - Long One", 20)
        wait_port(port)
        # A title sent before any audio shows once the DJ is on air.
        time.sleep(3)  # some of the folder first
        assert set_title(port, "Alice - First Tune").startswith(b"HTTP/1.0 200 OK")
        dj = run_dj(tmp_path, tool, port, tone)
        listener.wait_for_title("Alice - First Tune", 10)
        time.sleep(2)
        assert set_title(port, "Alice - Second").startswith(b"HTTP/1.0 200 OK")
        listener.wait_for_title("Alice - Second", 10)
        assert dj.wait(20) == 0
        # The folder takes back after the grace: the title again, then its audio.
        listener.wait_for_title("Folder - Long One", 10)
        # Wait till a second past the DJ's audio is in, then check.
        start = bytes(listener.audio).find(live_audio[:4096])
        assert start > 0, "the DJ's frames never reached the listener"
        listener.wait_for_audio(start + len(live_audio) + 64_000, 15)
        assert not listener.closed.is_set()
        audio = bytes(listener.audio)
    # The DJ's frames, byte for byte (ffmpeg's own ID3 tag and Info frame
    # are not frames and never went on air).
    if live_audio not in audio:
        at = audio.find(live_audio[:4096])
        n = next((i for i in range(len(live_audio)) if audio[at + i] != live_audio[i]), -1)
        raise AssertionError(f"DJ audio differs at byte {n} of {len(live_audio)}")
    # Before them the folder's frames from its start, after them silence (the
    # grace) and then the folder going on exactly where it was cut.
    cut = audio.index(live_audio)
    prefix = audio[:cut]
    played = prefix[prefix.find(track.audio[:2048]) :]
    assert track.audio.startswith(played) and len(played) > 30_000
    after = audio[cut + len(live_audio) :]
    silence, gap = silent_frame(header_for(44100, 2, 128)), 0
    while after.startswith(silence):
        after, gap = after[len(silence) :], gap + 1
    assert GRACE - 0.5 < gap * 1152 / 44100 < GRACE + 1.5
    # (Its first frames may point back into the bit reservoir, past the cut:
    # those went out silenced, main data and all else as they were.)
    resumed = track.audio[len(played) :][:20_000]
    assert unmend(after, resumed).startswith(resumed)
    titles = [t for _, t in listener.titles if t]
    i = titles.index("Alice - First Tune")
    assert titles[i:] == ["Alice - First Tune", "Alice - Second", "Folder - Long One"]
    assert titles[:i] == ["Folder - Long One"] * i


def test_refusals_say_why(
    tmp_path: Path,
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
) -> None:
    folder = tmp_path / "music"
    make_titled_tracks(folder, [("Folder", "Track")], seconds=5)
    port, control = free_port(), free_port()
    start_station(
        start_pushsource,
        icecast,
        folder,
        unique_mount,
        port,
        "--control",
        f"127.0.0.1:{control}",
        env={"PUSHSOURCE_TOKEN": "kick-T0ken-x"},
    )
    wait_port(port)
    good = base64.b64encode(f"alice:{DJ_PASSWORD}".encode()).decode()
    bad = base64.b64encode(b"alice:nope").decode()
    # libshout's first, unauthenticated try gets a 401 that asks for Basic.
    answer = ask(port, b"SOURCE /live HTTP/1.0\r\nContent-Type: audio/mpeg\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 401 ") and b"WWW-Authenticate: Basic" in answer
    answer = ask(port, f"PUT /live HTTP/1.1\r\nAuthorization: Basic {bad}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.0 401 ")
    answer = ask(
        port,
        f"PUT /live HTTP/1.1\r\nAuthorization: Basic {good}\r\n"
        "Content-Type: video/mp4\r\n\r\n".encode(),
    )
    assert answer.startswith(b"HTTP/1.0 415 ")
    assert answer.endswith(
        b"this station takes MP3 (audio/mpeg) at 44100 Hz stereo"
        b" or MP3 at any rate, Ogg Vorbis, Opus and AAC, not video/mp4\n"
    )
    answer = ask(port, f"PUT /other HTTP/1.1\r\nAuthorization: Basic {good}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.0 404 ")
    # One DJ at a time: a second gets 403 while the first is connected.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as first:
        first.sendall(f"SOURCE /live HTTP/1.0\r\nAuthorization: Basic {good}\r\n\r\n".encode())
        assert first.recv(100) == b"HTTP/1.0 200 OK\r\n\r\n"
        answer = ask(port, f"SOURCE /live HTTP/1.0\r\nAuthorization: Basic {good}\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.0 403 ")
        # Operators see who is live; /metrics has it.
        base = f"http://127.0.0.1:{control}"
        with urllib.request.urlopen(f"{base}/api/stations", timeout=5) as reply:
            [status] = json.load(reply)["stations"]
        assert status["live"]["user"] == "alice" and status["live"]["mount"] == "/live"
        # Connected but no audio: nothing aired, so no history entry for them.
        assert not any(entry.get("live") for entry in status["history"])
        assert status["live"]["on_air"] is False
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as reply:
            metrics = reply.read().decode()
        assert "pushsource_live_connected{station=" in metrics
        assert re.search(r"pushsource_live_connected\{[^}]*\} 1\.0", metrics)
        # An operator kicks the DJ: they are hung up on.
        kick = urllib.request.Request(
            f"{base}/api/stations/{status['id']}/live/kick",
            method="POST",
            headers={"Authorization": "Bearer kick-T0ken-x"},
        )
        with urllib.request.urlopen(kick, timeout=5) as reply:
            assert reply.status == 200
        first.settimeout(5)
        assert first.recv(100) == b""
    # Wrong passwords are rate-limited per address.
    for _ in range(5):
        ask(port, f"PUT /live HTTP/1.1\r\nAuthorization: Basic {bad}\r\n\r\n".encode())
    answer = ask(port, f"PUT /live HTTP/1.1\r\nAuthorization: Basic {good}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.0 403 ") and b"too many wrong passwords" in answer


def api(base: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, object]]:
    """One control API request (POSTs with the token): its status and JSON."""
    request = urllib.request.Request(
        base + path,
        data=body,
        method="GET" if body is None else "POST",
        headers={"Authorization": "Bearer kick-T0ken-x", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_the_api_tells_the_truth_during_a_set_skip_is_refused_and_a_kick_acts_at_once(
    tmp_path: Path,
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
) -> None:
    """Issue 22: an ffmpeg DJ with a title; the API has their title and user
    within 3 s, skip is 409, a kick brings the folder back to the listener
    within 1.5 s (no grace of silence), and the history holds the title."""
    folder = tmp_path / "music"
    [track] = make_titled_tracks(folder, [("Folder", "Long One")], seconds=60)
    tone = tmp_path / "tone.mp3"
    live_audio = make_clean_mp3(tone, 20.0, freq=880)
    port, control = free_port(), free_port()
    start_station(
        start_pushsource,
        icecast,
        folder,
        unique_mount,
        port,
        "--control",
        f"127.0.0.1:{control}",
        env={"PUSHSOURCE_TOKEN": "kick-T0ken-x"},
    )
    base = f"http://127.0.0.1:{control}/api/stations"
    with Listener(icecast.port, unique_mount) as listener:
        listener.wait_for_title("Folder - Long One", 20)
        wait_port(port)
        time.sleep(3)  # some of the folder first
        _, listing = api(base, "")
        stations = listing["stations"]
        assert isinstance(stations, list) and len(stations) == 1
        station = f"{base}/{stations[0]['id']}"
        assert set_title(port, "Alice - Live Tune").startswith(b"HTTP/1.0 200 OK")
        dj = run_dj(tmp_path, "ffmpeg", port, tone)
        try:
            went_live = time.monotonic()
            while True:
                _, status = api(station, "")
                playing, live = status["now_playing"], status["live"]
                assert isinstance(playing, dict) and isinstance(live, dict)
                if playing.get("title") == "Alice - Live Tune" and live.get("user") == "alice":
                    break
                assert time.monotonic() - went_live < 3.0, status
                time.sleep(0.1)
            assert live["on_air"] is True and playing["live"] == "alice"
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", str(live["since"]))
            assert live["format"] == {"bitrate": 128, "samplerate": 44100, "channels": 2}
            assert isinstance(live["frames_in"], int) and live["frames_in"] > 0
            cut = playing["interrupted"]
            assert isinstance(cut, dict) and cut["title"] == "Folder - Long One"
            assert cut["state"] == "paused" and cut["elapsed"] > 2
            # Skip would do nothing to the DJ: refused, saying why.
            code, body = api(station, "/skip", b"")
            assert code == 409 and "alice is live" in str(body["error"])
            time.sleep(2)  # some of the set
            kicked = time.monotonic()
            code, status = api(station, "/live/kick", b"")
            assert code == 200
            # The folder's track, where it was cut, reaches the listener at once.
            audio = bytes(listener.audio)
            start = audio.find(live_audio[:4096])
            assert start > 0, "the DJ's frames never reached the listener"
            prefix = audio[:start]
            played = prefix[prefix.find(track.audio[:2048]) :]
            mark = track.audio[len(played) :][8192:12288]  # past any mended first frames
            deadline = time.monotonic() + 5
            while (at := bytes(listener.audio).find(mark, start)) < 0:
                assert time.monotonic() < deadline, "the folder never came back"
                time.sleep(0.02)
            arrived = next(when for when, size in listener.arrivals if size >= at + len(mark))
            assert arrived - kicked < 1.5, f"the folder came back {arrived - kicked:.2f} s after"
            assert not listener.closed.is_set()
        finally:
            dj.kill()
            dj.wait(5)
    _, status = api(station, "")
    history = status["history"]
    assert isinstance(history, list)
    assert any(e["title"] == "Alice - Live Tune" and e.get("live") == "alice" for e in history)
    assert not any(entry["title"] == "Live: alice" for entry in history)


def test_ezstream_goes_live_with_its_title(
    tmp_path: Path,
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
) -> None:
    """libshout: its first try without credentials gets 401, then it sends
    them; its title update comes the same way, and shows."""
    folder = tmp_path / "music"
    make_titled_tracks(folder, [("Folder", "Long One")], seconds=30)
    tone = tmp_path / "tone.mp3"
    live_audio = make_clean_mp3(tone, 5.0, freq=990)
    tag_mp3(tone, "DJ Alice", "Ezstream Tune")
    port = free_port()
    start_station(start_pushsource, icecast, folder, unique_mount, port)
    with Listener(icecast.port, unique_mount) as listener:
        listener.wait_for_title("Folder - Long One", 20)
        wait_port(port)
        dj = run_dj(tmp_path, "ezstream", port, tone)
        listener.wait_for_title("DJ Alice - Ezstream Tune", 15)
        assert dj.wait(20) == 0
        start = bytes(listener.audio).find(live_audio[:4096])
        assert start > 0, "the DJ's frames never reached the listener"
        listener.wait_for_audio(start + len(live_audio) + 64_000, 15)
        titles = [t for _, t in listener.titles if t]
        assert titles[-1] == "Folder - Long One"  # the folder took back
        assert not listener.closed.is_set()
        assert live_audio in bytes(listener.audio)


LIQUIDSOAP = """
settings.init.allow_root.set(true)
settings.log.stdout.set(true)
settings.log.file.set(false)
s = mksafe(sine(660.))
enc = %mp3(bitrate=128, samplerate=44100, stereo=true)
output.icecast(enc, host="127.0.0.1", port={port}, password="{password}",
               user="alice", mount="/live", s)
"""


def liquidsoap_body(wire: TcpProxy) -> bytes:
    """The audio of the source connection that went live (the longest one),
    after its request head, de-chunked if Liquidsoap chunked it."""
    live = [c for c in wire.connections if c.request.split(" ")[0] in ("SOURCE", "PUT")]
    assert live, f"Liquidsoap made no source request: {wire.connections}"
    data = bytes(max(live, key=lambda c: len(c.sent)).sent)
    head, _, body = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" not in head.lower():
        return body
    out, at = bytearray(), 0
    while (eol := body.find(b"\r\n", at)) > 0:
        size = int(body[at:eol].split(b";")[0], 16)
        if size == 0 or eol + 2 + size > len(body):
            break
        out += body[eol + 2 : eol + 2 + size]
        at = eol + 4 + size
    return bytes(out)


def split_frames(data: bytes, start: int = 0) -> tuple[list[bytes], int]:
    """Whole MP3 frames back to back from ``start``; and where the walk stopped."""
    frames, at = [], start
    while (header := parse_header(data, at)) is not None and at + header.length <= len(data):
        frames.append(data[at : at + header.length])
        at += header.length
    return frames, at


@pytest.mark.skipif(shutil.which("liquidsoap") is None, reason="liquidsoap is not installed")
def test_liquidsoap_goes_live_and_the_folder_takes_back(
    tmp_path: Path,
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
) -> None:
    """Liquidsoap's output.icecast (its own encoder, re-encoding a sine) as
    the DJ: its frames reach the listener whole and as it sent them."""
    folder = tmp_path / "music"
    [track] = make_titled_tracks(folder, [("Folder", "Long One")], seconds=40)
    port = free_port()
    # Liquidsoap sends no title: the station's --live-title shows.
    start_station(
        start_pushsource, icecast, folder, unique_mount, port, "--live-title", "On air: {user}"
    )
    script = tmp_path / "dj.liq"
    # What Liquidsoap sent is recorded on the wire: a second encoder writing a
    # file would start at another sample and make other bytes.
    wire = TcpProxy(port, record=True)
    script.write_text(LIQUIDSOAP.format(port=wire.port, password=DJ_PASSWORD))
    script.chmod(0o600)
    with wire, Listener(icecast.port, unique_mount) as listener:
        listener.wait_for_title("Folder - Long One", 20)
        wait_port(port)
        time.sleep(2)  # some of the folder first
        dj = subprocess.Popen(
            ["liquidsoap", str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            listener.wait_for_title("On air: alice", 15)
            time.sleep(6)
        finally:
            dj.terminate()
            dj.wait(10)
        listener.wait_for_title("Folder - Long One", 15)  # took back, after the grace
        listener.wait_for_audio(len(listener.audio) + 64_000, 15)
        assert not listener.closed.is_set()
        audio = bytes(listener.audio)
    # What Liquidsoap sent: whole frames at the station's format.
    body = liquidsoap_body(wire)
    sent, end = split_frames(body)
    assert len(sent) > 150 and end > len(body) - 1500
    for frame in sent:
        header = parse_header(frame)
        assert header is not None and (header.sample_rate, header.channels) == (44100, 2)
    # The listener: the folder from its start, then Liquidsoap's frames as it
    # sent them (a run from the middle of its set, byte for byte), then the
    # folder again; all of it whole frames back to back.
    begin = audio.find(track.audio[:2048])
    assert begin >= 0
    heard, stop = split_frames(audio, begin)
    assert stop > len(audio) - 1500, f"not a whole frame at byte {stop} of {len(audio)}"
    run = b"".join(sent[len(sent) // 3 : len(sent) // 3 + 60])
    at = audio.find(run)
    assert at > begin, "Liquidsoap's frames never reached the listener as it sent them"
    assert len(heard) > 500
    assert audio[begin : begin + 30_000] == track.audio[:30_000] and begin + 30_000 < at
    assert audio[-20_000:] in track.audio  # the folder is back
    titles = [t for _, t in listener.titles if t]
    i = titles.index("On air: alice")
    assert titles[i:] == ["On air: alice", "Folder - Long One"]
