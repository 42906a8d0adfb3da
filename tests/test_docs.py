"""`pushsource manpage` and `pushsource completion`: made from the parser, so
every command and option is in them, and bash completes them for real."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pushsource.ops.cli import build_parser

PUSHSOURCE = [sys.executable, "-m", "pushsource"]


def _commands() -> dict[str, argparse.ArgumentParser]:
    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _long_options(parser: argparse.ArgumentParser) -> list[str]:
    """Its long options but --help, which every command has and the page leaves out."""
    return [
        o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"
    ]


def _out(*args: str) -> str:
    done = subprocess.run([*PUSHSOURCE, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def test_the_man_page_has_every_command_and_option() -> None:
    page = _out("manpage")
    assert page.startswith('.TH PUSHSOURCE "1"')
    assert "pushsource \\- a folder\\-driven source client for Icecast" in page
    text = re.sub(r"\\f[A-Z]|\\[,/]", "", page).replace("\\-", "-")  # troff's fonts, dashes
    for name, parser in _commands().items():
        assert f"'pushsource {name}'" in text, name
        for option in _long_options(parser):
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), f"{name} {option}"
    for section in ("EXIT STATUS", "ENVIRONMENT", "SIGNALS", "SEE ALSO"):
        assert f".SH {section}" in page


@pytest.mark.skipif(shutil.which("man") is None, reason="no man(1) here")
def test_man_renders_the_page(tmp_path: Path) -> None:
    (tmp_path / "pushsource.1").write_text(_out("manpage"), "utf-8")
    done = subprocess.run(
        ["man", "-l", str(tmp_path / "pushsource.1")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "pushsource - a folder-driven source client for Icecast" in done.stdout
    assert "EXIT STATUS" in done.stdout


def _complete(script: Path, *words: str) -> list[str]:
    """What bash offers for the last of ``words`` after sourcing ``script``."""
    line = " ".join(words)
    program = (
        f"source {script}\n"
        f"COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}\n"
        f'COMP_LINE="{line}"; COMP_POINT={len(line)}\n'
        f'_shtab_pushsource pushsource "{words[-1]}" "{words[-2]}"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completes_commands_options_choices_and_folders(tmp_path: Path) -> None:
    script = tmp_path / "pushsource.bash"
    script.write_text(_out("completion", "bash"), "utf-8")
    assert subprocess.run(["bash", "-n", str(script)], timeout=60).returncode == 0
    assert set(_complete(script, "pushsource", "")) >= set(_commands())
    assert _complete(script, "pushsource", "st") == ["stream"]
    assert _complete(script, "pushsource", "stream", "--cross") == ["--crossfade"]
    assert _complete(script, "pushsource", "stream", "--idle", "") == ["silence", "loop", "stop"]
    assert _complete(script, "pushsource", "completion", "") == ["bash", "zsh"]
    # The folder argument completes directories, not files.
    (tmp_path / "music").mkdir()
    (tmp_path / "music.txt").write_text("x")
    offered = _complete(script, "pushsource", "stream", str(tmp_path / "mu"))
    assert offered == [str(tmp_path / "music")]


def test_the_zsh_script_names_every_command_and_option() -> None:
    script = _out("completion", "zsh")
    assert script.startswith("#compdef pushsource")
    for name, parser in _commands().items():
        assert re.search(rf"^\s*{name}:'", script, re.M), name
        for option in _long_options(parser):
            assert option in script, f"{name} {option}"
