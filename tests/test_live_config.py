"""[station.live] in a config file, and the --live-* options of ``stream``."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushsource.errors import ConfigError
from pushsource.ops.cli import build_parser, stream_settings
from pushsource.ops.config import load_config
from pushsource.ops.settings import LiveSettings

ENV = {"ALICE_PASSWORD": "al1ce-s3cret", "BOB_PASSWORD": "b0b-s3cret"}


def config(tmp_path: Path, live: str) -> Path:
    (tmp_path / "rock").mkdir(exist_ok=True)
    path = tmp_path / "stations.toml"
    path.write_text(
        f"""
[[station]]
folder = "rock"
url = "icecast://source:hackme@127.0.0.1:8000/rock"

[station.live]
{live}
""",
        encoding="utf-8",
    )
    return path


def test_live_table_with_users_from_the_environment(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        """listen = "0.0.0.0:8010"
mount = "/live"
users = { alice = "${ALICE_PASSWORD}", bob = "${BOB_PASSWORD}" }
grace = 3.5
interrupted = "skip"
title = "On air: {user}"
""",
    )
    [station] = load_config(path, ENV).stations
    assert station.live == LiveSettings(
        ("0.0.0.0", 8010),
        "/live",
        (("alice", "al1ce-s3cret"), ("bob", "b0b-s3cret")),
        3.5,
        "skip",
        "On air: {user}",
    )
    assert "s3cret" not in repr(station)


def test_live_defaults(tmp_path: Path) -> None:
    path = config(tmp_path, 'listen = "8010"\nusers = { alice = "pw" }')
    [station] = load_config(path, ENV).stations
    assert station.live == LiveSettings(("127.0.0.1", 8010), None, (("alice", "pw"),))
    assert station.live.title == "Live: {user}"


@pytest.mark.parametrize(
    ("live", "expected"),
    [
        ('users = { alice = "pw" }', 'needs "listen"'),
        ('listen = "8010"', 'key "users" must be a table'),
        ('listen = "8010"\nusers = { alice = "pw" }\ninterrupted = "loop"', '"resume" or "skip"'),
        ('listen = "8010"\nusers = { alice = "pw" }\nmount = "live"', 'a path like "/live"'),
        ('listen = "8010"\nusers = { alice = "pw" }\nport = 1', 'unknown key "port"'),
        ('listen = "8010"\nusers = { alice = "${NOPE}" }', "NOPE is not set"),
        ('listen = "99999"\nusers = { alice = "pw" }', "port out of range"),
        ('listen = "8010"\nusers = { alice = "pw" }\ntitle = ""', 'key "title": the live title'),
        ('listen = "8010"\nusers = { alice = "pw" }\ntitle = "a\\nb"', 'key "title"'),
    ],
)
def test_bad_live_table_names_the_key(tmp_path: Path, live: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(config(tmp_path, live), ENV)
    assert expected in str(info.value)
    assert 'key "live"' in str(info.value)


def test_live_options(tmp_path: Path) -> None:
    users = tmp_path / "djs"
    users.write_text("bob:b0b-pw\n\n", encoding="utf-8")
    users.chmod(0o600)
    args = build_parser().parse_args(
        [
            "stream", str(tmp_path), "icecast://source:pw@127.0.0.1:8000/m",
            "--live-listen", "127.0.0.1:8010", "--live-mount", "/live",
            "--live-user", "alice:al1ce", "--live-users-file", str(users),
            "--live-grace", "2", "--live-interrupted", "skip", "--live-title", "DJ {user}",
        ]
    )  # fmt: skip
    assert stream_settings(args).live == LiveSettings(
        ("127.0.0.1", 8010),
        "/live",
        (("alice", "al1ce"), ("bob", "b0b-pw")),
        2.0,
        "skip",
        "DJ {user}",
    )
    assert stream_settings(args).live.convert  # type: ignore[union-attr]
    refusing = build_parser().parse_args(
        [
            "stream", str(tmp_path), "icecast://source:pw@127.0.0.1:8000/m",
            "--live-listen", "127.0.0.1:8010", "--live-user", "alice:al1ce", "--no-live-convert",
        ]
    )  # fmt: skip
    live = stream_settings(refusing).live
    assert live is not None and live.convert is False


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--live-listen", "8010"], "at least one --live-user"),
        (["--live-user", "alice:pw"], "need --live-listen"),
        (["--live-listen", "8010", "--live-user", "alice"], "NAME:PASSWORD"),
        (["--live-listen", "8010", "--live-user", "a:b", "--live-grace", "0"], "--live-grace"),
        (["--live-listen", "8010", "--live-user", "a:b", "--live-title", " "], "--live-title"),
    ],
)
def test_bad_live_options(tmp_path: Path, extra: list[str], expected: str) -> None:
    args = build_parser().parse_args(
        ["stream", str(tmp_path), "icecast://source:pw@127.0.0.1:8000/m", *extra]
    )
    with pytest.raises(ConfigError, match=expected):
        stream_settings(args)


def test_a_bad_line_of_the_users_file_is_told_by_file_and_line(tmp_path: Path) -> None:
    users = tmp_path / "djs"
    users.write_text("bob:b0b-pw\n\ncarol-s3cret\n", encoding="utf-8")
    users.chmod(0o600)
    args = build_parser().parse_args(
        [
            "stream", str(tmp_path), "icecast://source:pw@127.0.0.1:8000/m",
            "--live-listen", "8010", "--live-user", "alice:al1ce", "--live-users-file", str(users),
        ]
    )  # fmt: skip
    with pytest.raises(ConfigError) as info:
        stream_settings(args)
    message = str(info.value)
    assert message.startswith(f"--live-users-file {users} line 3: "), message
    assert "NAME:PASSWORD" in message and "s3cret" not in message


def test_the_console_line_shows_the_dj() -> None:
    from pushsource.ops.console import line

    status: dict[str, object] = {
        "name": "Rock",
        "connection": {"state": "on air", "reconnects": 0},
        "now_playing": None,
        "queue": [],
        "live": {"mount": "/live", "user": "alice", "since": 0.0, "bytes_in": 10},
    }
    assert "live: alice" in line(status).plain
    status["live"] = {"mount": "/live", "user": None, "since": None, "bytes_in": 0}
    assert "live:" not in line(status).plain
