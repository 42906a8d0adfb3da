"""One output's connection policy (core.outputs.OutputLink, loss) in virtual
time: the backoff, what counts as a failed attempt, giving up, the lines it
says, and what a lost output means for its station. The engine's side (real
sockets on a real engine) is in test_outputs.py."""

from __future__ import annotations

import logging
import random

import pytest

from pushsource.core.outputs import OUTPUT_LOG_EVERY, Loss, OutputLink, loss
from pushsource.core.station import DOWN_RETRY, SHORT_LIVED, Retry
from pushsource.errors import AuthenticationError, IcecastError, MountInUseError, WrongServerError

REFUSED = MountInUseError("Icecast answered 403: Mountpoint in use", status=403)
DOWN = IcecastError("could not connect to 127.0.0.1:8000: refused")


def link() -> OutputLink:
    return OutputLink(label="/rock-64 (64 kbps)", rng=random.Random(7))


def test_refusals_back_off_exponentially_up_to_the_cap() -> None:
    out, retry = link(), Retry(first=1.0, cap=8.0)
    delays = []
    for attempt in range(1, 7):
        out.lost(100.0 + attempt, REFUSED)
        assert out.failures == attempt
        delay = out.next_try(100.0 + attempt, REFUSED, retry)
        assert delay is not None
        delays.append(delay)
    for attempt, delay in enumerate(delays, 1):
        base = min(8.0, 2 ** (attempt - 1))
        assert base / 2 <= delay <= base
    assert out.state == "reconnecting" and out.error == str(REFUSED)
    assert out.attempts == 6


def test_a_server_that_does_not_answer_is_tried_again_about_once_a_second() -> None:
    out = link()
    for attempt in range(1, 10):
        out.lost(float(attempt), DOWN)
        delay = out.next_try(float(attempt), DOWN, Retry(first=1.0, cap=30.0))
        assert delay is not None and DOWN_RETRY * 0.8 <= delay <= DOWN_RETRY


def test_a_drop_soon_after_being_taken_is_one_more_failed_attempt() -> None:
    out = link()
    out.lost(0.0, REFUSED)
    out.lost(1.0, REFUSED)
    assert out.accepted(5.0) is True  # it had failed since it was last on air
    assert out.attempts == 0 and out.state == "on air" and out.last_error is None
    assert out.lost(5.0 + SHORT_LIVED / 2, DOWN) is True  # was on air...
    assert out.failures == 3  # ...but too briefly to reset the backoff
    out.accepted(20.0)
    out.lost(20.0 + SHORT_LIVED + 0.1, DOWN)
    assert out.failures == 1  # on air for a while: a fresh outage


def test_a_wrong_password_is_never_tried_again() -> None:
    out = link()
    assert out.lost(0.0, AuthenticationError("Icecast answered 401")) is False
    assert out.refused and out.dead and out.state == "failed"
    assert out.attempts == 0  # not an attempt to come: it is over
    assert out.next_try(0.0, AuthenticationError("Icecast answered 401"), Retry()) is None


def test_a_wrong_server_is_never_tried_again_unless_icecast_took_it_before() -> None:
    wrong = WrongServerError("not an Icecast server: 127.0.0.1:8000 answered 404 Not Found", 404)
    out = link()
    out.lost(1.0, wrong)
    assert out.refused and out.dead and out.next_try(1.0, wrong, Retry()) is None
    was = link()  # Icecast took it, then a proxy's page for a while: retried
    was.accepted(0.0)
    was.lost(10.0, wrong)
    assert not was.refused and was.next_try(10.0, wrong, Retry()) is not None


def test_it_gives_up_past_the_limit_with_one_line(caplog: pytest.LogCaptureFixture) -> None:
    out, retry = link(), Retry(limit=2)
    caplog.set_level(logging.INFO, logger="pushsource")
    for t in (0.0, 1.0):
        out.lost(t, REFUSED)
        assert out.next_try(t, REFUSED, retry) is not None
    out.lost(2.0, REFUSED)
    assert out.next_try(2.0, REFUSED, retry) is None
    assert out.dead and out.error == f"giving up after 3 attempts: {REFUSED}"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        f"output /rock-64 (64 kbps): giving up: giving up after 3 attempts: {REFUSED}"
    ]


def test_an_outage_says_so_once_a_minute_and_when_the_reason_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out, retry = link(), Retry()
    caplog.set_level(logging.INFO, logger="pushsource")
    said = []
    t = 0.0
    for error in [DOWN] * 35 + [REFUSED] + [DOWN] * 40:
        out.lost(t, error)
        out.next_try(t, error, retry)
        said += [(t, r.getMessage()) for r in caplog.records]
        caplog.clear()
        t += 2.0
    times = [when for when, _ in said]
    # The first failure, the first one a minute later, the new reason, the old
    # one again (a change too), then a minute after that.
    assert times == [0.0, OUTPUT_LOG_EVERY, 70.0, 72.0, 72.0 + OUTPUT_LOG_EVERY]
    assert all(line.startswith("output /rock-64 (64 kbps): ") for _, line in said)
    assert "403" in said[2][1] and "refused" in said[3][1]


@pytest.mark.parametrize(
    ("outputs", "up", "others_on_air", "others_connected", "what"),
    [
        (1, True, False, False, Loss.STATION),  # its only output: the machine hears it
        (1, False, False, False, Loss.STATION),
        (2, True, True, True, Loss.ALONE),  # the others play on: it reconnects alone
        (2, False, False, True, Loss.WAIT),  # the station is still connecting elsewhere
        (2, True, False, True, Loss.OFF_AIR),  # others only connecting: nobody hears it
        (3, True, False, False, Loss.OFF_AIR),
        (2, False, False, False, Loss.OFF_AIR),
    ],
)
def test_what_a_lost_output_means_for_its_station(
    outputs: int, up: bool, others_on_air: bool, others_connected: bool, what: Loss
) -> None:
    got = loss(
        outputs=outputs, up=up, others_on_air=others_on_air, others_connected=others_connected
    )
    assert got is what
