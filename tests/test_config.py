"""The TOML config of ``pushsource run``: what it accepts and how it says no."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushsource.errors import ConfigError
from pushsource.ops.config import default_id, expand, load_config
from pushsource.ops.settings import (
    ControlSettings,
    OutputSettings,
    StationSettings,
    output_format,
    parse_output_option,
    resolve_output_target,
)


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "rock").mkdir(exist_ok=True)
    (tmp_path / "jazz").mkdir(exist_ok=True)
    path = tmp_path / "stations.toml"
    path.write_text(text, encoding="utf-8")
    return path


ENV = {"ROCK_PASSWORD": "r0ck-s3cret", "TOKEN": "t0ken-xyz"}


def test_two_stations_with_defaults_and_expansion(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[control]
listen = "127.0.0.1:8711"
token = "${TOKEN}"

[[station]]
folder = "rock"
url = "icecast://source@127.0.0.1:8000/rock"
password = "${ROCK_PASSWORD}"
name = "Rock $$ Roll"
idle = "loop"
shuffle = true

[[station]]
folder = "jazz"
url = "icecast://source:hackme@127.0.0.1:8000/jazz"
samplerate = 48000
channels = 1
bitrate = 64
once = true
loudness = -16
""",
    )
    config = load_config(path, ENV)
    rock, jazz = config.stations
    assert rock == StationSettings(
        folder=tmp_path / "rock",
        url="icecast://source@127.0.0.1:8000/rock",
        password="r0ck-s3cret",
        id="rock",
        name="Rock $ Roll",
        idle="loop",
        shuffle=True,
    )
    assert (jazz.id, jazz.samplerate, jazz.channels, jazz.bitrate, jazz.once) == (
        "jazz",
        48000,
        1,
        64,
        True,
    )
    assert (rock.loudness, jazz.loudness) == (None, -16.0)  # off unless asked
    assert config.control == ControlSettings("127.0.0.1", 8711, "t0ken-xyz")
    assert "r0ck-s3cret" not in repr(config)
    assert "t0ken-xyz" not in repr(config)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('colour = "red"', 'station 1 ("Rock"): unknown key "colour"'),
        ("samplerate = 44100.0", 'key "samplerate" must be a whole number, not a number'),
        ('samplerate = "44100"', 'key "samplerate" must be a whole number, not a string'),
        ("samplerate = 44000", "keys samplerate, channels, bitrate"),
        ("channels = 3", 'key "channels" must be 1 or 2, not 3'),
        ("bitrate = 130", "keys samplerate, channels, bitrate"),
        ("public = 1", 'key "public" must be true or false, not a number'),
        ("lead = 0", 'key "lead" must be between 0 and 60 seconds'),
        ('idle = "pause"', 'key "idle" must be "silence", "loop" or "stop"'),
        ("max_retries = -1", 'key "max_retries" must be a whole number, 0 or more'),
        ('password = "${NOT_SET_ANYWHERE}"', "environment variable NOT_SET_ANYWHERE is not set"),
        ('id = "a b"', 'key "id" must be letters'),
        ("loudness = 18", 'key "loudness" must be between -40 and -5 LUFS, not 18'),
        ('loudness = "-18"', 'key "loudness" must be a loudness in LUFS (say -18), not a string'),
        ("silence_alarm = -1", 'key "silence_alarm" must be between 0 (off) and 3600 seconds'),
        ("silence_alarm = 7200", 'key "silence_alarm" must be between 0 (off) and 3600 seconds'),
        ("silence_alarm = nan", 'key "silence_alarm" must be between 0 (off) and 3600 seconds'),
        ('silence_alarm = "30"', 'key "silence_alarm" must be a number of seconds (0: off)'),
        ("silence_alarm = true", 'key "silence_alarm" must be a number of seconds (0: off)'),
        ('trim_silence = "yes"', 'key "trim_silence" must be true or false, not a string'),
    ],
)
def test_bad_value_names_file_station_and_key(tmp_path: Path, body: str, expected: str) -> None:
    path = write(
        tmp_path,
        f"""
[[station]]
name = "Rock"
folder = "rock"
url = "icecast://source:hackme@127.0.0.1:8000/rock"
{body}
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)
    message = str(caught.value)
    assert message.startswith(f"{path}: station 1")
    assert expected in message
    assert caught.value.exit_status == 2


def test_silence_alarm_and_trim_silence(tmp_path: Path) -> None:
    station = """
[[station]]
folder = "rock"
url = "icecast://source:hackme@127.0.0.1:8000/{mount}"
{body}
"""
    bodies = ["silence_alarm = 5\ntrim_silence = true", "silence_alarm = 0", ""]
    path = write(
        tmp_path,
        "".join(station.format(mount=f"m{n}", body=body) for n, body in enumerate(bodies)),
    )
    first, off, default = load_config(path, ENV).stations
    assert (first.silence_alarm, first.trim_silence) == (5.0, True)
    assert (off.silence_alarm, off.trim_silence) == (0.0, False)
    assert (default.silence_alarm, default.trim_silence) == (30.0, False)


def test_missing_folder_and_url(tmp_path: Path) -> None:
    path = write(tmp_path, '[[station]]\nfolder = "nowhere"\nurl = "icecast://s:p@h/m"\n')
    with pytest.raises(ConfigError, match=r'station 1: key "folder": .*nowhere is not a dir'):
        load_config(path, ENV)
    path = write(tmp_path, '[[station]]\nfolder = "rock"\n')
    with pytest.raises(ConfigError, match=r'station 1: key "url" is missing'):
        load_config(path, ENV)


def test_two_stations_on_one_mount(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[station]]
folder = "rock"
url = "icecast://source:hackme@LOCALHOST:8000/live"
[[station]]
folder = "jazz"
id = "other"
url = "icecast://source:hackme@localhost/live"
""",
    )
    with pytest.raises(ConfigError, match=r"station 2: key \"url\": mount .* is already station 1"):
        load_config(path, ENV)


