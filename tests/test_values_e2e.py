"""With a real Icecast 2.4.4 and a real listener: non-Latin-1 station details
arrive as UTF-8, a tag cannot inject an ICY field, quotes and semicolons arrive
as they are, a title too long for Icecast's request arrives cut with an
ellipsis, and a title with line breaks forges no log line."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import StartPushsource, register_secret
from tests.support.icecast import DEFAULT_TEMPLATE, IcecastServer
from tests.support.listener import Listener
from tests.support.media import make_clean_mp3, make_titled_tracks

pytestmark = pytest.mark.integration

Run = Callable[..., subprocess.CompletedProcess[str]]


def _url(icecast: IcecastServer, mount: str) -> str:
    return f"icecast://source:hackme@127.0.0.1:{icecast.port}{mount}"


def test_non_latin1_station_details_reach_the_status_page(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    music = tmp_path / "music"
    music.mkdir()
    make_clean_mp3(music / "tone.mp3", 20.0)
    name, genre, description = "日本語 ラジオ 🎵", "ジャズ", "café ☕ Rádió"
    run = start_pushsource(
        "stream",
        music,
        _url(icecast, unique_mount),
        "--name",
        name,
        "--genre",
        genre,
        "--description",
        description,
    )
    source = icecast.wait_for_mount(unique_mount, timeout=20)
    assert source.get("server_name") == name, (source, run.describe())
    assert source.get("genre") == genre
    assert source.get("server_description") == description
    with Listener(icecast.port, unique_mount) as listener:
        listener.wait_connected(10)
        assert listener.headers["icy-name"].encode("latin-1") == name.encode()
    assert run.proc.poll() is None, run.describe()


INJECT = "x';StreamUrl='http://evil.example/';"
QUOTES = "'Live'; Don't Stop"
LONG = "日本語のタイトル🎵" * 400
BREAKS = "line\r\n12:00:00 ERROR forged"


@pytest.mark.parametrize("way", ["stream", "admin"])
def test_titles_are_safe_and_fit(
    way: str,
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
) -> None:
    titles = [("A", INJECT), ("B", QUOTES), ("C", LONG), ("D", BREAKS), ("E", "last")]
    tracks = make_titled_tracks(tmp_path / "music", titles, seconds=2.5)
    with Listener(icecast.port, unique_mount, connect_timeout=20) as listener:
        run = start_pushsource(
            "stream", tmp_path / "music", _url(icecast, unique_mount), "--once", "--titles", way
        )
        assert run.wait(sum(t.seconds for t in tracks) + 30) == 0, run.describe()
        listener.wait_closed(10)
    shown = [title for _, title in listener.titles]
    assert listener.blocks and not any(b"StreamUrl='" in block for block in listener.blocks)
    assert not any(b"';StreamUrl" in block for block in listener.blocks), listener.blocks
    if way == "stream":  # inside the stream a title ends at its first "';" on every server
        assert "A - x\u2019;StreamUrl=\u2019http://evil.example/\u2019;" in shown, shown
        assert "B - 'Live\u2019; Don't Stop" in shown, shown
    else:  # Icecast itself quotes an admin title: only a new field is a danger
        assert "A - x\u2019;StreamUrl=\u2019http://evil.example/';" in shown, shown
        assert f"B - {QUOTES}" in shown
    cut = [t for t in shown if t.startswith("C - 日本語")]
    assert cut and cut[0].endswith("\u2026") and ("C - " + LONG).startswith(cut[0][:-1]), shown
    assert "D - line  12:00:00 ERROR forged" in shown
    assert "E - last" in shown
    assert not any(line.startswith("12:00:00 ERROR") for line in run.stderr.splitlines())


def test_a_password_beyond_latin1_logs_in(tmp_path: Path, run_pushsource: Run) -> None:
    password = "pässwörd-日本-🎵"
    register_secret(password)
    work = Path(tempfile.mkdtemp(prefix="pushsource-icecast-utf8-"))
    work.chmod(0o755)  # icecast2 runs as nobody
    try:
        tree = ET.parse(DEFAULT_TEMPLATE)
        found = tree.getroot().find("authentication/source-password")
        assert found is not None
        found.text = password
        template = work / "template.xml"
        tree.write(template, encoding="utf-8", xml_declaration=True)
        with IcecastServer(template, work / "icecast") as server:
            (tmp_path / "music").mkdir()
            config = tmp_path / "p.toml"
            config.write_text(
                f'[[station]]\nfolder = "music"\n'
                f'url = "icecast://source@127.0.0.1:{server.port}/utf8"\n'
                f'password = "{password}"\n',
                encoding="utf-8",
            )
            done = run_pushsource("check", "--config", config, "-v", timeout=60)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "accepts the source" in done.stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)
