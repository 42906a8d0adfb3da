"""The music folder deleted and made again while the station runs
(``rm -rf music; mkdir music; cp a.mp3 music/``): the new folder is watched,
and the file copied in plays, whole, to a real listener on a real icecast2."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import StartPushsource
from tests.support.icecast import IcecastServer
from tests.support.listener import Listener
from tests.support.media import make_titled_tracks

pytestmark = pytest.mark.integration


def test_a_folder_deleted_and_made_again_plays_what_is_copied_in(
    tmp_path: Path, icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource
) -> None:
    first, again = make_titled_tracks(
        tmp_path / "library", [("Folder", "First"), ("Folder", "Again")], seconds=2.0
    )
    folder = tmp_path / "music"
    folder.mkdir()
    shutil.copy(first.path, folder)
    with Listener(icecast.port, unique_mount) as listener:
        proc = start_pushsource(
            "stream", folder, f"icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}"
        )
        listener.wait_for_title("Folder - First", 30)
        shutil.rmtree(folder)
        deadline = time.monotonic() + 15
        while "was deleted" not in proc.stderr:
            assert time.monotonic() < deadline, proc.describe()
            time.sleep(0.05)
        folder.mkdir()
        shutil.copy(again.path, folder)
        at = listener.wait_for_title("Folder - Again", 30)
        listener.wait_for_audio(at + len(again.audio) + 16000, 30)
        assert proc.proc.poll() is None, proc.describe()
    heard = bytes(listener.audio)
    assert heard.find(first.audio) >= 0 and heard.find(again.audio) > heard.find(first.audio)
    lines = proc.stderr.splitlines()
    gone = [line for line in lines if "was deleted" in line]
    back = [line for line in lines if "is back" in line]
    assert len(gone) == 1 and len(back) == 1, proc.describe()
    assert not [line for line in lines if "WARNING" in line and line not in gone], proc.describe()