def test_same_id_twice(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[station]]
folder = "rock"
url = "icecast://source:hackme@127.0.0.1/a/live"
[[station]]
folder = "jazz"
url = "icecast://source:hackme@127.0.0.1/a-live"
""",
    )
    with pytest.raises(ConfigError, match=r'station 2: key "id": "a-live" is already station 1'):
        load_config(path, ENV)


def test_bad_url_never_shows_its_password(tmp_path: Path) -> None:
    path = write(tmp_path, '[[station]]\nfolder = "rock"\nurl = "ftp://source:Sup3rS3cret@h/m"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)
    assert 'key "url"' in str(caught.value)
    assert "Sup3rS3cret" not in str(caught.value)


def test_no_password_anywhere(tmp_path: Path) -> None:
    path = write(tmp_path, '[[station]]\nfolder = "rock"\nurl = "icecast://127.0.0.1/m"\n')
    with pytest.raises(ConfigError, match=r'station 1: no source password: set key "password"'):
        load_config(path, {})
    # ...but $PUSHSOURCE_PASSWORD is a password, as for `pushsource stream`
    assert load_config(path, {"PUSHSOURCE_PASSWORD": "x"}).stations[0].id == "m"


def test_password_file_relative_to_the_config(tmp_path: Path) -> None:
    secret = tmp_path / "rock.pw"
    secret.write_text("from-file\n")
    secret.chmod(0o644)
    path = write(
        tmp_path,
        '[[station]]\nfolder = "rock"\nurl = "icecast://127.0.0.1/m"\npassword_file = "rock.pw"\n',
    )
    with pytest.raises(ConfigError, match=r'key "password_file": .*readable by others'):
        load_config(path, {})
    secret.chmod(0o600)
    assert load_config(path, {}).stations[0].password_file == secret


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "no [[station]] tables"),
        ("station = 3", "no [[station]] tables"),
        ('[[station]]\nfolder = "rock"\n[other]\n', 'unknown key "other"'),
        ("[[station]\n", "not valid TOML"),
        (
            '[control]\nport = 1\n[[station]]\nfolder = "rock"\nurl = "icecast://a:b@h/m"\n',
            '[control]: unknown key "port"',
        ),
        (
            '[control]\nlisten = "h:99999"\n[[station]]\nfolder = "rock"\nurl = "icecast://a:b@h/m"\n',
            '[control]: key "listen" port out of range',
        ),
    ],
)
def test_bad_file(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)
    assert str(caught.value).startswith(str(path))
    assert expected in str(caught.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml", ENV)


def test_expand() -> None:
    assert expand("a${X}b$${X}$$", {"X": "1"}) == "a1b${X}$"
    assert expand("$X $", {}) == "$X $"
    with pytest.raises(Exception, match="not"):  # _Problem: ${ must start a variable
        expand("$X ${", {})


def test_default_id() -> None:
    assert default_id("/rock") == "rock"
    assert default_id("/live/main.mp3") == "live-main.mp3"
    assert default_id("/") == "stream"


def test_control_allowed_hosts(tmp_path: Path) -> None:
    base = '[[station]]\nfolder = "rock"\nurl = "icecast://source:pw@127.0.0.1:8000/rock"\n'
    path = write(tmp_path, base + '[control]\nallowed_hosts = ["radio.example.org", "a.b"]\n')
    control = load_config(path, ENV).control
    assert control is not None and control.allowed_hosts == ("radio.example.org", "a.b")
    for bad in ('"radio.example.org"', '["evil host"]', '["a/b"]', "[1]"):
        path = write(tmp_path, base + f"[control]\nallowed_hosts = {bad}\n")
        with pytest.raises(ConfigError, match='key "allowed_hosts"'):
            load_config(path, ENV)


def test_public_url_expands_then_must_be_an_http_url(tmp_path: Path) -> None:
    station = '[[station]]\nfolder = "rock"\nurl = "icecast://s:p@icecast/rock"\n'
    path = write(tmp_path, station + 'public_url = "${PUBLIC}"\n')
    config = load_config(path, {"PUBLIC": "https://radio.example.org/rock"})
    assert config.stations[0].public_url == "https://radio.example.org/rock"
    with pytest.raises(ConfigError, match=r'station 1: key "public_url" must be an http'):
        load_config(path, {"PUBLIC": "icecast:8000/rock"})


# -- [[station.output]]

OUTPUTS = """
[[station]]
folder = "rock"
url = "icecast://source@127.0.0.1:8000/rock"
password = "${ROCK_PASSWORD}"

