"""The source password never shows: not in log lines at any level, not in an
error message or exception, not in the repr of an object, not in --help, not
in the process title. Runs against a real icecast2 whose password is a
distinctive string (conftest.SECRET_PASSWORD); conftest also checks every
pushsource run of the whole session for every password the tests used."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
import requests

from pushsource.core.frames import parse_header, silent_frame
from pushsource.core.target import IcecastTarget, parse_target
from pushsource.engine.source import SourceSocket
from pushsource.errors import ConfigError, IcecastError, PushsourceError
from pushsource.ops.config import load_config
from pushsource.ops.logs import JsonFormatter, PlainFormatter
from pushsource.workers.icecast import send_title
from tests.conftest import (
    SECRET_PASSWORD,
    StartPushsource,
    capture_output,
    register_secret,
    secret_url,
)
from tests.support import aio
from tests.support.icecast import IcecastServer, free_port
from tests.support.media import make_clean_mp3

RunPushsource = Callable[..., subprocess.CompletedProcess[str]]

WRONG_PASSWORD = "Wr0ng-Zq7@pw:Kx4"
#: Passwords in URLs typed without percent-encoding ("/" ends the host part).
RAW_SLASH_PASSWORD = "Zq7/raw-S3cr3t-Pq8"
for _secret in (WRONG_PASSWORD, RAW_SLASH_PASSWORD):
    register_secret(_secret)


def fragments(secret: str) -> list[str]:
    """The secret and its alphanumeric runs of 6 or more: a leak of part of it counts."""
    return [secret, quote(secret, safe=""), *re.findall(r"[A-Za-z0-9]{6,}", secret)]


def assert_hidden(text: str, *secrets: str, where: str = "output") -> None:
    __tracebackhide__ = True
    for secret in secrets or (SECRET_PASSWORD,):
        for fragment in fragments(secret):
            assert fragment not in text, f"{fragment!r} (of a password) is in the {where}"


@pytest.fixture(scope="module")
def short_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("short")
    make_clean_mp3(folder / "tone.mp3", 0.5)
    return folder


def password_file(tmp_path: Path, password: str) -> Path:
    path = tmp_path / "password"
    path.touch(mode=0o600)
    path.write_text(password + "\n", "utf-8")
    return path


# -- the command line ---------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    ("loudness", "given_by"),
    [("-v", "url"), ("-v", "env"), ("-v", "file"), ("-q", "url")],
)
def test_a_stream_at_any_log_level_never_shows_the_password(
    secret_icecast: IcecastServer,
    short_folder: Path,
    unique_mount: str,
    run_pushsource: RunPushsource,
    tmp_path: Path,
    loudness: str,
    given_by: str,
) -> None:
    url = secret_url(secret_icecast, unique_mount)
    env: dict[str, str] = {}
    extra: list[str | Path] = []
    if given_by != "url":
        url = f"icecast://source@127.0.0.1:{secret_icecast.port}{unique_mount}"
    if given_by == "env":
        env["PUSHSOURCE_PASSWORD"] = SECRET_PASSWORD
    if given_by == "file":
        extra = ["--password-file", password_file(tmp_path, SECRET_PASSWORD)]
    done = run_pushsource(
        loudness, "stream", short_folder, url, *extra, "--once", env=env, timeout=30
    )
    assert done.returncode == 0, done
    if loudness == "-v":
        assert " DEBUG " in done.stderr, "no debug output at -v"
    assert_hidden(done.stdout + done.stderr)


@pytest.mark.integration
@pytest.mark.parametrize("loudness", ["-v", "-q"])
def test_a_wrong_password_is_not_shown(
    secret_icecast: IcecastServer,
    short_folder: Path,
    unique_mount: str,
    run_pushsource: RunPushsource,
    loudness: str,
) -> None:
    url = secret_url(secret_icecast, unique_mount, WRONG_PASSWORD)
    done = run_pushsource(loudness, "stream", short_folder, url, "--once", timeout=30)
    assert done.returncode == 2, done
    assert "authentication failed" in done.stderr
    assert_hidden(done.stdout + done.stderr, WRONG_PASSWORD)


def test_an_unreachable_server_is_not_shown_the_password(
    short_folder: Path, run_pushsource: RunPushsource
) -> None:
    url = f"icecast://source:{quote(SECRET_PASSWORD, safe='')}@127.0.0.1:{free_port()}/m"
    done = run_pushsource(
        "-v", "stream", short_folder, url, "--once", "--max-retries", "1", timeout=30
    )
    assert done.returncode == 1, done
    assert "cannot connect" in done.stderr, done
    assert_hidden(done.stdout + done.stderr)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://source:{pw}@127.0.0.1:8000/m",
        "icecast://source:{pw}@127.0.0.1:notaport/m",
        "icecast://source:{pw}@127.0.0.1:99999/m",
        "icecast://source:{pw}@:8000/m",
        "icecast://source:{pw}@127.0.0.1:8000",
        "icecast://source:{pw}@127.0.0.1:8000/m?x=1",
        "icecast://source:{pw}@127.0.0.1:8000/a b",
        "icecast://source:{pw}@[::1/m",
    ],
)
def test_a_malformed_url_is_refused_without_its_password(
    short_folder: Path, run_pushsource: RunPushsource, url: str
) -> None:
    done = run_pushsource(
        "-v", "stream", short_folder, url.format(pw=quote(SECRET_PASSWORD, safe=""))
    )
    assert done.returncode == 2, done
    assert_hidden(done.stdout + done.stderr)


def test_a_password_typed_with_a_raw_slash_is_not_shown(
    short_folder: Path, run_pushsource: RunPushsource
) -> None:
    # README says to percent-encode "/" in a password; someone will not. The
    # URL is then malformed, and its error message must still hide the password.
    url = f"icecast://source:{RAW_SLASH_PASSWORD}@127.0.0.1:8000/m"
    done = run_pushsource("-v", "stream", short_folder, url, "--once", timeout=30)
    assert done.returncode == 2, done
    assert_hidden(done.stdout + done.stderr, RAW_SLASH_PASSWORD)


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["stream", "--help"],
        ["stream", "FOLDER", "URL", "--help"],
        ["-v", "stream", "FOLDER", "URL", "--once", "--help"],
    ],
)
def test_help_never_shows_the_password(
    short_folder: Path, run_pushsource: RunPushsource, args: list[str]
) -> None:
    url = f"icecast://source:{quote(SECRET_PASSWORD, safe='')}@127.0.0.1:8000/m"
    argv = [str(short_folder) if a == "FOLDER" else url if a == "URL" else a for a in args]
    done = run_pushsource(*argv, env={"PUSHSOURCE_PASSWORD": SECRET_PASSWORD})
    assert done.returncode == 0, done
    assert "usage:" in done.stdout
    assert_hidden(done.stdout + done.stderr)


@pytest.mark.parametrize(
    "args",
    [
        ["stream", "FOLDER", "--lead", "URL"],
        ["stream", "FOLDER", "FOLDER", "URL"],
        ["stream", "FOLDER", "URL", "--once", "--settle", "URL"],
    ],
    ids=["url-as-a-number", "url-as-an-extra-argument", "url-twice"],
)
def test_usage_errors_do_not_echo_the_password(
    short_folder: Path, run_pushsource: RunPushsource, args: list[str]
) -> None:
    url = f"icecast://source:{quote(SECRET_PASSWORD, safe='')}@127.0.0.1:8000/m"
    argv = [str(short_folder) if a == "FOLDER" else url if a == "URL" else a for a in args]
    done = run_pushsource(*argv)
    assert done.returncode == 2, done
    assert "usage:" in done.stderr
    assert_hidden(done.stdout + done.stderr)


def test_the_process_title_hides_the_password(
    tmp_path: Path, start_pushsource: StartPushsource
) -> None:
    # An empty folder: pushsource watches it and waits, its title set.
    (tmp_path / "empty").mkdir()
    url = f"icecast://source:{quote(SECRET_PASSWORD, safe='')}@127.0.0.1:8000/m"
    run = start_pushsource("stream", tmp_path / "empty", url)
    deadline = time.monotonic() + 15
    while "watching" not in run.stderr:
        assert run.proc.poll() is None, run.describe()
        assert time.monotonic() < deadline, run.describe()
        time.sleep(0.05)
    proc = Path(f"/proc/{run.proc.pid}")
    cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    assert "pushsource" in cmdline
    assert_hidden((proc / "comm").read_text("utf-8", "replace"), where="process name")
    assert_hidden(cmdline, where=f"process title ({proc}/cmdline)")


# -- objects and exceptions, in-process ----------------------------------------------------


def chain(error: BaseException) -> Iterator[BaseException]:
    """error and every exception it came from."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__]


