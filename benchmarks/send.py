"""What each Send costs an output in another format: ``Reframer.frames`` (and
the trim of the copy's window inside it) over one hour of a 64 kbps output.

``python -m benchmarks.send`` plays one hour-long track's 64 kbps copy through
a Reframer in 0.1 s Sends, its window read in 6 s chunks as it plays, once
with the copy's window as it was before issue 19 (every trim copied the whole
window; kept here as the reference) and once as it is now; it checks that the
bytes out are the same and prints µs per Send. Nothing asserts a figure.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pushsource.core.effects import Alt, Chunk, Cued, Span
from pushsource.core.frames import FrameHeader, header_for
from pushsource.core.outputs import _JUMP, ALT_CHUNK, KEEP_BEHIND, Reframer, format_key

STATION = header_for(44100, 2, 128)
LOW = header_for(22050, 1, 64)
KEY = format_key(22050, 1, 64)
BATCH = 4  # station frames per Send: about 0.1 s


@dataclass(eq=False)
class OldAlt:
    """Alt before issue 19: every trim copies the whole kept window."""

    data: bytes
    ends: Sequence[int]
    header: FrameHeader
    handle: object = None
    last: bool = True
    first: int = 0
    reading: bool = False

    @property
    def loaded(self) -> int:
        return self.first + len(self.ends)

    def add(self, chunk: Chunk) -> None:
        base = len(self.data)
        self.data += chunk.data
        self.ends = [*self.ends, *(base + end for end in chunk.ends)]
        self.last = chunk.last
        self.reading = False

    def trim(self, before: int) -> None:
        drop = min(before - self.first, len(self.ends))
        if drop <= 0:
            return
        cut = self.ends[drop - 1]
        self.data = self.data[cut:]
        self.ends = [end - cut for end in self.ends[drop:]]
        self.first += drop


class OldReframer(Reframer):
    """Reframer.frames before issue 19, on OldAlt windows (the reference)."""

    def frames(self, spans: Sequence[Span]) -> tuple[bytes, int]:
        parts: list[bytes] = []
        count = 0
        for span in spans:
            alt: Any = span.track.alts.get(self.key) if span.track is not None else None
            if alt is None or span.track is None:
                count += self._quiet(span.seconds, parts)
                continue
            duration = alt.header.duration
            if span.track is not self._track or abs(self._index * duration - span.at) > (
                _JUMP * duration
            ):
                self._track = span.track
                self._alt = alt
                self._index = max(0, round(span.at / duration))
            end = span.at + span.seconds
            stop = max(self._index, round(end / duration))
            if alt.last:
                stop = min(stop, alt.loaded)
            self._index = max(self._index, alt.first)
            take = min(stop, alt.loaded)
            if take > self._index:
                at = self._index - alt.first
                begin = alt.ends[at - 1] if at else 0
                parts.append(alt.data[begin : alt.ends[take - alt.first - 1]])
                count += take - self._index
                self._index = take
            if stop > self._index:
                self.late += stop - self._index
                count += self._quiet((stop - self._index) * duration, parts)
                self._index = stop
            if alt.last and end > alt.loaded * duration:
                count += self._quiet(end - max(span.at, alt.loaded * duration), parts)
            alt.trim(self._index - round(KEEP_BEHIND / duration))
        return b"".join(parts), count


def copy_frames(seconds: float) -> list[bytes]:
    """A 64 kbps copy's frames: each its own bytes, so a wrong slice shows."""
    size = LOW.length
    count = round(seconds / LOW.duration)
    return [(i.to_bytes(4, "big") * (size // 4 + 1))[:size] for i in range(count)]


def chunk_of(frames: Sequence[bytes], last: bool) -> Chunk:
    ends, size = [], 0
    for frame in frames:
        size += len(frame)
        ends.append(size)
    return Chunk(b"".join(frames), ends, 0, last)


def play(
    frames: list[bytes], make: Callable[..., Any], reframer: Reframer
) -> tuple[float, int, str]:
    """CPU seconds in Reframer.frames over the whole copy, Sends, a digest of the bytes."""
    per = round(ALT_CHUNK / LOW.duration)
    first = chunk_of(frames[:per], last=len(frames) <= per)
    alt = make(first.data, list(first.ends), LOW, handle="copy", last=first.last)
    track = Cued(None, Path("long.mp3"), "Long", None, 128, STATION, first, alts={KEY: alt})
    read, at, sends, cpu = per, 0.0, 0, 0.0
    digest = hashlib.sha256()
    end = len(frames) * LOW.duration
    while at < end:
        seconds = BATCH * STATION.duration
        started = time.perf_counter()
        data, _ = reframer.frames([Span(track, at, seconds)])
        cpu += time.perf_counter() - started
        digest.update(data)
        at += seconds
        sends += 1
        if reframer.wanted() is not None:  # the workers' read, done at once
            nxt = frames[read : read + per]
            read += len(nxt)
            alt.add(chunk_of(nxt, last=read >= len(frames)))
    return cpu, sends, digest.hexdigest()


def main() -> None:
    frames = copy_frames(3600.0)
    old_cpu, sends, old_digest = play(frames, OldAlt, OldReframer(KEY, LOW))
    new_cpu, new_sends, new_digest = play(frames, Alt, Reframer(KEY, LOW))
    assert (sends, old_digest) == (new_sends, new_digest), "the bytes out differ"
    print(f"one hour of a 64 kbps output, {sends} Sends of {BATCH} station frames:")
    print(f"  Reframer.frames + trim, before: {old_cpu / sends * 1e6:6.1f} µs per Send")
    print(f"  Reframer.frames + trim, after:  {new_cpu / sends * 1e6:6.1f} µs per Send")
    print("  the same bytes out: yes")


if __name__ == "__main__":
    main()