[[station.output]]
url = "icecast://source@127.0.0.1:8000/rock-64"
bitrate = 64
samplerate = 22050
channels = 1

[[station.output]]
url = "icecast://source@backup.example:8000/rock"
password_file = "backup.password"
public_url = "https://radio.example/rock"
"""


def test_outputs_in_the_config(tmp_path: Path) -> None:
    secret = tmp_path / "backup.password"
    secret.write_text("b4ckup\n")
    secret.chmod(0o600)
    [rock] = load_config(write(tmp_path, OUTPUTS), ENV).stations
    low, backup = rock.outputs
    assert (low.bitrate, low.samplerate, low.channels) == (64, 22050, 1)
    assert output_format(rock, backup) == (128, 44100, 2)  # the station's
    assert backup.password_file == secret and backup.public_url == "https://radio.example/rock"
    # The station's password on its own server; the backup's file elsewhere.
    assert resolve_output_target(rock, low, ENV).password == "r0ck-s3cret"
    assert resolve_output_target(rock, backup, ENV).password == "b4ckup"
    assert "r0ck" not in repr(rock) and "b4ckup" not in repr(rock)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('loud = 1\nurl = "icecast://127.0.0.1:8000/x"', 'output 1: unknown key "loud"'),
        ("bitrate = 64", 'output 1: key "url" is missing'),
        (
            'url = "icecast://source@other.example:8000/rock"',
            "output 1: no source password",  # never the station's to another server
        ),
        ('url = "icecast://source@127.0.0.1:8000/rock"', "is the station's own mount"),
        (
            'url = "icecast://source@127.0.0.1:8000/r2"\nsamplerate = 12345',
            "output 1: keys samplerate, channels, bitrate",
        ),
        ('url = "icecast://source@127.0.0.1:8000/r2"\nchannels = 3', 'output 1: key "channels"'),
        ('url = "icecast://source@127.0.0.1:8000/jazz"', "mount 127.0.0.1:8000/jazz is already"),
    ],
)
def test_bad_outputs_say_which_and_why(tmp_path: Path, extra: str, expected: str) -> None:
    text = f"""
[[station]]
folder = "jazz"
url = "icecast://source:hackme@127.0.0.1:8000/jazz"

