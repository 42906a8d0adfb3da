# mutagen ships py.typed but leaves its tag classes unannotated.
# mypy: disallow-untyped-calls=False
"""Tests of the test support code itself: config rendering, ICY demux, icecast2 and fixtures."""

from __future__ import annotations

import base64
import itertools
import os
import random
import shutil
import socket
import stat
import tempfile
import threading
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import mutagen
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mutagen.apev2 import APENoHeaderError, APEv2
from mutagen.id3 import ID3

from tests.support.icecast import (
    DEFAULT_TEMPLATE,
    IcecastServer,
    TrialError,
    free_port,
    render_config,
)
from tests.support.listener import IcyDemuxer, Listener, parse_stream_title
from tests.support.media import (
    CORPUS,
    Fixture,
    make_clean_mp3,
    make_titled_tracks,
    probe_packets,
)

integration = pytest.mark.integration

# --- render_config and the shipped icecast.xml --------------------------------


def test_shipped_config_is_what_the_readme_promises() -> None:
    root = ET.parse(DEFAULT_TEMPLATE).getroot()
    assert root.findtext("listen-socket/port") == "8000"
    assert root.findtext("listen-socket/bind-address") == "127.0.0.1"
    assert root.findtext("hostname") == "localhost"
    assert root.findtext("authentication/source-password") == "hackme"
    assert root.findtext("authentication/admin-password") == "hackme"
    limits_element = root.find("limits")
    assert limits_element is not None
    limits = {child.tag: child.text for child in limits_element}
    assert limits["clients"] == "100"
    assert limits["sources"] == "10"
    assert limits["queue-size"] == "524288"
    assert limits["burst-size"] == "65535"
    assert limits["source-timeout"] == "10"
    assert root.findtext("paths/webroot") == "/usr/share/icecast2/web"
    assert root.findtext("paths/adminroot") == "/usr/share/icecast2/admin"
    assert root.findtext("paths/logdir") == "/tmp"
    default = root.find("mount[@type='default']")
    assert default is not None and default.findtext("charset") == "UTF-8"
    assert default.find("mount-name") is None  # the 2.4 docs forbid it in a default mount


def _rendered(port: int, workdir: Path) -> ET.Element:
    return ET.fromstring(render_config(DEFAULT_TEMPLATE, port=port, workdir=workdir))


def test_render_config_moves_port_and_files_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    root = _rendered(12345, tmp_path)
    sockets = root.findall("listen-socket")
    assert len(sockets) == 1
    assert sockets[0].findtext("port") == "12345"
    assert sockets[0].findtext("bind-address") == "127.0.0.1"
    assert root.findtext("paths/logdir") == str(tmp_path)
    assert root.findtext("paths/pidfile") == str(tmp_path / "icecast.pid")
    assert root.findtext("mount[@type='default']/charset") == "UTF-8"
    assert root.findtext("authentication/source-password") == "hackme"
    assert root.findtext("logging/errorlog") == "pushsource-icecast-error.log"
    assert root.find("security/changeowner") is None


def test_render_config_adds_extra_elements_at_the_top_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    extra = "<master-update-interval>1</master-update-interval><relay><mount>/a</mount></relay>"
    root = ET.fromstring(render_config(DEFAULT_TEMPLATE, port=1, workdir=tmp_path, extra=extra))
    assert root.findtext("master-update-interval") == "1"
    assert [r.findtext("mount") for r in root.findall("relay")] == ["/a"]
    assert root.findtext("mount[@type='default']/charset") == "UTF-8"  # the rest is kept
    with pytest.raises(ValueError, match="not an XML snippet"):
        render_config(DEFAULT_TEMPLATE, port=1, workdir=tmp_path, extra="<relay>")


