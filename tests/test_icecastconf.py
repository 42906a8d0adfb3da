"""pushsource.ops.icecastconf: the mounts of a stations.toml, the fallback
blocks written into an icecast.xml, the silence files in each format, the
check of a hand-written config, and the step `make station` runs."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pushsource.errors import ConfigError
from pushsource.ops.config import parse_config
from pushsource.ops.icecastconf import (
    Mount,
    add_fallbacks,
    generate,
    main,
    mounts_of,
    problems,
    read_mounts,
    silence,
    write_fallbacks,
)
from tests.support.icecast import DEFAULT_TEMPLATE, REPO_ROOT
from tests.support.media import walk_mpeg_frames

TWO_STATIONS = """
[[station]]
folder = "music"
url = "icecast://source@icecast:8000/stream"
password = "${ICECAST_SOURCE_PASSWORD}"

[[station]]
id = "talk"
folder = "music"
url = "icecast://source:${TALK_PASSWORD}@icecast:8000/talk"
samplerate = 48000
channels = 1

[[station.output]]
url = "icecast://source@icecast:8000/talk-phone"
samplerate = 22050

[[station.output]]
url = "shoutcast://pw@other:8000"
"""


def formats(data: bytes) -> set[tuple[int, int]]:
    found, rest = walk_mpeg_frames(data)
    assert rest == len(data), "nothing but frames"
    return {(header.sample_rate, header.channels) for _pos, header in found}


def test_read_mounts_takes_every_icecast_mount_in_its_format_without_secrets(
    tmp_path: Path,
) -> None:
    path = tmp_path / "stations.toml"
    path.write_text(TWO_STATIONS, "utf-8")
    # No variable set, no folder there: the Icecast container has neither.
    assert read_mounts(path, {}) == [
        Mount("/stream", 44100, 2),
        Mount("/talk", 48000, 1),
        Mount("/talk-phone", 22050, 1),  # the station's channels, its own rate
    ]


def test_read_mounts_agrees_with_the_checked_config(tmp_path: Path) -> None:
    """check reads mounts from the checked config, the container from the
    file leniently: the same mounts either way."""
    (tmp_path / "music").mkdir()
    path = tmp_path / "stations.toml"
    path.write_text(TWO_STATIONS, "utf-8")
    import tomllib

    config = parse_config(
        tomllib.loads(TWO_STATIONS),
        path,
        {"ICECAST_SOURCE_PASSWORD": "a", "TALK_PASSWORD": "b"},
    )
    checked = mounts_of(config.stations)
    assert [who for who, _ in checked] == ["stream", "talk", "talk output 1"]
    assert sorted(m for _, m in checked) == read_mounts(path, {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[station]]\nfolder = 'm'\n", 'station 1: key "url" is missing'),
        ("[[station]]\nurl = 'icecast://h/m'\nsamplerate = 12345\n", "no 12345 Hz"),
        ("[[station]]\nurl = 'icecast://h/m'\nchannels = '2'\n", '"channels" must be a whole'),
        ("[control]\n", r"no \[\[station\]\] tables"),
        ("[[station]\n", "not valid TOML"),
    ],
)
def test_read_mounts_says_what_is_wrong_in_one_line(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "stations.toml"
    path.write_text(text, "utf-8")
    with pytest.raises(ConfigError, match=message) as caught:
        read_mounts(path, {})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (48000, 1), (22050, 2), (8000, 1)])
def test_silence_is_a_second_of_frames_in_the_format(rate: int, channels: int) -> None:
    data = silence(rate, channels)
    assert formats(data) == {(rate, channels)}
    found, _ = walk_mpeg_frames(data)
    samples = 1152 if rate >= 32000 else 576  # Layer III: MPEG-1, MPEG-2/2.5
    assert len(found) * samples >= rate


def test_write_fallbacks_writes_one_file_per_format(tmp_path: Path) -> None:
    mounts = [Mount("/a", 44100, 2), Mount("/b", 44100, 2), Mount("/c", 48000, 1)]
    written = write_fallbacks(tmp_path, mounts)
    assert [p.name for p in written] == ["silence-44100-2.mp3", "silence-48000-1.mp3"]
    assert formats(written[1].read_bytes()) == {(48000, 1)}
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in written)  # icecast2 reads them
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in written]  # no temp


def blocks(text: str) -> dict[str, dict[str, str | None]]:
    root = ET.fromstring(text)
    return {
        str(block.findtext("mount-name")): {child.tag: child.text for child in block}
        for block in root.findall("mount")
        if block.get("type") == "normal"
    }


def test_add_fallbacks_gives_every_mount_its_block(tmp_path: Path) -> None:
    mounts = [Mount(f"/m{n}", 48000, 1) for n in range(12)] + [Mount("/stream", 44100, 2)]
    text = add_fallbacks(DEFAULT_TEMPLATE.read_text("utf-8"), mounts, webroot=tmp_path)
    found = blocks(text)
    assert set(found) == {m.mount for m in mounts}
    # The shipped block keeps its charset, gets the file of its format.
    assert found["/stream"] == {
        "mount-name": "/stream",
        "charset": "UTF-8",
        "fallback-mount": "/silence-44100-2.mp3",
        "fallback-override": "1",
    }
    assert found["/m3"]["fallback-mount"] == "/silence-48000-1.mp3"
    assert found["/m3"]["fallback-override"] == "1"
    assert found["/m3"]["charset"] == "UTF-8"
    root = ET.fromstring(text)
    assert root.findtext("limits/sources") == "13"  # the template's 10 was too few
    assert root.findtext("paths/webroot") == str(tmp_path)
    assert root.findtext("fileserve") == "1"
    # The rest as in the template, comments too.
    assert root.findtext("authentication/source-password") == "hackme"
    assert "CHANGE THESE PASSWORDS" in text
    # Made twice, the same: the container renders on every start.
    assert add_fallbacks(text, mounts, webroot=tmp_path) == text


def test_add_fallbacks_keeps_an_operators_own_fallback() -> None:
    template = DEFAULT_TEMPLATE.read_text("utf-8").replace(
        "<fallback-mount>/silence.mp3</fallback-mount>",
        "<fallback-mount>/backup-playlist</fallback-mount>",
    )
    text = add_fallbacks(template, [Mount("/stream", 48000, 2)])
    assert blocks(text)["/stream"]["fallback-mount"] == "/backup-playlist"


def test_generate_writes_the_config_private_and_the_files_public(tmp_path: Path) -> None:
    mounts = [Mount("/stream", 44100, 2), Mount("/talk", 48000, 1)]
    out = tmp_path / "icecast.xml"
    web = tmp_path / "web"
    files = generate(DEFAULT_TEMPLATE, mounts, out, webroot=web)
    assert out.stat().st_mode & 0o777 == 0o600  # it holds the passwords
    assert [f.parent for f in files] == [web, web]
    assert problems(out, [(m.mount, m) for m in mounts]) == []
    if Path("/usr/share/icecast2/web/status-json.xsl").exists():
        assert (web / "status-json.xsl").exists()  # Icecast's status pages come along


def test_problems_name_each_mount_icecast_would_drop(tmp_path: Path) -> None:
    web = tmp_path / "web"
    config = tmp_path / "icecast.xml"
    mounts = [Mount("/stream", 44100, 2), Mount("/talk", 48000, 1), Mount("/news", 44100, 2)]
    generate(DEFAULT_TEMPLATE, mounts, config, webroot=web)
    text = config.read_text("utf-8")
    # /talk's file replaced by one of another format, /news's block gone.
    (web / "silence-48000-1.mp3").write_bytes(silence(44100, 2))
    root = ET.fromstring(text)
    for block in root.findall("mount"):
        if block.findtext("mount-name") == "/news":
            root.remove(block)
    config.write_text(ET.tostring(root, encoding="unicode"), "utf-8")
    extra = [("late", Mount("/late", 32000, 2))]  # a block, but no file for its format
    found = problems(config, [("stream", mounts[0]), ("talk", mounts[1]), ("news", mounts[2])])
    assert [who for who, _ in found] == ["talk", "news"]
    assert "is 44100 Hz, 2 channels, the mount 48000 Hz, 1" in found[0][1]
    assert "/news has no <mount> block with a <fallback-mount>" in found[1][1]
    generate(config, [m for _, m in extra], config)  # adds /late's block, file in web
    (web / "silence-32000-2.mp3").unlink()
    late = problems(config, extra)
    assert len(late) == 1 and "silence-32000-2.mp3 is missing from the webroot" in late[0][1]
    assert "--samplerate 32000 --channels 2" in late[0][1]


def test_problems_say_when_listeners_would_not_come_back(tmp_path: Path) -> None:
    config = tmp_path / "icecast.xml"
    generate(DEFAULT_TEMPLATE, [Mount("/stream", 44100, 2)], config, webroot=tmp_path / "w")
    config.write_text(
        config.read_text("utf-8").replace("<fallback-override>1<", "<fallback-override>0<"),
        "utf-8",
    )
    found = problems(config, [("s", Mount("/stream", 44100, 2))])
    assert len(found) == 1 and "no <fallback-override>1" in found[0][1]
    config.write_text("<icecast><mount>", "utf-8")
    assert [who for who, _ in problems(config, [("s", Mount("/stream", 44100, 2))])] == [""]


def test_the_shipped_icecast_xml_passes_once_the_readme_step_is_done(tmp_path: Path) -> None:
    """The README's hand-run steps: the shipped block, `pushsource silence`."""
    shipped = [("stream", Mount("/stream", 44100, 2))]
    web = tmp_path / "web"
    web.mkdir()
    config = tmp_path / "icecast.xml"
    config.write_text(
        DEFAULT_TEMPLATE.read_text("utf-8").replace("/usr/share/icecast2/web", str(web)), "utf-8"
    )
    assert "silence.mp3 is missing" in problems(config, shipped)[0][1]
    (web / "silence.mp3").write_bytes(silence(44100, 2))
    assert problems(config, shipped) == []