[[station]]
folder = "rock"
url = "icecast://source@127.0.0.1:8000/rock"
password = "${{ROCK_PASSWORD}}"

[[station.output]]
{extra}
"""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), ENV)
    assert expected in str(caught.value) and "station 2" in str(caught.value)
    assert "r0ck-s3cret" not in str(caught.value)


def test_a_converted_output_and_the_live_input_do_not_mix(tmp_path: Path) -> None:
    text = (
        OUTPUTS.split("[[station.output]]")[0]
        + """
[station.live]
listen = "127.0.0.1:8010"
users = { alice = "pw" }

[[station.output]]
url = "icecast://source@127.0.0.1:8000/rock-64"
bitrate = 64
"""
    )
    with pytest.raises(ConfigError, match="cannot carry the live input"):
        load_config(write(tmp_path, text), ENV)


def test_the_output_option() -> None:
    output = parse_output_option(
        "icecast://source@h:8000/m bitrate=64 channels=1 public_url=http://x/m"
    )
    assert output == OutputSettings(
        "icecast://source@h:8000/m", bitrate=64, channels=1, public_url="http://x/m"
    )
    with pytest.raises(ConfigError, match="'volume' is not"):
        parse_output_option("icecast://h:8000/m volume=3")
    with pytest.raises(ConfigError, match="whole number"):
        parse_output_option("icecast://h:8000/m bitrate=fast")
    with pytest.raises(ConfigError, match="public_url must be"):
        parse_output_option("icecast://h:8000/m public_url=ftp://x/m")
    with pytest.raises(ConfigError, match="needs an Icecast URL"):
        parse_output_option("  ")
    with pytest.raises(ConfigError) as caught:  # a stray word is never quoted
        parse_output_option("icecast://h:8000/m s3cret-word")
    assert "s3cret" not in str(caught.value)


STATION = '[[station]]\nfolder = "rock"\nurl = "icecast://source:pw@127.0.0.1:8000/rock"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            STATION + "sample_rate = 48000\n",
            'unknown key "sample_rate" (did you mean "samplerate"?)',
        ),
        (STATION + 'pasword = "x"\n', 'unknown key "pasword" (did you mean "password"?)'),
        (
            STATION
            + '[[station.output]]\nurl = "icecast://source:pw@127.0.0.1:8000/r2"\nbitrat = 64\n',
            'output 1: unknown key "bitrat" (did you mean "bitrate"?)',
        ),
        (
            STATION + '[station.live]\nlisten = "8010"\nusers = { a = "pw" }\ngrase = 3\n',
            'unknown key "grase" (did you mean "grace"?)',
        ),
        (
            '[control]\nlisen = "8700"\n' + STATION,
            '[control]: unknown key "lisen" (did you mean "listen"?)',
        ),
        ("[[stations]]\n" + STATION, 'unknown key "stations" (did you mean [[station]]?)'),
        (
            '[controls]\nlisten = "8700"\n' + STATION,
            'unknown key "controls" (did you mean [control]?)',
        ),
    ],
)
def test_an_unknown_key_gets_the_valid_one_nearest(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), ENV)
    assert expected in str(caught.value)


def test_collect_leaves_out_each_station_with_a_problem_and_says_why(tmp_path: Path) -> None:
    text = (
        STATION
        + STATION.replace("/rock", "/r2")
        + "bitrat = 64\n"
        + STATION  # its mount again
        + STATION.replace("/rock", "/r4").replace('"rock"', '"nowhere"')
        + STATION.replace("/rock", "/r5")
        + '[control]\nlisen = "8700"\n'
    )
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="bitrat"):  # without: the first problem, as before
        load_config(path, ENV)
    config = load_config(path, ENV, collect=True)
    assert [s.url.rsplit("/", 1)[1] for s in config.stations] == ["rock", "r5"]
    assert config.tables == 5 and config.control is None
    said = {problem.station: str(problem.error) for problem in config.problems}
    assert sorted(said) == [0, 2, 3, 4]
    assert 'station 2: unknown key "bitrat"' in said[2]
    assert "mount 127.0.0.1:8000/rock is already station 1's" in said[3]
    assert 'station 4: key "folder"' in said[4]
    assert '[control]: unknown key "lisen"' in said[0]
