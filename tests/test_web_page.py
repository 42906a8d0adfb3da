"""The control page in headless Chromium against the real server and fake
stations: the overview (up to 300 stations), a station's view, and every
action it sends (the live run is in test_web_e2e.py). Screenshots of both
views go to tests/screenshots/ (git-ignored) for a person to look at."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pushsource.errors import ControlError
from pushsource.ops.control import ControlServer
from tests.support.browser import chromium
from tests.test_control import TOKEN, FakeStation, serve

#: Real time: waits on sockets, timers or a browser (make test-fast leaves it out).
pytestmark = pytest.mark.slow

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"


def screenshot(driver: Any, name: str, *, full: bool = False) -> Path:
    """Save what the browser shows as tests/screenshots/NAME.png."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    if full:  # the whole page, not just the window
        height = driver.execute_script("return document.documentElement.scrollHeight")
        width = driver.get_window_size()["width"]
        driver.set_window_size(width, min(int(height) + 100, 16000))
    driver.save_screenshot(str(path))
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


@pytest.fixture(autouse=True)
def _window(browser: Any) -> None:
    browser.set_window_size(1200, 1000)


class RichStation(FakeStation):
    """A fake station whose status has what the page can show beyond the basics."""

    def __init__(self, station_id: str, folder: Path, **extra: Any) -> None:
        super().__init__(station_id, folder)
        self.extra = extra
        self.unplayable: list[dict[str, Any]] = []

    def status(self) -> dict[str, Any]:
        status = super().status()
        status["format"] = {"bitrate": 128, "samplerate": 44100, "channels": 2}
        status["unplayable"] = self.unplayable
        status.update(self.extra)
        return status


@pytest.fixture
def rock(tmp_path: Path) -> RichStation:
    station = RichStation("rock", tmp_path / "rock")
    station.folder.mkdir()
    station.history = [
        {"file": "z.mp3", "title": "Zed - Last One", "started": "2026-11-22T05:01:02Z"},
        {
            "file": "y.mp3",
            "title": "Why - Before",
            "started": "2026-11-22T04:58:00Z",
            "skipped": True,
        },
    ]
    station.unplayable = [
        {"file": "broken.mp3", "reason": "no MPEG audio frames found", "at": "2026-11-22T05:00Z"}
    ]
    return station


