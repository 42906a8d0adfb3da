"""Titles inside the stream: ICY metadata blocks between the audio bytes, sans-IO.

A source whose request carries ``Icy-MetaInt: N`` sends, after every N audio
bytes, one metadata block: a length byte (the block's size / 16), then
``StreamTitle='...';`` padded with NUL bytes to that size, or a lone zero byte
when the title has not changed. Icecast 2.4.4, 2.5 and icecast-kh all strip the
blocks from the audio, take the titles byte for byte (UTF-8 needs no
``<charset>``) and log nothing, so this is the one title path that works on a
stock config of every server. A block that is not ``StreamTitle=`` ends the
source on all of them, and a title ends at its first ``';``: what cannot
travel is escaped or cut here.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from pushsource.core.titles import cut_bytes, safe_title

#: Audio bytes between two blocks. Small, so a title lands within 64 ms (at
#: 128 kbps) of its track's first frame; each costs one byte when unchanged.
METAINT: Final = 1024
#: The longest block: the length byte counts 16-byte units, at most 255.
BLOCK_LIMIT: Final = 255 * 16
_PREFIX: Final = b"StreamTitle='"
_SUFFIX: Final = b"';"
#: The longest title, in UTF-8 bytes, that fits in one block with its NUL:
#: Icecast keeps all of a block but its last byte, which must be padding (a
#: block that ends on its ``;`` loses it, and with it the title).
TITLE_LIMIT: Final = BLOCK_LIMIT - len(_PREFIX) - len(_SUFFIX) - 1


def icy_title(title: str) -> bytes:
    """A title as it can travel in a block: as an admin title is made safe
    (control characters a space, no quote that opens another field), every
    ``';`` left (which would end it early) with a right single quote for its
    apostrophe, and more than TITLE_LIMIT bytes cut between characters with an
    ellipsis."""
    text = safe_title(title).replace("';", "\u2019;")
    return cut_bytes(text, TITLE_LIMIT).encode("utf-8", "replace")


def icy_block(title: str | None) -> bytes:
    """One metadata block: the title's, or the one zero byte of "no change"."""
    if title is None:
        return b"\x00"
    text = _PREFIX + icy_title(title) + _SUFFIX
    units = len(text) // 16 + 1  # at least one NUL after the text
    return bytes([units]) + text.ljust(units * 16, b"\x00")


class IcyWriter:
    """Puts metadata blocks into one connection's audio.

    :meth:`title` says from which audio byte a title holds; :meth:`wrap` turns
    audio into what goes on the wire, each title in the first block at or after
    its byte (so old audio never carries a new title). :meth:`audio_in` maps a
    count of wire bytes back to audio bytes, for resuming after a drop.
    """

    def __init__(self, interval: int = METAINT, *, remember: int = 4096) -> None:
        """``remember``: how many of the last blocks :meth:`audio_in` knows
        exactly; enough to cover every wire byte that may still be unsent."""
        if interval <= 0:
            raise ValueError("the metadata interval must be positive")
        self.interval = interval
        self._audio = 0  # audio bytes wrapped so far
        self._wire = 0  # wire bytes made so far
        self._titles: deque[tuple[int, str]] = deque()  # (from audio byte, title), in order
        self._sent: str | None = None  # the last title put in a block
        #: (wire offset where a block starts, its length), for audio_in(); only
        #: the recent ones matter (a socket holds a few KiB unsent).
        self._blocks: deque[tuple[int, int]] = deque(maxlen=remember)
        self._meta_before = 0  # metadata bytes in blocks that left _blocks

    @property
    def audio(self) -> int:
        """Audio bytes wrapped so far."""
        return self._audio

    def title(self, title: str, at: int = 0) -> None:
        """``title`` holds from byte ``at`` of the next :meth:`wrap`'s audio."""
        where = self._audio + max(0, at)
        while self._titles and self._titles[-1][0] >= where:
            self._titles.pop()  # superseded before it was due
        self._titles.append((where, title))

    def wrap(self, data: bytes) -> bytes:
        """The wire bytes for ``data``: the audio with the blocks due in it."""
        # On every send of every station: locals, and no title work unless one waits.
        interval, audio, size = self.interval, self._audio, len(data)
        room = interval - audio % interval
        if size < room:
            self._audio = audio + size
            self._wire += size
            return data
        parts: list[bytes] = []
        blocks, wire, start = self._blocks, self._wire, 0
        while size - start >= room:
            end = start + room
            parts.append(data[start:end])
            audio += room
            wire += room
            start, room = end, interval
            self._audio = audio  # what _due() compares titles with
            block = icy_block(self._due()) if self._titles else b"\x00"
            if len(blocks) == blocks.maxlen:
                self._meta_before += blocks[0][1]
            blocks.append((wire, len(block)))
            wire += len(block)
            parts.append(block)
        if start < size:
            parts.append(data[start:])
            audio += size - start
            wire += size - start
        self._audio, self._wire = audio, wire
        return b"".join(parts)

    def go_on(self, audio: int, wire: int, last: str | None) -> None:
        """Carry on a stream another writer began (an upgrade in place): so
        many audio and wire bytes are out, ``last`` the title in force. Only
        on a fresh writer; what it remembers of blocks starts here."""
        self._audio, self._wire, self._sent = audio, wire, last

    @property
    def last_title(self) -> str | None:
        """The last title put in a block."""
        return self._sent

    def pending(self) -> list[tuple[int, str]]:
        """Titles waiting for their byte: (audio bytes from now, title)."""
        return [(where - self._audio, title) for where, title in self._titles]

    @property
    def wire(self) -> int:
        """Wire bytes made (or counted) so far."""
        return self._wire

    def advance(self, size: int) -> None:
        """Count ``size`` audio bytes as :meth:`wrap` would, making none: a
        meter of where the wire is (the station's pacing aligns its sends
        with Icecast's 1400-byte relay blocks, which count wire bytes)."""
        if not self._titles:  # blocks of one byte: arithmetic
            audio, interval = self._audio, self.interval
            self._audio = audio + size
            self._wire += size + (audio + size) // interval - audio // interval
            return
        while size > 0:
            step = min(size, self.interval - self._audio % self.interval)
            size -= step
            self._audio += step
            self._wire += step
            if self._audio % self.interval == 0:
                title = self._due()
                self._wire += 1 if title is None else len(icy_block(title))

    def audio_in(self, wire: int) -> int:
        """How many audio bytes the first ``wire`` wire bytes hold; exact
        within the last ``remember`` blocks."""
        wire = max(0, min(wire, self._wire))
        meta = self._meta_before
        for begin, length in self._blocks:
            if begin >= wire:
                break
            meta += min(length, wire - begin)
        return wire - meta

    def _due(self) -> str | None:
        """The title for a block at this point, if it is news."""
        due: str | None = None
        while self._titles and self._titles[0][0] <= self._audio:
            due = self._titles.popleft()[1]
        if due is None or due == self._sent:
            return None
        self._sent = due
        return due
