"""The control page end to end: a real icecast2, ``pushsource run --config`` with
its control server, a real ICY listener, and the page in headless Chromium
driven by Selenium (the reorder is a WebDriver drag and drop, which Chromium
turns into the page's HTML5 drag events)."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pushsource import __version__
from tests.conftest import StartPushsource, register_secret
from tests.support.browser import chromium
from tests.support.icecast import IcecastServer
from tests.support.listener import Listener
from tests.support.media import make_clean_mp3, make_titled_tracks
from tests.test_web_page import screenshot

pytestmark = pytest.mark.integration

TOKEN = "web-e2e-Tk7-5Fq2p"
register_secret(TOKEN)
TRACK_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def wait_until(what: str, check: Any, timeout: float) -> Any:
    """check()'s first truthy value, polled; AssertionError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as error:  # not up yet
            last = error
        if last and not isinstance(last, OSError):
            return last
        time.sleep(0.2)
    raise AssertionError(f"waited {timeout} s for {what}; last: {last!r}")


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def test_page_shows_skips_and_reorders_a_live_station(
    icecast: IcecastServer,
    unique_mount: str,
    start_pushsource: StartPushsource,
    browser: Any,
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tracks = make_titled_tracks(
        tmp_path / "music",
        [
            ("Alpha Artist", "First Song"),
            ("Bêta Artist", "Second Song"),
            ("Gamma Artist", "Third Song"),
            ("Delta Artist", "Fourth Song"),
        ],
        seconds=TRACK_SECONDS,
    )
    titles = {t.path.name: t.title for t in tracks}
    port = free_port()
    config = tmp_path / "stations.toml"
    config.write_text(
        f"""
[control]
listen = "127.0.0.1:{port}"
token = "${{PUSHSOURCE_TOKEN}}"

[[station]]
id = "rock"
name = "E2E Rock"
folder = "music"
url = "icecast://source:hackme@127.0.0.1:{icecast.port}{unique_mount}"
state = "state.json"
""",
        encoding="utf-8",
    )
    listener = Listener(icecast.port, unique_mount, connect_timeout=30).start()
    process = start_pushsource("run", "--config", config, env={"PUSHSOURCE_TOKEN": TOKEN})
    base = f"http://127.0.0.1:{port}"
    api = f"{base}/api/stations/rock"
    try:
        # (a) the page shows the title a real listener hears
        first = tracks[0].title
        assert first is not None
        listener.wait_for_title(first, timeout=30)
        wait_until("the control API", lambda: get_json(api)["id"] == "rock", timeout=15)
        browser.get(base + "/")
        # The overview's row says what the listener hears, from the first paint.
        row = browser.find_element(By.CSS_SELECTOR, 'tr[data-row="rock"]')
        assert row.find_element(By.CSS_SELECTOR, ".cell-title").text == first
        assert row.find_element(By.CSS_SELECTOR, ".cell-state").text == "on air"
        assert row.find_element(By.CSS_SELECTOR, ".cell-name").text == "E2E Rock"
        assert row.find_element(By.CSS_SELECTOR, ".cell-format").text == "128k 44.1 kHz stereo"
        screenshot(browser, "live-overview")
        row.find_element(By.CSS_SELECTOR, ".cell-name a").click()
        station = WebDriverWait(browser, 15).until(
            lambda d: d.find_element(By.CSS_SELECTOR, '#station[data-station="rock"]')
        )
        WebDriverWait(browser, 10).until(
            lambda _: station.find_element(By.CSS_SELECTOR, ".now-title").text == first
        )
        assert listener.titles[-1][1] == first
        assert station.find_element(By.CSS_SELECTOR, ".name").text == "E2E Rock"
        assert station.find_element(By.CSS_SELECTOR, ".state").text == "on air"

        # The share links play: the .m3u names the mount a listener can open.
        m3u = station.find_element(By.CSS_SELECTOR, ".m3u").get_attribute("href")
        with urllib.request.urlopen(m3u, timeout=5) as response:
            url = response.read().decode("utf-8").splitlines()[-1]
        assert url == station.find_element(By.CSS_SELECTOR, ".listen").get_attribute("href")
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.headers["Content-Type"] == "audio/mpeg"
            assert len(response.read(4096)) == 4096

        # Without the token the actions are off, and the page says why.
        skip = station.find_element(By.CSS_SELECTOR, ".skip")
        assert not skip.is_enabled()
        assert station.find_element(By.CSS_SELECTOR, ".needs-token").is_displayed()

        # (b) with the token, Skip moves the listener on to the next queued track
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "token-save").click()
        WebDriverWait(browser, 5).until(lambda _: skip.is_enabled())
        # The files were written just before the start: each is queued only once
        # it has been still for the settle time, so wait until all three are.
        rest = sorted(t.path.name for t in tracks[1:])

        def settled() -> Any:
            found = get_json(api)
            return found if sorted(i["file"] for i in found["queue"]) == rest else None

        status = wait_until("the other three files in the queue", settled, timeout=15)
        assert status["now_playing"]["file"] == tracks[0].path.name
        # Far enough from the track's end that only the skip can change the title.
        assert status["now_playing"]["elapsed"] < TRACK_SECONDS - 15, status["now_playing"]
        upcoming = status["queue"][0]["file"]
        skip.click()
        listener.wait_for_title(titles[upcoming], timeout=10)
        WebDriverWait(browser, 10).until(
            lambda _: station.find_element(By.CSS_SELECTOR, ".now-title").text == titles[upcoming]
        )

        # (c) dragging the last queued item to the top reorders the queue
        def page_queue() -> list[str]:
            found: list[str] = browser.execute_script(
                "return [...document.querySelectorAll('#station .queue li')]"
                ".map((li) => li.dataset.file)"
            )
            return found

        left = [name for name in rest if name != upcoming]

        def rest_queued() -> list[str] | None:
            found = [item["file"] for item in get_json(api)["queue"]]
            return found if sorted(found) == left else None

        queue = wait_until("the queue without the skipped-to track", rest_queued, timeout=10)
        WebDriverWait(browser, 5).until(lambda _: page_queue() == queue)
        items = station.find_elements(By.CSS_SELECTOR, ".queue li[data-file]")
        ActionChains(browser).drag_and_drop(items[-1], items[0]).perform()
        wanted = [queue[-1], *queue[:-1]]
        wait_until(
            "the reordered queue in the API",
            lambda: [item["file"] for item in get_json(api)["queue"]] == wanted,
            timeout=5,
        )
        WebDriverWait(browser, 5).until(lambda _: page_queue() == wanted)
        assert station.find_element(By.CSS_SELECTOR, ".message").text == ""

        # (d) and the keyboard moves it back: Alt+Down on the focused first item
        from selenium.webdriver.common.keys import Keys

        station.find_element(By.CSS_SELECTOR, ".queue li:first-child").click()
        browser.switch_to.active_element.send_keys(Keys.ALT, Keys.ARROW_DOWN)
        back = [wanted[1], wanted[0], *wanted[2:]]
        wait_until(
            "the queue moved by keyboard in the API",
            lambda: [item["file"] for item in get_json(api)["queue"]] == back,
            timeout=5,
        )
        WebDriverWait(browser, 5).until(lambda _: page_queue() == back)
        # The skipped track is in the history, marked.
        WebDriverWait(browser, 5).until(
            lambda _: station.find_elements(By.CSS_SELECTOR, ".history li.skipped")
        )
        skipped_item = station.find_element(By.CSS_SELECTOR, ".history li.skipped")
        assert skipped_item.get_attribute("data-file") == tracks[0].path.name
        assert skipped_item.find_element(By.CSS_SELECTOR, ".file").text == first
        screenshot(browser, "live-station-view")
        wanted = back

        # (e) the library: find the skipped track by a word of its name, queue it again
        search = station.find_element(By.CSS_SELECTOR, ".library-search")
        search.send_keys(tracks[0].path.stem)
        pick = f'.library li[data-file="{tracks[0].path.name}"] .enqueue'
        WebDriverWait(browser, 5).until(
            lambda _: [li.get_attribute("data-file") for li in station.find_elements(
                By.CSS_SELECTOR, ".library li")] == [tracks[0].path.name]
        )  # fmt: skip
        station.find_element(By.CSS_SELECTOR, pick).click()
        wanted = [*wanted, tracks[0].path.name]
        wait_until(
            "the library's pick at the end of the queue",
            lambda: [item["file"] for item in get_json(api)["queue"]] == wanted,
            timeout=5,
        )
        WebDriverWait(browser, 5).until(lambda _: page_queue() == wanted)

        # (f) an upload through the page, with its progress bar, joins the queue
        upload = tmp_path / "upload" / "Fifth Upload.mp3"
        upload.parent.mkdir()
        make_clean_mp3(upload, 2.0)
        station.find_element(By.CSS_SELECTOR, ".file-input").send_keys(str(upload))
        WebDriverWait(browser, 15).until(
            lambda _: (
                station.find_element(By.CSS_SELECTOR, ".upload-status").text
                == "Uploaded Fifth Upload.mp3"
            )
        )
        assert (
            station.find_element(By.CSS_SELECTOR, ".upload-progress").get_attribute("value")
            == "100"
        )
        assert (tmp_path / "music" / "Fifth Upload.mp3").read_bytes() == upload.read_bytes()
        wanted = [*wanted, "Fifth Upload.mp3"]
        wait_until(
            "the upload in the queue",
            lambda: [item["file"] for item in get_json(api)["queue"]] == wanted,
            timeout=10,
        )

        # /metrics counts what the listener got and the skip.
        heard = len(listener.audio)  # before the scrape: the listener keeps hearing
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
            metrics = response.read().decode()
        samples = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith(("pushsource_", "process_"))
        }
        sent = samples['pushsource_sent_bytes_total{station="rock"}']
        assert sent >= heard > 0  # all the listener heard came from us
        assert samples['pushsource_tracks_skipped_total{station="rock"}'] == 1.0
        assert samples['pushsource_queue_length{station="rock"}'] == len(wanted)
        assert samples['pushsource_connection_state{state="on_air",station="rock"}'] == 1.0
        # The process's own series, which version, and when the track playing began.
        assert samples["process_resident_memory_bytes"] > 10e6
        assert samples["process_cpu_seconds_total"] > 0 and samples["process_open_fds"] > 3
        assert samples[f'pushsource_build_info{{version="{__version__}"}}'] == 1.0
        began = samples['pushsource_track_started_timestamp_seconds{station="rock"}']
        assert time.time() - 60 < began <= time.time()
    except BaseException:
        print(process.describe())
        raise
    finally:
        listener.stop()