@pytest.fixture
def page(browser: Any, rock: RichStation) -> Iterator[tuple[Any, Any, ControlServer]]:
    """(driver, the station view, server): the page opened on rock, no token stored."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with serve([rock]) as server:
        host, port = server.address
        browser.get(f"http://{host}:{port}/")
        browser.execute_script("localStorage.clear()")
        browser.get(f"http://{host}:{port}/#/station/rock")
        browser.refresh()
        section = WebDriverWait(browser, 10).until(
            lambda d: d.find_element(By.CSS_SELECTOR, '#station[data-station="rock"]')
        )
        wait(browser, lambda: texts(section, ".queue li .file"))
        yield browser, section, server


def wait(driver: Any, check: Any, timeout: float = 5) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda _: check())


def texts(section: Any, selector: str) -> list[str]:
    """The text of each match, read at once (the page may redraw between two finds)."""
    found: list[str] = section.parent.execute_script(
        "return [...arguments[0].querySelectorAll(arguments[1])].map((e) => e.textContent)",
        section,
        selector,
    )
    return found


def queue_files(section: Any) -> list[str]:
    found: list[str] = section.parent.execute_script(
        "return [...arguments[0].querySelectorAll('.queue li')].map((e) => e.dataset.file)",
        section,
    )
    return found


def enter_token(driver: Any, token: str = TOKEN) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "token-save").click()


def api_requests(driver: Any, *, listeners: bool = False) -> list[str]:
    """The /api/ URLs the page has fetched, in order (Resource Timing): the
    status polls, or (``listeners``) the listeners over time, asked for on
    their own every 30 s (tests/test_web_listeners.py)."""
    found: list[str] = driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
        ".filter((n) => n.includes('/api/') && /\\/listeners(\\?|$)/.test(n) === arguments[0])",
        listeners,
    )
    return found


# --- a station's view ---------------------------------------------------------------------


def test_station_view_shows_the_status(page: tuple[Any, Any, ControlServer]) -> None:
    from selenium.webdriver.common.by import By

    driver, section, _server = page
    one = section.find_element
    wait(driver, lambda: one(By.CSS_SELECTOR, ".now-title").text == "Artist - Ünïcode")
    assert one(By.CSS_SELECTOR, ".name").text == "Rock"
    assert one(By.CSS_SELECTOR, ".state").text == "on air"
    assert one(By.CSS_SELECTOR, ".format").text == "MP3 128 kbps 44.1 kHz stereo"
    assert one(By.CSS_SELECTOR, ".listen").get_attribute("href") == "http://127.0.0.1:8000/rock"
    assert one(By.CSS_SELECTOR, ".duration").text == "0:20"
    assert one(By.CSS_SELECTOR, ".progress").get_attribute("aria-valuenow") != "0"
    assert queue_files(section) == ["b.mp3", "sub/c.flac", "d.mp3"]
    assert texts(section, ".queue li .file") == ["b", "c", "d"]
    assert texts(section, ".history li .file") == ["Zed - Last One", "Why - Before"]
    # The skipped one is marked as such.
    assert texts(section, ".history li.skipped .file") == ["Why - Before"]
    assert texts(section, ".history li .skipped-mark") == ["skipped"]
    assert texts(section, ".unplayable li") == ["broken.mp3: no MPEG audio frames found"]
    assert driver.title == "Rock · pushsource"
    screenshot(driver, "station-view")

    # Each update of the view is one request, for this station alone.
    before = len(api_requests(driver))
    wait(driver, lambda: len(api_requests(driver)) >= before + 2, timeout=5)
    added = api_requests(driver)[before:]
    assert {url.split("/", 3)[3] for url in added} == {"api/stations/rock"}, added


def test_share_links_serve_playlists_that_name_the_listen_url(
    page: tuple[Any, Any, ControlServer],
) -> None:
    from selenium.webdriver.common.by import By

    _driver, section, server = page
    for kind, content_type, wanted in (
        ("m3u", "audio/x-mpegurl", "#EXTM3U\n#EXTINF:-1,Rock\nhttp://127.0.0.1:8000/rock\n"),
        ("pls", "audio/x-scpls", "File1=http://127.0.0.1:8000/rock\nTitle1=Rock\n"),
    ):
        href = section.find_element(By.CSS_SELECTOR, f".{kind}").get_attribute("href")
        host, port = server.address
        assert href == f"http://{host}:{port}/listen/rock.{kind}"
        with urllib.request.urlopen(href, timeout=5) as response:
            assert response.headers["Content-Type"].startswith(content_type)
            assert wanted in response.read().decode("utf-8")


def test_without_a_token_actions_are_off_and_say_why(
    page: tuple[Any, Any, ControlServer], rock: RichStation
) -> None:
    from selenium.webdriver.common.by import By

    _driver, section, _ = page
    for selector in (".skip", ".queue .remove", ".queue .up", ".history .requeue", ".file-input"):
        for element in section.find_elements(By.CSS_SELECTOR, selector):
            assert not element.is_enabled(), selector
            assert "token" in element.get_attribute("title"), selector
    note = section.find_element(By.CSS_SELECTOR, ".needs-token")
    assert note.is_displayed() and "token" in note.text
    assert rock.calls == []


def test_actions_send_the_token(page: tuple[Any, Any, ControlServer], rock: RichStation) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver, section, _ = page
    enter_token(driver)
    skip = section.find_element(By.CSS_SELECTOR, ".skip")
    wait(driver, skip.is_enabled)
    assert driver.execute_script("return localStorage.getItem('pushsource.token')") == TOKEN
    assert not section.find_element(By.CSS_SELECTOR, ".needs-token").is_displayed()

    skip.click()
    wait(driver, lambda: rock.calls == [("skip",)])

    section.find_element(By.CSS_SELECTOR, '.queue li[data-file="sub/c.flac"] .remove').click()
    wait(driver, lambda: queue_files(section) == ["b.mp3", "d.mp3"])

    section.find_element(By.CSS_SELECTOR, '.history li[data-file="y.mp3"] .requeue').click()
    wait(driver, lambda: queue_files(section) == ["b.mp3", "d.mp3", "y.mp3"])

    items = section.find_elements(By.CSS_SELECTOR, ".queue li[data-file]")
    ActionChains(driver).drag_and_drop(items[2], items[0]).perform()
    wait(driver, lambda: queue_files(section) == ["y.mp3", "b.mp3", "d.mp3"])
    assert rock.queue == ["y.mp3", "b.mp3", "d.mp3"]
    assert rock.calls[1:] == [
        ("remove", "sub/c.flac"),
        ("enqueue", "y.mp3"),
        ("move", "y.mp3", "0"),
    ]


def test_a_name_that_is_not_utf8_shows_escaped_and_acts_as_itself(
    page: tuple[Any, Any, ControlServer], rock: RichStation
) -> None:
    from selenium.webdriver.common.by import By

    driver, section, _ = page
    odd = os.fsdecode(b"bad\xff\xfeutf8.mp3")  # surrogate escapes, as os.scandir gives it
    rock.queue.append(odd)
    # As the log shows it, where the browser would draw two U+FFFD.
    wait(driver, lambda: "bad\\udcff\\udcfeutf8" in texts(section, ".queue li .file"))
    enter_token(driver)
    items = section.find_elements(By.CSS_SELECTOR, ".queue li[data-file]")
    remove = items[rock.queue.index(odd)].find_element(By.CSS_SELECTOR, ".remove")
    wait(driver, remove.is_enabled)
    remove.click()
    wait(driver, lambda: ("remove", odd) in rock.calls)  # the name itself, not its escape


def test_reorder_by_buttons_and_by_keyboard(
    page: tuple[Any, Any, ControlServer], rock: RichStation
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver, section, _ = page
    enter_token(driver)
    down = section.find_element(By.CSS_SELECTOR, '.queue li[data-file="b.mp3"] .down')
    wait(driver, down.is_enabled)
    # The first cannot go up, the last cannot go down.
    assert not section.find_element(By.CSS_SELECTOR, ".queue li:first-child .up").is_enabled()
    assert not section.find_element(By.CSS_SELECTOR, ".queue li:last-child .down").is_enabled()
    down.click()  # a tap on a phone is a click
    wait(driver, lambda: queue_files(section) == ["sub/c.flac", "b.mp3", "d.mp3"])

    # Keyboard: focus the last item, Alt+Up twice; focus stays on the moved item.
    last = section.find_element(By.CSS_SELECTOR, '.queue li[data-file="d.mp3"]')
    last.click()
    active = driver.switch_to.active_element
    assert active.get_attribute("data-file") == "d.mp3"
    active.send_keys(Keys.ALT, Keys.ARROW_UP)
    wait(driver, lambda: queue_files(section) == ["sub/c.flac", "d.mp3", "b.mp3"])
    wait(driver, lambda: driver.switch_to.active_element.get_attribute("data-file") == "d.mp3")
    driver.switch_to.active_element.send_keys(Keys.ALT, Keys.ARROW_UP)
    wait(driver, lambda: queue_files(section) == ["d.mp3", "sub/c.flac", "b.mp3"])
    assert rock.queue == ["d.mp3", "sub/c.flac", "b.mp3"]
    assert rock.calls == [
        ("move", "b.mp3", "1"),
        ("move", "d.mp3", "1"),
        ("move", "d.mp3", "0"),
    ]


def test_upload_shows_its_progress(
    page: tuple[Any, Any, ControlServer], rock: RichStation, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver, section, _ = page
    enter_token(driver)
    # Record every value the progress bar takes, and whether it was shown.
    driver.execute_script(
        "window.seen = []; const bar = arguments[0];"
        "new MutationObserver((records) => { for (const r of records) window.seen.push("
        "  r.attributeName + '=' + r.oldValue); })"
        ".observe(bar, {attributes: true, attributeOldValue: true,"
        " attributeFilter: ['value', 'hidden']});",
        section.find_element(By.CSS_SELECTOR, ".upload-progress"),
    )
    picked = tmp_path / "Picked Song.mp3"
    picked.write_bytes(bytes(range(256)) * 20000)  # 5 MB: several progress events
    file_input = section.find_element(By.CSS_SELECTOR, ".file-input")
    wait(driver, file_input.is_enabled)
    file_input.send_keys(str(picked))
    status = section.find_element(By.CSS_SELECTOR, ".upload-status")
    wait(driver, lambda: status.text == "Uploaded Picked Song.mp3", timeout=20)
    assert (rock.folder / "Picked Song.mp3").read_bytes() == picked.read_bytes()
    bar = section.find_element(By.CSS_SELECTOR, ".upload-progress")
    assert bar.get_attribute("value") == "100"
    seen: list[str] = driver.execute_script("return window.seen")
    assert "hidden=" in seen, seen  # it was shown (its hidden attribute went)
    values = [float(v.split("=")[1]) for v in seen if v.startswith("value=") and v != "value=null"]
    assert values == sorted(values), seen  # it only goes forward
    wait(driver, lambda: not bar.is_displayed(), timeout=5)  # and goes once done


def test_errors_show_and_go_away_when_resolved(
    page: tuple[Any, Any, ControlServer], rock: RichStation
) -> None:
    from selenium.webdriver.common.by import By

    driver, section, _ = page
    enter_token(driver, "not-the-token")
    skip = section.find_element(By.CSS_SELECTOR, ".skip")
    wait(driver, skip.is_enabled)
    skip.click()
    message = section.find_element(By.CSS_SELECTOR, ".message")
    wait(driver, lambda: message.text == "wrong token")

    enter_token(driver)  # a new token answers "wrong token"
    wait(driver, lambda: message.text == "")
    rock.fail = ControlError("nothing is playing", 409)
    skip.click()
    wait(driver, lambda: message.text == "nothing is playing")
    rock.fail = None
    skip.click()  # it works now: the old error goes
    wait(driver, lambda: message.text == "")
    assert not message.is_displayed()

    # A connection error shows while the station reports it, and goes with it.
    rock.extra["connection"] = {
        "state": "reconnecting", "reconnects": 1, "attempts": 2, "error": "refused"
    }  # fmt: skip
    error = section.find_element(By.CSS_SELECTOR, ".conn-error")
    wait(driver, lambda: error.text == "refused")
    reconnects = section.find_element(By.CSS_SELECTOR, ".reconnects")
    assert reconnects.text == "1 reconnect · 2 failed attempts"
    rock.extra["connection"] = {"state": "on air", "reconnects": 1, "error": None}
    wait(driver, lambda: not error.is_displayed())


def an_output(mount: str, server: str = "127.0.0.1:8000", **fields: Any) -> dict[str, Any]:
    """An output as StationRunner.outputs_status() has it."""
    output: dict[str, Any] = {
        "mount": mount,
        "server": server,
        "listen_url": f"http://{server}{mount}",
        "format": {"bitrate": 128, "samplerate": 44100, "channels": 2},
        "converted": False,
        "state": "on air",
        "error": None,
        "reconnects": 0,
        "attempts": 0,
        "bytes_sent": 1000,
        "listeners": None,
    }
    output.update(fields)
    return output


def test_a_station_with_several_outputs_shows_each(
    page: tuple[Any, Any, ControlServer], rock: RichStation
) -> None:
    from selenium.webdriver.common.by import By

    driver, section, _ = page
    box = section.find_element(By.CSS_SELECTOR, ".outputs-box")
    assert not box.is_displayed()  # one output, the station's own: nothing more to say
    low = {"bitrate": 64, "samplerate": 22050, "channels": 1}
    rock.extra["outputs"] = [
        an_output("/rock", listeners=5),
        an_output("/rock-64", format=low, converted=True, listeners=2, reconnects=1),
        an_output(
            "/rock",
            "backup:8000",
            state="reconnecting",
            error="connection refused",
            reconnects=3,
            attempts=2,
        ),
    ]
    wait(driver, box.is_displayed)
    wait(driver, lambda: len(texts(section, ".outputs li")) == 3)
    assert texts(section, ".outputs .output-mount") == ["/rock", "/rock-64", "/rock"]
    assert texts(section, ".outputs .output-server") == ["", "", "on backup:8000"]
    assert texts(section, ".outputs .output-format") == [
        "128 kbps · 44.1 kHz · stereo",
        "64 kbps · 22.05 kHz · mono (converted)",
        "128 kbps · 44.1 kHz · stereo",
    ]
    assert texts(section, ".outputs .output-state") == ["on air", "on air", "reconnecting"]
    assert texts(section, ".outputs .output-reconnects") == [
        "", "1 reconnect", "3 reconnects · 2 failed attempts"
    ]  # fmt: skip
    assert texts(section, ".outputs .output-listeners") == ["5 listeners", "2 listeners", ""]
    assert texts(section, ".outputs .output-error") == ["", "", "connection refused"]
    links = [a.get_attribute("href") for a in section.find_elements(By.CSS_SELECTOR, ".outputs a")]
    assert links == [
        "http://127.0.0.1:8000/rock",
        "http://127.0.0.1:8000/rock-64",
        "http://backup:8000/rock",
    ]
    # The station's listeners: every output's that is known.
    assert section.find_element(By.CSS_SELECTOR, ".listeners").text == "7 listeners"
    # Each state in the colour the station's own badge has for it.
    colours = driver.execute_script(
        "return [...arguments[0].querySelectorAll('.outputs .badge')]"
        ".map((b) => getComputedStyle(b).color)",
        section,
    )
    ok, warn = driver.execute_script(
        "const s = getComputedStyle(document.documentElement);"
        "const probe = document.createElement('span'); document.body.append(probe);"
        "const colour = (v) => { probe.style.color = s.getPropertyValue(v); "
        "return getComputedStyle(probe).color; };"
        "const found = [colour('--ok'), colour('--warn')]; probe.remove(); return found;"
    )
    assert colours == [ok, ok, warn], colours
    screenshot(driver, "station-outputs")
    # The lines share their columns: each output's format starts where the others' do.
    lefts = driver.execute_script(
        "return [...arguments[0].querySelectorAll('.outputs .output-format')]"
        ".map((e) => Math.round(e.getBoundingClientRect().left))",
        section,
    )
    assert len(set(lefts)) == 1, lefts
    driver.set_window_size(390, 844)
    wide = driver.execute_script(
        "const w = document.documentElement.clientWidth;"
        "return [...arguments[0].querySelectorAll('.outputs *')].filter((e) => e.offsetParent"
        " && e.getBoundingClientRect().right > w + 0.5).map((e) => e.className)",
        section,
    )
    assert wide == [], f"the outputs scroll sideways on a phone: {wide}"
    screenshot(driver, "station-outputs-phone")
    driver.set_window_size(1200, 1000)

    # A poll updates the lines in place: the same elements, the new state.
    driver.execute_script(
        "arguments[0].querySelector('.outputs li:last-child').dataset.mark = 'x'", section
    )
    rock.extra["outputs"][2] = {**rock.extra["outputs"][2], "state": "on air", "error": None}
    wait(driver, lambda: texts(section, ".outputs .output-state")[2] == "on air")
    assert texts(section, ".outputs li[data-mark='x'] .output-server") == ["on backup:8000"]
    assert texts(section, ".outputs .output-error") == ["", "", ""]

    # The overview's listeners are the sum too.
    driver.execute_script("location.hash = '#/'")
    wait(driver, lambda: texts(driver.find_element(By.ID, "rows"), ".cell-listeners") == ["7"])
    driver.execute_script("location.hash = '#/station/rock'")
    wait(driver, section.is_displayed)

    # Back to one output: the list goes.
    rock.extra["outputs"] = rock.extra["outputs"][:1]
    wait(driver, lambda: not box.is_displayed())


def test_phone_width_and_dark_mode(page: tuple[Any, Any, ControlServer]) -> None:
    driver, _section, _ = page
    driver.set_window_size(390, 844)
    wide = driver.execute_script(
        "const w = document.documentElement.clientWidth;"
        "return [...document.querySelectorAll('body *')].filter((e) => e.offsetParent"
        " && e.getBoundingClientRect().right > w + 0.5).map((e) => e.tagName + '.' + e.className"
        " + ' ' + Math.round(e.getBoundingClientRect().right) + '>' + w)"
    )
    assert wide == [], f"the station view scrolls sideways on a phone: {wide}"
    screenshot(driver, "station-view-phone")
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(20, 21, 24)", background
    screenshot(driver, "station-view-phone-dark")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


# --- the overview ---------------------------------------------------------------------------


class Fleet:
    """Many fake stations, and a way to change what they all play."""

    def __init__(self, folder: Path, count: int) -> None:
        states = ["on air"] * 7 + ["reconnecting", "idle", "failed"]
        self.stations = []
        for n in range(count):
            station = RichStation(
                f"st{n:03d}",
                folder,
                name=f"Station {n:03d}",
                listeners=n % 17,
            )
            state = states[n % len(states)]
            error = "connection refused" if state in ("reconnecting", "failed") else None
            station.extra["connection"] = {"state": state, "reconnects": n % 4, "error": error}
            self.stations.append(station)
        self.round = 0

    def next_round(self) -> None:
        self.round += 1
        for station in self.stations:
            station.extra["now_playing"] = {
                "title": f"Song {self.round} on {station.id}",
                "file": "a.mp3",
                "elapsed": 3.0,
                "duration": 200.0,
                "bitrate": 128,
            }


def test_overview_of_300_stations_first_paint_and_one_request_per_update(
    browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    fleet = Fleet(tmp_path, 300)
    with serve(fleet.stations) as server:
        host, port = server.address
        base = f"http://{host}:{port}/"
        # The page as served already carries every station's status.
        with urllib.request.urlopen(base, timeout=10) as response:
            html = response.read().decode("utf-8")
        start = html.index('<script id="initial-status" type="application/json">')
        embedded = html[html.index(">", start) + 1 : html.index("</script>", start)]
        assert len(json.loads(embedded)["stations"]) == 300

        browser.get(base)
        state = browser.execute_script(
            "return {rows: document.querySelectorAll('#rows tr').length,"
            " rendered: performance.getEntriesByName('pushsource-rendered')[0].startTime,"
            " paint: (performance.getEntriesByType('paint')[0] || {}).startTime}"
        )
        assert state["rows"] == 300  # drawn before any request to the API
        assert api_requests(browser) == []
        # The rows were drawn before the browser painted anything.
        if state["paint"] is not None:
            assert state["rendered"] <= state["paint"], state
        row = browser.find_element(By.CSS_SELECTOR, 'tr[data-row="st007"]')
        assert row.find_element(By.CSS_SELECTOR, ".cell-name").text == "Station 007"
        assert row.find_element(By.CSS_SELECTOR, ".cell-state").text == "reconnecting"
        assert row.find_element(By.CSS_SELECTOR, ".cell-title").text == "⚠ connection refused"
        assert row.find_element(By.CSS_SELECTOR, ".cell-listeners").text == "7"
        assert row.find_element(By.CSS_SELECTOR, ".cell-reconnects").text == "3"
        assert browser.find_element(By.ID, "summary").text == (
            "300 stations: 60 need a look · 30 failed · 30 reconnecting · 30 idle · 210 on air"
        )
        # Compact: the rows fit a screen's worth per ~25 px.
        height = browser.execute_script("return document.querySelector('#rows').offsetHeight")
        assert height <= 300 * 26, height
        screenshot(browser, "overview-300")

        # An update: one request, every row changed in place (same elements).
        marker = browser.execute_script(
            "const r = document.querySelector('tr[data-row=\"st000\"]'); r.dataset.mark = 'x';"
            " return document.querySelectorAll('#rows tr').length"
        )
        assert marker == 300
        fleet.next_round()
        wait(
            browser,
            lambda: row.find_element(By.CSS_SELECTOR, ".cell-title").text != "",
        )
        wait(
            browser,
            lambda: (
                browser.find_element(By.CSS_SELECTOR, 'tr[data-row="st296"] .cell-title').text
                == "Song 1 on st296"
            ),
        )
        first = api_requests(browser)
        assert len(first) == 1 and first[0].endswith("/api/stations?summary=1"), first
        assert (
            browser.execute_script(
                "return document.querySelector('tr[data-row=\"st000\"]').dataset.mark"
            )
            == "x"
        )
        fleet.next_round()
        wait(
            browser,
            lambda: (
                browser.find_element(By.CSS_SELECTOR, 'tr[data-row="st000"] .cell-title').text
                == "Song 2 on st000"
            ),
        )
        assert len(api_requests(browser)) == 2


def test_overview_filters_sorts_and_opens_a_station(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    fleet = Fleet(tmp_path, 12)
    with serve(fleet.stations) as server:
        host, port = server.address
        browser.get(f"http://{host}:{port}/")

        def shown() -> list[str]:
            found: list[str] = browser.execute_script(
                "return [...document.querySelectorAll('#rows tr')]"
                ".filter((r) => !r.hidden).map((r) => r.dataset.row)"
            )
            return found

        # Problems first (failed, reconnecting), then idle, then on air, by name.
        on_air = [f"st{n:03d}" for n in (0, 1, 2, 3, 4, 5, 6, 10, 11)]
        assert shown() == ["st009", "st007", "st008", *on_air]
        browser.find_element(By.CSS_SELECTOR, 'th[data-sort="name"] button').click()
        assert shown() == [f"st{n:03d}" for n in range(12)]
        Select(browser.find_element(By.ID, "state-filter")).select_by_value("problem")
        assert shown() == ["st007", "st009"]
        Select(browser.find_element(By.ID, "state-filter")).select_by_value("")
        browser.find_element(By.ID, "filter").send_keys("station 01")
        assert shown() == ["st010", "st011"]
        assert browser.find_element(By.ID, "shown-count").text == "2 of 12 stations"
        browser.find_element(By.ID, "filter").clear()
        browser.find_element(By.ID, "filter").send_keys(" ")  # clear() sends no input event
        browser.find_element(By.CSS_SELECTOR, 'th[data-sort="listeners"] button').click()
        assert shown()[:2] == ["st011", "st010"]  # most listeners first
        header = browser.find_element(By.CSS_SELECTOR, 'th[data-sort="listeners"]')
        assert header.get_attribute("aria-sort") == "descending"
        browser.find_element(By.CSS_SELECTOR, 'th[data-sort="state"] button').click()
        assert shown()[:2] == ["st009", "st007"]  # failed, then reconnecting: the worst first

        # Keyboard: tab to a station's link, Enter opens its view.
        link = browser.find_element(By.CSS_SELECTOR, 'tr[data-row="st003"] a')
        link.send_keys("\n")
        section = browser.find_element(By.ID, "station")
        wait(browser, section.is_displayed)
        wait(browser, lambda: section.find_element(By.CSS_SELECTOR, ".name").text == "Station 003")
        assert not browser.find_element(By.ID, "overview").is_displayed()
        wait(browser, lambda: queue_files(section) == ["b.mp3", "sub/c.flac", "d.mp3"])
        browser.find_element(By.CSS_SELECTOR, "#station .back").click()
        wait(browser, lambda: browser.find_element(By.ID, "overview").is_displayed())
        screenshot(browser, "overview-12")

        # A phone: no sideways scrolling, the least useful columns go.
        browser.set_window_size(390, 844)
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        ), "the overview scrolls sideways on a phone"
        assert not browser.find_element(By.CSS_SELECTOR, 'th[data-sort="format"]').is_displayed()
        assert browser.find_element(By.CSS_SELECTOR, 'tr[data-row="st003"] a').is_displayed()
        screenshot(browser, "overview-phone")
        browser.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
        )
        screenshot(browser, "overview-phone-dark")
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def test_library_search_and_queue_this(
    page: tuple[Any, Any, ControlServer], rock: RichStation
) -> None:
    from selenium.webdriver.common.by import By

    driver, section, _ = page
    enter_token(driver)

    def library() -> list[tuple[str, str]]:
        found: list[list[str]] = driver.execute_script(
            "return [...document.querySelectorAll('#station .library li')]"
            ".map((li) => [li.dataset.file, li.querySelector('button').textContent])"
        )
        return [(file, label) for file, label in found]

    wait(driver, lambda: len(library()) == 6)
    assert section.find_element(By.CSS_SELECTOR, ".library-count").text == "6 files"
    search = section.find_element(By.CSS_SELECTOR, ".library-search")
    search.send_keys("new")
    wait(driver, lambda: library() == [("new/e.mp3", "Queue"), ("new/f.mp3", "Queue")])
    section.find_element(By.CSS_SELECTOR, '.library li[data-file="new/f.mp3"] .enqueue').click()
    wait(driver, lambda: queue_files(section) == ["b.mp3", "sub/c.flac", "d.mp3", "new/f.mp3"])
    wait(driver, lambda: library() == [("new/e.mp3", "Queue"), ("new/f.mp3", "Queued")])
    queued = section.find_element(By.CSS_SELECTOR, '.library li[data-file="new/f.mp3"] button')
    assert not queued.is_enabled()
    assert rock.calls == [("enqueue", "new/f.mp3")]
    search.send_keys(" zzz")
    wait(
        driver,
        lambda: section.find_element(By.CSS_SELECTOR, ".library-count").text == "No file matches.",
    )


# --- a DJ's set (issue 22) ------------------------------------------------------------------


class LiveStation(RichStation):
    """rock during alice's set: the DJ's title on air, the folder's track paused."""

    def __init__(self, station_id: str, folder: Path) -> None:
        super().__init__(station_id, folder)
        self.on_air = True
        self.history = [
            {
                "file": "",
                "title": "Alice - Midnight Set",
                "started": "2026-11-22T05:01:35Z",
                "live": "alice",
            },
            {"file": "z.mp3", "title": "Zed - Last One", "started": "2026-11-22T04:57:02Z"},
        ]

    def status(self) -> dict[str, Any]:
        status = super().status()
        if not self.on_air:
            status["live"] = {"mount": "/live", "user": None, "since": None, "bytes_in": 0}
            return status
        cut = {**status["now_playing"], "elapsed": 83.4, "duration": 200.0, "state": "paused"}
        status["now_playing"] = {
            "title": "Alice - Midnight Set",
            "file": "",
            "elapsed": 95.0,
            "duration": None,
            "bitrate": 128,
            "live": "alice",
            "interrupted": cut,
        }
        status["live"] = {
            "mount": "/live",
            "user": "alice",
            "since": "2026-11-22T05:00:00Z",
            "bytes_in": 1_536_000,
            "on_air": True,
            "title": "Alice - Midnight Set",
            "seconds": 95.0,
            "frames_in": 3650,
            "connected": True,
            "format": {"bitrate": 128, "samplerate": 44100, "channels": 2},
            "input": "Ogg Vorbis, converted",
        }
        return status

    def kick(self, ban_minutes: int = 0) -> None:
        self._check("kick", str(ban_minutes))
        self.on_air = False