def assert_error_hides(error: BaseException, *secrets: str) -> None:
    __tracebackhide__ = True
    texts = [t for e in chain(error) for t in (str(e), repr(e), repr(e.args))]
    texts.append("".join(traceback.format_exception(error)))
    for text in texts:
        capture_output(f"exception {type(error).__name__}", text)
        assert_hidden(text, *secrets, where=f"{type(error).__name__} text")


def target_of(server_port: int, mount: str, password: str = SECRET_PASSWORD) -> IcecastTarget:
    return parse_target(
        f"icecast://source:{quote(password, safe='')}@127.0.0.1:{server_port}{mount}"
    )


def assert_logs_hide(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    """No password in any log record caught, message or arguments."""
    __tracebackhide__ = True
    records = [f"{r.name} {r.levelname} {r.getMessage()} {r.args!r}" for r in caplog.records]
    capture_output("in-process logs", "\n".join(records))
    for record in records:
        assert_hidden(record, *secrets, where="log records")


def test_target_repr_and_str_hide_the_password() -> None:
    target = target_of(8000, "/m")
    assert target.password == SECRET_PASSWORD
    for text in (repr(target), str(target), f"{target}", f"{target!r}"):
        assert_hidden(text)


@pytest.mark.integration
def test_connections_titles_and_their_errors_hide_the_password(
    secret_icecast: IcecastServer, unique_mount: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every library's debug records, urllib3's included
    frame = silent_frame_bytes()

    async def session() -> list[IcecastError]:
        loop = asyncio.get_running_loop()
        errors: list[IcecastError] = []
        good = aio.Events()
        target = target_of(secret_icecast.port, unique_mount)
        sock = SourceSocket(loop, target, good, timeout=5.0)
        assert_hidden(repr(sock) + str(sock))
        sock.open({"ice-public": "0"})
        await good.until(lambda: good.accepted_at is not None or bool(good.errors))
        assert good.accepted_at is not None, good.errors
        sock.send(frame * 40)
        address = sock.address
        assert address is not None
        with requests.Session() as titles:
            problem = await loop.run_in_executor(
                None, lambda: send_title(titles, target, address, "A Title")
            )
        assert problem is None
        sock.close()
        for password, port in ((WRONG_PASSWORD, secret_icecast.port), (None, free_port())):
            events = aio.Events()
            bad = target_of(port, unique_mount, password) if password else target_of(port, "/x")
            SourceSocket(loop, bad, events, timeout=5.0).open({})
            errors.append(await events.error())
        return errors

    wrong, unreachable = aio.run(session())
    assert_error_hides(wrong, WRONG_PASSWORD)
    assert_error_hides(unreachable)
    assert caplog.records, "no debug records to check"
    assert_logs_hide(caplog, SECRET_PASSWORD, WRONG_PASSWORD)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://source:{pw}@127.0.0.1:8000/m",
        "icecast://source:{pw}@127.0.0.1:notaport/m",
        "icecast://source:{pw}@127.0.0.1:8000",
        "icecast://source:{pw}@[::1/m",
        "icecast://source:{raw}@127.0.0.1:8000/m",
    ],
)
def test_config_errors_hide_the_password(url: str) -> None:
    text = url.format(pw=quote(SECRET_PASSWORD, safe=""), raw=RAW_SLASH_PASSWORD)
    with pytest.raises(PushsourceError) as caught:
        parse_target(text)
    assert_error_hides(caught.value, SECRET_PASSWORD, RAW_SLASH_PASSWORD)


