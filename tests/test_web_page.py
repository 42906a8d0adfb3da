"""The control page in headless Chromium against the real server and a fake
station: what it shows and every action it sends (the live run is in
test_web_e2e.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pushsource.errors import ControlError
from pushsource.ops.control import ControlServer
from tests.support.browser import chromium
from tests.test_control import TOKEN, FakeStation, serve


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


@pytest.fixture
def rock(tmp_path: Path) -> FakeStation:
    station = FakeStation("rock", tmp_path / "rock")
    station.folder.mkdir()
    station.history = [
        {"file": "z.mp3", "title": "Zed - Last One", "started": "2026-11-22T05:01:02Z"},
        {"file": "y.mp3", "title": "Why - Before", "started": "2026-11-22T04:58:00Z"},
    ]
    return station


@pytest.fixture
def page(browser: Any, rock: FakeStation) -> Iterator[tuple[Any, Any, ControlServer]]:
    """(driver, the station's section, server), the page loaded, no token stored."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with serve([rock]) as server:
        host, port = server.address
        browser.get(f"http://{host}:{port}/")
        browser.execute_script("localStorage.clear()")
        browser.refresh()
        section = WebDriverWait(browser, 10).until(
            lambda d: d.find_element(By.CSS_SELECTOR, '[data-station="rock"]')
        )
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


def enter_token(driver: Any, token: str = TOKEN) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "token-save").click()


def test_shows_the_status(page: tuple[Any, Any, ControlServer]) -> None:
    from selenium.webdriver.common.by import By

    driver, section, _ = page
    one = section.find_element
    wait(driver, lambda: one(By.CSS_SELECTOR, ".now-title").text == "Artist - Ünïcode")
    assert one(By.CSS_SELECTOR, ".name").text == "Rock"
    assert one(By.CSS_SELECTOR, ".state").text == "on air"
    assert one(By.CSS_SELECTOR, ".listen").get_attribute("href") == "http://127.0.0.1:8000/rock"
    assert one(By.CSS_SELECTOR, ".duration").text == "0:20"
    assert one(By.CSS_SELECTOR, ".progress").get_attribute("aria-valuenow") != "0"
    assert [li.get_attribute("data-file") for li in section.find_elements(
        By.CSS_SELECTOR, ".queue li[data-file]")] == ["b.mp3", "sub/c.flac", "d.mp3"]  # fmt: skip
    assert texts(section, ".history li .file") == ["Zed - Last One", "Why - Before"]


def test_without_a_token_actions_are_off_and_say_why(
    page: tuple[Any, Any, ControlServer], rock: FakeStation
) -> None:
    from selenium.webdriver.common.by import By

    driver, section, _ = page
    wait(driver, lambda: texts(section, ".queue li .file"))
    for selector in (".skip", ".queue .remove", ".history .requeue", ".file-input"):
        for element in section.find_elements(By.CSS_SELECTOR, selector):
            assert not element.is_enabled(), selector
            assert "token" in element.get_attribute("title"), selector
    note = section.find_element(By.CSS_SELECTOR, ".needs-token")
    assert note.is_displayed() and "token" in note.text
    assert rock.calls == []


def test_actions_send_the_token(page: tuple[Any, Any, ControlServer], rock: FakeStation) -> None:
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
    wait(driver, lambda: texts(section, ".queue li .file") == ["b.mp3", "d.mp3"])

    section.find_element(By.CSS_SELECTOR, '.history li[data-file="y.mp3"] .requeue').click()
    wait(driver, lambda: texts(section, ".queue li .file") == ["b.mp3", "d.mp3", "y.mp3"])

    items = section.find_elements(By.CSS_SELECTOR, ".queue li[data-file]")
    ActionChains(driver).drag_and_drop(items[2], items[0]).perform()
    wait(driver, lambda: texts(section, ".queue li .file") == ["y.mp3", "b.mp3", "d.mp3"])
    assert rock.queue == ["y.mp3", "b.mp3", "d.mp3"]
    assert rock.calls[1:] == [
        ("remove", "sub/c.flac"),
        ("enqueue", "y.mp3"),
        ("move", "y.mp3", "0"),
    ]


def test_upload_with_the_file_input(
    page: tuple[Any, Any, ControlServer], rock: FakeStation, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver, section, _ = page
    enter_token(driver)
    picked = tmp_path / "Picked Song.mp3"
    picked.write_bytes(bytes(range(256)) * 2000)
    file_input = section.find_element(By.CSS_SELECTOR, ".file-input")
    wait(driver, file_input.is_enabled)
    file_input.send_keys(str(picked))
    status = section.find_element(By.CSS_SELECTOR, ".upload-status")
    wait(driver, lambda: status.text == "Uploaded Picked Song.mp3")
    assert (rock.folder / "Picked Song.mp3").read_bytes() == picked.read_bytes()


def test_errors_show_next_to_the_station(
    page: tuple[Any, Any, ControlServer], rock: FakeStation
) -> None:
    from selenium.webdriver.common.by import By

    driver, section, _ = page
    enter_token(driver, "not-the-token")
    skip = section.find_element(By.CSS_SELECTOR, ".skip")
    wait(driver, skip.is_enabled)
    skip.click()
    message = section.find_element(By.CSS_SELECTOR, ".message")
    wait(driver, lambda: message.text == "wrong token")

    driver.find_element(By.ID, "token-forget").click()
    enter_token(driver)
    rock.fail = ControlError("nothing is playing", 409)
    wait(driver, skip.is_enabled)
    skip.click()
    wait(driver, lambda: message.text == "nothing is playing")
