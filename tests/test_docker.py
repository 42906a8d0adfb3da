"""docker/: the compose file as docker-compose reads it (secrets, healthchecks,
log limits, the config directory, the tls and relay profiles), the images'
Dockerfiles, the stations.toml the container runs, Icecast's container
entrypoint (run for real against the repository's icecast.xml: the first
start's defaults, the stations' crash fallbacks, HUP) and the systemd unit.

No Docker engine is needed: `docker-compose config` only reads files.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from pushsource.errors import ConfigError
from pushsource.ops.config import parse_config
from pushsource.ops.settings import ControlSettings
from tests.support.icecast import IcecastServer
from tests.support.listener import Listener
from tests.support.media import make_clean_mp3, mpeg_header_at

#: Real time: waits on sockets, timers or a browser (make test-fast leaves it out).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yml"
STATIONS = DOCKER / "stations.toml"
UNIT = DOCKER / "pushsource.service"
ENTRYPOINT = DOCKER / "icecast-entrypoint.sh"

CONFIG_DIR_IN_CONTAINER = "/config"
CONFIG_IN_CONTAINER = "/config/stations.toml"
CONTROL_PORT = 8700
LISTEN_PORT = 8000
TOKEN = "test-token-for-compose"
#: The variables compose requires, each naming a secret's file.
SECRET_FILES = {
    "ICECAST_SOURCE_PASSWORD_FILE": "icecast_source_password",
    "ICECAST_ADMIN_PASSWORD_FILE": "icecast_admin_password",
    "PUSHSOURCE_TOKEN_FILE": "pushsource_token",
}


# --- docker-compose config ---------------------------------------------------------


def compose_config(
    env: dict[str, str], tmp_path: Path, profiles: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` with exactly env as its settings (an empty
    --env-file keeps a developer's docker/.env out) and those profiles on."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    chosen = [arg for profile in profiles for arg in ("--profile", profile)]
    return subprocess.run(
        [binary, "--env-file", str(env_file), "-f", str(COMPOSE), *chosen, "config"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def secret_env(tmp_path: Path) -> dict[str, str]:
    """The required variables, naming secret files made in tmp_path."""
    env = {}
    for variable, name in SECRET_FILES.items():
        path = tmp_path / "secrets" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(TOKEN if name == "pushsource_token" else f"{name}-value\n", "utf-8")
        env[variable] = str(path)
    return env


def full_config(
    env: dict[str, str], tmp_path: Path, profiles: Sequence[str] = ()
) -> dict[str, Any]:
    result = compose_config({**secret_env(tmp_path), **env}, tmp_path, profiles)
    assert result.returncode == 0, result.stderr
    return dict(yaml.safe_load(result.stdout))


def services(env: dict[str, str], tmp_path: Path, profiles: Sequence[str] = ()) -> dict[str, Any]:
    return dict(full_config(env, tmp_path, profiles)["services"])


@pytest.fixture
def compose(tmp_path: Path) -> dict[str, Any]:
    return services({}, tmp_path)


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """{target: (source, read_only)} from either syntax compose may print."""
    found: dict[str, tuple[str, bool]] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            found[target] = (source, "ro" in mode[0].split(",") if mode else False)
        else:
            found[volume["target"]] = (volume["source"], bool(volume.get("read_only")))
    return found


def published(service: dict[str, Any]) -> dict[int, list[str]]:
    """{container port: [host address, ...]}, "" for every address."""
    found: dict[int, list[str]] = {}
    for port in service.get("ports", []):
        if isinstance(port, str):
            parts = port.split("/")[0].split(":")
            host_ip = parts[0] if len(parts) == 3 else ""
            target = int(parts[-1])
        else:
            host_ip = port.get("host_ip", "")
            target = int(port["target"])
        found.setdefault(target, []).append(host_ip)
    return found


def by_default(compose: dict[str, Any]) -> set[str]:
    """The services `up` starts with no --profile. docker-compose 1 prints every
    service with its profiles; 2 leaves out those of profiles not asked for."""
    return {name for name, service in compose.items() if not service.get("profiles")}


def test_compose_has_the_two_services(compose: dict[str, Any]) -> None:
    assert by_default(compose) == {"icecast", "pushsource"}
    # pushsource waits for an Icecast that answers, not one that started.
    assert compose["pushsource"]["depends_on"] == {"icecast": {"condition": "service_healthy"}}
    assert compose["pushsource"]["restart"] == "unless-stopped"


@pytest.mark.parametrize("variable", sorted(SECRET_FILES))
def test_compose_refuses_to_start_without_a_required_secret(tmp_path: Path, variable: str) -> None:
    env = {k: v for k, v in secret_env(tmp_path).items() if k != variable}
    result = compose_config(env, tmp_path)
    assert result.returncode != 0
    assert f"set {variable} to a file holding" in result.stderr, result.stderr


def test_passwords_go_as_secrets_never_as_environment(tmp_path: Path) -> None:
    config = full_config({}, tmp_path, profiles=["relay", "tls"])
    given = {name: Path(secret["file"]) for name, secret in config["secrets"].items()}
    assert given == {name: tmp_path / "secrets" / name for name in SECRET_FILES.values()}
    wanted = {
        "icecast": {"icecast_source_password", "icecast_admin_password"},
        "icecast-relay": {"icecast_source_password", "icecast_admin_password"},
        "pushsource": {"icecast_source_password", "pushsource_token"},
        "caddy": set(),
    }
    for name, service in config["services"].items():
        found = {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}
        assert found == wanted[name], name
        environment = service.get("environment") or {}
        assert not [key for key in environment if "PASSWORD" in key or "TOKEN" in key], name
        assert "value" not in json.dumps(environment) and TOKEN not in json.dumps(environment)


def test_every_service_has_a_log_limit(tmp_path: Path) -> None:
    config = services({}, tmp_path, profiles=["relay", "tls"])
    assert set(config) == {"icecast", "icecast-relay", "pushsource", "caddy"}
    for name, service in config.items():
        logging = service["logging"]
        assert logging["driver"] == "json-file", name
        assert logging["options"] == {"max-size": "10m", "max-file": "5"}, name
    custom = services({"LOG_MAX_SIZE": "50m", "LOG_MAX_FILE": "2"}, tmp_path)
    assert custom["icecast"]["logging"]["options"] == {"max-size": "50m", "max-file": "2"}


def test_icecast_and_pushsource_have_healthchecks(compose: dict[str, Any]) -> None:
    icecast = compose["icecast"]["healthcheck"]["test"]
    assert icecast[0] == "CMD" and icecast[1] == "python3"  # Debian's, in the image
    assert f"http://127.0.0.1:{LISTEN_PORT}/status-json.xsl" in icecast[-1]
    assert "python3" in " ".join(dockerfile_instructions(DOCKER / "icecast.Dockerfile")["RUN"])
    pushsource = compose["pushsource"]["healthcheck"]["test"]
    assert pushsource == ["CMD", "python", "/usr/local/lib/pushsource/healthcheck.py"]


def test_icecast_healthcheck_passes_against_a_real_icecast(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """The healthcheck's own command, pointed at a real icecast2 (and at a
    port nobody listens on: it must fail there)."""
    command = compose["icecast"]["healthcheck"]["test"]
    workdir = Path(tempfile.mkdtemp(prefix="pushsource-docker-health-"))
    try:
        with IcecastServer(REPO / "icecast.xml", workdir) as server:
            here = command[-1].replace(f"127.0.0.1:{LISTEN_PORT}", f"127.0.0.1:{server.port}")
            ok = subprocess.run([*command[1:-1], here], capture_output=True, timeout=20)
            assert ok.returncode == 0, ok.stderr
            port = server.port
        gone = subprocess.run(
            [*command[1:-1], command[-1].replace(str(LISTEN_PORT), str(port))],
            capture_output=True,
            timeout=20,
        )
        assert gone.returncode != 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_compose_builds_from_files_that_exist(compose: dict[str, Any]) -> None:
    for name, service in compose.items():
        if "build" not in service:
            assert service["image"] == "caddy:2", name  # the one image used as it is
            continue
        context = Path(service["build"]["context"])
        assert context == REPO, f"{name} builds from {context}, not the repository root"
        assert (context / service["build"]["dockerfile"]).is_file(), name


def test_icecast_runs_the_config_directory_outside_the_tracked_files(
    compose: dict[str, Any],
) -> None:
    source, read_only = mounts(compose["icecast"])[CONFIG_DIR_IN_CONTAINER]
    assert Path(source) == DOCKER / "config" and not read_only  # it writes the defaults
    assert entrypoint_default("ICECAST_TEMPLATE") == f"{CONFIG_DIR_IN_CONTAINER}/icecast.xml"
    assert entrypoint_default("PUSHSOURCE_STATIONS", "-") == CONFIG_IN_CONTAINER
    # Not the repository's files: git ignores the directory, so a pull never conflicts.
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(DOCKER / "config" / "stations.toml")], cwd=REPO
    )
    assert ignored.returncode == 0
    # The defaults travel in the image.
    copies = dockerfile_instructions(DOCKER / "icecast.Dockerfile")["COPY"]
    assert "icecast.xml docker/stations.toml /usr/local/share/pushsource/" in copies


def test_the_config_directory_comes_from_the_environment(tmp_path: Path) -> None:
    found = services({"PUSHSOURCE_CONFIG_DIR": "/srv/radio-config"}, tmp_path)
    assert mounts(found["icecast"])[CONFIG_DIR_IN_CONTAINER] == ("/srv/radio-config", False)
    assert mounts(found["pushsource"])[CONFIG_DIR_IN_CONTAINER] == ("/srv/radio-config", True)


def test_ports_are_published_on_loopback_unless_the_operator_opts_in(tmp_path: Path) -> None:
    plain = services({}, tmp_path, profiles=["relay"])
    assert published(plain["icecast"]) == {LISTEN_PORT: ["127.0.0.1"]}
    assert published(plain["icecast-relay"]) == {LISTEN_PORT: ["127.0.0.1"]}
    assert published(plain["pushsource"]) == {CONTROL_PORT: ["127.0.0.1"]}
    opened = services({"ICECAST_BIND": "0.0.0.0"}, tmp_path)
    assert published(opened["icecast"]) == {LISTEN_PORT: ["0.0.0.0"]}
    assert published(opened["pushsource"]) == {CONTROL_PORT: ["127.0.0.1"]}  # never opened


def test_pushsource_mounts_its_config_music_and_state(compose: dict[str, Any]) -> None:
    service = compose["pushsource"]
    found = mounts(service)
    assert found[CONFIG_DIR_IN_CONTAINER] == (str(DOCKER / "config"), True)
    folders = {station["folder"] for station in stations()["station"]}
    assert folders == {"/music"}
    assert found["/music"] == (str(REPO / "music"), False)  # uploads land there
    # The state volume is the directory the image keeps its XDG dirs in.
    state_volume = dockerfile_instructions(DOCKER / "Dockerfile")["VOLUME"][0]
    state_dir = json.loads(state_volume)[0]
    source, read_only = found[state_dir]
    assert not source.startswith("/") and not read_only, "expected a named, writable volume"


def test_music_dir_comes_from_the_environment(tmp_path: Path) -> None:
    found = mounts(services({"MUSIC_DIR": "/srv/radio"}, tmp_path)["pushsource"])
    assert found["/music"] == ("/srv/radio", False)


def test_control_api_is_published_on_loopback_only(compose: dict[str, Any]) -> None:
    assert published(compose["pushsource"]) == {CONTROL_PORT: ["127.0.0.1"]}
    # Inside the container it must listen on all addresses to be reachable at all.
    assert stations()["control"]["listen"] == f"0.0.0.0:{CONTROL_PORT}"


def test_both_containers_get_the_same_source_password(compose: dict[str, Any]) -> None:
    for name in ("icecast", "pushsource"):
        assert "icecast_source_password" in [
            s if isinstance(s, str) else s["source"] for s in compose[name]["secrets"]
        ], name


RELAY_PORT = 8001


@pytest.fixture
def with_relay(tmp_path: Path) -> dict[str, Any]:
    return services({}, tmp_path, profiles=["relay"])


def test_relay_runs_only_under_its_profile(
    compose: dict[str, Any], with_relay: dict[str, Any]
) -> None:
    assert "icecast-relay" not in by_default(compose)
    assert set(by_default(with_relay) | {"icecast-relay"}) == {
        "icecast",
        "pushsource",
        "icecast-relay",
    }
    assert with_relay["icecast-relay"]["profiles"] == ["relay"]
    assert by_default(with_relay) == {"icecast", "pushsource"}


def test_relay_is_the_same_icecast_relaying_the_stations(with_relay: dict[str, Any]) -> None:
    relay, icecast = with_relay["icecast-relay"], with_relay["icecast"]
    assert relay["build"] == icecast["build"]
    # The same icecast.xml and stations, read-only.
    assert mounts(relay) == {k: (v[0], True) for k, v in mounts(icecast).items()}
    assert published(relay) == {LISTEN_PORT: ["127.0.0.1"]}
    assert [int(str(p).split(":")[1]) for p in relay["ports"]] == [RELAY_PORT]
    assert relay["secrets"] == icecast["secrets"]
    assert relay["healthcheck"] == icecast["healthcheck"]
    env = relay["environment"]
    assert env["ICECAST_RELAY_MASTER"] == f"icecast:{LISTEN_PORT}"
    # It relays the mounts the stations stream to.
    station_mounts = {urlsplit(s["url"]).path for s in stations()["station"]}
    assert set(env["ICECAST_RELAY_MOUNTS"].split()) == station_mounts
    assert relay["depends_on"] == {"icecast": {"condition": "service_healthy"}}


# --- the tls profile ---------------------------------------------------------------

CADDYFILE = DOCKER / "Caddyfile"


@pytest.fixture
def with_tls(tmp_path: Path) -> dict[str, Any]:
    return services({"PUSHSOURCE_DOMAIN": "radio.example.org"}, tmp_path, profiles=["tls"])


def test_tls_runs_only_under_its_profile(compose: dict[str, Any], with_tls: dict[str, Any]) -> None:
    assert "caddy" not in by_default(compose)
    assert with_tls["caddy"]["profiles"] == ["tls"]
    assert by_default(with_tls) == {"icecast", "pushsource"}


def test_tls_proxies_listeners_and_the_control_page(with_tls: dict[str, Any]) -> None:
    caddy = with_tls["caddy"]
    assert mounts(caddy)["/etc/caddy/Caddyfile"] == (str(CADDYFILE), True)
    assert published(caddy) == {80: [""], 443: ["", ""]}  # the public entry: every address
    assert caddy["environment"]["PUSHSOURCE_DOMAIN"] == "radio.example.org"
    assert caddy["depends_on"]["icecast"] == {"condition": "service_healthy"}
    sites = caddy_sites(CADDYFILE.read_text("utf-8"))
    assert sites["{$PUSHSOURCE_DOMAIN}"][0] == f"icecast:{LISTEN_PORT}"
    assert "flush_interval -1" in sites["{$PUSHSOURCE_DOMAIN}"][1]  # a stream, not a page
    control = sites["{$PUSHSOURCE_CONTROL_DOMAIN}"]
    assert control[0] == f"pushsource:{CONTROL_PORT}"
    # The control server answers only Hosts it knows (DNS rebinding): localhost.
    assert "header_up Host localhost" in control[1]


def caddy_sites(text: str) -> dict[str, tuple[str, str]]:
    """{site address: (reverse_proxy upstream, the block's text)} of a Caddyfile."""
    found = {}
    for match in re.finditer(r"^(\S+) \{\n(.*?)^\}", text, re.MULTILINE | re.DOTALL):
        upstream = re.search(r"reverse_proxy (\S+)", match.group(2))
        assert upstream, match.group(1)
        found[match.group(1)] = (upstream.group(1), match.group(2))
    return found


def test_tls_without_a_domain_stops_with_one_line(with_tls: dict[str, Any]) -> None:
    """Caddy's own start line (its image's sh), run here with a fake caddy."""
    command = with_tls["caddy"]["entrypoint"]
    assert command[:2] == ["/bin/sh", "-c"]
    script = command[2].replace("$$", "$")
    with tempfile.TemporaryDirectory() as tmp:
        fake = Path(tmp) / "caddy"
        fake.write_text('#!/bin/sh\necho "caddy $* for $PUSHSOURCE_CONTROL_DOMAIN"\n', "utf-8")
        fake.chmod(0o755)
        path = f"{tmp}:{os.environ['PATH']}"
        missing = subprocess.run(
            ["sh", "-c", script], env={"PATH": path, "PUSHSOURCE_DOMAIN": ""},
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        assert missing.returncode == 2 and "set PUSHSOURCE_DOMAIN" in missing.stderr
        assert len(missing.stderr.strip().splitlines()) == 1
        ok = subprocess.run(
            ["sh", "-c", script], env={"PATH": path, "PUSHSOURCE_DOMAIN": "radio.example.org"},
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout == (
            "caddy run --config /etc/caddy/Caddyfile --adapter caddyfile "
            "for control.radio.example.org\n"
        )


# --- stations.toml -----------------------------------------------------------------


def stations() -> dict[str, Any]:
    with STATIONS.open("rb") as file:
        return tomllib.load(file)


def test_stations_toml_holds_no_secret_only_variables(compose: dict[str, Any]) -> None:
    """Each secret is a ${VAR} that the entrypoint sets from the compose secret
    of that name (icecast_source_password: ${ICECAST_SOURCE_PASSWORD})."""
    config = stations()
    secrets = [station["password"] for station in config["station"]]
    secrets.append(config["control"]["token"])
    given = {
        (s if isinstance(s, str) else s["source"]).upper() for s in compose["pushsource"]["secrets"]
    }
    for secret in secrets:
        match = re.fullmatch(r"\$\{([A-Z_][A-Z0-9_]*)\}", secret)
        assert match, f"{secret!r} is not a ${{VAR}} reference"
        assert match.group(1) in given, f"compose gives no secret for {match.group(1)}"
    assert not [value for value in strings(config) if "hackme" in value]


def strings(value: object) -> Iterator[str]:
    """Every string value in a parsed TOML document (comments are not values)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def test_pushsource_reads_stations_toml_as_the_container_would(tmp_path: Path) -> None:
    """pushsource's own loader, with the environment compose gives the container
    (the folder, /music there, is a folder of this machine here)."""
    data = stations()
    for station in data["station"]:
        station["folder"] = str(tmp_path)
    given = services({}, tmp_path)["pushsource"]["environment"]
    public = given["PUBLIC_LISTEN_URL"]
    env = {
        "ICECAST_SOURCE_PASSWORD": "s3cret",
        "PUSHSOURCE_TOKEN": TOKEN,
        "PUBLIC_LISTEN_URL": public,
    }
    config = parse_config(data, STATIONS, env)
    assert [station.password for station in config.stations] == ["s3cret"]
    # A browser reaches the published port on the host, not the service name.
    assert [station.public_url for station in config.stations] == [
        f"http://localhost:{LISTEN_PORT}/stream"
    ]
    assert config.control == ControlSettings("0.0.0.0", CONTROL_PORT, TOKEN)
    without_token = {k: v for k, v in env.items() if k != "PUSHSOURCE_TOKEN"}
    with pytest.raises(ConfigError, match="PUSHSOURCE_TOKEN is not set"):
        parse_config(data, STATIONS, without_token)


def test_public_listen_url_comes_from_the_environment(tmp_path: Path) -> None:
    wanted = "https://radio.example.org/stream"
    given = services({"PUBLIC_LISTEN_URL": wanted}, tmp_path)["pushsource"]["environment"]
    assert given["PUBLIC_LISTEN_URL"] == wanted


def test_stations_stream_to_the_icecast_service(compose: dict[str, Any]) -> None:
    for station in stations()["station"]:
        url = urlsplit(station["url"])
        assert url.scheme == "icecast"
        assert url.password is None, "the password belongs in ${VAR}, not the URL"
        assert url.hostname in compose
        assert url.port == LISTEN_PORT
        assert url.path.startswith("/") and len(url.path) > 1


# --- Dockerfiles -------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> dict[str, list[str]]:
    """{INSTRUCTION: [arguments, ...]} in order, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text("utf-8"))
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            found.setdefault(instruction.upper(), []).append(arguments.strip())
    return found


def test_pushsource_image_runs_as_a_user_of_its_own() -> None:
    image = dockerfile_instructions(DOCKER / "Dockerfile")
    user = image["USER"][-1].split(":")[0]
    assert user not in ("root", "0")
    created = [run for run in image["RUN"] if "useradd" in run]
    assert created and f"--uid {user}" in created[0]


def test_pushsource_image_runs_the_config_compose_mounts() -> None:
    image = dockerfile_instructions(DOCKER / "Dockerfile")
    assert json.loads(image["ENTRYPOINT"][-1]) == [
        "/bin/sh",
        "/usr/local/bin/pushsource-entrypoint",
    ]
    assert "COPY docker/pushsource-entrypoint.sh /usr/local/bin/pushsource-entrypoint" in [
        f"COPY {line}" for line in image["COPY"]
    ]
    assert json.loads(image["CMD"][-1]) == ["run", "--config", CONFIG_IN_CONTAINER]
    state_dir = json.loads(image["VOLUME"][-1])[0]
    env = dict(
        word.split("=", 1) for line in image["ENV"] for word in shlex.split(line) if "=" in word
    )
    for name in ("XDG_STATE_HOME", "XDG_CACHE_HOME"):
        assert env[name].startswith(state_dir + "/"), name


def test_pushsource_image_installs_the_runtime_dependencies_only() -> None:
    image = dockerfile_instructions(DOCKER / "Dockerfile")
    installs = [run for run in image["RUN"] if "pip install" in run]
    assert len(installs) == 1
    words = shlex.split(installs[0].split("pip install", 1)[1].split("&&")[0])
    # The project itself, not editable, no extras, no other package or list.
    assert len(words) == 1 and not words[0].startswith("-"), words
    assert "[" not in words[0]
    copied = [line.split()[-1].rstrip("/") for line in image["COPY"]]
    assert words[0].rstrip("/") in copied, f"pip installs {words[0]}, which no COPY made"
    apt = " ".join(run for run in image["RUN"] if "apt-get install" in run)
    assert "--no-install-recommends" in apt and "libvlc5" in apt


def test_docker_context_holds_only_what_the_images_copy() -> None:
    lines = [
        line
        for line in (REPO / ".dockerignore").read_text("utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*", "everything is left out unless named"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for dockerfile in (DOCKER / "Dockerfile", DOCKER / "icecast.Dockerfile"):
        for copy in dockerfile_instructions(dockerfile).get("COPY", []):
            if copy.startswith("--from="):
                continue  # from a build stage, not from the context
            for source in copy.split()[:-1]:
                if not source.startswith("--"):
                    assert source.rstrip("/") in allowed, f"{dockerfile.name} copies {source}"
                    assert (REPO / source).exists(), source


def test_icecast_image_runs_icecast2_unprivileged(workdir: Path) -> None:
    """The entrypoint starts as root (secrets, webroot) and runs the command
    as the icecast2 user of Debian's package: here as nobody, for real."""
    image = dockerfile_instructions(DOCKER / "icecast.Dockerfile")
    assert json.loads(image["CMD"][-1]) == ["icecast2", "-c", entrypoint_default("ICECAST_CONFIG")]
    assert entrypoint_default("ICECAST_USER", "-") == "icecast2"
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop privileges")
    config = workdir / "rendered.xml"
    workdir.chmod(0o755)  # nobody reaches it
    done = render(
        workdir, command=["sh", "-c", f'id -un; head -c 9 "{config}"'], ICECAST_USER="nobody"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "nobody"
    assert done.stdout.splitlines()[1] == "<?xml ver"  # its config readable to it (and only it)
    assert config.stat().st_mode & 0o077 == 0


# --- Icecast's entrypoint, run against the repository's icecast.xml ----------------


def entrypoint_default(name: str, operator: str = ":-") -> str:
    match = re.search(rf"\${{{name}{operator}([^}}]+)}}", ENTRYPOINT.read_text("utf-8"))
    assert match, f"{ENTRYPOINT.name} has no default for {name}"
    return match.group(1)


# Characters that XML and the sed replacement would each mangle if unescaped.
SOURCE_PASSWORD = "s&<p>|a\\ss/%s *"
ADMIN_PASSWORD = "a&amp;d]m'in\""


def entrypoint_env(workdir: Path, **env: str) -> dict[str, str]:
    """Everything the entrypoint reads, pointed into workdir (nothing of this
    machine's /config, /run/secrets or Debian's webroot); no stations unless
    PUSHSOURCE_STATIONS is given; run as it is (ICECAST_USER empty)."""
    return {
        "PATH": os.environ["PATH"],
        "ICECAST_TEMPLATE": str(REPO / "icecast.xml"),
        "ICECAST_CONFIG": str(workdir / "rendered.xml"),
        "PUSHSOURCE_STATIONS": "",
        "PUSHSOURCE_DEFAULTS": str(workdir / "defaults"),
        "PUSHSOURCE_LIBRARY": str(REPO),
        "ICECAST_SECRETS": str(workdir / "secrets"),
        "ICECAST_WEBROOT": str(workdir / "web"),
        "ICECAST_USER": "",
        **env,
    }


def render(
    workdir: Path, command: Sequence[str] | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    config = workdir / "rendered.xml"
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *(command or ["cat", str(config)])],
        env=entrypoint_env(workdir, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Under /tmp: as root icecast2 runs as nobody (see tests/support/icecast.py).
    path = Path(tempfile.mkdtemp(prefix="pushsource-docker-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_entrypoint_opens_icecast_xml_to_the_container_network(workdir: Path) -> None:
    result = render(
        workdir, ICECAST_SOURCE_PASSWORD=SOURCE_PASSWORD, ICECAST_ADMIN_PASSWORD=ADMIN_PASSWORD
    )
    assert result.returncode == 0, result.stderr
    root = ET.fromstring(result.stdout)
    sockets = root.findall("listen-socket")
    assert [s.findtext("bind-address") for s in sockets] == ["0.0.0.0"]
    assert [s.findtext("port") for s in sockets] == [str(LISTEN_PORT)]
    assert root.findtext("logging/errorlog") == "-"
    assert root.findtext("logging/accesslog") == "-"
    assert root.findtext("authentication/source-password") == SOURCE_PASSWORD
    assert root.findtext("authentication/admin-password") == ADMIN_PASSWORD
    # Anything else is as in the repository's file.
    original = ET.parse(REPO / "icecast.xml").getroot()
    assert root.findtext("limits/burst-size") == original.findtext("limits/burst-size")
    assert root.findtext("mount/charset") == original.findtext("mount/charset")


def test_entrypoint_keeps_the_file_passwords_when_none_are_set(workdir: Path) -> None:
    result = render(workdir)
    assert result.returncode == 0, result.stderr
    root = ET.fromstring(result.stdout)
    original = ET.parse(REPO / "icecast.xml").getroot()
    for tag in ("source-password", "admin-password"):
        assert root.findtext(f"authentication/{tag}") == original.findtext(f"authentication/{tag}")


def test_entrypoint_reads_the_passwords_from_the_secrets(workdir: Path) -> None:
    secrets = workdir / "secrets"
    secrets.mkdir()
    (secrets / "icecast_source_password").write_text(SOURCE_PASSWORD + "\n", "utf-8")
    (secrets / "icecast_admin_password").write_text(ADMIN_PASSWORD, "utf-8")  # no newline
    result = render(workdir)
    assert result.returncode == 0, result.stderr
    root = ET.fromstring(result.stdout)
    assert root.findtext("authentication/source-password") == SOURCE_PASSWORD
    assert root.findtext("authentication/admin-password") == ADMIN_PASSWORD
    assert SOURCE_PASSWORD not in result.stderr


def write_defaults(workdir: Path) -> Path:
    """The image's defaults (icecast.Dockerfile's COPY) in workdir/defaults."""
    defaults = workdir / "defaults"
    defaults.mkdir()
    shutil.copy(REPO / "icecast.xml", defaults)
    shutil.copy(STATIONS, defaults)
    return defaults


SECOND_STATION = """
[[station]]
folder = "/talk"
url = "icecast://source@icecast:8000/talk"
password = "${ICECAST_SOURCE_PASSWORD}"
samplerate = 48000
channels = 1
"""


def test_entrypoint_writes_the_defaults_on_the_first_start_and_only_then(workdir: Path) -> None:
    from pushsource.ops.icecastconf import Mount, problems

    write_defaults(workdir)
    config_dir = workdir / "config"
    config_dir.mkdir()
    env = {
        "ICECAST_TEMPLATE": str(config_dir / "icecast.xml"),
        "PUSHSOURCE_STATIONS": str(config_dir / "stations.toml"),
    }
    first = render(workdir, **env)
    assert first.returncode == 0, first.stderr
    assert (config_dir / "stations.toml").read_bytes() == STATIONS.read_bytes()
    assert (config_dir / "icecast.xml").read_bytes() == (REPO / "icecast.xml").read_bytes()
    assert (config_dir / "stations.toml").stat().st_mode & 0o777 == 0o644  # the operator's
    assert "first start: wrote the default" in first.stderr
    # The default station's mount falls back to silence of its format.
    rendered = workdir / "rendered.xml"
    assert problems(rendered, [("stream", Mount("/stream", 44100, 2))]) == []
    assert (workdir / "web" / "silence-44100-2.mp3").exists()

    # The operator adds a station: the next start keeps the file, adds the mount.
    with (config_dir / "stations.toml").open("a", encoding="utf-8") as file:
        file.write(SECOND_STATION)
    again = render(workdir, **env)
    assert again.returncode == 0, again.stderr
    assert "first start" not in again.stderr
    assert SECOND_STATION in (config_dir / "stations.toml").read_text("utf-8")
    mounts = [("stream", Mount("/stream", 44100, 2)), ("talk", Mount("/talk", 48000, 1))]
    assert problems(rendered, mounts) == []


def test_entrypoint_refuses_stations_it_cannot_read_in_one_line(workdir: Path) -> None:
    stations = workdir / "stations.toml"
    stations.write_text("[[station]]\nurl = 'icecast://h/m'\nsamplerate = 12345\n", "utf-8")
    result = render(workdir, PUSHSOURCE_STATIONS=str(stations))
    assert result.returncode == 2
    assert "no 12345 Hz" in result.stderr and "no crash fallback" in result.stderr
    assert not (workdir / "rendered.xml").exists()


def test_entrypoint_renders_again_on_hup_and_tells_icecast(workdir: Path) -> None:
    """docker compose kill -s HUP icecast after adding a station: the new
    mount gets its fallback, the command (icecast2 here a script) gets HUP;
    a stations.toml that does not read leaves the running config."""
    import signal

    stations = workdir / "stations.toml"
    shutil.copy(STATIONS, stations)
    rendered = workdir / "rendered.xml"
    got = workdir / "got"
    ready = workdir / "ready"
    script = (
        f"trap 'grep -c \"<mount-name>\" {rendered} >> {got}' HUP\n"
        f"trap 'exit 0' TERM\ntouch {ready}\nwhile :; do sleep 0.05; done\n"
    )
    process = subprocess.Popen(
        ["env", "--default-signal=HUP,INT,TERM", "sh", str(ENTRYPOINT), "sh", "-c", script],
        env=entrypoint_env(workdir, PUSHSOURCE_STATIONS=str(stations)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )

    def wait_for(check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 20
        while not check():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    try:
        wait_for(ready.exists, "the command did not start")
        assert rendered.read_text("utf-8").count("<mount-name>") == 1
        with stations.open("a", encoding="utf-8") as file:
            file.write(SECOND_STATION)
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: got.exists() and got.read_text() == "2\n", "HUP not passed on")
        assert (workdir / "web" / "silence-48000-1.mp3").exists()
        stations.write_text("not toml [", "utf-8")
        process.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        assert got.read_text() == "2\n", "HUP passed on without a config"
        assert rendered.read_text("utf-8").count("<mount-name>") == 2
        assert process.poll() is None, "a bad file on HUP must not end Icecast"
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert "kept the running config" in err


def test_entrypoint_refuses_a_password_of_two_lines(workdir: Path) -> None:
    result = render(workdir, ICECAST_SOURCE_PASSWORD="first-line\nsecond-line")
    assert result.returncode == 2
    assert "<source-password>" in result.stderr and "one line" in result.stderr
    assert "first-line" not in result.stderr + result.stdout


def test_entrypoint_adds_a_relay_per_mount_as_compose_asks(
    workdir: Path, with_relay: dict[str, Any]
) -> None:
    env = with_relay["icecast-relay"]["environment"]
    # compose's mounts (/stream) and one more: a relay for each.
    result = render(
        workdir,
        ICECAST_RELAY_MASTER=env["ICECAST_RELAY_MASTER"],
        ICECAST_RELAY_MOUNTS=env["ICECAST_RELAY_MOUNTS"] + " /second.mp3",
    )
    assert result.returncode == 0, result.stderr
    root = ET.fromstring(result.stdout)
    relays = [{child.tag: child.text for child in relay} for relay in root.findall("relay")]
    assert relays == [
        {
            "server": "icecast",
            "port": str(LISTEN_PORT),
            "mount": mount,
            "local-mount": mount,
            "on-demand": "0",
            "relay-shoutcast-metadata": "1",
        }
        for mount in ("/stream", "/second.mp3")
    ]
    # A failed pull is tried again after this, not after Icecast's 120 s.
    assert root.findtext("master-update-interval") == "10"
    assert root.find("master-server") is None  # relays the mounts, not the server
    # Nothing else changes: the same file as without a relay, less the relays.
    for extra in [*root.findall("relay"), *root.findall("master-update-interval")]:
        root.remove(extra)
    plain = render(workdir)
    assert ET.tostring(root) == ET.tostring(ET.fromstring(plain.stdout))


def test_entrypoint_has_no_relay_unless_asked(workdir: Path) -> None:
    result = render(workdir, ICECAST_RELAY_MOUNTS="/stream")
    assert result.returncode == 0, result.stderr
    assert ET.fromstring(result.stdout).find("relay") is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ICECAST_RELAY_MASTER": "icecast"}, "must be host:port"),
        ({"ICECAST_RELAY_MASTER": "ice<cast>:8000"}, "must be host:port"),
        ({"ICECAST_RELAY_MOUNTS": "stream"}, 'relay mount "stream" must be a path'),
        ({"ICECAST_RELAY_MOUNTS": "/a /b&c"}, 'relay mount "/b&c" must be a path'),
        ({"ICECAST_RELAY_MOUNTS": "/*"}, 'relay mount "/*" must be a path'),
        ({"ICECAST_RELAY_INTERVAL": "0"}, "ICECAST_RELAY_INTERVAL must be a number"),
    ],
)
def test_entrypoint_refuses_a_relay_it_cannot_write(
    workdir: Path, env: dict[str, str], message: str
) -> None:
    result = render(workdir, **{"ICECAST_RELAY_MASTER": "icecast:8000", **env})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert not (workdir / "rendered.xml").exists()


def _source_status(port: int, password: str) -> int:
    """The status Icecast answers a source PUT with."""
    auth = base64.b64encode(f"source:{password}".encode()).decode()
    request = (
        f"PUT /docker-check HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Basic {auth}\r\nContent-Type: audio/mpeg\r\n"
        "Ice-Public: 0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        line = sock.makefile("rb").readline().decode("latin-1")
    return int(line.split()[1])


def _admin_status(base_url: str, password: str) -> int:
    auth = base64.b64encode(f"admin:{password}".encode()).decode()
    request = urllib.request.Request(
        f"{base_url}/admin/stats", headers={"Authorization": f"Basic {auth}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.integration
def test_icecast_takes_the_rendered_passwords(workdir: Path) -> None:
    """A real icecast2 runs the rendered file (on loopback and a free port, as
    every test server) and logs in with the passwords from the environment."""
    result = render(
        workdir, ICECAST_SOURCE_PASSWORD=SOURCE_PASSWORD, ICECAST_ADMIN_PASSWORD=ADMIN_PASSWORD
    )
    assert result.returncode == 0, result.stderr
    template = workdir / "template.xml"
    template.write_text(result.stdout, "utf-8")
    with IcecastServer(template, workdir) as server:
        assert _admin_status(server.base_url, ADMIN_PASSWORD) == 200
        assert _admin_status(server.base_url, "hackme") == 401
        assert _source_status(server.port, "hackme") == 401
        assert _source_status(server.port, SOURCE_PASSWORD) == 200


@pytest.mark.integration
def test_icecast_relays_with_the_rendered_relay_blocks(workdir: Path) -> None:
    """A real icecast2 runs what the entrypoint renders for a relay and pulls a
    mount from a second real one, as the compose profile's would."""
    with IcecastServer(REPO / "icecast.xml", workdir / "master") as master:
        result = render(
            workdir,
            ICECAST_RELAY_MASTER=f"127.0.0.1:{master.port}",
            ICECAST_RELAY_MOUNTS="/docker-relay",
            ICECAST_RELAY_INTERVAL="1",
        )
        assert result.returncode == 0, result.stderr
        template = workdir / "relay.xml"
        template.write_text(result.stdout, "utf-8")
        tone = make_clean_mp3(workdir / "tone.mp3", 1.5)
        with (
            IcecastServer(template, workdir / "relay") as relay,
            _source(master.port, "/docker-relay", "hackme") as source,
            Listener(relay.port, "/docker-relay", connect_timeout=15) as listener,
        ):
            source.sendall(tone)
            relay.wait_for_mount("/docker-relay", timeout=15)
            # All but the block Icecast keeps until more comes.
            listener.wait_for_audio(len(tone) - 1400, timeout=10)
            audio = bytes(listener.audio)
    assert audio == tone[: len(audio)]


@contextlib.contextmanager
def _source(port: int, mount: str, password: str) -> Iterator[socket.socket]:
    """A source connection Icecast has taken (200), to send audio on."""
    auth = base64.b64encode(f"source:{password}".encode()).decode()
    request = (
        f"PUT {mount} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Basic {auth}\r\nContent-Type: audio/mpeg\r\n"
        "Ice-Public: 0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1024)
            assert chunk, f"Icecast closed the source connection: {head!r}"
            head += chunk
        assert head.split()[1] == b"200", head
        yield sock


@pytest.mark.integration
def test_the_rendered_fallbacks_keep_listeners_through_a_hup_and_a_lost_source(
    workdir: Path,
) -> None:
    """What the container runs, run by a real icecast2: the default station's
    listener stays through the HUP that brings a second station (48 kHz mono)
    in; then both sources die without a goodbye, and each listener stays,
    hearing silence of its own mount's format."""
    import signal

    from pushsource.ops.icecastconf import silence
    from pushsource.ops.trial import render_config

    workdir.chmod(0o755)  # icecast2 runs as nobody
    stations = workdir / "stations.toml"
    shutil.copy(STATIONS, stations)
    first = render(workdir, PUSHSOURCE_STATIONS=str(stations))
    assert first.returncode == 0, first.stderr
    rendered = workdir / "rendered.xml"
    template = workdir / "template.xml"
    shutil.copy(rendered, template)
    music = make_clean_mp3(workdir / "music.mp3", 4.0)
    talk = make_clean_mp3(
        workdir / "talk.mp3", 4.0, freq=660, samplerate=48000, channels=1, bitrate=64
    )
    with (
        IcecastServer(template, workdir / "icecast") as server,
        _source(server.port, "/stream", "hackme") as on_stream,
        Listener(server.port, "/stream", connect_timeout=15) as stream_listener,
    ):
        on_stream.sendall(music)
        stream_listener.wait_for_audio(16_000, 10)
        # The operator adds a station and sends HUP: rendered again, then
        # Icecast re-reads the file (here: the same render, on its port).
        with stations.open("a", encoding="utf-8") as file:
            file.write(SECOND_STATION)
        again = render(workdir, PUSHSOURCE_STATIONS=str(stations))
        assert again.returncode == 0, again.stderr
        (server.workdir / "icecast.xml").write_text(
            render_config(rendered, port=server.port, workdir=server.workdir), "utf-8"
        )
        assert server._process is not None
        server._process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        log = server.workdir / "stderr.log"  # the rendered errorlog is "-"
        while "Caught config reload request" not in log.read_text("utf-8", "replace"):
            assert time.monotonic() < deadline, "icecast2 did not re-read its config"
            time.sleep(0.05)
        time.sleep(0.5)  # the line comes before the new config is in force
        assert not stream_listener.closed.is_set(), "the HUP dropped a listener"
        with (
            _source(server.port, "/talk", "hackme") as on_talk,
            Listener(server.port, "/talk", connect_timeout=15) as talk_listener,
        ):
            on_talk.sendall(talk)
            talk_listener.wait_for_audio(8_000, 10)
            # Icecast 2.4.4 opens the fallback file of a mount the HUP added at
            # its next check of the mounts (a source's login sets one off, about
            # a second later), not at the HUP: a source gone before that loses
            # its listeners. At a start it opens them all at once.
            deadline = time.monotonic() + 10
            while "listener count on /silence-48000-1.mp3" not in log.read_text("utf-8"):
                assert time.monotonic() < deadline, "the new mount's fallback never opened"
                time.sleep(0.05)
            heard = {
                stream_listener: len(stream_listener.audio),
                talk_listener: len(talk_listener.audio),
            }
            for sock in (on_stream, on_talk):  # the sources die: no goodbye
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                sock.close()
            time.sleep(3)
            for listener, rate, channels in (
                (stream_listener, 44100, 2),
                (talk_listener, 48000, 1),
            ):
                assert not listener.closed.is_set(), f"dropped at {rate} Hz"
                after = bytes(listener.audio[heard[listener] :])
                data = silence(rate, channels)
                frame = data[: mpeg_header_at(data, 0).length]  # type: ignore[union-attr]
                assert frame in after, f"no {rate} Hz silence after the source went"


# --- the systemd unit --------------------------------------------------------------


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text("utf-8"))
    return parser


def test_unit_runs_pushsource_with_the_config() -> None:
    service = unit()["Service"]
    assert shlex.split(service["ExecStart"]) == [
        "/usr/local/bin/pushsource",
        "run",
        "--config",
        "/etc/pushsource/stations.toml",
    ]
    assert service["User"] not in ("root", "0")
    assert service["EnvironmentFile"] == "-/etc/pushsource/env"


def test_unit_restarts_only_when_a_restart_can_help() -> None:
    service = unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert str(ConfigError.exit_status) in service["RestartPreventExitStatus"].split()
    assert service["KillSignal"] == "SIGTERM"
    assert shlex.split(service["ExecReload"]) == ["/bin/kill", "-HUP", "$MAINPID"]


def test_unit_keeps_state_and_cache_where_systemd_gives_it_room() -> None:
    service = unit()["Service"]
    env = dict(word.split("=", 1) for word in shlex.split(service["Environment"]))
    assert service["StateDirectory"] == "pushsource"
    assert service["CacheDirectory"] == "pushsource"
    assert env["XDG_STATE_HOME"].startswith("%S/pushsource")
    assert env["XDG_CACHE_HOME"].startswith("%C/pushsource")
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"


def test_unit_leaves_uploads_the_operator_can_use() -> None:
    """DynamicUser=yes with UMask=0077 left uploads owned by a transient uid,
    mode 600: a fixed user and group, files readable by all, group-writable."""
    service = unit()["Service"]
    assert "DynamicUser" not in service
    assert service["User"] == service["Group"] == "pushsource"
    umask = int(service["UMask"], 8)
    assert umask & 0o044 == 0, "others and the group must read uploads and state"
    assert umask & 0o002, "others must not write them"
    assert 0o666 & ~umask == 0o664
    header = UNIT.read_text("utf-8").split("[Unit]")[0]
    assert "useradd --system --user-group" in header  # the install makes the user


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own parser: an unknown key or a bad value is a warning there,
    so any output fails. ExecStart must name a file that exists, so the copy
    points at this venv's pushsource."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    pushsource = Path(sys.executable).parent / "pushsource"
    if not pushsource.exists():
        pytest.skip(f"{pushsource} is missing: pip install -e . first")
    copy = tmp_path / UNIT.name
    copy.write_text(
        UNIT.read_text("utf-8").replace("/usr/local/bin/pushsource", str(pushsource)), "utf-8"
    )
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


# --- pushsource's entrypoint and healthcheck ---------------------------------------------

PUSHSOURCE_ENTRYPOINT = DOCKER / "pushsource-entrypoint.sh"
HEALTHCHECK = DOCKER / "healthcheck.py"


def fake_pushsource(folder: Path, script: str) -> dict[str, str]:
    """An environment whose `pushsource` is script (sh), for the entrypoint to run."""
    folder.mkdir(parents=True, exist_ok=True)
    binary = folder / "pushsource"
    binary.write_text("#!/bin/sh\n" + script, "utf-8")
    binary.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}


def start_entrypoint(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    # With the signals' default actions, as in a container: a signal ignored
    # on entry (a run under nohup ignores HUP) cannot be trapped by a shell.
    return subprocess.Popen(
        ["env", "--default-signal=HUP,INT,TERM,USR1", "sh", str(PUSHSOURCE_ENTRYPOINT), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_entrypoint_passes_arguments_and_the_exit_status(tmp_path: Path) -> None:
    env = fake_pushsource(tmp_path / "bin", 'echo "args: $*"; exit 1\n')
    done = start_entrypoint(env, "run", "--config", CONFIG_IN_CONTAINER)
    out, err = done.communicate(timeout=10)
    assert done.returncode == 1, err  # a crash: the restart policy restarts it
    assert out == f"args: run --config {CONFIG_IN_CONTAINER}\n"


def test_entrypoint_forwards_signals(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    got = tmp_path / "got"
    env = fake_pushsource(
        tmp_path / "bin",
        f"trap 'echo got HUP >> {got}' HUP\ntrap 'echo got TERM >> {got}; exit 0' TERM\n"
        f"touch {ready}\nwhile :; do sleep 0.05; done\n",
    )
    process = start_entrypoint(env, "run")

    def wait_for(check: Callable[[], bool], what: str) -> None:
        # A loaded machine may take a while; the order is what is checked.
        deadline = time.monotonic() + 10
        while not check():
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    try:
        wait_for(ready.exists, "the fake pushsource did not start")
        import signal

        process.send_signal(signal.SIGHUP)  # compose kill -s HUP: rescan
        wait_for(lambda: got.exists() and "HUP" in got.read_text("utf-8"), "HUP not passed on")
        assert process.poll() is None, "HUP must not end it"
        process.send_signal(signal.SIGTERM)  # docker stop
        process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert got.read_text("utf-8") == "got HUP\ngot TERM\n"
    assert process.returncode == 0


def test_entrypoint_holds_on_exit_2_instead_of_a_restart_loop(tmp_path: Path) -> None:
    import signal

    runs = tmp_path / "runs"
    env = fake_pushsource(
        tmp_path / "bin",
        f"echo run >> {runs}\necho 'pushsource: error: authentication failed' >&2\nexit 2\n",
    )
    process = start_entrypoint(env, "run")
    try:
        time.sleep(1.5)
        # Still running (compose restarts nothing), pushsource ran once.
        assert process.poll() is None
        assert runs.read_text("utf-8") == "run\n"
        process.send_signal(signal.SIGTERM)  # docker stop ends the hold at once
        _, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 2
    assert "authentication failed" in err
    assert "exited 2" in err and "not restarting" in err


def test_healthcheck_is_what_the_image_runs() -> None:
    image = dockerfile_instructions(DOCKER / "Dockerfile")
    health = image["HEALTHCHECK"][-1]
    assert json.loads(health.split("CMD", 1)[1]) == [
        "python",
        "/usr/local/lib/pushsource/healthcheck.py",
    ]
    assert "COPY docker/healthcheck.py /usr/local/lib/pushsource/healthcheck.py" in [
        f"COPY {line}" for line in image["COPY"]
    ]
    assert f"127.0.0.1:{CONTROL_PORT}" in HEALTHCHECK.read_text("utf-8")


def test_healthcheck_against_a_real_control_server(tmp_path: Path) -> None:
    from tests.test_control import FakeStation, serve

    rock, jazz = FakeStation("rock", tmp_path), FakeStation("jazz", tmp_path)

    def check(url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(HEALTHCHECK), url], capture_output=True, text=True, timeout=20
        )

    with serve([rock, jazz]) as server:
        host, port = server.address
        url = f"http://{host}:{port}/api/stations?summary=1"
        healthy = check(url)
        assert healthy.returncode == 0, healthy
        assert healthy.stdout == "healthy: 2 stations, none failed\n"

        failing = rock.status
        rock.status = lambda: {  # type: ignore[method-assign]
            **failing(),
            "connection": {"state": "failed", "reconnects": 0, "error": "wrong password"},
        }
        sick = check(url)
        assert sick.returncode == 1
        assert sick.stdout == "unhealthy: failed: rock\n"
    gone = check(url)  # nothing answers: pushsource is not running (held on exit 2)
    assert gone.returncode == 1 and gone.stdout.startswith("unhealthy: the control API")


# --- both entrypoints --------------------------------------------------------------


@pytest.mark.parametrize("script", sorted(DOCKER.glob("*.sh")), ids=lambda p: p.name)
def test_entrypoints_parse_as_posix_sh(script: Path) -> None:
    """The images run them with /bin/sh (dash on Debian): no bashisms that
    only show when a branch runs."""
    for shell in ("sh", "dash"):
        if shutil.which(shell) is None:
            continue
        done = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, f"{shell}: {done.stderr}"


def test_pushsource_entrypoint_turns_secrets_into_the_variables_stations_toml_names(
    tmp_path: Path,
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "icecast_source_password").write_text("s3cret\nsecond line\n", "utf-8")
    (secrets / "pushsource_token").write_text(TOKEN, "utf-8")
    (secrets / "not-a-name").write_text("x", "utf-8")
    env = fake_pushsource(
        tmp_path / "bin",
        'echo "$ICECAST_SOURCE_PASSWORD|$PUSHSOURCE_TOKEN|${NOT_A_NAME:-unset}"\n',
    )
    env["PUSHSOURCE_SECRETS"] = str(secrets)
    done = start_entrypoint(env, "run")
    out, err = done.communicate(timeout=10)
    assert done.returncode == 0, err
    assert out == f"s3cret|{TOKEN}|unset\n"
    # A variable already set wins over the file.
    done = start_entrypoint({**env, "PUSHSOURCE_TOKEN": "given"}, "run")
    out, _ = done.communicate(timeout=10)
    assert out == "s3cret|given|unset\n"


def test_env_example_is_what_the_first_start_needs(tmp_path: Path) -> None:
    """README's first start copies env.example to .env: with it alone compose
    reads the file, and the secrets are the files the README writes."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    done = subprocess.run(
        [binary, "--env-file", str(DOCKER / "env.example"), "-f", str(COMPOSE), "config"],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    secrets = yaml.safe_load(done.stdout)["secrets"]
    assert {name: Path(s["file"]) for name, s in secrets.items()} == {
        name: DOCKER / "secrets" / name for name in SECRET_FILES.values()
    }
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(DOCKER / "secrets" / "pushsource_token")], cwd=REPO
    )
    assert ignored.returncode == 0, "the secrets must never be committed"
