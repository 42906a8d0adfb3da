"""Listeners over time end to end: a real icecast2, ``pushsource run --config``
and a real listener. The listener shows in the station's series and in the
total (the sampler looks every 10 s at the counts the watch reads every 6 s),
in a history entry, and on the page's chart; after a restart the series still
holds it (kept in the play state)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartPushsource
from tests.support.browser import chromium
from tests.support.icecast import IcecastServer
from tests.support.listener import Listener
from tests.support.media import make_clean_mp3
from tests.test_web_e2e import free_port, get_json, wait_until
from tests.test_web_listeners import fills_its_box
from tests.test_web_page import screenshot

pytestmark = pytest.mark.integration


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def test_a_real_listener_shows_in_the_series_and_survives_a_restart(
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    tmp_path: Path,
    browser: Any,
) -> None:
    from selenium.webdriver.common.by import By

    folder = tmp_path / "music"
    folder.mkdir()
    for name in ("a", "b"):
        make_clean_mp3(folder / f"{name}.mp3", 8.0, freq=440)
    port = free_port()
    config = tmp_path / "stations.toml"
    config.write_text(
        f"""
[control]
listen = "127.0.0.1:{port}"

[[station]]
id = "rock"
folder = "music"
url = "icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}"
state = "state.json"
idle = "loop"
""",
        encoding="utf-8",
    )
    base = f"http://127.0.0.1:{port}"
    series = f"{base}/api/stations/rock/listeners?hours=1"
    process = start_pushsource("run", "--config", config)
    listener: Listener | None = None
    try:
        wait_until(
            "on air",
            lambda: get_json(f"{base}/api/stations/rock")["connection"]["state"] == "on air",
            30,
        )
        # Known and 0 before anyone listens: a count, not a gap.
        wait_until("a sample of 0", lambda: get_json(series)["current"] == 0, timeout=30)
        listener = Listener(icecast.port, unique_mount, connect_timeout=15).start()
        listener.wait_connected(15)
        wait_until("the listener in the series", lambda: get_json(series)["current"] == 1, 30)
        body = get_json(series)
        assert body["peak"]["listeners"] == 1 and body["samples"][-1] == 1
        assert body["samples"][0] is None  # an hour ago nothing was known: a gap
        total = get_json(f"{base}/api/listeners?hours=1&step=1")["total"]
        assert total["current"] == 1 and total["peak"]["listeners"] == 1
        # A track that began with the listener there says so in the history.
        wait_until(
            "a history entry begun with 1 listener",
            lambda: any(
                entry.get("listeners_start") == 1
                for entry in get_json(f"{base}/api/stations/rock")["history"]
            ),
            timeout=30,
        )

        browser.get(base + "/#/station/rock")
        browser.refresh()
        figures = ".station-listeners .listeners-figures"
        wait_until(
            "the chart",
            lambda: browser.find_elements(By.CSS_SELECTOR, ".station-listeners svg.chart"),
            timeout=10,
        )
        assert browser.find_element(By.CSS_SELECTOR, figures).text.startswith("Now 1 · peak 1")
        wait_until(
            "the chart at its box's width",
            lambda: fills_its_box(browser, ".station-listeners"),
            timeout=5,
        )
        screenshot(browser, "live-station-listeners")
        listener.stop()
        listener = None
    except BaseException:
        print(process.describe())
        raise
    finally:
        if listener is not None:
            listener.stop()

    process.terminate()  # SIGTERM: a clean stop saves the state a last time
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["listeners"]["every"] == 60

    again = start_pushsource("run", "--config", config)
    try:
        wait_until("the API again", lambda: get_json(series)["id"] == "rock", 30)
        # The minute with the listener, from before the restart.
        assert 1 in get_json(series)["samples"]
    except BaseException:
        print(again.describe())
        raise
