"""The reload's plan (pushsource.ops.reload): pure, no sockets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pushsource.ops.config import load_config
from pushsource.ops.reload import (
    Plan,
    control_change,
    plan,
    refusal,
    station_change,
    station_keys,
)
from pushsource.ops.settings import (
    ControlSettings,
    LiveSettings,
    OutputSettings,
    StationSettings,
)


def settings(key: str, **values: object) -> StationSettings:
    return StationSettings(
        folder=Path("/music") / key,
        url=f"icecast://source:hackme@127.0.0.1:8000/{key}",
        id=key,
        **values,  # type: ignore[arg-type]
    )


LIVE = LiveSettings(("127.0.0.1", 8010), "/live", (("alice", "one"),))


def test_the_hidden_check_b_removed_c_added_a_as_it_was() -> None:
    a, b, c = settings("a"), settings("b"), settings("c")
    todo = plan([a, b], [a, c])
    assert todo.added == (c,)
    assert todo.removed == ("b",)
    assert todo.restarted == () and todo.updated == ()
    assert todo.unchanged == ("a",)
    assert todo.order == ("a", "c")
    assert todo.control == "same"
    assert todo.summary() == "reload: 1 added, 1 removed, 0 restarted, 1 unchanged"


def test_a_table_read_again_as_it_was_is_not_touched() -> None:
    # Read again, the settings are new objects: equal is what counts.
    a = settings("a", name="Rock", outputs=(OutputSettings("icecast://h:8000/a-64", bitrate=64),))
    again = dataclasses.replace(a)
    assert again is not a
    todo = plan([a], [again])
    assert todo.unchanged == ("a",) and todo.changes_nothing


def test_any_key_changed_restarts_that_station_alone() -> None:
    a, b = settings("a"), settings("b")
    for change in (
        {"name": "Bee"},
        {"bitrate": 192},
        {"loudness": -18.0},
        {"outputs": (OutputSettings("icecast://h:8000/b-64", bitrate=64),)},
        {"folder": Path("/elsewhere")},
        {"password": "new"},
        {"live": LIVE},
    ):
        new_b = dataclasses.replace(b, **change)  # type: ignore[arg-type]
        todo = plan([a, b], [a, new_b])
        assert todo.restarted == (new_b,), change
        assert todo.unchanged == ("a",)
        assert todo.summary() == "reload: 0 added, 0 removed, 1 restarted, 1 unchanged"


def test_only_the_dj_users_changed_is_taken_in_place() -> None:
    a = settings("a", live=LIVE)
    more = dataclasses.replace(LIVE, users=(("alice", "one"), ("bob", "two")))
    new_a = dataclasses.replace(a, live=more)
    assert station_change(a, new_a) == ("live.users",)
    todo = plan([a], [new_a])
    assert todo.updated == ((new_a, ("live.users",)),)
    assert todo.restarted == ()
    assert todo.summary().endswith(", 1 updated in place")
    # Users and anything else: the station restarts.
    moved = dataclasses.replace(more, listen=("127.0.0.1", 8011))
    assert station_change(a, dataclasses.replace(a, live=moved)) is None
    assert station_change(a, dataclasses.replace(new_a, name="x")) is None


def test_a_password_file_rewritten_restarts_its_station() -> None:
    # The table names the file; what it holds is compared apart.
    a = settings("a", password=None, password_file=Path("/etc/a.password"))
    todo = plan([a], [a], before={"a": ("old",)}, now={"a": ("new",)})
    assert todo.restarted == (a,)
    assert plan([a], [a], before={"a": ("same",)}, now={"a": ("same",)}).unchanged == ("a",)


def test_a_station_that_stopped_with_an_error_is_tried_again() -> None:
    a, b = settings("a"), settings("b")
    todo = plan([a, b], [a, b], ended={"b": True, "a": False})
    assert todo.restarted == (b,) and todo.unchanged == ("a",)


def test_identity_is_the_id() -> None:
    # The same folder and mount under another id is another station.
    a = settings("a")
    renamed = dataclasses.replace(a, id="rock")
    todo = plan([a], [renamed])
    assert todo.added == (renamed,) and todo.removed == ("a",)


def test_control_changes() -> None:
    here = ControlSettings("127.0.0.1", 8700, "t")
    assert control_change(here, dataclasses.replace(here)) == "same"
    assert control_change(here, dataclasses.replace(here, token="u")) == "update"
    assert control_change(here, dataclasses.replace(here, allowed_hosts=("r.example",))) == "update"
    assert control_change(here, dataclasses.replace(here, port=8701)) == "restart"
    assert control_change(None, here) == "start"
    assert control_change(here, None) == "stop"
    todo = plan([settings("a")], [settings("a")], control=(here, None))
    assert todo.control == "stop" and not todo.changes_nothing


def test_keys_named_for_the_log_never_values() -> None:
    a = settings("a", live=LIVE)
    b = dataclasses.replace(
        a,
        password="s3cret-value",
        name="New",
        live=dataclasses.replace(LIVE, users=(("alice", "s3cret-two"),), grace=2.0),
        outputs=(OutputSettings("icecast://h:8000/x"),),
    )
    keys = station_keys(a, b)
    assert keys == ["password", "name", "live.users", "live.grace", "output"]
    assert not any("s3cret" in key for key in keys)


def test_a_broken_file_gives_a_line_per_problem(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    path = tmp_path / "stations.toml"
    path.write_text(
        """
[control]
listen = "nowhere:port"
[[station]]
folder = "a"
url = "icecast://source:x@127.0.0.1:8000/a"
sample_rate = 48000
[[station]]
folder = "gone"
url = "icecast://source:x@127.0.0.1:8000/b"
[[station]]
folder = "a"
url = "icecast://source:x@127.0.0.1:8000/c"
""",
        encoding="utf-8",
    )
    lines = refusal(load_config(path, {}, collect=True))
    assert len(lines) == 3, lines
    assert 'station 1: unknown key "sample_rate"' in lines[0]
    assert "gone is not a directory" in lines[1]
    assert "[control]" in lines[2]
    good = tmp_path / "good.toml"
    good.write_text(
        '[[station]]\nfolder = "a"\nurl = "icecast://source:x@127.0.0.1:8000/a"\n', "utf-8"
    )
    assert refusal(load_config(good, {}, collect=True)) == []


def test_an_empty_plan_says_so() -> None:
    assert Plan().changes_nothing
    assert Plan().summary() == "reload: 0 added, 0 removed, 0 restarted, 0 unchanged"


def test_the_fingerprint_reads_what_a_password_file_holds(tmp_path: Path) -> None:
    from pushsource.ops.fleet import fingerprint

    secret = tmp_path / "a.password"
    secret.write_text("first\n")
    secret.chmod(0o600)
    a = settings(
        "a", password_file=secret, outputs=(OutputSettings("icecast://127.0.0.1:8000/a-2"),)
    )
    a = dataclasses.replace(a, url="icecast://source@127.0.0.1:8000/a")
    before = fingerprint(a, {})
    assert before == fingerprint(a, {})
    assert len(before) == 2  # the station's own mount and its output
    secret.write_text("second\n")
    assert fingerprint(a, {}) != before
    # Never shown: the targets' repr leaves the password out.
    assert "second" not in repr(fingerprint(a, {}))
