"""Outputs in another format: one station's timeline in an output's own frames.

The station's machine makes one stream of Sends in the station's format; each
Send says what it carries (:class:`~pushsource.core.station.Span`: so many
seconds of a track from a point in it, or of silence). An output in another
format (64 kbps mono, say) sends, for each Send, the frames of its own copy of
that track (:class:`~pushsource.core.station.Alt`, converted ahead on the
workers) that cover the same seconds, and its own silence for silence. Its
place in a track is taken from the span's time, not counted, so it cannot
drift: a track's first frame goes out in the same Send on every output, and an
output that rejoins after an outage starts at the station's current position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from pushsource.core.frames import FrameHeader, silent_frame
from pushsource.core.station import ICECAST_BLOCK, Cued, Span

#: An output's place in a track further than this many frames from where the
#: station is (a rewind after a broken connection, a resumed track) is moved.
_JUMP: Final = 2


class Reframer:
    """The frames one output in another format sends for the station's Sends."""

    def __init__(self, key: str, header: FrameHeader) -> None:
        self.key = key  # which Alt of a track is this output's
        self._header = header  # the output's format: its silence
        self._silence = silent_frame(header)
        self._track: Cued | None = None
        self._index = 0  # next frame of the track's Alt
        self._debt = 0.0  # seconds of silence owed, less than one frame

    def frames(self, spans: Sequence[Span]) -> tuple[bytes, int]:
        """The output's bytes for one Send, and how many frames they are."""
        parts: list[bytes] = []
        count = 0
        for span in spans:
            alt = span.track.alts.get(self.key) if span.track is not None else None
            if alt is None or span.track is None:
                count += self._quiet(span.seconds, parts)
                continue
            duration = alt.header.duration
            ends = alt.ends
            if span.track is not self._track or abs(self._index * duration - span.at) > (
                _JUMP * duration
            ):
                self._track = span.track
                self._index = min(len(ends), max(0, round(span.at / duration)))
            end = span.at + span.seconds
            stop = min(len(ends), max(self._index, round(end / duration)))
            if stop > self._index:
                first = ends[self._index - 1] if self._index else 0
                parts.append(alt.data[first : ends[stop - 1]])
                count += stop - self._index
                self._index = stop
            if end > len(ends) * duration:  # its copy is shorter: silence for the rest
                count += self._quiet(end - max(span.at, len(ends) * duration), parts)
        return b"".join(parts), count

    def closing(self) -> bytes:
        """Silence to send before a clean close: Icecast drops the last partial
        block, which must not be the end of the audio."""
        return self._silence * (math.ceil(ICECAST_BLOCK / len(self._silence)) + 1)

    def _quiet(self, seconds: float, parts: list[bytes]) -> int:
        self._debt += seconds
        count = int(self._debt / self._header.duration + 1e-9)
        if count > 0:
            self._debt -= count * self._header.duration
            parts.append(self._silence * count)
        return max(0, count)


def format_key(sample_rate: int, channels: int, bitrate: int) -> str:
    """The key of an output format, for Cued.alts and the cache: "64k-22050-1"."""
    return f"{bitrate}k-{sample_rate}-{channels}"
