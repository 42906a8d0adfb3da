"""``pushsource check`` finds what ``run`` would hit: a listen address taken
(a real socket on loopback holds it), more sources than a real icecast2's
``<limits><sources>``, and it says so in a few lines at any number of stations."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.icecast import IcecastServer, free_port, set_limits, temp_icecast
from tests.support.servers import PeerServer

pytestmark = pytest.mark.integration

RunPushsource = Callable[..., subprocess.CompletedProcess[str]]


def limited_icecast(sources: int) -> Iterator[IcecastServer]:
    """A real icecast2 of the test's own, icecast.xml with <sources>N</sources>."""
    with temp_icecast("check", edit=set_limits(sources=sources)) as server:
        yield server


@pytest.fixture
def icecast_of_two() -> Iterator[IcecastServer]:
    yield from limited_icecast(2)


@pytest.fixture
def icecast_of_fifty() -> Iterator[IcecastServer]:
    yield from limited_icecast(50)


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port another program listens on, for the test's length."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def station(server: IcecastServer, sid: str, extra: str = "") -> str:
    return f"""
[[station]]
id = "{sid}"
folder = "music"
url = "icecast://source:hackme@127.0.0.1:{server.port}/check-{sid}"
{extra}
"""


def live(port: int) -> str:
    return f'[station.live]\nlisten = "127.0.0.1:{port}"\nusers = {{ dj = "pw" }}\n'


def write_config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "music").mkdir(exist_ok=True)
    path = tmp_path / "stations.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_check_finds_a_harbor_port_taken(
    icecast: IcecastServer, held_port: int, run_pushsource: RunPushsource, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path, station(icecast, "quiet") + station(icecast, "dj", live(held_port))
    )
    done = run_pushsource("check", "--config", config)
    out = done.stdout.splitlines()
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(out) == 2, done.stdout
    assert out[0].startswith('dj: error: [station.live] key "listen": ')
    assert f"127.0.0.1:{held_port}" in out[0] and "in use" in out[0]
    assert out[1] == f"{config}: 2 stations: 1 ok, 1 with errors"


def test_check_finds_the_control_port_taken(
    icecast: IcecastServer, held_port: int, run_pushsource: RunPushsource, tmp_path: Path
) -> None:
    config = write_config(tmp_path, station(icecast, "one"))
    done = run_pushsource("check", "--config", config, "--control", str(held_port))
    out = done.stdout.splitlines()
    assert done.returncode == 2, done.stdout + done.stderr
    assert out[0].startswith("--control: error: control API: cannot listen on ")
    assert f"127.0.0.1:{held_port}" in out[0]
    # The same address from the config's [control]: its key is named.
    config.write_text(
        f'[control]\nlisten = "127.0.0.1:{held_port}"\n' + station(icecast, "one"),
        encoding="utf-8",
    )
    done = run_pushsource("check", "--config", config)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.startswith('[control] key "listen": error: control API: cannot listen')


def test_check_finds_a_harbor_on_the_control_servers_address(
    icecast: IcecastServer, run_pushsource: RunPushsource, tmp_path: Path
) -> None:
    port = free_port()  # free: only our own two listeners want it
    config = write_config(
        tmp_path,
        f'[control]\nlisten = "127.0.0.1:{port}"\n' + station(icecast, "dj", live(port)),
    )
    done = run_pushsource("check", "--config", config)
    out = done.stdout.splitlines()
    assert done.returncode == 2, done.stdout + done.stderr
    assert out[0].startswith('dj: error: [station.live] key "listen": ')
    assert out[0].endswith('the control server ([control] key "listen") listens there')


def test_check_counts_the_sources_against_the_servers_limit(
    icecast_of_two: IcecastServer, run_pushsource: RunPushsource, tmp_path: Path
) -> None:
    server = icecast_of_two
    output = f'[[station.output]]\nurl = "icecast://source:hackme@127.0.0.1:{server.port}/low"\n'
    config = write_config(tmp_path, station(server, "a", output) + station(server, "b"))
    done = run_pushsource("check", "--config", config, "-v")
    out = done.stdout.splitlines()
    assert done.returncode == 2, done.stdout + done.stderr
    # Three logins at once, the server takes two: the one over says why, once.
    assert sum(": ok: " in line for line in out) == 2, done.stdout
    [over] = [line for line in out if ": error: " in line]
    assert over.startswith(f"127.0.0.1:{server.port}: error: 1 of the 3 sources"), over
    assert "too many sources" in over and "<limits><sources>" in over
    assert out[-1] == f"{config}: 2 stations: 1 ok, 1 with errors"
    assert server.sources() == []  # and it left


