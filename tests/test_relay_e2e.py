"""Past one machine: a second real icecast2 relays the one pushsource streams to
(a per-mount ``<relay>``, as the README's "Past one machine" shows), and a
listener on the relay gets the station's frames byte for byte and every title.

Titles travel to a relay only inside the stream (ICY metadata): pushsource
sets them on the master through its admin endpoint, the master puts them into
the stream, and ``<relay-shoutcast-metadata>1</relay-shoutcast-metadata>`` makes
the relay ask for them. A second relay mount without it is the control: same
bytes, no titles.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import StartPushsource
from tests.support.icecast import DEFAULT_TEMPLATE, IcecastServer
from tests.support.listener import Listener
from tests.support.media import make_titled_tracks
from tests.test_stream_e2e import BLOCK, assert_only_silent_frames, assert_starts_with, source_url

pytestmark = pytest.mark.integration

MOUNT = "/m"
BARE = "/bare"  # relayed without relay-shoutcast-metadata
TITLES = [("Sigur Rós", "Ágætis byrjun"), ("東京事変", "群青日和"), ("Emoji Band", "Dancing 💃")]
#: The relay pulls a second or two after the master mount appears and gets the
#: master's burst, then hands its own burst to the listener: a burst larger
#: than the whole stream lets the listener start at the station's first byte
#: however late (on a busy machine) the relay joins. 256 KiB: 16 s at 128 kbps.
BURST = 262144


def relay_block(master: IcecastServer, local_mount: str, *, metadata: bool) -> str:
    """A per-mount relay of the master's MOUNT, pulled at once (not on demand)."""
    return (
        f"<relay><server>{master.host}</server><port>{master.port}</port>"
        f"<mount>{MOUNT}</mount><local-mount>{local_mount}</local-mount>"
        f"<on-demand>0</on-demand>"
        f"<relay-shoutcast-metadata>{int(metadata)}</relay-shoutcast-metadata></relay>"
    )


@pytest.fixture
def servers() -> Iterator[tuple[IcecastServer, IcecastServer]]:
    """(master, relay): two icecast2 from the repository's icecast.xml (its
    default mount is UTF-8, which non-Ogg titles need), a larger burst."""
    work = Path(tempfile.mkdtemp(prefix="pushsource-relay-"))  # under /tmp: see conftest
    tree = ET.parse(DEFAULT_TEMPLATE)
    burst = tree.getroot().find("limits/burst-size")
    assert burst is not None, "icecast.xml has no <burst-size>"
    burst.text = str(BURST)
    template = work / "template.xml"
    tree.write(template, encoding="unicode")
    master = IcecastServer(template, work / "master")
    try:
        master.start()
        # Up before the station, as in a real setup. Its first pull finds no
        # mount; Icecast 2.4.4 tries a failed relay again only after
        # master-update-interval (120 s unless set): 1 s here.
        relay = IcecastServer(
            template,
            work / "relay",
            extra="<master-update-interval>1</master-update-interval>"
            + relay_block(master, MOUNT, metadata=True)
            + relay_block(master, BARE, metadata=False),
        )
        try:
            relay.start()
            yield master, relay
        finally:
            relay.stop()
    finally:
        master.stop()
        shutil.rmtree(work, ignore_errors=True)


def wait_for_status_value(
    server: IcecastServer, mount: str, key: str, wanted: object, timeout: float
) -> object:
    """The mount's ``key`` in the server's /status-json.xsl once it is
    ``wanted``, or the last value seen after timeout (Icecast's figures lag)."""
    deadline = time.monotonic() + timeout
    while True:
        found = server.source(mount)
        shown = found.get(key) if found else None
        if shown == wanted or time.monotonic() > deadline:
            return shown
        time.sleep(0.05)


def test_a_relay_listener_gets_the_stations_frames_and_titles(
    servers: tuple[IcecastServer, IcecastServer],
    start_pushsource: StartPushsource,
    tmp_path: Path,
) -> None:
    master, relay = servers
    tracks = make_titled_tracks(tmp_path / "music", TITLES)
    expected = b"".join(t.audio for t in tracks)
    with (
        Listener(relay.port, MOUNT, connect_timeout=30) as listener,
        Listener(relay.port, BARE, connect_timeout=30) as bare,
    ):
        run = start_pushsource("stream", tmp_path / "music", source_url(master, MOUNT), "--once")
        try:
            master.wait_for_mount(MOUNT, timeout=15)
            # The relay retries every second or two until the mount is there.
            relay.wait_for_mount(MOUNT, timeout=15)
            relay.wait_for_mount(BARE, timeout=15)
            listener.wait_connected(10)
            bare.wait_connected(10)
            # Each relayed mount is one listener on the master, ours are not.
            master_listeners = wait_for_status_value(master, MOUNT, "listeners", 2, timeout=3)
            assert master_listeners == 2, f"the master counts {master_listeners} listeners"
            # The relay reads the titles out of the stream for its own status
            # page too, as UTF-8 because its mount says so (icecast.xml).
            second = "{} - {}".format(*TITLES[1])
            listener.wait_for_title(second, timeout=15)
            shown = wait_for_status_value(relay, MOUNT, "title", second, timeout=3)
            assert shown == second, f"the relay's status shows {shown!r}"
            assert run.wait(sum(t.seconds for t in tracks) + 30) == 0, run.describe()
            # The master's source leaves, the relays' sources end, and so do
            # their listeners' streams.
            listener.wait_closed(15)
            bare.wait_closed(15)
        except BaseException:
            print(run.describe(), relay.error_log()[-4000:], sep="\n")
            raise
    assert listener.error is None and bare.error is None

    # Every frame of every track, in order, byte for byte, from the station's
    # first byte; then only the silence of a clean close.
    audio = bytes(listener.audio)
    assert_starts_with(audio, expected, tracks)
    assert_only_silent_frames(audio, tracks, tmp_path)

    # Every title, in order, near the start of its track.
    firsts: list[tuple[int, str]] = []  # where each new title first arrived
    for offset, title in listener.titles:
        if title and (not firsts or firsts[-1][1] != title):
            firsts.append((offset, title))
    assert [t for _, t in firsts] == [f"{a} - {t}" for a, t in TITLES], listener.titles
    metaint = int(listener.headers["icy-metaint"])
    start = 0
    for track, (offset, title) in zip(tracks, firsts, strict=True):
        # The master shows a title at its next metaint boundary (see
        # test_stream_e2e); the relay at its own next one after that.
        assert offset >= start - 2 * BLOCK, f"{title!r} at {offset}, before its track ({start})"
        late = start + 2 * (metaint + BLOCK) + 16000  # 16000 bytes: 1 s of 128 kbps
        assert offset <= late, f"{title!r} at {offset}, long after its track began ({start})"
        start += len(track.audio)

    # Without relay-shoutcast-metadata the relay gets the same audio but no
    # titles: they do not reach a relay any other way.
    assert_starts_with(bytes(bare.audio), expected, tracks)
    assert not [t for _, t in bare.titles if t], bare.titles
