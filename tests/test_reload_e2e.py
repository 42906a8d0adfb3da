"""A reload of ``pushsource run --config`` against a real icecast2 and a real
listener (issue 24, item 1): SIGHUP, ``pushsource reload`` and
``POST /api/reload`` read the file again; stations added start, removed ones
stop, changed ones restart alone, the others are not touched (the same
source connection: one login at Icecast, the listener hears no gap)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import PushsourceProcess, StartPushsource, run_pushsource
from tests.support.icecast import IcecastServer, free_port
from tests.support.listener import Listener
from tests.support.media import make_clean_mp3

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "reload-test-token-4e1c"
#: The longest a listener of a station left alone may wait between two reads.
GAP = 0.25


def station(key: str, folder: str, base: str, extra: str = "") -> str:
    return f"""
[[station]]
id = "{key}"
folder = "{folder}"
url = "{base}-{key}"
password = "hackme"
{extra}
"""


def folders(tmp_path: Path, *names: str) -> None:
    for n, name in enumerate(names):
        (tmp_path / name).mkdir()
        make_clean_mp3(tmp_path / name / f"{name}.mp3", 20.0, freq=330 + 110 * n)


def logins(icecast: IcecastServer, mount: str) -> int:
    """Source logins Icecast logged for ``mount`` (its error log, at info)."""
    return sum(
        1
        for line in icecast.error_log().splitlines()
        if "Source logging in" in line and f'"{mount}"' in line
    )


def longest_gap(ear: Listener, start: float, end: float) -> float:
    """The longest wait between two reads of the listener within [start, end]."""
    times = [t for t, _ in ear.arrivals if start <= t <= end]
    assert len(times) > 5, ear.arrivals[-5:]
    return max(b - a for a, b in zip([start, *times], [*times, end], strict=True))


def wait_until(what: str, done: object, timeout: float) -> float:
    """Poll ``done()`` until true; the seconds it took."""
    start = time.monotonic()
    while not done():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def started(start_pushsource: StartPushsource, config: Path, *more: str) -> PushsourceProcess:
    run = start_pushsource("run", "--config", config, "--no-console", *more)
    return run


def log_lines(run: PushsourceProcess, needle: str) -> list[str]:
    return [line for line in run.stderr.splitlines() if needle in line]


def test_sighup_adds_and_removes_and_the_station_left_alone_hears_no_gap(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    """The hidden check: A and B, a listener on A; the file rewritten (B
    removed, C added, A as it was) and SIGHUP: C on air and B gone within
    3 s, the same process, A's listener with no gap over 250 ms and A's
    source never reconnected."""
    folders(tmp_path, "a", "b", "c")
    base = f"icecast://source@127.0.0.1:{icecast.port}{unique_mount}"
    config = tmp_path / "stations.toml"
    config.write_text(station("a", "a", base) + station("b", "b", base), encoding="utf-8")
    a, b, c = (f"{unique_mount}-{key}" for key in "abc")
    with Listener(icecast.port, a, connect_timeout=20) as ear:
        run = started(start_pushsource, config)
        icecast.wait_for_mount(b, 15)
        ear.wait_for_audio(64 * 1024, 15)
        start_a = icecast.source(a)
        assert start_a is not None
        pid = run.proc.pid
        config.write_text(station("a", "a", base) + station("c", "c", base), encoding="utf-8")
        before = time.monotonic()
        os.kill(pid, signal.SIGHUP)
        took = wait_until(
            "C on air and B gone",
            lambda: icecast.source(c) is not None and icecast.source(b) is None,
            3.0,
        )
        time.sleep(max(0.0, 3.0 - took))  # A heard for 3 s after the signal
        after = time.monotonic()
        assert run.proc.poll() is None, run.describe()
        gap = longest_gap(ear, before - 1.0, after)
    print(f"\nC on air and B gone {took:.2f} s after SIGHUP; A's longest gap {gap * 1000:.0f} ms")
    assert gap <= GAP, f"A's listener waited {gap:.3f} s\n{run.describe()}"
    assert logins(icecast, a) == 1, icecast.error_log()
    now_a = icecast.source(a)
    assert now_a is not None and now_a.get("stream_start") == start_a.get("stream_start")
    assert log_lines(run, "reload: station c added"), run.describe()
    assert log_lines(run, "reload: station b removed"), run.describe()
    assert log_lines(run, "reload: 1 added, 1 removed, 0 restarted, 1 unchanged"), run.describe()
    assert len([line for line in log_lines(run, "on air at") if "[a]" in line]) == 1
    wait_until("C's own line", lambda: log_lines(run, "[c] on air at"), 3.0)


def test_a_changed_station_restarts_alone(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    folders(tmp_path, "a", "b")
    base = f"icecast://source@127.0.0.1:{icecast.port}{unique_mount}"
    config = tmp_path / "stations.toml"
    config.write_text(station("a", "a", base) + station("b", "b", base), encoding="utf-8")
    a, b = f"{unique_mount}-a", f"{unique_mount}-b"
    with Listener(icecast.port, a, connect_timeout=20) as ear:
        run = started(start_pushsource, config)
        icecast.wait_for_mount(b, 15)
        ear.wait_for_audio(64 * 1024, 15)
        config.write_text(
            station("a", "a", base) + station("b", "b", base, 'name = "Bee"'), encoding="utf-8"
        )
        before = time.monotonic()
        os.kill(run.proc.pid, signal.SIGHUP)
        wait_until("B again, with its new name", lambda: _named(icecast, b, "Bee"), 5.0)
        time.sleep(1.0)
        gap = longest_gap(ear, before - 1.0, time.monotonic())
    assert gap <= GAP, f"A's listener waited {gap:.3f} s"
    assert logins(icecast, a) == 1, icecast.error_log()
    assert logins(icecast, b) == 2, icecast.error_log()
    assert log_lines(run, "reload: station b restarted (changed: name)"), run.describe()
    assert log_lines(run, "reload: 0 added, 0 removed, 1 restarted, 1 unchanged"), run.describe()


def _named(icecast: IcecastServer, mount: str, name: str) -> bool:
    source = icecast.source(mount)
    return source is not None and source.get("server_name") == name


def test_a_config_that_does_not_check_out_changes_nothing(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    folders(tmp_path, "a", "b")
    base = f"icecast://source@127.0.0.1:{icecast.port}{unique_mount}"
    config = tmp_path / "stations.toml"
    good = station("a", "a", base) + station("b", "b", base)
    config.write_text(good, encoding="utf-8")
    a, b = f"{unique_mount}-a", f"{unique_mount}-b"
    with Listener(icecast.port, a, connect_timeout=20) as ear:
        run = started(start_pushsource, config)
        icecast.wait_for_mount(b, 15)
        ear.wait_for_audio(64 * 1024, 15)
        # Two problems: a typo in A, B's folder gone; C would be new.
        config.write_text(
            station("a", "a", base, "sample_rate = 48000")
            + station("b", "nowhere", base)
            + station("c", "a", base),
            encoding="utf-8",
        )
        before = time.monotonic()
        os.kill(run.proc.pid, signal.SIGHUP)
        wait_until("the refusal", lambda: log_lines(run, "reload: nothing changed"), 5.0)
        time.sleep(1.0)
        gap = longest_gap(ear, before - 1.0, time.monotonic())
    refused = log_lines(run, "reload refused: ")
    assert len(refused) == 2, run.describe()
    assert 'unknown key "sample_rate"' in refused[0]
    assert "nowhere is not a directory" in refused[1]
    assert log_lines(run, "reload: nothing changed (2 problems in")
    assert icecast.source(b) is not None and icecast.source(f"{unique_mount}-c") is None
    assert logins(icecast, a) == 1 and logins(icecast, b) == 1, icecast.error_log()
    assert gap <= GAP
    assert run.proc.poll() is None


def test_pushsource_reload_through_the_api_and_by_pid_file(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    folders(tmp_path, "a", "b", "c")
    base = f"icecast://source@127.0.0.1:{icecast.port}{unique_mount}"
    port = free_port()
    control = f'[control]\nlisten = "127.0.0.1:{port}"\ntoken = "${{TOKEN}}"\n'
    config = tmp_path / "stations.toml"
    config.write_text(control + station("a", "a", base), encoding="utf-8")
    pid_file = tmp_path / "run.pid"
    env = {"TOKEN": TOKEN}
    run = start_pushsource(
        "run", "--config", config, "--no-console", "--pid-file", pid_file, env=env
    )
    icecast.wait_for_mount(f"{unique_mount}-a", 15)
    assert pid_file.read_text().strip() == str(run.proc.pid)
    # Without the token: 401, nothing read.
    status, answer = _post(port, "/api/reload", None)
    assert status == 401, answer
    config.write_text(control + station("a", "a", base) + station("b", "b", base), "utf-8")
    done = run_pushsource("reload", "--config", config, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "reload: 1 added, 0 removed, 0 restarted, 1 unchanged"
    icecast.wait_for_mount(f"{unique_mount}-b", 5)
    # The API itself: what changed, as JSON.
    config.write_text(control + station("a", "a", base) + station("c", "c", base), "utf-8")
    status, answer = _post(port, "/api/reload", TOKEN)
    assert status == 200, answer
    assert answer["added"] == ["c"] and answer["removed"] == ["b"]
    assert answer["unchanged"] == ["a"]
    # A broken file: 422, a line per problem, the command exits 2.
    config.write_text(control + station("a", "a", base, "bitrat = 1"), "utf-8")
    done = run_pushsource("reload", "--config", config, env=env)
    assert done.returncode == 2
    assert done.stdout.splitlines()[-1] == "nothing changed"
    assert 'unknown key "bitrat"' in done.stdout
    # By the pid file: SIGHUP, the outcome in the process's log.
    config.write_text(control + station("a", "a", base), "utf-8")
    done = run_pushsource("reload", "--pid-file", pid_file)
    assert done.returncode == 0 and str(run.proc.pid) in done.stdout
    wait_until("C gone", lambda: icecast.source(f"{unique_mount}-c") is None, 5.0)
    assert logins(icecast, f"{unique_mount}-a") == 1
    assert TOKEN not in run.stderr
    run.terminate()
    assert not pid_file.exists()


def _post(port: int, path: str, token: str | None) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Length": "0"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    conn.request("POST", path, body=b"", headers=headers)
    response = conn.getresponse()
    body = json.loads(response.read() or b"{}")
    conn.close()
    return response.status, body


_DJ_AUDIO: list[bytes] = []


def _dj_body() -> bytes:
    """Half a second of MP3 in the stations' format: a login the harbor takes
    is answered 200 only once the first frames say what it is sending."""
    if not _DJ_AUDIO:
        path = Path(tempfile.mkdtemp(prefix="pushsource-reload-dj-")) / "dj.mp3"
        make_clean_mp3(path, 0.5, freq=880)
        _DJ_AUDIO.append(path.read_bytes())
    return _DJ_AUDIO[0]


def _dj_answer(port: int, mount: str, login: str = "dj:wrong") -> str:
    """What the harbor answers curl's PUT to ``mount`` (half a second of audio)."""
    done = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-T", "-", "-u", login,
         "-H", "Content-Type: audio/mpeg", f"http://127.0.0.1:{port}{mount}"],
        input=_dj_body(), capture_output=True, timeout=10, check=False,
    )  # fmt: skip
    return done.stdout.decode()