def test_during_a_set_the_view_shows_the_dj_and_kick_acts_and_skip_is_off(
    browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    station = LiveStation("rock", tmp_path / "rock")
    station.folder.mkdir()
    with serve([station]) as server:
        host, port = server.address
        browser.get(f"http://{host}:{port}/")
        browser.execute_script("localStorage.clear()")
        browser.get(f"http://{host}:{port}/#/station/rock")
        browser.refresh()
        section = wait(
            browser, lambda: browser.find_element(By.CSS_SELECTOR, '#station[data-station="rock"]')
        )
        one = section.find_element
        wait(browser, lambda: one(By.CSS_SELECTOR, ".now-title").text == "Alice - Midnight Set")
        assert one(By.CSS_SELECTOR, ".now-label").text == "Live now"
        assert one(By.CSS_SELECTOR, ".live-box").is_displayed()
        assert one(By.CSS_SELECTOR, ".live-user").text == "alice"
        assert one(By.CSS_SELECTOR, ".live-since").text.startswith("since ")
        live_in = one(By.CSS_SELECTOR, ".live-in").text
        assert "1500 KiB in" in live_in and "3650 frames" in live_in and "128 kbps" in live_in
        assert live_in.endswith(" · from Ogg Vorbis, converted"), live_in
        cut = one(By.CSS_SELECTOR, ".live-cut").text
        assert cut == "Folder: Artist - Ünïcode — paused at 1:23"
        assert "Artist - Ünïcode" not in one(By.CSS_SELECTOR, ".now-title").text
        assert texts(section, ".history li .file") == ["Alice - Midnight Set", "Zed - Last One"]
        assert texts(section, ".history li .live-mark") == ["● live: alice"]
        kick, skip = one(By.CSS_SELECTOR, ".kick"), one(By.CSS_SELECTOR, ".skip")
        assert not kick.is_enabled() and "token" in kick.get_attribute("title")
        enter_token(browser)
        wait(browser, kick.is_enabled)
        assert not skip.is_enabled() and "kick" in skip.get_attribute("title")
        screenshot(browser, "station-live")
        ban = one(By.CSS_SELECTOR, ".ban")
        ban.clear()
        ban.send_keys("30")
        kick.click()
        wait(browser, lambda: station.calls == [("kick", "30")])
        # The folder is back: the view says so, and Skip acts again.
        wait(browser, lambda: one(By.CSS_SELECTOR, ".now-title").text == "Artist - Ünïcode")
        assert not one(By.CSS_SELECTOR, ".live-box").is_displayed()
        assert one(By.CSS_SELECTOR, ".now-label").text == "Now playing"
        wait(browser, skip.is_enabled)