def silent_frame_bytes() -> bytes:
    """One 128 kbps 44.1 kHz stereo frame of silence."""
    header = parse_header(b"\xff\xfb\x90\x64")
    assert header is not None
    return silent_frame(header)


# -- passwords typed into a URL as they are ------------------------------------------------

#: White space, "#", "/", "?", "@", quotes, percent escapes: the URL's text gives no end
#: to the password but its last "@".
ODD_PASSWORDS = [
    "Kx4Wd9 S3cr3tV",
    "Kx4Wd9 #S3cr3tV?Pq8Lm2/x",
    "Kx4Wd9@ 'S3cr3tV\" Pq8Lm2",
    "Kx4Wd9%20S3cr3tV%40Pq8Lm2",
]
for _secret in ODD_PASSWORDS:
    register_secret(_secret)

#: Each refused by parse_target, for a reason that quotes the URL.
ODD_URLS = [
    "icecast://source:{pw}@127.0.0.1:abc/m",
    "ftp://source:{pw}@127.0.0.1:8000/m",
    "icecast://source:{pw}@127.0.0.1:8000",
    "shoutcast://{pw}@127.0.0.1:abc/1",
]


@pytest.mark.parametrize("password", ODD_PASSWORDS)
@pytest.mark.parametrize("url", ODD_URLS)
def test_url_errors_hide_a_password_with_any_characters(url: str, password: str) -> None:
    with pytest.raises(PushsourceError) as caught:
        parse_target(url.format(pw=password))
    assert "127.0.0.1" in str(caught.value)  # the host is still named
    assert_error_hides(caught.value, password)


