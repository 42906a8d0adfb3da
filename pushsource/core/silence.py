"""Dead air: digital silence going out, told from the frames' side
information without decoding anything.

What counts as silence
----------------------

A Layer III frame is silent when the part2_3_length of every granule of every
channel is 0: no scale factors, no Huffman data, every spectral value 0, so it
decodes to zeros (but for the overlap tail of the frame before it, a few
milliseconds). :func:`pushsource.core.gain.frame_silent` reads those fields
where ``gain_fields`` finds the gains (one cached plan per header word); the
workers mark each chunk's silent frames (``Chunk.silent``) as they read it, so
the engine's thread only looks at runs already found.

Measured (10 s of each input; per frame, every granule and channel; the
LAME info frame and 3 frames at each end left out; ``global_gain`` is that of
the granules with data):

=========================  ===============  ================  =================
encoder                    digital silence  dither -90 dBFS   tone -70 dBFS
=========================  ===============  ================  =================
lame -b 128                all 0, gain 210  none silent, 123+  none silent, 117+
lame -V2                   all 0, gain 210  none silent, 136+  none silent, 138+
lame -m m -b 64 (mono)     all 0, gain 210  none silent, 130+  none silent, 125+
lame 22.05 kHz (MPEG-2)    all 0, gain 210  none silent, 125+  none silent, 121+
ffmpeg libmp3lame 128k     all 0, gain 210  none silent, 123+  none silent, 117+
sox -C 128                 all 0, gain 210  none silent, 123+  none silent, 117+
=========================  ===============  ================  =================

A -100 dBFS tone (under half a 16-bit step: zeros once quantized) encodes as
digital silence too; a full-scale tone's frames have data (some of its
granules are 0 in one channel: the side channel of a centred tone, hence
"every channel"). Near-silence is never silent here, and no ``global_gain``
rule could tell it from music: its gains (117 and up) overlap a -6 dBFS
tone's (131-154). So the rule is part2_3_length 0 everywhere and nothing
else; loudness levelling leaves a global_gain of 0 at 0 and never touches
part2_3_length, so a levelled track is silent exactly where its file is.
(Measured with sox -D, no dither: sox dithers 16-bit output by default, and
its 1-LSB noise is not digital silence.) That near-silence is dead air all
the same: the workers find it by decoding, only where the gains allow
(pushsource.workers.quiet), and mark it with the digital silence.

What goes out as silence, for the alarm: a track's silent frames, and the
silence the station makes when a track's frames are late or a DJ's are.
Idle silence (the queue empty, ``idle = "silence"``) is not dead air: the
station is on air with nothing to play, as chosen, and shows no track; a run
of silence ends there (without a "sound is back" line). A DJ's frames count
as sound (they are not looked at on the engine's thread); the silence put in
when a DJ is late counts.

No file, socket or clock lives here.
"""

from __future__ import annotations

import logging

log = logging.getLogger("pushsource")


class DeadAir:
    """The run of silence going out, in the machine's time. ``since`` is when
    its first silent frame is due to be heard (None while there is sound);
    ``alarm`` seconds of it make one warning (0: never)."""

    __slots__ = ("alarm", "since", "warned")

    def __init__(self, alarm: float = 0.0) -> None:
        self.alarm = alarm
        self.since: float | None = None
        self.warned = False

    def quiet(self, at: float) -> None:
        """Silence goes out from ``at`` (due time of its first frame)."""
        if self.since is None:
            self.since = at

    def sound(self, at: float) -> None:
        """Sound goes out from ``at``: the run, if any, is over."""
        since = self.since
        if since is None:
            return
        if self.warned:
            log.warning("sound is back after %.0f s of silence", max(0.0, at - since))
        self.since = None
        self.warned = False

    def end(self, why: str) -> None:
        """The run ends without sound (idle, off air): no silence goes out now."""
        if self.since is not None and self.warned:
            log.info("dead air over: %s", why)
        self.since = None
        self.warned = False

    def check(self, now: float, what: str) -> None:
        """Warn once per run when it has lasted ``alarm`` seconds."""
        since = self.since
        if since is None or self.warned or not self.alarm or now - since < self.alarm:
            return
        self.warned = True
        log.warning("dead air: %.0f s of silence going out (%s)", now - since, what)

    def seconds(self, now: float) -> float:
        """How long the run has been heard at ``now``; 0 while there is sound."""
        since = self.since
        return 0.0 if since is None else max(0.0, now - since)
