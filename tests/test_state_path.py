"""A state path that names a directory (or the music folder) is refused, never moved aside."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pushsource.errors import ConfigError
from pushsource.workers.state import check_state_path, load_state

Run = Callable[..., subprocess.CompletedProcess[str]]


def _music(tmp_path: Path) -> Path:
    music = tmp_path / "music"
    music.mkdir()
    (music / "a.mp3").write_bytes(b"not really audio")
    return music


def _unchanged(music: Path) -> None:
    assert music.is_dir() and (music / "a.mp3").read_bytes() == b"not really audio"
    assert not list(music.parent.glob("*.corrupt*"))
    assert not list(music.glob("*.corrupt*"))


@pytest.mark.parametrize("which", ["folder", "other dir", "music file"])
def test_stream_refuses_a_state_that_is_a_directory_or_in_the_folder(
    tmp_path: Path, run_pushsource: Run, which: str
) -> None:
    music = _music(tmp_path)
    other = tmp_path / "keep"
    other.mkdir()
    state = {"folder": music, "other dir": other, "music file": music / "a.mp3"}[which]
    done = run_pushsource(
        "stream", music, "icecast://source:pw@127.0.0.1:1/m", "--state", state, timeout=30
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "state" in lines[0] and str(state) in lines[0], done.stderr
    _unchanged(music)
    assert other.is_dir()


@pytest.mark.parametrize("command", ["check", "run"])
def test_check_and_run_refuse_state_naming_the_music_folder(
    tmp_path: Path, run_pushsource: Run, command: str
) -> None:
    music = _music(tmp_path)
    config = tmp_path / "p.toml"
    config.write_text(
        '[[station]]\nfolder = "music"\nurl = "icecast://source:pw@127.0.0.1:1/m"\n'
        'state = "music"\n',
        encoding="utf-8",
    )
    done = run_pushsource(command, "--config", config, timeout=30)
    assert done.returncode == 2, done.stderr
    out = (done.stdout + done.stderr).strip().splitlines()
    if command == "check":  # the problem, then the tally
        assert out.pop() == f"{config}: 1 station: 0 ok, 1 with errors", out
    assert len(out) == 1 and 'key "state"' in out[0], out
    _unchanged(music)


def test_check_state_path(tmp_path: Path) -> None:
    music = _music(tmp_path)
    check_state_path(tmp_path / "state.json", music)  # a file to be: fine
    with pytest.raises(ConfigError, match="directory"):
        check_state_path(tmp_path)
    link = tmp_path / "link.json"
    link.symlink_to(music / "a.mp3")
    with pytest.raises(ConfigError, match="inside the music folder"):
        check_state_path(link, music)


def test_load_state_never_moves_a_directory(tmp_path: Path) -> None:
    music = _music(tmp_path)
    assert load_state(music).queue == []
    _unchanged(music)