def test_render_config_as_root_drops_to_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    workdir = Path(tempfile.mkdtemp(prefix="pushsource-render-"))
    try:
        root = _rendered(12345, workdir)
        assert root.findtext("security/changeowner/user") == "nobody"
        assert root.findtext("security/changeowner/group") == "nogroup"
        assert stat.S_IMODE(workdir.stat().st_mode) == 0o777
    finally:
        workdir.rmdir()


def test_render_config_as_root_refuses_a_dir_nobody_cannot_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    private = tmp_path / "private"
    (private / "work").mkdir(parents=True)
    private.chmod(0o700)
    with pytest.raises(TrialError, match="not searchable by others"):
        render_config(DEFAULT_TEMPLATE, port=1, workdir=private / "work")


def test_free_port_can_be_bound() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))


# --- ICY demultiplexing without a network -------------------------------------

TITLES = ["東京事変 - 群青日和", "It's; a ';' test", "", "Sigur Rós - Ágætis byrjun 🎶"]


def _icy_stream(audio: bytes, metaint: int, blocks: list[bytes | None]) -> bytes:
    """audio with one metadata block after every metaint bytes (None: no change)."""
    out = bytearray()
    for n, start in enumerate(range(0, len(audio), metaint)):
        chunk = audio[start : start + metaint]
        out += chunk
        if len(chunk) == metaint:
            block = blocks[n % len(blocks)]
            if block is None:
                out.append(0)
            else:
                padded = block + b"\0" * (-len(block) % 16)
                out += bytes([len(padded) // 16]) + padded
    return bytes(out)


def _title_block(title: str) -> bytes:
    return f"StreamTitle='{title}';".encode()


AUDIO = bytes(random.Random(3).randrange(256) for _ in range(5000))
BLOCKS: list[bytes | None] = [None, *map(_title_block, TITLES), b"StreamTitle='x';StreamUrl='u';"]
STREAM = _icy_stream(AUDIO, 100, BLOCKS)


def _expected_titles(metaint: int) -> list[tuple[int, str]]:
    expected = []
    for n in range(len(AUDIO) // metaint):
        block = BLOCKS[n % len(BLOCKS)]
        if block is not None:
            title = parse_stream_title(block)
            assert title is not None
            expected.append(((n + 1) * metaint, title))
    return expected


def _demux(chunks: list[bytes]) -> tuple[bytes, list[tuple[int, str]]]:
    demuxer = IcyDemuxer(100)
    audio, titles = bytearray(), []
    for chunk in chunks:
        got, blocks = demuxer.feed(chunk)
        audio += got
        for offset, block in blocks:
            title = parse_stream_title(block)
            assert title is not None, block
            titles.append((offset, title))
    return bytes(audio), titles


def test_demux_whole_and_byte_by_byte() -> None:
    for chunks in ([STREAM], [STREAM[i : i + 1] for i in range(len(STREAM))]):
        audio, titles = _demux(chunks)
        assert audio == AUDIO
        assert titles == _expected_titles(100)
    assert [t for _, t in _expected_titles(100)][:5] == [*TITLES, "x"]


@given(st.lists(st.integers(min_value=1, max_value=700), min_size=1))
def test_demux_any_chunking(sizes: list[int]) -> None:
    chunks: list[bytes] = []
    pos = 0
    while pos < len(STREAM):
        size = sizes[len(chunks) % len(sizes)]
        chunks.append(STREAM[pos : pos + size])
        pos += size
    assert _demux(chunks) == (AUDIO, _expected_titles(100))


def test_demux_without_metaint_passes_everything() -> None:
    assert IcyDemuxer(None).feed(b"\0\1\2") == (b"\0\1\2", [])


@pytest.mark.parametrize(
    ("block", "title"),
    [
        (b"StreamTitle='A - B';\0\0\0", "A - B"),
        (b"StreamTitle='Rock'n'Roll; = 100% + more';", "Rock'n'Roll; = 100% + more"),
        (b"StreamTitle='A';StreamUrl='http://x/';", "A"),
        (b"StreamTitle='';", ""),
        (b"StreamTitle='R\xf3s';", "R\ufffds"),
        (b"StreamUrl='http://x/';", None),
    ],
)
def test_parse_stream_title(block: bytes, title: str | None) -> None:
    assert parse_stream_title(block) == title


# --- the Listener against a scripted local server -----------------------------


@contextmanager
def scripted_server(handlers: list[Callable[[socket.socket], None]]) -> Iterator[int]:
    """A 127.0.0.1 server that hands its n-th connection to handlers[n]."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        for handle in handlers:
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                handle(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        thread.join(5)
        server.close()


def _not_found(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.0 404 File Not Found\r\nContent-Type: text/html\r\n\r\nnope")


def _icy_200(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: audio/mpeg\r\nicy-metaint:100\r\n\r\n")
    for start in range(0, len(STREAM), 333):
        conn.sendall(STREAM[start : start + 333])


def test_listener_retries_404_then_demuxes_until_closed() -> None:
    with (
        scripted_server([_not_found, _not_found, _icy_200]) as port,
        Listener(port, "/m", connect_timeout=5) as listener,
    ):
        listener.wait_closed(5)
    assert listener.error is None
    assert listener.headers["icy-metaint"] == "100"
    assert bytes(listener.audio) == AUDIO
    assert listener.titles == _expected_titles(100)
    assert listener.arrivals[-1][1] == len(AUDIO)
    assert [t for t, _ in listener.arrivals] == sorted(t for t, _ in listener.arrivals)


def test_listener_reports_a_refusal() -> None:
    def forbidden(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.0 403 Forbidden\r\n\r\n")

    with (
        scripted_server([forbidden]) as port,
        Listener(port, "/m") as listener,
        pytest.raises(AssertionError, match="403"),
    ):
        listener.wait_for_audio(1, 5)


# --- a real icecast2 -----------------------------------------------------------


class RawSource:
    """The least source client that works: one HTTP PUT, bytes written as given."""

    def __init__(self, port: int, mount: str, password: str = "hackme") -> None:
        self.port, self.mount, self.password = port, mount, password
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        auth = base64.b64encode(f"source:{password}".encode()).decode()
        self.sock.sendall(
            f"PUT {mount} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Basic {auth}\r\nContent-Type: audio/mpeg\r\n\r\n".encode()
        )
        answer = self.sock.recv(4096)
        assert answer.startswith(b"HTTP/1.0 200"), answer

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def set_title(self, song: str) -> bytes:
        """GET /admin/metadata with every reserved character percent-encoded."""
        query = (
            f"mount={urllib.parse.quote(self.mount, safe='')}&mode=updinfo"
            f"&song={urllib.parse.quote(song, safe='')}&charset=UTF-8"
        )
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/admin/metadata?{query}")
        auth = base64.b64encode(f"source:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {auth}")
        with urllib.request.urlopen(request, timeout=5) as response:
            body: bytes = response.read()
        assert b"Metadata update successful" in body, body
        return body

    def close(self) -> None:
        self.sock.close()


TRICKY_TITLE = "東京事変 - Sigur Rós: Ágætis byrjun 💃🎶 & ' = % ; + done"


def _title_round_trip(server: IcecastServer, audio: bytes, mount: str, title: str) -> str:
    """Set title mid-stream through server; return what a listener got."""
    source = RawSource(server.port, mount)
    try:
        with Listener(server.port, mount) as listener:
            source.send(audio[:16000])
            listener.wait_for_audio(1, 10)
            source.set_title(title)
            # Icecast shows a new title at the listener's next metaint boundary.
            source.send(audio[16000:])
            listener.wait_for_audio(len(audio) - 1400, 10)
            source.close()
            listener.wait_closed(10)
    finally:
        source.close()
    got = [t for _, t in listener.titles if t]
    assert len(got) == 1, listener.titles
    return got[0]


@pytest.fixture
def icecast_workdir() -> Iterator[Path]:
    """A directory under /tmp, which icecast2 running as nobody can reach."""
    workdir = Path(tempfile.mkdtemp(prefix="pushsource-icecast-"))
    yield workdir
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def three_seconds(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_clean_mp3(tmp_path_factory.mktemp("tone") / "tone.mp3", 3.0)


@integration
def test_icecast_answers_and_lists_sources(icecast: IcecastServer, unique_mount: str) -> None:
    assert icecast.status()["icestats"]["server_id"].startswith("Icecast 2.4")
    assert icecast.source(unique_mount) is None
    first = RawSource(icecast.port, unique_mount)
    second = RawSource(icecast.port, unique_mount + "-b")
    try:
        first.send(b"\0" * 2000)
        assert icecast.wait_for_mount(unique_mount, 5)["server_type"] == "audio/mpeg"
        second.send(b"\0" * 2000)
        icecast.wait_for_mount(unique_mount + "-b", 5)
        assert {unique_mount, unique_mount + "-b"} <= {
            urllib.parse.urlparse(s["listenurl"]).path for s in icecast.sources()
        }
    finally:
        first.close()
        second.close()
    with pytest.raises(AssertionError, match="no source on /never"):
        icecast.wait_for_mount("/never", 0.2)


@integration
def test_utf8_title_round_trip(
    icecast: IcecastServer, unique_mount: str, three_seconds: bytes
) -> None:
    """icecast.xml's <charset>UTF-8</charset> keeps titles byte-identical."""
    got = _title_round_trip(icecast, three_seconds, unique_mount, TRICKY_TITLE)
    assert got.encode() == TRICKY_TITLE.encode()
    # The log is where error_log() looks, even when icecast2 runs as nobody.
    assert f"Metadata on mountpoint {unique_mount} changed" in icecast.error_log()


@integration
def test_without_the_charset_titles_are_mangled(
    tmp_path: Path, icecast_workdir: Path, three_seconds: bytes
) -> None:
    """The control: the same round trip with the <mount type="default"> removed."""
    root = ET.parse(DEFAULT_TEMPLATE).getroot()
    default = root.find("mount[@type='default']")
    assert default is not None
    root.remove(default)
    template = tmp_path / "no-charset.xml"
    ET.ElementTree(root).write(template, encoding="unicode")
    with IcecastServer(template, icecast_workdir) as server:
        got = _title_round_trip(server, three_seconds, "/m", "Sigur Rós 東京")
    assert got == "Sigur R\ufffds &#26481;&#20140;"


@integration
def test_restart_keeps_the_port_and_kill_stops(icecast_workdir: Path) -> None:
    server = IcecastServer(DEFAULT_TEMPLATE, icecast_workdir)
    with server:
        port = server.port
        server.restart()
        assert server.port == port
        assert server.status()["icestats"]["server_id"].startswith("Icecast")
        assert "server started" in server.error_log()
        server.kill()
        assert not server.running
        with pytest.raises(OSError):
            server.status()


# --- the MP3 fixtures, checked against ffprobe and mutagen ---------------------


def _tag_title(path: Path) -> str | None:
    """Artist - Title as mutagen reads the file's tags (APEv2 first)."""
    try:
        ape = APEv2(path)
    except APENoHeaderError:
        pass
    else:
        return f"{ape['Artist']} - {ape['Title']}"
    found = mutagen.File(path)
    if found is None or not found.tags:
        return None
    return f"{found.tags['TPE1']} - {found.tags['TIT2']}"


def _by_name(corpus: list[Fixture], name: str) -> Fixture:
    return next(f for f in corpus if f.path.stem == name)


@integration
@pytest.mark.parametrize("name", [name for name, _ in CORPUS])
def test_fixture_audio_is_what_ffprobe_finds(corpus: list[Fixture], name: str) -> None:
    fixture = _by_name(corpus, name)
    data = fixture.path.read_bytes()
    frames = [data[p.pos : p.pos + p.size] for p in probe_packets(fixture.path)]
    if name == "12-truncated":
        # ffprobe hands out the cut frame too; a listener must not get it.
        assert data.endswith(frames[-1]) and len(frames[-1]) < len(frames[-2]) // 2 + 2
        frames.pop()
    found = b"".join(frames)
    if name == "10-lyrics3-id3v1":
        # ffmpeg does not know Lyrics3 and glues it to the last frame.
        assert found[len(fixture.audio) :].startswith(b"LYRICSBEGIN")
        found = found[: len(fixture.audio)]
    assert found == fixture.audio
    assert abs(fixture.seconds - 0.8) < 0.1
    assert _tag_title(fixture.path) == (None if fixture.title == name else fixture.title)


@integration
def test_corpus_plays_in_name_order_in_well_under_20_seconds(corpus: list[Fixture]) -> None:
    assert [f.path.name for f in corpus] == sorted(p.name for p in corpus[0].path.parent.iterdir())
    assert sum(f.seconds for f in corpus) < 14
    assert len({f.title for f in corpus}) == len(corpus)
    assert len({f.audio for f in corpus}) == len(corpus)


@integration
def test_fixture_tags_carry_their_traps(corpus: list[Fixture]) -> None:
    apic = _by_name(corpus, "04-id3v24-apic")
    picture = ID3(apic.path).getall("APIC")[0].data
    assert len(picture) >= 20_000
    decoy = apic.path.with_name("decoy.bin")
    try:
        decoy.write_bytes(picture)
        assert len(probe_packets(decoy)) >= 5  # real MP3 frames inside the cover art
    finally:
        decoy.unlink()

    unsync = _by_name(corpus, "05-id3v23-unsync").path.read_bytes()
    assert unsync[3:6] == b"\x03\x00\x80"
    tag = unsync[: len(unsync) - len(_by_name(corpus, "05-id3v23-unsync").audio)]
    assert all(not (a == 0xFF and b >= 0xE0) for a, b in itertools.pairwise(tag[10:]))
    assert b"\xff\x00" in tag

    assert _by_name(corpus, "06-id3v22").path.read_bytes()[:4] == b"ID3\x02"
    footer = _by_name(corpus, "07-id3v24-footer")
    assert footer.path.read_bytes()[: -len(footer.audio)][-10:].startswith(b"3DI\x04")
    assert _by_name(corpus, "08-id3v1").path.read_bytes()[-128:].startswith(b"TAG")
    assert b"APETAGEX" in _by_name(corpus, "09-apev2").path.read_bytes()[-32:]
    assert b"LYRICS200TAG" in _by_name(corpus, "10-lyrics3-id3v1").path.read_bytes()
    junk = _by_name(corpus, "11-junk")
    assert junk.path.read_bytes()[: -len(junk.audio)].count(b"\xff") >= 6
    vbr = probe_packets(_by_name(corpus, "03-vbr").path)
    assert len({p.size for p in vbr}) > 3


@integration
def test_titled_tracks_are_tagged_utf8_id3v24(tmp_path: Path) -> None:
    titles = [("東京事変", "群青日和"), ("Emoji", "💃 & ' = % ; +")]
    tracks = make_titled_tracks(tmp_path, titles, seconds=1.0)
    assert [t.path.name for t in tracks] == ["01-track.mp3", "02-track.mp3"]
    for track, (artist, title) in zip(tracks, titles, strict=True):
        tags = ID3(track.path)
        assert tags.version == (2, 4, 0)
        assert (str(tags["TPE1"]), str(tags["TIT2"])) == (artist, title)
        assert track.title == f"{artist} - {title}"
        assert track.path.read_bytes().endswith(track.audio)
        assert abs(track.seconds - 1.0) < 0.1
