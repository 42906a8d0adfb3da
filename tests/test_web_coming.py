"""The control page in headless Chromium, issue 23: problems first (the
overview opens sorted by trouble, the summary's counts filter, the tab
title counts the stations that need a look, a station down says since when
and how many attempts failed) and what is coming (up next in each idle
mode, titles and lengths in the queue, library and history, the loudness
gain, a player of the station). Against the real control server and fake
stations; screenshots go to tests/screenshots/ (git-ignored)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pushsource.ops.control import ControlServer
from tests.support.browser import chromium
from tests.test_control import serve
from tests.test_web_page import Fleet, RichStation, screenshot, texts, wait

#: Real time: a browser (make test-fast leaves it out).
pytestmark = pytest.mark.slow

#: Titles and lengths by file, as the tags would give them.
TAGS = {
    "b.mp3": ("Beta Band - Second Song", 201.4),
    "sub/c.flac": ("Gamma - Third (Live)", 3725.0),
    "d.mp3": ("Delta - Fourth", 64.0),
    "a.mp3": ("Artist - Ünïcode", 20.0),
    "new/e.mp3": ("Epsilon - Fifth", 185.0),
}


class TaggedStation(RichStation):
    """A fake station whose queue and library carry titles and lengths."""

    def status(self) -> dict[str, Any]:
        status = super().status()
        for item in status["queue"]:
            title, duration = TAGS.get(item["file"], (None, None))
            item.update(title=title, duration=duration)
        return status

    def library(self, query: str = "", limit: int = 100) -> dict[str, Any]:
        found = super().library(query, limit)
        for item in found["files"]:
            title, duration = TAGS.get(item["file"], (None, None))
            item.update(title=title, duration=duration)
        return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


@pytest.fixture(autouse=True)
def _window(browser: Any) -> None:
    browser.set_window_size(1200, 1000)


def shown(driver: Any) -> list[str]:
    found: list[str] = driver.execute_script(
        "return [...document.querySelectorAll('#rows tr')]"
        ".filter((r) => !r.hidden).map((r) => r.dataset.row)"
    )
    return found


def ago(seconds: float) -> str:
    at = datetime.now(UTC) - timedelta(seconds=seconds)
    return at.isoformat(timespec="seconds").replace("+00:00", "Z")


def dark(driver: Any, name: str) -> None:
    """A screenshot in the dark colour scheme."""
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    screenshot(driver, name)
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def broken_fleet(folder: Path) -> Fleet:
    """300 stations on air, 4 of them broken, each its own way."""
    fleet = Fleet(folder, 300)
    fleet.next_round()
    for station in fleet.stations:
        station.extra["connection"] = {"state": "on air", "reconnects": 0, "error": None}
    down = {
        "st042": ("reconnecting", "connection refused", 0, 5, 260),
        "st150": ("reconnecting", "timed out", 2, 1, 40),
        "st201": ("failed", "wrong source password", 0, 1, 5400),
    }
    for sid, (state, error, reconnects, attempts, seconds) in down.items():
        station = fleet.stations[int(sid[2:])]
        station.extra["connection"] = {
            "state": state, "reconnects": reconnects, "attempts": attempts, "error": error,
            "down_since": ago(seconds), "down_for": seconds,
        }  # fmt: skip
        del station.extra["now_playing"]
    silent = fleet.stations[7]
    silent.extra["silence"] = {"seconds": 42.0, "alarm": True, "alarm_after": 30, "trim": False}
    dj = fleet.stations[250]
    dj.extra["live"] = {"mount": "/st250", "user": "dj", "since": 0, "bytes_in": 100}
    return fleet


def test_the_overview_opens_with_the_problems_on_top(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    fleet = broken_fleet(tmp_path)
    with serve(fleet.stations) as server:
        host, port = server.address
        browser.get(f"http://{host}:{port}/")
        # No click: the worst first, each with its reason; then the DJ, then on air.
        assert shown(browser)[:6] == ["st201", "st042", "st150", "st007", "st250", "st000"]
        assert browser.title == "(4) pushsource"
        state = browser.find_element(By.CSS_SELECTOR, 'th[data-sort="state"]')
        assert state.get_attribute("aria-sort") == "ascending"
        row = browser.find_element(By.CSS_SELECTOR, 'tr[data-row="st042"]')
        title = row.find_element(By.CSS_SELECTOR, ".cell-title").text
        assert title.startswith("⚠ connection refused · down since "), title
        assert title.endswith(" (4 min) · 5 failed attempts"), title
        assert row.find_element(By.CSS_SELECTOR, ".cell-reconnects").text == "0 · 5 failed"
        failed = browser.find_element(By.CSS_SELECTOR, 'tr[data-row="st201"] .cell-title').text
        assert failed.startswith("⚠ wrong source password · down since "), failed
        assert "(1 h 30 min)" in failed, failed
        silent = browser.find_element(By.CSS_SELECTOR, 'tr[data-row="st007"] .cell-title').text
        assert silent.startswith("⚠ dead air"), silent
        # The Live column means a DJ is on: their name there, nothing for the folder.
        live = {
            sid: browser.find_element(By.CSS_SELECTOR, f'tr[data-row="{sid}"] .cell-live').text
            for sid in ("st250", "st000", "st201")
        }
        assert live == {"st250": "● dj", "st000": "—", "st201": "—"}
        summary = browser.find_element(By.ID, "summary")
        assert summary.text == (
            "300 stations: 4 need a look · 1 failed · 2 reconnecting · 1 silent · 1 live"
            " · 295 on air"
        )
        screenshot(browser, "overview-300-problems")

        # The counts are filters.
        def count(text: str) -> Any:
            return summary.find_element(By.XPATH, f".//button[contains(., '{text}')]")

        count("2 reconnecting").click()
        assert shown(browser) == ["st042", "st150"]
        assert count("2 reconnecting").get_attribute("aria-pressed") == "true"
        assert browser.find_element(By.ID, "shown-count").text == "2 of 300 stations"
        count("2 reconnecting").click()  # again: every station
        assert len(shown(browser)) == 300
        count("4 need a look").click()
        assert shown(browser) == ["st201", "st042", "st150", "st007"]
        count("295 on air").click()
        assert len(shown(browser)) == 295 and "st250" not in shown(browser)
        count("295 on air").click()

        # A station that comes back: the title counts one less at the next poll.
        fleet.stations[42].extra["connection"] = {"state": "on air", "reconnects": 1, "error": None}
        wait(browser, lambda: browser.title == "(3) pushsource")

        browser.set_window_size(390, 844)
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        ), "the overview scrolls sideways on a phone"
        screenshot(browser, "overview-300-problems-phone")
        count("1 reconnecting").click()  # a chosen count, as it looks (st042 is back)
        dark(browser, "overview-300-problems-phone-dark")


def test_a_station_down_says_since_when_in_its_view(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    fleet = broken_fleet(tmp_path)
    with serve(fleet.stations[40:45]) as server:
        host, port = server.address
        browser.get(f"http://{host}:{port}/#/station/st042")
        section = browser.find_element(By.ID, "station")
        reconnects = section.find_element(By.CSS_SELECTOR, ".reconnects")
        wait(browser, lambda: "(4 min)" in reconnects.text)
        assert reconnects.text.startswith("no reconnects · 5 failed attempts · down since ")
        assert browser.title == "⚠ Station 042 · pushsource"
        # The header's counts work from a station's view too: back to the overview, filtered.
        summary = browser.find_element(By.ID, "summary")
        assert summary.text == "5 stations: 1 needs a look · 1 reconnecting · 4 on air"
        summary.find_element(By.XPATH, ".//button[contains(., '1 needs a look')]").click()
        wait(browser, lambda: browser.find_element(By.ID, "overview").is_displayed())
        assert shown(browser) == ["st042"]
        assert browser.title == "(1) pushsource"


@pytest.fixture
def rock(tmp_path: Path) -> TaggedStation:
    station = TaggedStation("rock", tmp_path / "rock")
    station.folder.mkdir()
    station.extra["now_playing"] = {
        "title": "Artist - Ünïcode",
        "file": "a.mp3",
        "elapsed": 61.5,
        "duration": 200.0,
        "bitrate": 128,
        "gain_db": -3.24,
        "gain_note": "gain -3.2 dB: measured -10.8 LUFS",
    }
    title, duration = TAGS["b.mp3"]
    station.extra["up_next"] = {
        "file": "b.mp3", "title": title, "duration": duration, "source": "queue"
    }  # fmt: skip
    station.extra["idle"] = "silence"
    station.history = [
        {"file": "z.mp3", "title": "Zed - Last One", "started": "2026-11-22T05:01:02Z",
         "gain_db": 1.5, "duration": 245.2},
        {"file": "y.mp3", "title": "Why - Before", "started": "2026-11-22T04:58:00Z",
         "gain_db": None, "duration": 63.0, "skipped": True},
    ]  # fmt: skip
    return station


@pytest.fixture
def page(browser: Any, rock: TaggedStation) -> Iterator[tuple[Any, Any, ControlServer]]:
    from selenium.webdriver.common.by import By

    with serve([rock]) as server:
        host, port = server.address
        browser.get(f"http://{host}:{port}/#/station/rock")
        section = browser.find_element(By.ID, "station")
        wait(browser, lambda: texts(section, ".queue li .file"))
        wait(browser, lambda: len(texts(section, ".library li")) == 6)
        yield browser, section, server


def test_the_station_view_shows_what_is_coming(
    page: tuple[Any, Any, ControlServer], rock: TaggedStation
) -> None:
    from selenium.webdriver.common.by import By

    driver, section, _ = page
    one = section.find_element
    assert one(By.CSS_SELECTOR, ".up-next-title").text == "Beta Band - Second Song"
    assert one(By.CSS_SELECTOR, ".up-next-length").text == "3:21"
    assert texts(section, ".queue li .file") == [
        "Beta Band - Second Song", "Gamma - Third (Live)", "Delta - Fourth"
    ]  # fmt: skip
    assert texts(section, ".queue li .length") == ["3:21", "1:02:05", "1:04"]
    library = driver.execute_script(
        "return [...arguments[0].querySelectorAll('.library li')].map((li) =>"
        " [li.querySelector('.file').textContent, li.querySelector('.path').textContent,"
        "  li.querySelector('.length').textContent])",
        section,
    )
    assert library[:2] == [
        ["Artist - Ünïcode", "a.mp3", "0:20"],
        ["Beta Band - Second Song", "b.mp3", "3:21"],
    ]
    assert ["f", "new/f.mp3", ""] in library  # tags not read yet: its name
    assert texts(section, ".history li .length") == ["4:05", "1:03"]
    assert texts(section, ".history li .gain-mark") == ["+1.5 dB"]
    gain = one(By.CSS_SELECTOR, ".gain")
    assert gain.text == "· loudness \u22123.2 dB"  # a minus sign
    assert gain.get_attribute("title") == "gain -3.2 dB: measured -10.8 LUFS"
    # The player: the public listen URL, not fetched until play, the title beside it.
    audio = one(By.CSS_SELECTOR, ".player audio")
    assert audio.get_attribute("src") == "http://127.0.0.1:8000/rock"
    assert audio.get_attribute("preload") == "none"
    assert driver.execute_script("return arguments[0].networkState", audio) != 2  # not loading
    assert one(By.CSS_SELECTOR, ".player-title").text == "Artist - Ünïcode"
    assert audio.get_attribute("aria-label") == "Listen to Rock"
    screenshot(driver, "station-coming", full=True)

    # A new title: the player's line follows it.
    rock.extra["now_playing"] = {**rock.extra["now_playing"], "title": "Next - One"}
    wait(driver, lambda: one(By.CSS_SELECTOR, ".player-title").text == "Next - One")

    driver.set_window_size(390, 844)
    wide = driver.execute_script(
        "const w = document.documentElement.clientWidth;"
        "return [...document.querySelectorAll('body *')].filter((e) => e.offsetParent"
        " && e.getBoundingClientRect().right > w + 0.5).map((e) => e.tagName + '.' + e.className)"
    )
    assert wide == [], f"the station view scrolls sideways on a phone: {wide}"
    screenshot(driver, "station-coming-phone", full=True)
    dark(driver, "station-coming-phone-dark")


@pytest.mark.parametrize(
    ("idle", "up_next", "queue_empty"),
    [
        ("loop", "nothing", "Nothing queued: the loop plays on (up next above)."),
        ("silence", "nothing queued: silence goes out until a file arrives", None),
        ("stop", "nothing queued: the station goes off air until a file arrives", None),
    ],
)
def test_up_next_in_each_idle_mode(
    page: tuple[Any, Any, ControlServer],
    rock: TaggedStation,
    idle: str,
    up_next: str,
    queue_empty: str | None,
) -> None:
    from selenium.webdriver.common.by import By

    driver, section, _ = page
    rock.queue.clear()
    rock.extra["idle"] = idle
    if idle == "loop":
        rock.extra["up_next"] = {"file": "new/e.mp3", "title": "Epsilon - Fifth",
                                 "duration": 185.0, "source": "loop"}  # fmt: skip
        up_next = "Epsilon - Fifth"
    else:
        rock.extra["up_next"] = None
    title = section.find_element(By.CSS_SELECTOR, ".up-next-title")
    wait(driver, lambda: title.text == up_next)
    if idle == "loop":
        assert section.find_element(By.CSS_SELECTOR, ".up-next-note").text == "from the loop"
        assert section.find_element(By.CSS_SELECTOR, ".up-next-length").text == "3:05"
    empty = section.find_element(By.CSS_SELECTOR, ".queue-empty")
    wait(driver, empty.is_displayed)
    if queue_empty is not None:
        assert empty.text == queue_empty
    if idle == "loop":
        screenshot(driver, "station-loop")
