"""Real-time pacing as a pure function of the audio sent so far.

Frame k of a connection is due at ``t0 + (audio before frame k)`` on a monotonic
clock. The audio time is kept exactly (whole samples per sample rate, summed as
a fraction), so there is no drift per track, per batch or per hour. Nothing in
here reads a clock or sleeps: the caller passes ``now`` in.
"""

from __future__ import annotations

from fractions import Fraction


class Pacer:
    """The schedule of one connection.

    ``lead`` is how far ahead of real time frames may be handed to Icecast (so
    it never starves while we sleep); ``batch`` is how long we sleep between
    hand-overs, so frames go out in batches of about ``batch`` seconds and we
    wake up per batch, not per frame.
    """

    def __init__(self, start: float, *, lead: float = 0.5, batch: float = 0.05) -> None:
        if lead <= 0 or batch <= 0 or batch > lead:
            raise ValueError(f"need 0 < batch <= lead, got lead={lead} batch={batch}")
        self.start = start
        self.lead = lead
        self.batch = batch
        self._done = Fraction(0)  # audio of finished sample-rate runs, in seconds
        self._rate = 0  # sample rate of the current run
        self._samples = 0  # samples sent in the current run
        self._done_float = 0.0

    @property
    def sent(self) -> float:
        """Seconds of audio sent so far."""
        # Recomputed from integer counts each time: rounding never accumulates.
        if self._rate == 0:
            return self._done_float
        return self._done_float + self._samples / self._rate

    def _sent_exact(self) -> Fraction:
        if self._rate == 0:
            return self._done
        return self._done + Fraction(self._samples, self._rate)

    def add(self, samples: int, sample_rate: int) -> None:
        """Account for one frame handed to Icecast."""
        if sample_rate != self._rate:
            self._done = self._sent_exact()
            self._done_float = float(self._done)
            self._rate = sample_rate
            self._samples = 0
        self._samples += samples

    def due(self) -> float:
        """Monotonic time at which the next frame is due."""
        return self.start + self.sent

    def ahead(self, now: float) -> float:
        """How far the audio sent runs ahead of real time (negative: behind)."""
        return self.sent - (now - self.start)

    def may_send(self, now: float) -> bool:
        """Whether the next frame may go now: it is due within ``lead``."""
        return self.due() <= now + self.lead

    def frames_due(self, now: float, samples: int, sample_rate: int) -> int:
        """How many frames of ``samples`` at ``sample_rate`` may go now: as many
        as may_send() and add() frame by frame would let through, with the same
        arithmetic, so batches are the same as one frame at a time."""
        start, bound = self.start, now + self.lead
        if sample_rate == self._rate:
            done, before = self._done_float, self._samples
            # may_send(), the same sum: this runs on every batch of every station.
            if start + (done + before / sample_rate) > bound:
                return 0
        else:  # what add() sets up for a new rate
            if not self.may_send(now):
                return 0
            done, before = float(self._sent_exact()), 0
        # Frame k (the first is frame 0) is due in time when
        # start + (done + (before + k * samples) / sample_rate) <= bound.
        k = max(0, int(((bound - start - done) * sample_rate - before) / samples))
        while k > 0 and start + (done + (before + k * samples) / sample_rate) > bound:
            k -= 1
        while start + (done + (before + (k + 1) * samples) / sample_rate) <= bound:
            k += 1
        return k + 1

    def wake_at(self) -> float:
        """When to wake up for the next batch: ``batch`` after the next frame
        becomes sendable, so one wake-up hands over about ``batch`` of audio."""
        return self.due() - self.lead + self.batch
