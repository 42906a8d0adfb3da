"""The pacer is pure: it is given times and never reads a clock."""

from __future__ import annotations

from fractions import Fraction

import pytest

from pushsource.pacer import Pacer


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
