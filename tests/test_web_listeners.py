"""Listeners over time on the control page, in headless Chromium against the
real server and fake stations: the station view's chart (24 hours, 7 days),
the listeners each history entry began and ended with, the overview's
sparkline per row and the total chart. Screenshots: tests/screenshots/
station-listeners.png, overview-listeners.png."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pushsource.core.listeners import EVERY, ListenerSeries
from pushsource.ops.control import ControlServer
from tests.support.browser import chromium
from tests.test_control import serve
from tests.test_web_page import RichStation, api_requests, screenshot, texts, wait

#: Real time: a browser (make test-fast leaves it out).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


@pytest.fixture(autouse=True)
def _window(browser: Any) -> None:
    browser.set_window_size(1200, 1000)


def day_of_listeners(series: ListenerSeries, base: int, *, gap: bool = True) -> None:
    """A day of counts, a minute apart, up to now: a wave peaking in the
    evening, and (``gap``) an hour not known (the server unreadable)."""
    now = time.time()
    for minute in range(24 * 60, -1, -1):
        at = now - minute * EVERY
        if gap and 300 <= minute < 360:
            series.add(at, None)
            continue
        wave = (1 + math.sin(minute / 1440 * 2 * math.pi)) / 2
        series.add(at, round(base * wave) + (minute % 7 == 0))


class Heard(RichStation):
    def __init__(self, station_id: str, folder: Path, base: int, **extra: Any) -> None:
        super().__init__(station_id, folder, **extra)
        self.listener_series = ListenerSeries()
        day_of_listeners(self.listener_series, base)


@pytest.fixture
def stations(tmp_path: Path) -> list[RichStation]:
    rock = Heard("rock", tmp_path, 40, listeners=12)
    rock.history = [
        {
            "file": "z.mp3",
            "title": "Zed - Last One",
            "started": "2026-11-22T05:01:02Z",
            "listeners_start": 9,
        },
        {
            "file": "y.mp3",
            "title": "Why - Before",
            "started": "2026-11-22T04:58:00Z",
            "listeners_start": 7,
            "listeners_end": 9,
        },
        {
            "file": "x.mp3",
            "title": "Ex - Earlier",
            "started": "2026-11-22T04:55:00Z",
            "listeners_start": 8,
            "listeners_end": 7,
        },
        {
            "file": "w.mp3",
            "title": "Double U - Unknown",
            "started": "2026-11-22T04:50:00Z",
            "listeners_start": None,
            "listeners_end": 8,
        },
        {"file": "v.mp3", "title": "Vee - From Before", "started": "2026-11-22T04:40:00Z"},
    ]
    jazz = Heard("jazz", tmp_path, 8, listeners=3)
    quiet = RichStation("quiet", tmp_path, listeners=None)  # keeps no series
    return [rock, jazz, quiet]


@pytest.fixture
def server(stations: list[RichStation]) -> Iterator[ControlServer]:
    with serve(stations) as running:  # type: ignore[arg-type]
        yield running


def open_page(driver: Any, server: ControlServer, fragment: str = "") -> None:
    host, port = server.address
    driver.get(f"http://{host}:{port}/{fragment}")
    driver.refresh()


def fills_its_box(driver: Any, box: str) -> bool:
    """Whether the chart in ``box`` is drawn at the box's width (to a pixel or two)."""
    widths: list[float] = driver.execute_script(
        "const box = document.querySelector(arguments[0]);"
        " const chart = box.querySelector('.listeners-chart');"
        " const svg = chart.querySelector('svg');"
        " return [chart.clientWidth, svg ? Number(svg.getAttribute('width')) : 0]",
        box,
    )
    return abs(widths[0] - widths[1]) <= 2


def attr(driver: Any, selector: str, name: str) -> str | None:
    """An attribute of the first match, found and read in one step: a chart is
    drawn anew when its box changes width, so a handle found before may be stale."""
    value: str | None = driver.execute_script(
        "const e = document.querySelector(arguments[0]);"
        " return e ? e.getAttribute(arguments[1]) : null",
        selector,
        name,
    )
    return value


def texts_at(driver: Any, selector: str) -> list[str]:
    """The text of every match in the page, read in one step (see attr)."""
    found: list[str] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)",
        selector,
    )
    return found


def segments(driver: Any, selector: str) -> int:
    """How many separate runs a chart's line has (each starts with M)."""
    d: str = driver.execute_script(
        "const p = document.querySelector(arguments[0]); return p ? p.getAttribute('d') : ''",
        selector,
    )
    return d.count("M")