def test_the_module_needs_nothing_but_the_standard_library(tmp_path: Path) -> None:
    """The Icecast image runs it with Debian's python3 alone."""
    stations = tmp_path / "stations.toml"
    stations.write_text(TWO_STATIONS, "utf-8")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from pushsource.ops import icecastconf as m; "
        "m.main(['--stations', sys.argv[2], '--template', sys.argv[3], '--out', sys.argv[4]]"
        " + ['--webroot', sys.argv[5]]); "
        "print(sorted({n.split('.')[0] for n in sys.modules}"
        " - set(sys.stdlib_module_names) - {'__main__'}))"
    )
    paths = [REPO_ROOT, stations, DEFAULT_TEMPLATE, tmp_path / "out.xml", tmp_path / "web"]
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "['pushsource']"
    assert (tmp_path / "web" / "silence-22050-1.mp3").exists()


def test_main_refuses_bad_input_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.xml"
    args = ["--template", str(DEFAULT_TEMPLATE), "--out", str(out)]
    assert main(args) == 2
    assert main([*args, "--mount", "stream"]) == 2
    assert main([*args, "--mount", "/s", "--samplerate", "12345"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("pushsource: error: ") for line in err)
    assert not out.exists()


# --- make station ------------------------------------------------------------------


def make_station_commands() -> list[list[str]]:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    # Not the flags of a make this runs under (make test): only -n -s.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    done = subprocess.run(
        [make, "-n", "-s", "station"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout.replace("\\\n", " ")
    return [shlex.split(line) for line in text.splitlines() if "-m pushsource." in line]


def test_make_station_writes_the_fallback_before_icecast_starts(tmp_path: Path) -> None:
    """The step `make -n station` shows, run as make runs it (in a copy of the
    files it names): the icecast.xml trial starts Icecast from falls /stream
    back to a file of its format in a webroot Icecast serves."""
    commands = make_station_commands()
    modules = [command[command.index("-m") + 1] for command in commands]
    assert modules == ["pushsource.ops.icecastconf", "pushsource.ops.trial"]
    fallback, station = commands
    out = fallback[fallback.index("--out") + 1]
    assert station[station.index("--config") + 1] == out  # Icecast runs the written file
    shutil.copy(DEFAULT_TEMPLATE, tmp_path / "icecast.xml")
    done = subprocess.run(
        [sys.executable, *fallback[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    config = tmp_path / out
    root = ET.parse(config).getroot()
    webroot = Path(root.findtext("paths/webroot") or "")
    assert webroot.is_absolute() and webroot.is_relative_to(tmp_path)
    assert problems(config, [("stream", Mount("/stream", 44100, 2))]) == []
    assert formats((webroot / "silence-44100-2.mp3").read_bytes()) == {(44100, 2)}