def test_check_of_many_stations_is_a_tally(
    icecast_of_fifty: IcecastServer, run_pushsource: RunPushsource, tmp_path: Path
) -> None:
    server = icecast_of_fifty
    text = "".join(station(server, f"s{n}") for n in range(40))
    text += station(server, "wrong").replace("hackme", "not-the-password")
    config = write_config(tmp_path, text)
    done = run_pushsource("check", "--config", config)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "wrong: error: authentication failed for source user on /check-wrong (401)",
        f"{config}: 41 stations: 40 ok, 1 with errors",
    ]
    assert "not-the-password" not in done.stdout + done.stderr


def test_check_says_every_stations_config_problem_then_checks_the_rest(
    icecast: IcecastServer, run_pushsource: RunPushsource, tmp_path: Path
) -> None:
    text = station(icecast, "good") + station(icecast, "typo", "sample_rate = 48000\n")
    text += station(icecast, "again").replace("check-again", "check-good")
    config = write_config(tmp_path, text)
    done = run_pushsource("check", "--config", config)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        f'error: {config}: station 2: unknown key "sample_rate" (did you mean "samplerate"?)',
        f'error: {config}: station 3: key "url": mount 127.0.0.1:{icecast.port}/check-good '
        "is already station 1's",
        f"{config}: 3 stations: 1 ok, 2 with errors",
    ]


def test_a_server_that_is_down_is_one_line_however_many_go_there(
    run_pushsource: RunPushsource, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens: each login is refused at once
    text = "".join(
        f'[[station]]\nid = "s{n}"\nfolder = "music"\n'
        f'url = "icecast://source:hackme@127.0.0.1:{port}/s{n}"\n'
        for n in range(8)
    )
    config = write_config(tmp_path, text)
    done = run_pushsource("check", "--config", config)
    assert done.returncode == 1, done.stdout + done.stderr
    down, tally = done.stdout.splitlines()
    assert down.startswith(f"127.0.0.1:{port}: error: cannot reach it for 8 logins ("), down
    assert down.endswith("): s0, s1, s2, s3, s4 and 3 more"), down
    assert tally == f"{config}: 8 stations: 0 ok, 8 with errors"


def test_each_servers_source_limit_is_found(
    peer_server: PeerServer, run_pushsource: RunPushsource, tmp_path: Path
) -> None:
    """Icecast 2.4.4, 2.5.0 and icecast-kh (which says "too many streams
    connected"), each on a stock config of <sources>50</sources>."""
    port = peer_server.port
    text = "".join(
        f'[[station]]\nid = "s{n}"\nfolder = "music"\n'
        f'url = "icecast://source:hackme@127.0.0.1:{port}/check-limit-{n}"\n'
        for n in range(52)
    )
    config = write_config(tmp_path, text)
    done = run_pushsource("check", "--config", config)
    assert done.returncode == 2, done.stdout + done.stderr
    over, tally = done.stdout.splitlines()
    assert over.startswith(f"127.0.0.1:{port}: error: "), over
    assert "of the 52 sources this config sends there refused: too many" in over, over
    assert tally.startswith(f"{config}: 52 stations: "), tally
    # And it left: none of its mounts stays (the server drops them as it sees them go).
    deadline = time.monotonic() + 10
    while any("check-limit" in m for m in peer_server.mounts()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any("check-limit" in m for m in peer_server.mounts())


def test_one_wrong_password_over_many_stations_is_one_line(
    icecast_of_fifty: IcecastServer, run_pushsource: RunPushsource, tmp_path: Path
) -> None:
    server = icecast_of_fifty
    text = station(server, "good")
    text += "".join(
        station(server, f"w{n}").replace("hackme", "not-the-password") for n in range(7)
    )
    config = write_config(tmp_path, text)
    done = run_pushsource("check", "--config", config)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        f"127.0.0.1:{server.port}: error: 7 logins refused their credentials (401): "
        "w0, w1, w2, w3, w4 and 2 more",
        f"{config}: 8 stations: 1 ok, 7 with errors",
    ]
    assert "not-the-password" not in done.stdout + done.stderr


def test_check_finds_a_record_folder_that_cannot_be_made(
    icecast: IcecastServer, run_pushsource: RunPushsource, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the sets would go\n", encoding="utf-8")
    port = free_port()
    good = live(port) + f'record = "{tmp_path}/sets/{{station}}/{{user}}-{{start}}.mp3"\n'
    bad = live(free_port()) + f'record = "{blocker}/sets/{{user}}-{{start}}.mp3"\n'
    config = write_config(tmp_path, station(icecast, "kept", good) + station(icecast, "lost", bad))
    done = run_pushsource("check", "--config", config)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        f'lost: error: [station.live] key "record": cannot record under {blocker}/sets: '
        f"{blocker} is not a folder",
        f"{config}: 2 stations: 1 ok, 1 with errors",
    ]
    assert not (tmp_path / "sets").exists()  # check makes nothing