def test_station_view_charts_listeners_over_time(browser: Any, server: ControlServer) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, server, "#/station/rock")
    chart = ".station-listeners .listeners-chart svg.chart"
    wait(browser, lambda: browser.find_elements(By.CSS_SELECTOR, chart))
    figures = ".station-listeners .listeners-figures"
    # now: the status' count; peak: the series' highest (40 + 1 at the wave's top)
    [text] = texts_at(browser, figures)
    assert text.startswith("Now 12 · peak 41 at "), text
    assert text.endswith("last 24 hours")
    wait(browser, lambda: fills_its_box(browser, ".station-listeners"))
    assert "peak 41" in (attr(browser, chart, "aria-label") or "")
    # the hour not known is a gap in the line, not a drop to 0
    assert segments(browser, ".station-listeners path.line") == 2
    labels = texts_at(browser, chart + " text.axis")
    assert "0" in labels and "50" in labels  # the scale's top: 41 rounded up
    assert sum(":" in label for label in labels) >= 7  # a time every 3 hours
    assert texts_at(browser, chart + " text.peak-label") == ["peak 41"]
    assert any(
        "/api/stations/rock/listeners?hours=24" in url
        for url in api_requests(browser, listeners=True)
    )

    # each history entry: listeners at its start and at its end
    heard = texts(browser.find_element(By.ID, "station"), ".history li .heard")
    assert heard == [
        "9 listeners at the start",
        "7 → 9 listeners (+2)",
        "8 → 7 listeners (\u22121)",
        "? → 8 listeners",
    ]
    gained = browser.find_elements(By.CSS_SELECTOR, ".history .kept.gained")
    lost = browser.find_elements(By.CSS_SELECTOR, ".history .kept.lost")
    assert len(gained) == 1 and len(lost) == 1
    screenshot(browser, "station-listeners", full=True)

    # 7 days: asked for at a point per 10 minutes; the days on the axis
    browser.find_element(By.CSS_SELECTOR, '.listeners-range button[data-hours="168"]').click()
    wait(
        browser,
        lambda: (
            browser.find_element(By.CSS_SELECTOR, ".station-listeners").get_attribute("data-hours")
            == "168"
        ),
    )
    assert any("hours=168&step=10" in url for url in api_requests(browser, listeners=True))
    pressed = browser.find_element(By.CSS_SELECTOR, '.listeners-range button[data-hours="168"]')
    assert pressed.get_attribute("aria-pressed") == "true"
    assert texts_at(browser, figures)[0].endswith("last 7 days")
    days = [label for label in texts_at(browser, chart + " text.axis") if not label.isdigit()]
    assert len(days) in (7, 8) and not any(":" in label for label in days), days
    # six days before the series began are not known: no line there, no 0
    assert segments(browser, ".station-listeners path.line") == 2
    screenshot(browser, "station-listeners-week")


def test_a_station_with_no_counts_says_so(browser: Any, server: ControlServer) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, server, "#/station/quiet")
    figures = ".station-listeners .listeners-figures"
    wait(browser, lambda: browser.find_element(By.CSS_SELECTOR, figures).text)
    assert browser.find_element(By.CSS_SELECTOR, figures).text.startswith("No listener counts")
    # nothing drawn as if there were 0 listeners
    assert not browser.find_elements(By.CSS_SELECTOR, ".station-listeners svg.chart")


def test_overview_has_a_sparkline_per_row_and_the_total(
    browser: Any, server: ControlServer
) -> None:
    from selenium.webdriver.common.by import By

    open_page(browser, server)
    wait(browser, lambda: browser.find_elements(By.CSS_SELECTOR, 'tr[data-row="rock"] svg.spark'))
    # the count stays in its cell beside the sparkline's (read by selector in
    # one step each: a row's cells are drawn anew as the polls come)
    assert texts_at(browser, 'tr[data-row="rock"] .cell-listeners') == ["12"]
    assert texts_at(browser, 'tr[data-row="rock"] .spark-peak') == ["↑41"]
    assert "peak 41" in (attr(browser, 'tr[data-row="rock"] svg.spark', "aria-label") or "")
    assert texts_at(browser, 'tr[data-row="jazz"] .spark-peak') in (["↑8"], ["↑9"])
    assert not texts_at(browser, 'tr[data-row="quiet"] svg.spark')
    # the header and each row have the same cells
    columns = browser.execute_script(
        "return [...document.querySelectorAll('#stations-table tr')].map((r) => r.cells.length)"
    )
    assert len(set(columns)) == 1, columns
    [figures] = texts_at(browser, "#listeners-total .listeners-figures")
    # now: the rows' counts (12 + 3), as the table shows them
    assert figures.startswith("Now 15 · peak "), figures
    peak = int(figures.split(" · peak ")[1].split()[0])
    assert 41 < peak <= 41 + 9  # the two stations' sum at its highest point
    assert attr(browser, "#listeners-total svg.chart path.line", "d")
    assert fills_its_box(browser, "#listeners-total")
    # a narrower window: drawn again at the new width
    browser.set_window_size(800, 1000)
    wait(browser, lambda: fills_its_box(browser, "#listeners-total"))
    # asked for once, not with every status poll (a second apart)
    polls = len(api_requests(browser))
    wait(browser, lambda: len(api_requests(browser)) >= polls + 2)
    asked = api_requests(browser, listeners=True)
    assert len(asked) == 1 and asked[0].endswith("/api/listeners"), asked
    screenshot(browser, "overview-listeners")
