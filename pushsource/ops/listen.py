"""``pushsource listen URL``: play a mount with libvlc and print each title as it changes.

VLC 3.0 has two HTTP access modules. The newer one, which ``http://`` picks,
never asks for ICY metadata, so libvlc would show no titles; the older one
sends ``Icy-MetaData: 1`` and turns each StreamTitle into the NowPlaying meta.
Its only scheme of its own is ``icyx://``, so that is what we give libvlc.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

from pushsource.core.target import DEFAULT_PORT, redact
from pushsource.errors import ConfigError, PushsourceError
from pushsource.workers.vlc import import_vlc

POLL: Final = 0.2  # seconds between looks at the title
PROBE_TIMEOUT: Final = 3.0  # seconds to find out why libvlc could not open a URL

_INSTANCE_OPTIONS: Final = ("--no-video", "--no-xlib", "--no-lua", "--no-stats", "--quiet")


def listener_url(url: str) -> str:
    """The plain ``http(s)://host:port/mount`` of a mount URL: ``icecast://``
    becomes ``http://`` (port 8000 by default, as for ``stream``), and any
    user or password is dropped. Raises ConfigError."""
    shown = redact(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad URL {shown}: {redact(str(exc))}") from None
    if parts.scheme not in ("icecast", "http", "https"):
        raise ConfigError(f"bad URL {shown}: scheme must be http://, https:// or icecast://")
    if not parts.hostname:
        raise ConfigError(f"bad URL {shown}: no host")
    if parts.path in ("", "/"):
        raise ConfigError(f"bad URL {shown}: give a mount, e.g. {shown.rstrip('/')}/stream")
    scheme = "http" if parts.scheme == "icecast" else parts.scheme
    if port is None and parts.scheme == "icecast":
        port = DEFAULT_PORT
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host if port is None else f"{host}:{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{parts.path}{query}"


def listen(
    url: str,
    *,
    audio: bool = True,
    out: TextIO = sys.stdout,
    stop: threading.Event | None = None,
    duration: float | None = None,
    err: TextIO | None = None,
) -> int:
    """Play the mount at ``url`` and print ``[m:ss] Title`` to ``out`` each
    time the title changes, the time counted from the call.

    Returns 0 once stopped (Ctrl-C, ``stop`` set, ``duration`` seconds gone)
    or when the stream ends; 1, after one line on ``err`` (default stderr),
    if the stream cannot be opened or breaks off with an error. ``audio``
    False decodes without a sound card (libvlc's dummy audio output). Raises
    ConfigError for a URL it cannot use, PushsourceError if libvlc is missing.
    """
    err = err if err is not None else sys.stderr
    plain = listener_url(url)
    mrl = "icyx" + plain[4:] if plain.startswith("http:") else plain
    vlc = import_vlc()
    if audio and not sound_output_available():
        # Else alsa-lib itself prints a screenful of "cannot find card" lines.
        print("pushsource: no sound device here: decoding without sound", file=err)
        audio = False
    options = [*_INSTANCE_OPTIONS, *(() if audio else ("--aout=dummy",))]
    instance: Any = vlc.Instance(options)
    if instance is None:
        raise PushsourceError("libvlc failed to start (is vlc-plugin-base installed?)")
    media: Any = instance.media_new(mrl)
    player: Any = instance.media_player_new()
    player.set_media(media)
    started = time.monotonic()
    shown: str | None = None
    played = False
    try:
        if player.play() == -1:
            print(f"pushsource: error: cannot play {plain}: {_why_not(plain)}", file=err)
            return 1
        while True:
            state = player.get_state()
            played = played or state == vlc.State.Playing
            title = _title(vlc, media)
            if title and title != shown:
                shown = title
                print(f"[{_clock(time.monotonic() - started)}] {title}", file=out, flush=True)
            if state in (vlc.State.Ended, vlc.State.Stopped, vlc.State.Error):
                if not played:
                    print(f"pushsource: error: cannot play {plain}: {_why_not(plain)}", file=err)
                    return 1
                if state == vlc.State.Error:
                    print(f"pushsource: error: {plain}: the stream broke off", file=err)
                    return 1
                print(f"pushsource: {plain}: the stream ended", file=err)
                return 0
            left = POLL
            if duration is not None:
                left = min(left, duration - (time.monotonic() - started))
                if left <= 0:
                    return 0
            if stop is not None:
                if stop.wait(left):
                    return 0
            else:
                time.sleep(left)
    except KeyboardInterrupt:
        return 0
    finally:
        player.stop()
        player.release()
        media.release()
        instance.release()


def sound_output_available(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether libvlc has anywhere to play: an ALSA playback device, or a
    PulseAudio/PipeWire server. Does not raise."""
    if environ.get("PULSE_SERVER"):
        return True
    runtime = environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    for socket_path in ("pulse/native", "pipewire-0"):
        if os.path.exists(os.path.join(runtime, socket_path)):
            return True
    try:
        # pcmC0D0p: card 0, device 0, playback.
        return any(n.startswith("pcmC") and n.endswith("p") for n in os.listdir("/dev/snd"))
    except OSError:
        return False


def _title(vlc: Any, media: Any) -> str | None:
    """The ICY StreamTitle; else, for streams that carry tags (Ogg), their
    ``Artist - Title``. Title alone is not enough: libvlc puts the station's
    icy-name there, or a name made up from the URL."""
    now: str | None = media.get_meta(vlc.Meta.NowPlaying)
    if now and now.strip():
        return now.strip()
    artist: str | None = media.get_meta(vlc.Meta.Artist)
    title: str | None = media.get_meta(vlc.Meta.Title)
    return f"{artist} - {title}" if artist and title else None


def _clock(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _why_not(url: str) -> str:
    """Why a URL cannot be played, asked of the server directly: libvlc only
    says that it ended. Does not raise."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(host, parts.port, timeout=PROBE_TIMEOUT)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", path, headers={"Icy-MetaData": "0"})
        response = conn.getresponse()
        if response.status != 200:
            return f"the server answered {response.status} {response.reason}"
        kind_of = response.getheader("Content-Type") or "no Content-Type"
        return f"libvlc cannot play what the server sends ({kind_of})"
    except socket.gaierror:
        return f"cannot resolve {host}"
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT:g} s"
    except (OSError, http.client.HTTPException) as exc:
        return str(exc) or type(exc).__name__
    finally:
        conn.close()
