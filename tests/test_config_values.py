"""Values that reach Icecast are checked when the config is read (and by
``check``), with exit 2 and one line naming the key; a config file that is not
UTF-8 or is nested without end is one line too."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pushsource.core.values import header_problem
from pushsource.errors import ConfigError
from pushsource.ops.config import expand, load_config

Run = Callable[..., subprocess.CompletedProcess[str]]
BASE = '[[station]]\nfolder = "music"\nurl = "icecast://source:pw@127.0.0.1:1/m"\n'


def _config(tmp_path: Path, text: str | bytes) -> Path:
    (tmp_path / "music").mkdir(exist_ok=True)
    path = tmp_path / "p.toml"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('name = "Rock\\r\\nX-Evil: 1"', "name"),
        ('genre = "a\\nb"', "genre"),
        ('description = "tab\\tand nul \\u0000"', "description"),
        (f'name = "{"n" * 100_000}"', "name"),
        (f'station_url = "http://x/{"a" * 600}"', "station_url"),
        ('url = "icecast://source:pw@127.0.0.1:1/' + "m" * 5000 + '"', "url"),
        ('url = "icecast://source:pw@127.0.0.1:1/a\\u0001b"', "url"),
        ("channels = 1.0", "channels"),
        ("channels = 2.0", "channels"),
        ('password = "${1X}"', "password"),
        ('password = "${}"', "password"),
        ('password = "a${A-B}c"', "password"),
        ('password = "${OPEN"', "password"),
    ],
)
def test_bad_values_are_refused_naming_the_key(tmp_path: Path, line: str, key: str) -> None:
    base = (
        BASE
        if not line.startswith("url")
        else BASE.replace('url = "icecast://source:pw@127.0.0.1:1/m"\n', "")
    )
    path = _config(tmp_path, base + line + "\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path, {"X": "1"})
    message = str(refused.value)
    assert f'key "{key}"' in message and len(message) < 400 and "\n" not in message, message


def test_unicode_values_are_fine(tmp_path: Path) -> None:
    path = _config(
        tmp_path, BASE + 'name = "日本語 ラジオ 🎵"\ngenre = "ジャズ"\ndescription = "café ☕"\n'
    )
    station = load_config(path, {}).stations[0]
    assert station.genre == "ジャズ" and station.name == "日本語 ラジオ 🎵"


def test_expand_keeps_good_variables_and_dollars() -> None:
    assert expand("a$$b${X}c$d", {"X": "1"}) == "a$b1c$d"


@pytest.mark.parametrize(
    "content",
    [
        BASE.encode() + b'name = "caf\xe9"\n',  # Latin-1
        b"a = " + b"[" * 20_000 + b"]" * 20_000 + b"\n" + BASE.encode(),
        b"a = " + b"{b = " * 20_000 + b"1" + b"}" * 20_000 + b"\n" + BASE.encode(),
    ],
    ids=["latin-1", "deep arrays", "deep tables"],
)
@pytest.mark.parametrize("command", ["check", "run"])
def test_unreadable_toml_is_exit_2_with_one_line(
    tmp_path: Path, run_pushsource: Run, content: bytes, command: str
) -> None:
    path = _config(tmp_path, content)
    done = run_pushsource(command, "--config", path, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in lines[0], lines


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--name", "a\r\nb"], "--name"),
        (["--genre", "g" * 5000], "--genre"),
        (["--url", "http://x/\n"], "--url"),
    ],
)
def test_stream_refuses_bad_header_values(
    tmp_path: Path, run_pushsource: Run, args: list[str], option: str
) -> None:
    (tmp_path / "music").mkdir()
    done = run_pushsource(
        "stream", tmp_path / "music", "icecast://source:pw@127.0.0.1:1/m", *args, timeout=30
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and len(lines[0]) < 400, lines


def test_check_refuses_a_name_with_a_line_break(tmp_path: Path, run_pushsource: Run) -> None:
    path = _config(tmp_path, BASE + 'name = "Rock\\r\\nice-public: 1"\n')
    done = run_pushsource("check", "--config", path, timeout=30)
    assert done.returncode == 2
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert lines.pop() == f"{path}: 1 station: 0 ok, 1 with errors", lines
    assert len(lines) == 1 and 'key "name"' in lines[0], lines


def test_header_problems() -> None:
    assert header_problem("日本語 🎵", 512) is None
    assert header_problem("\udce9", 512) is not None  # a surrogate escape: not UTF-8