@pytest.mark.parametrize("password", ODD_PASSWORDS)
def test_log_lines_and_repr_hide_a_password_with_any_characters(password: str) -> None:
    url = f"icecast://source:{password}@127.0.0.1:8000/m"
    # "#", "?" and "/" end the host part: that one parses only percent-encoded.
    target = parse_target(url if "#" not in password else secret_url_of(password))
    assert target.password == unquote(password)
    assert_hidden(repr(target) + str(target), password)
    record = logging.LogRecord("pushsource", logging.WARNING, __file__, 1, "to %s", (url,), None)
    plain = PlainFormatter(show_station=False).format(record)
    assert plain.endswith("to icecast://source:***@127.0.0.1:8000/m"), plain
    assert_hidden(plain + JsonFormatter().format(record), password)


def secret_url_of(password: str) -> str:
    return f"icecast://source:{quote(password, safe='')}@127.0.0.1:8000/m"


def odd_config(tmp_path: Path, url: str) -> Path:
    (tmp_path / "music").mkdir(exist_ok=True)
    path = tmp_path / "stations.toml"
    # A JSON string is a TOML basic string: the quotes in the password escaped.
    path.write_text(f'[[station]]\nfolder = "music"\nurl = {json.dumps(url)}\n', "utf-8")
    return path


@pytest.mark.parametrize("password", ODD_PASSWORDS)
def test_a_config_error_hides_a_password_with_any_characters(tmp_path: Path, password: str) -> None:
    path = odd_config(tmp_path, f"icecast://source:{password}@127.0.0.1:abc/m")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert 'station 1: key "url": bad Icecast URL' in str(caught.value)
    assert_error_hides(caught.value, password)


@pytest.mark.parametrize("port", ["abc", "FREE"])
def test_check_hides_a_password_with_any_characters(
    tmp_path: Path, run_pushsource: RunPushsource, port: str
) -> None:
    password = ODD_PASSWORDS[2]
    port = str(free_port()) if port == "FREE" else port
    path = odd_config(tmp_path, f"icecast://source:{password}@127.0.0.1:{port}/m")
    done = run_pushsource("check", "--config", path, timeout=30)
    assert done.returncode in (1, 2), done
    assert ("not a number" if port == "abc" else "cannot reach") in done.stdout + done.stderr
    assert_hidden(done.stdout + done.stderr, password)


def test_a_connection_error_hides_a_password_with_any_characters(
    short_folder: Path, run_pushsource: RunPushsource
) -> None:
    password = ODD_PASSWORDS[1].replace("/", "").replace("#", "").replace("?", "")
    url = f"icecast://source:{password}@127.0.0.1:{free_port()}/m"
    done = run_pushsource(
        "-v", "stream", short_folder, url, "--once", "--max-retries", "1", timeout=30
    )
    assert done.returncode == 1, done
    assert "cannot connect" in done.stderr, done
    assert_hidden(done.stdout + done.stderr, password)
