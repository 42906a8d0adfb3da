"""POST /api/reload on a real control server, with a stand-in reload."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pushsource.ops.control import ControlServer
from tests.conftest import run_pushsource
from tests.support.icecast import free_port

TOKEN = "reload-route-token"


@dataclass
class Done:
    applied: bool
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"applied": self.applied, "problems": self.problems}


def post(server: ControlServer, token: str | None) -> tuple[int, dict[str, Any]]:
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    headers = {"Content-Length": "0"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    conn.request("POST", "/api/reload", body=b"", headers=headers)
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, body


def test_the_route_needs_the_token_and_says_what_the_reload_did() -> None:
    asked: list[str] = []
    outcome = Done(True)

    def reload(client: str) -> Done:
        asked.append(client)
        return outcome

    with ControlServer(("127.0.0.1", 0), [], token=TOKEN, reload=reload) as server:
        server.start()
        assert post(server, None)[0] == 401
        assert post(server, "wrong")[0] == 401
        assert asked == []  # nothing read without the token
        assert post(server, TOKEN) == (200, {"applied": True, "problems": []})
        assert asked == ["the control API, from 127.0.0.1"]
        outcome = Done(False, ["stations.toml: station 1: unknown key"])
        assert post(server, TOKEN) == (
            422,
            {"applied": False, "problems": ["stations.toml: station 1: unknown key"]},
        )


def test_without_a_config_there_is_nothing_to_reload() -> None:
    # pushsource stream: no reload given.
    with ControlServer(("127.0.0.1", 0), [], token=TOKEN) as server:
        server.start()
        assert post(server, TOKEN)[0] == 404
    with ControlServer(("127.0.0.1", 0), [], token=None) as server:
        server.start()
        assert post(server, TOKEN)[0] == 403  # actions off without a token


def test_pushsource_reload_says_what_it_needs(tmp_path: Path) -> None:
    done = run_pushsource("reload")
    assert done.returncode == 2
    assert "needs --config FILE, --pid PID or --pid-file FILE" in done.stderr
    (tmp_path / "a").mkdir()
    config = tmp_path / "stations.toml"
    config.write_text('[[station]]\nfolder = "a"\nurl = "icecast://s:x@127.0.0.1:9/a"\n', "utf-8")
    done = run_pushsource("reload", "--config", config, env={"PUSHSOURCE_TOKEN": ""})
    assert done.returncode == 2
    assert "has no [control] with a token" in done.stderr and "--pid" in done.stderr
    # --control names the address run --control gave; nothing listens there: 1.
    port = free_port()
    done = run_pushsource(
        "reload", "--config", config, "--control", f"127.0.0.1:{port}",
        env={"PUSHSOURCE_TOKEN": TOKEN},
    )  # fmt: skip
    assert done.returncode == 1
    assert f"control API on 127.0.0.1:{port}" in done.stderr
    assert TOKEN not in done.stderr + done.stdout
    pid_file = tmp_path / "none.pid"
    pid_file.write_text("not a pid\n")
    done = run_pushsource("reload", "--pid-file", pid_file)
    assert done.returncode == 2 and "no process id in it" in done.stderr
