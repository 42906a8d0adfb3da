"""The pacer is pure: it is given times and never reads a clock."""

from __future__ import annotations

from fractions import Fraction

import pytest

from pushsource.core.pacer import Pacer


def test_due_times_follow_samples_exactly_for_an_hour() -> None:
    pacer = Pacer(100.0, lead=0.5, batch=0.05)
    frames = 3600 * 44100 // 1152
    for _ in range(frames):
        pacer.add(1152, 44100)
    exact = Fraction(frames * 1152, 44100)
    assert abs(pacer.due() - (100 + float(exact))) < 1e-9


def test_rate_changes_keep_the_absolute_schedule() -> None:
    pacer = Pacer(0.0, lead=0.5, batch=0.05)
    expected = Fraction(0)
    for samples, rate, count in [
        (1152, 44100, 1000),
        (576, 22050, 777),
        (1152, 48000, 333),
        (1152, 44100, 5),
    ]:
        for _ in range(count):
            pacer.add(samples, rate)
        expected += Fraction(samples * count, rate)
    assert abs(pacer.sent - float(expected)) < 1e-9


def test_may_send_holds_frames_to_the_lead() -> None:
    pacer = Pacer(10.0, lead=0.5, batch=0.05)
    sent = 0
    while pacer.may_send(10.0):
        pacer.add(1152, 44100)
        sent += 1
    # Frames due up to t0 + lead go at once: frame k is due at k * 26.1 ms.
    assert sent == int(0.5 / (1152 / 44100)) + 1
    assert pacer.ahead(10.0) <= 0.5 + 1152 / 44100
    assert not pacer.may_send(10.0)
    wake = pacer.wake_at()
    assert pacer.may_send(wake) and wake == pytest.approx(pacer.due() - 0.5 + 0.05)


def test_ahead_is_negative_when_behind() -> None:
    pacer = Pacer(0.0, lead=0.5, batch=0.05)
    pacer.add(44100, 44100)
    assert pacer.ahead(3.0) == pytest.approx(-2.0)


@pytest.mark.parametrize(("lead", "batch"), [(0, 0.05), (0.5, 0), (0.1, 0.2)])
def test_bad_settings_are_refused(lead: float, batch: float) -> None:
    with pytest.raises(ValueError):
        Pacer(0.0, lead=lead, batch=batch)


def one_by_one(pacer: Pacer, now: float, samples: int, rate: int) -> int:
    count = 0
    while pacer.may_send(now):
        pacer.add(samples, rate)
        count += 1
    return count


@pytest.mark.parametrize(
    ("samples", "rate"), [(1152, 44100), (576, 22050), (384, 48000), (1152, 8000)]
)
def test_frames_due_lets_through_what_one_by_one_would(samples: int, rate: int) -> None:
    # Two pacers in lockstep: one asks frames_due() and adds in bulk, the other
    # adds frame by frame; their batches and schedules must never differ.
    bulk, single = Pacer(123.456, lead=0.5, batch=0.05), Pacer(123.456, lead=0.5, batch=0.05)
    now = 123.456
    for step in range(3000):
        if step % 500 == 499:  # a track at another rate now and then
            bulk.add(1152, 32000)
            single.add(1152, 32000)
        count = bulk.frames_due(now, samples, rate)
        assert count == one_by_one(single, now, samples, rate)
        bulk.add(count * samples, rate)
        assert bulk.due() == single.due() and not bulk.may_send(now)
        now = bulk.wake_at() + (step % 7) * 0.013  # late wake-ups too
