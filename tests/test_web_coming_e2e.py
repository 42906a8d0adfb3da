"""Up next with ``idle = "loop"`` and the station view's player, end to end
(issue 23): a real icecast2, ``pushsource run --config``, a real ICY
listener, and the page in headless Chromium. When the queue runs dry the
status names the loop's next file, with its title and length from the tags,
and that is the title the listener hears next; the player plays the public
stream (icecast2 counts it as a listener) and hangs up on pause."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartPushsource, register_secret
from tests.support.browser import chromium
from tests.support.icecast import IcecastServer, fetch_status, find_source, sources_of
from tests.support.listener import Listener
from tests.support.media import make_titled_tracks
from tests.test_web_e2e import free_port, get_json, wait_until
from tests.test_web_page import screenshot

pytestmark = pytest.mark.integration

TOKEN = "web-coming-e2e-Qv8-2Lm"
register_secret(TOKEN)
TRACK_SECONDS = 8.0


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def listeners_on(icecast: IcecastServer, mount: str) -> int:
    source = find_source(sources_of(fetch_status(icecast.base_url)), mount)
    return int(source.get("listeners", 0)) if source is not None else -1


def test_up_next_in_loop_mode_is_what_plays_and_the_player_plays(
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    browser: Any,
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    tracks = make_titled_tracks(
        tmp_path / "music",
        [("Alpha", "One"), ("Beta", "Two"), ("Gamma", "Three")],
        seconds=TRACK_SECONDS,
    )
    an_hour_ago = time.time() - 3600
    for track in tracks:  # settled: queued at the first walk, in name order
        os.utime(track.path, (an_hour_ago, an_hour_ago))
    port = free_port()
    config = tmp_path / "stations.toml"
    config.write_text(
        f"""
[control]
listen = "127.0.0.1:{port}"
token = "${{PUSHSOURCE_TOKEN}}"

[[station]]
id = "loop"
name = "E2E Loop"
folder = "music"
idle = "loop"
url = "icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}"
state = "state.json"
""",
        encoding="utf-8",
    )
    listener = Listener(icecast.port, unique_mount, connect_timeout=30).start()
    process = start_pushsource("run", "--config", config, env={"PUSHSOURCE_TOKEN": TOKEN})
    base = f"http://127.0.0.1:{port}"
    api = f"{base}/api/stations/loop"
    titles = [t.title for t in tracks]
    try:
        listener.wait_for_title(str(titles[0]), timeout=30)
        wait_until("the control API", lambda: get_json(api)["id"] == "loop", timeout=15)
        # While the queue plays, up next is its first file, titled from the tags.
        status = wait_until(
            "up next from the queue, titled",
            lambda: (s := get_json(api))["up_next"] and s["up_next"]["title"] and s,
            timeout=10,
        )
        assert status["idle"] == "loop"
        assert status["up_next"]["source"] == "queue"
        assert status["up_next"]["file"] == tracks[1].path.name
        assert status["up_next"]["title"] == titles[1]
        assert [q["title"] for q in status["queue"]] == titles[1:]
        assert all(abs(q["duration"] - TRACK_SECONDS) < 0.5 for q in status["queue"])

        browser.get(base + "/#/station/loop")
        station = browser.find_element(By.ID, "station")
        # The queue's last track plays: nothing is queued, and up next is the loop's.
        listener.wait_for_title(str(titles[2]), timeout=3 * TRACK_SECONDS)
        status = wait_until(
            "up next from the loop",
            lambda: (s := get_json(api))["up_next"] and s["up_next"]["source"] == "loop" and s,
            timeout=5,
        )
        assert status["now_playing"]["title"] == titles[2]
        assert status["up_next"]["file"] == tracks[0].path.name
        assert status["up_next"]["title"] == titles[0]
        assert abs(status["up_next"]["duration"] - TRACK_SECONDS) < 0.5
        wait_until(
            "the page's up next",
            lambda: station.find_element(By.CSS_SELECTOR, ".up-next-title").text == titles[0],
            timeout=5,
        )
        assert station.find_element(By.CSS_SELECTOR, ".up-next-note").text == "from the loop"
        history = station.find_elements(By.CSS_SELECTOR, ".history li .length")
        assert history and history[0].text in ("0:07", "0:08")
        # And the loop's next is what the listener hears after it.
        heard = len(listener.titles)
        wait_until("the next title", lambda: len(listener.titles) > heard, 2 * TRACK_SECONDS)
        assert listener.titles[heard][1] == titles[0], listener.titles

        # The loop's next, cued ahead of its turn, is listed first but marked as
        # the loop's: nobody queued it.
        status = wait_until(
            "the loop's next cued",
            lambda: (s := get_json(api))["queue"] and s,
            timeout=TRACK_SECONDS + 2,
        )
        assert status["queue"] == [
            {"file": tracks[1].path.name, "title": titles[1],
             "duration": status["queue"][0]["duration"], "loop": True}
        ]  # fmt: skip
        assert status["up_next"]["source"] == "loop" and "loop" not in status["up_next"]
        wait_until(
            "the page's mark",
            lambda: station.find_elements(By.CSS_SELECTOR, ".queue li .loop-mark"),
            timeout=3,
        )

        # The player: nothing fetched until play; a click plays the public stream.
        audio = station.find_element(By.CSS_SELECTOR, ".player audio")
        assert audio.get_attribute("src") == f"http://127.0.0.1:{icecast.port}{unique_mount}"
        assert listeners_on(icecast, unique_mount) == 1
        width = audio.size["width"]
        ActionChains(browser).move_to_element_with_offset(
            audio, -width // 2 + 18, 0
        ).click().perform()
        wait_until(
            "the player playing",
            lambda: browser.execute_script(
                "return !arguments[0].paused && arguments[0].currentTime > 1", audio
            ),
            timeout=15,
        )
        wait_until(
            "icecast2 counts the player", lambda: listeners_on(icecast, unique_mount) == 2, 10
        )
        assert station.find_element(By.CSS_SELECTOR, ".player-title").text in titles
        screenshot(browser, "live-loop-player")
        browser.execute_script("arguments[0].pause()", audio)
        wait_until("the player hung up", lambda: listeners_on(icecast, unique_mount) == 1, 10)
    except BaseException:
        print(process.describe())
        raise
    finally:
        listener.stop()
