"""The sans-IO parts of a harbor no one can lock: the credentials check
(digests compared for every user, whatever the lengths; a user packed into a
SHOUTcast password), the DJ's titles bounded, and the room the station's
buffer has for the DJ's frames (what the harbor's back-pressure reads)."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

import pytest

from pushsource.core import harbor as proto
from pushsource.core import live as core_live
from pushsource.core.effects import Phase
from pushsource.core.frames import parse_header
from pushsource.engine.harbor import LiveInput
from pushsource.workers.feed import ListSource
from tests.support.sim import make, write
from tests.synth import make_frames

USERS = {"alice": "s3cret-pw", "bob": "a-much-longer-password-for-bob", "carol": "c"}


def live_input() -> LiveInput:
    return LiveInput(
        station="rock",
        mount="/live",
        users=USERS,
        sample_rate=44100,
        channels=2,
        machine=None,
        step=lambda *a: None,
    )


@pytest.mark.parametrize(
    ("user", "password"),
    [
        ("alice", "x"),  # a known user, a short wrong password
        ("alice", "s3cret-pw"),  # right
        ("nobody", "s3cret-pw"),  # an unknown user
        (None, "c"),  # SHOUTcast: no user
        ("source", "bob:" + "z" * 500),  # a packed user, a long password
    ],
)
def test_every_user_is_compared_by_digest_whatever_the_lengths(
    monkeypatch: pytest.MonkeyPatch, user: str | None, password: str
) -> None:
    """Today the comparison took the password bytes as they were (an early
    return on a length mismatch) and skipped the user name when the password
    was wrong."""
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    live_input().check(user, password)
    assert calls and all(c == (32, 32) for c in calls), calls
    # The same work for any input: every user's name and password, for each
    # way of reading the credentials (as sent, and a user packed in the password).
    assert len(calls) == 4 * len(USERS)


def test_the_right_user_is_found_and_a_packed_one_too() -> None:
    live = live_input()
    assert live.check("alice", "s3cret-pw") == "alice"
    assert live.check("bob", "s3cret-pw") is None
    assert live.check(None, "s3cret-pw") == "alice"
    assert live.check(None, "alice:s3cret-pw") == "alice"
    assert live.check(None, "alice,s3cret-pw") == "alice"
    assert live.check("source", "alice:s3cret-pw") == "alice"
    assert live.check("", "bob,a-much-longer-password-for-bob") == "bob"
    assert live.check(None, "alice:nope") is None
    assert live.check("carol", "alice:s3cret-pw") is None  # a named user is taken as named
    assert live.check(None, None) is None


def test_titles_sent_with_no_audio_are_bounded_and_the_latest_kept(tmp_path: Path) -> None:
    """Today every title a DJ sends before audio stays in Live.titles."""
    write(tmp_path / "a.mp3", make_frames(200))
    sim = make(ListSource([tmp_path / "a.mp3"]))
    m = sim.machine
    m.live_start(sim.now, "alice", "First")
    for i in range(5000):
        m.live_title(sim.now, f"Title {i}")
    live = m.live
    assert live is not None
    assert len(live.titles) <= core_live.MAX_TITLES
    assert live.titles[-1][1] == "Title 4999"
    # A title longer than any listener's metadata can hold is cut.
    m.live_title(sim.now, "x" * 100_000)
    assert live.titles[-1][1] is not None
    assert len(live.titles[-1][1]) <= core_live.MAX_TITLE


def test_the_room_for_the_djs_frames_is_what_hold_would_keep(tmp_path: Path) -> None:
    """The harbor stops reading when the room is gone, so ``_hold`` never drops."""
    write(tmp_path / "a.mp3", make_frames(200))
    sim = make(ListSource([tmp_path / "a.mp3"]))
    m = sim.machine
    assert m.room_for_dj() > 1000  # no DJ: no limit
    m.live_start(sim.now, "alice")
    frames = make_frames(400, seed=5)
    header = parse_header(frames[0])
    assert header is not None
    room = m.room_for_dj()
    assert 0 < room < 400
    m.live_audio(sim.now, header, frames[:room])
    live = m.live
    assert live is not None and live.dropped == 0
    assert m.room_for_dj() == 0


@pytest.mark.parametrize(
    ("user", "password", "packed", "claimed"),
    [
        (None, "alice:pw", ("alice", "pw"), "alice"),
        (None, "alice,pw:with:colons", ("alice", "pw:with:colons"), "alice"),
        ("source", "bob:pw", ("bob", "pw"), "bob"),
        ("", "bob,pw", ("bob", "pw"), "bob"),
        ("alice", "x:y", None, "alice"),  # a named user: the password is taken whole
        (None, "plain", None, ""),
        (None, ":pw", None, ""),  # no user before the separator
        ("source", "plain", None, ""),
    ],
)
def test_a_packed_user_is_read_from_the_password(
    user: str | None, password: str, packed: tuple[str, str] | None, claimed: str
) -> None:
    assert proto.unpack(user, password) == packed
    assert proto.claimed_user(user, password) == claimed


def test_while_the_air_is_down_the_djs_newest_frames_are_kept_not_held_back(
    tmp_path: Path,
) -> None:
    """Backing off from Icecast: no back-pressure (their encoder would fill
    with audio that airs late); the buffer keeps their newest frames."""
    write(tmp_path / "a.mp3", make_frames(200))
    sim = make(ListSource([tmp_path / "a.mp3"]))
    m = sim.machine
    m.live_start(sim.now, "alice")
    assert m.room_for_dj() < 400
    m.phase = Phase.BACKOFF
    assert m.room_for_dj() > 1000
