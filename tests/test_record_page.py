"""The control page links a recorded set (issue 22, item 4): in headless
Chromium against the real control server and a fake station, the history
entry of a DJ's set has a "recording" link, and the link serves the file."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.test_web_page import RichStation, browser, screenshot, texts, wait

__all__ = ["browser"]  # the module's browser fixture, shared

pytestmark = pytest.mark.slow

NAME = "rock/2026-12-07T06-30-00Z-alice.mp3"
URL = "/api/stations/rock/recordings/" + quote(NAME, safe="")


class RecordedStation(RichStation):
    """rock after alice's set, recorded; a folder track after it."""

    def __init__(self, station_id: str, folder: Path, recording: Path) -> None:
        super().__init__(station_id, folder)
        self.recording = recording
        entry = {"file": "", "live": "alice", "recording": str(recording), "recording_url": URL}
        self.history = [
            {"file": "z.mp3", "title": "Zed - Last One", "started": "2026-12-07T06:40:02Z"},
            {**entry, "title": "Alice - Second", "started": "2026-12-07T06:34:00Z"},
            {**entry, "title": "Alice - First", "started": "2026-12-07T06:30:00Z"},
            {"file": "y.mp3", "title": "Why - Before", "started": "2026-12-07T06:26:00Z"},
        ]

    def recording_file(self, name: str) -> Path | None:
        return self.recording if name == NAME else None


def test_a_recorded_set_links_its_file(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    from tests.test_control import serve

    recording = tmp_path / "sets" / NAME
    recording.parent.mkdir(parents=True)
    recording.write_bytes(b"ID3 set frames")
    station = RecordedStation("rock", tmp_path / "rock", recording)
    station.folder.mkdir()
    with serve([station]) as server:
        host, port = server.address
        browser.get(f"http://{host}:{port}/#/station/rock")
        browser.refresh()
        section = wait(
            browser, lambda: browser.find_element(By.CSS_SELECTOR, '#station[data-station="rock"]')
        )
        wait(browser, lambda: len(texts(section, ".history li")) == 4)
        links = section.find_elements(By.CSS_SELECTOR, ".history li a.recording")
        assert [link.text for link in links] == ["recording", "recording"]
        hrefs = {link.get_attribute("href") for link in links}
        assert hrefs == {f"http://{host}:{port}{URL}"}
        # Only the set's entries have one, and each says whose set it was.
        titles = texts(section, ".history li:has(a.recording) .file")
        assert titles == ["Alice - Second", "Alice - First"]
        screenshot(browser, "station-recorded-set")
        with urllib.request.urlopen(hrefs.pop(), timeout=5) as reply:
            assert reply.read() == b"ID3 set frames"
