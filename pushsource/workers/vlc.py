"""The libvlc skeleton that conversion and loudness measurement share: the
python-vlc module, loaded on first use, and one headless instance that plays a
file to its end."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Final

from pushsource.errors import PushsourceError

#: Seconds between looks at libvlc's state while a file plays.
POLL: Final = 0.02

#: Headless batch work: no window, no sound card, no Lua scripts (they look up
#: cover art and parse playlists), nothing on stderr.
INSTANCE_OPTIONS: Final = (
    "--no-video",
    "--no-sout-video",
    "--no-sout-spu",
    "--aout=dummy",
    "--no-xlib",
    "--no-lua",
    "--no-stats",
    "--audio-resampler=soxr,any",
    "--image-duration=0",  # an image "plays" 10 s by default before libvlc gives up
    "--quiet",
)


def import_vlc() -> Any:
    """The python-vlc module. Raises PushsourceError if libvlc is missing."""
    try:
        import vlc
    except (ImportError, OSError, NotImplementedError) as exc:
        # python-vlc raises NotImplementedError when it cannot find libvlc.
        raise PushsourceError(
            f"libvlc is not available ({exc}); install libvlc5 and vlc-plugin-base"
        ) from None
    return vlc


class LibVLC:
    """One libvlc instance and the few calls a conversion makes."""

    def __init__(self) -> None:
        self._vlc = import_vlc()
        self._instance: Any = self._vlc.Instance(list(INSTANCE_OPTIONS))
        if self._instance is None:
            raise PushsourceError("libvlc failed to start (is vlc-plugin-base installed?)")

    def play_to_end(self, source: Path, options: list[bytes], *, timeout: float) -> str:
        """Play ``source`` with media options until it stops: "ended", "error"
        or "timeout". When it returns, libvlc has closed its output."""
        state = self._vlc.State
        media: Any = self._instance.media_new_path(os.fsencode(source))
        for option in options:
            media.add_option(option)
        player: Any = self._instance.media_player_new()
        player.set_media(media)
        try:
            if player.play() == -1:
                return "error"
            deadline = time.monotonic() + timeout
            while True:
                now = player.get_state()
                if now in (state.Ended, state.Stopped):
                    return "ended"
                if now == state.Error:
                    return "error"
                if time.monotonic() > deadline:
                    return "timeout"
                time.sleep(POLL)
        finally:
            player.stop()  # waits for the input thread: the sout file is closed after it
            player.release()
            media.release()

    def close(self) -> None:
        self._instance.release()