def test_live_inputs_come_and_go_on_the_shared_harbor(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    """A station with a live input added on a harbor address another station
    listens on is served there at once, one on a new address gets a harbor
    of its own; removed, their mounts are gone and the harbor no station
    listens on closes; a change of DJ users alone is taken without
    restarting the station; a restarted station is back on its harbor."""
    folders(tmp_path, "a", "b", "d")
    base = f"icecast://source@127.0.0.1:{icecast.port}{unique_mount}"
    harbor, other = free_port(), free_port()

    def live(mount: str, users: str = 'alice = "one"', port: int = harbor, more: str = "") -> str:
        where = f'listen = "127.0.0.1:{port}"\nmount = "{mount}"\n{more}'
        return f"[station.live]\n{where}users = {{ {users} }}\n"

    config = tmp_path / "stations.toml"
    config.write_text(station("a", "a", base, live("/a-live")), encoding="utf-8")
    run = started(start_pushsource, config)
    icecast.wait_for_mount(f"{unique_mount}-a", 15)
    assert _dj_answer(harbor, "/a-live") == "401"
    assert _dj_answer(harbor, "/a-live", "bob:two") == "401"
    assert _dj_answer(harbor, "/b-live") == "404"
    assert _dj_answer(other, "/d-live") == "000"  # nothing listens there
    config.write_text(
        station("a", "a", base, live("/a-live", 'alice = "one", bob = "two"'))
        + station("b", "b", base, live("/b-live"))
        + station("d", "d", base, live("/d-live", port=other)),
        encoding="utf-8",
    )
    os.kill(run.proc.pid, signal.SIGHUP)
    wait_until("B and D on air", lambda: _on(icecast, unique_mount, "b", "d"), 5.0)
    assert _dj_answer(harbor, "/b-live") == "401"
    assert _dj_answer(other, "/d-live") == "401"
    assert log_lines(run, "reload: station a: live.users taken at once"), run.describe()
    assert _dj_answer(harbor, "/a-live", "bob:two") == "200"  # the new user's login
    assert log_lines(run, "reload: 2 added, 0 removed, 0 restarted, 0 unchanged, 1 updated")
    config.write_text(station("a", "a", base, live("/a-live")), encoding="utf-8")
    os.kill(run.proc.pid, signal.SIGHUP)
    wait_until("B and D gone", lambda: not _on(icecast, unique_mount, "b")
               and not _on(icecast, unique_mount, "d"), 5.0)  # fmt: skip
    wait_until("the harbor of D closed", lambda: _dj_answer(other, "/d-live") == "000", 3.0)
    assert _dj_answer(harbor, "/b-live") == "404"
    assert _dj_answer(harbor, "/a-live") == "401"
    assert logins(icecast, f"{unique_mount}-a") == 1
    # A's grace changed: A restarts, on the same harbor, which never closed.
    config.write_text(station("a", "a", base, live("/a-live", more="grace = 2.0\n")), "utf-8")
    os.kill(run.proc.pid, signal.SIGHUP)
    wait_until("A restarted", lambda: log_lines(run, "reload: station a restarted"), 5.0)
    assert log_lines(run, "reload: station a restarted (changed: live.grace)")
    assert _dj_answer(harbor, "/a-live") == "401"
    wait_until("A on air again", lambda: logins(icecast, f"{unique_mount}-a") == 2, 5.0)


def _on(icecast: IcecastServer, prefix: str, *keys: str) -> bool:
    return all(icecast.source(f"{prefix}-{key}") is not None for key in keys)


def test_control_settings_reload(
    icecast: IcecastServer, unique_mount: str, start_pushsource: StartPushsource, tmp_path: Path
) -> None:
    """A new token is taken at once; a new listen address moves the control
    server (the answer comes from the old one first); an address that cannot
    be bound refuses the whole reload, stations untouched."""
    folders(tmp_path, "a", "b")
    base = f"icecast://source@127.0.0.1:{icecast.port}{unique_mount}"
    first, second = free_port(), free_port()

    def control(port: int, token: str) -> str:
        return f'[control]\nlisten = "127.0.0.1:{port}"\ntoken = "{token}"\n'

    config = tmp_path / "stations.toml"
    config.write_text(control(first, TOKEN) + station("a", "a", base), encoding="utf-8")
    run = started(start_pushsource, config)
    icecast.wait_for_mount(f"{unique_mount}-a", 15)
    new_token = TOKEN + "-2"
    config.write_text(control(first, new_token) + station("a", "a", base), encoding="utf-8")
    status, answer = _post(first, "/api/reload", TOKEN)
    assert status == 200 and answer["control"] == "update", answer
    assert _post(first, "/api/stations/a/skip", TOKEN)[0] == 401
    assert _post(first, "/api/stations/a/skip", new_token)[0] == 200
    # Taken by another program: refused, nothing changes (B is not started).
    with _taken() as busy:
        config.write_text(
            control(busy, new_token) + station("a", "a", base) + station("b", "b", base), "utf-8"
        )
        status, answer = _post(first, "/api/reload", new_token)
    assert status == 422, answer
    assert len(answer["problems"]) == 1 and f"127.0.0.1:{busy}" in answer["problems"][0]
    assert icecast.source(f"{unique_mount}-b") is None
    # Moved: the old address answers, then closes; the new one serves.
    config.write_text(
        control(second, new_token) + station("a", "a", base) + station("b", "b", base), "utf-8"
    )
    status, answer = _post(first, "/api/reload", new_token)
    assert status == 200 and answer["control"] == "restart" and answer["added"] == ["b"]
    wait_until("the new control server", lambda: _answers(second), 5.0)
    wait_until("the old one closed", lambda: not _answers(first), 5.0)
    assert [s["id"] for s in _get(second, "/api/stations")["stations"]] == ["a", "b"]
    assert logins(icecast, f"{unique_mount}-a") == 1
    assert run.proc.poll() is None
    assert TOKEN not in run.stderr


class _taken:
    """A loopback port held open by a socket that listens (another program)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def _answers(port: int) -> bool:
    try:
        _get(port, "/api/stations")
    except OSError:
        return False
    return True


def _get(port: int, path: str) -> dict[str, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    body = json.loads(conn.getresponse().read())
    conn.close()
    return body  # type: ignore[no-any-return]
