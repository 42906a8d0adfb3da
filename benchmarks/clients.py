"""How each source client is started: pushsource, ezstream, Liquidsoap.

Every launch puts all of a client's processes in one new process group, so
procs.sample() sees the whole tree and stop() ends exactly those processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

PASSWORD = "hackme"


@dataclass(frozen=True)
class Station:
    mount: str  # without the leading slash
    folder: Path  # for pushsource (hard links in play order) and folder watchers
    m3u: Path  # the same order, for ezstream and Liquidsoap
    #: More mounts the station is sent to, in its own format (pushsource's
    #: [[station.output]]): the frames pass through to each.
    outputs: tuple[str, ...] = ()

    @property
    def mounts(self) -> tuple[str, ...]:
        return (self.mount, *self.outputs)


@dataclass(frozen=True)
class Server:
    host: str
    port: int

    def url(self, mount: str) -> str:
        return f"icecast://source:{PASSWORD}@{self.host}:{self.port}/{mount}"


@dataclass
class Launched:
    pgid: int
    procs: list[subprocess.Popen[bytes]]
    #: How the client was run when that differs from the plain case.
    note: str | None = None
    logs: list[Path] = field(default_factory=list)

    def early_exits(self) -> list[int]:
        return [code for p in self.procs if (code := p.poll()) is not None]

    def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM to the group, then SIGKILL to whatever is left of it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, signal.SIGKILL)
        for proc in self.procs:
            proc.wait()

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for path in self.logs:
            try:
                text = path.read_text("utf-8", errors="replace")
            except FileNotFoundError:
                continue
            tail = "\n".join(text.splitlines()[-lines:])
            if tail:
                out.append(f"--- {path.name} ---\n{tail}")
        return "\n".join(out)


def _spawn(
    argv: Sequence[str | Path],
    log: Path,
    *,
    pgid: int | None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            # 0: a new group led by this process; else join the client's group.
            process_group=0 if pgid is None else pgid,
        )


class Client:
    key = ""
    label = ""
    #: Whether it can watch a folder for dropped-in files.
    watches_folder = False

    def missing(self) -> str | None:
        """Why this client cannot run here, or None."""
        return None

    def launch(
        self, stations: Sequence[Station], server: Server, workdir: Path, *, once: bool = True
    ) -> Launched:
        raise NotImplementedError

    def launch_watch(
        self, station: Station, server: Server, workdir: Path, silence: Path
    ) -> Launched:
        """Stream station.folder (empty at first), on air with silence until files arrive."""
        raise NotImplementedError


class Pushsource(Client):
    key = "pushsource"
    label = "pushsource"
    watches_folder = True

    def __init__(self) -> None:
        self._has_run: bool | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "pushsource"]

    def missing(self) -> str | None:
        done = subprocess.run([*self.command(), "--version"], capture_output=True)
        if done.returncode != 0:
            return f"`{sys.executable} -m pushsource` does not run: {done.stderr[-200:]!r}"
        return None

    def has_run_command(self) -> bool:
        """Whether this pushsource has `run --config` (many stations, one process)."""
        if self._has_run is None:
            done = subprocess.run([*self.command(), "run", "--help"], capture_output=True)
            self._has_run = done.returncode == 0 and b"--config" in done.stdout
        return self._has_run

    def _env(self, workdir: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PUSHSOURCE_PASSWORD", None)
        env["XDG_STATE_HOME"] = str(workdir / "state")
        env["XDG_CACHE_HOME"] = str(workdir / "cache")
        return env

    def launch(
        self, stations: Sequence[Station], server: Server, workdir: Path, *, once: bool = True
    ) -> Launched:
        workdir.mkdir(parents=True, exist_ok=True)
        env = self._env(workdir)
        if len(stations) > 1 and self.has_run_command():
            config = workdir / "stations.toml"
            config.write_text(stations_toml(stations, server, once=once), "utf-8")
            config.chmod(0o600)
            log = workdir / "pushsource.log"
            proc = _spawn(
                [*self.command(), "run", "--config", config, "-q"], log, pgid=None, env=env
            )
            return Launched(proc.pid, [proc], logs=[log])
        procs: list[subprocess.Popen[bytes]] = []
        pgid: int | None = None
        for station in stations:
            argv: list[str | Path] = [*self.command(), "stream", station.folder]
            argv += [server.url(station.mount), "-q", *(["--once"] if once else [])]
            for mount in station.outputs:
                argv += ["--output", server.url(mount)]
            log = workdir / f"pushsource-{station.mount}.log"
            proc = _spawn(argv, log, pgid=pgid, env=env)
            pgid = pgid or proc.pid
            procs.append(proc)
        assert pgid is not None
        note = None
        if len(stations) > 1:
            note = f"{len(stations)} `pushsource stream` processes: `pushsource run` not available"
        logs = [workdir / f"pushsource-{s.mount}.log" for s in stations[:3]]
        return Launched(pgid, procs, note=note, logs=logs)

    def launch_watch(
        self, station: Station, server: Server, workdir: Path, silence: Path
    ) -> Launched:
        workdir.mkdir(parents=True, exist_ok=True)
        log = workdir / "pushsource-watch.log"
        argv: list[str | Path] = [*self.command(), "stream", station.folder]
        argv.append(server.url(station.mount))
        proc = _spawn([*argv, "--idle", "silence", "-q"], log, pgid=None, env=self._env(workdir))
        return Launched(proc.pid, [proc], logs=[log])


def stations_toml(stations: Sequence[Station], server: Server, *, once: bool) -> str:
    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    blocks = []
    for s in stations:
        block = (
            f"[[station]]\nfolder = {quoted(str(s.folder))}\nurl = {quoted(server.url(s.mount))}\n"
        )
        block += "once = true\n" if once else ""
        for mount in s.outputs:  # after the station's own keys: they belong to the table
            block += f"\n[[station.output]]\nurl = {quoted(server.url(mount))}\n"
        blocks.append(block)
    return "\n".join(blocks)


class Ezstream(Client):
    key = "ezstream"
    label = "ezstream"

    def missing(self) -> str | None:
        if shutil.which("ezstream") is None:
            return "ezstream is not installed (apt-get install ezstream)"
        return None

    def launch(
        self, stations: Sequence[Station], server: Server, workdir: Path, *, once: bool = True
    ) -> Launched:
        _no_outputs(self, stations)
        workdir.mkdir(parents=True, exist_ok=True)
        procs: list[subprocess.Popen[bytes]] = []
        pgid: int | None = None
        for station in stations:
            config = workdir / f"ezstream-{station.mount}.xml"
            config.write_text(ezstream_xml(station, server, once=once), "utf-8")
            config.chmod(0o600)  # it holds the password
            log = workdir / f"ezstream-{station.mount}.log"
            proc = _spawn(["ezstream", "-c", config], log, pgid=pgid)
            pgid = pgid or proc.pid
            procs.append(proc)
        assert pgid is not None
        logs = [workdir / f"ezstream-{s.mount}.log" for s in stations[:3]]
        return Launched(pgid, procs, logs=logs)


def ezstream_xml(station: Station, server: Server, *, once: bool) -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ezstream>
  <servers>
    <server>
      <hostname>{server.host}</hostname>
      <port>{server.port}</port>
      <password>{PASSWORD}</password>
      <tls>None</tls>
    </server>
  </servers>
  <streams>
    <stream>
      <mountpoint>/{station.mount}</mountpoint>
      <format>MP3</format>
    </stream>
  </streams>
  <intakes>
    <intake>
      <type>playlist</type>
      <filename>{station.m3u}</filename>
      <stream_once>{"Yes" if once else "No"}</stream_once>
    </intake>
  </intakes>
  <metadata>
    <format_str>@a@ - @t@</format_str>
  </metadata>
</ezstream>
"""


class Liquidsoap(Client):
    def __init__(self, *, reencode: bool) -> None:
        self.reencode = reencode
        self.key = "liquidsoap-mp3" if reencode else "liquidsoap-copy"
        self.label = "liquidsoap %mp3" if reencode else "liquidsoap copy"
        self.watches_folder = not reencode

    def missing(self) -> str | None:
        if shutil.which("liquidsoap") is None:
            return "liquidsoap is not installed (apt-get install liquidsoap)"
        return None

    @property
    def encoder(self) -> str:
        if self.reencode:
            return "%mp3(bitrate=128, samplerate=44100, stereo=true)"
        return '%ffmpeg(format="mp3", %audio.copy)'

    def _script(self, body: list[str]) -> str:
        head = [
            "settings.init.allow_root.set(true)",  # the benchmark may run as root
            "settings.log.stdout.set(true)",
            "settings.log.file.set(false)",
            "settings.log.level.set(2)",
        ]
        return "\n".join(head + body) + "\n"

    def _output(self, name: str, station: Station, server: Server) -> str:
        return (
            f"output.icecast({self.encoder}, fallible=true, host={_liq(server.host)}, "
            f"port={server.port}, password={_liq(PASSWORD)}, mount={_liq('/' + station.mount)}, "
            f"{name})"
        )

    def _run(self, script: str, workdir: Path) -> Launched:
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / f"{self.key}.liq"
        path.write_text(script, "utf-8")
        path.chmod(0o600)
        log = workdir / f"{self.key}.log"
        proc = _spawn(["liquidsoap", path], log, pgid=None, cwd=workdir)
        return Launched(proc.pid, [proc], logs=[log])

    def launch(
        self, stations: Sequence[Station], server: Server, workdir: Path, *, once: bool = True
    ) -> Launched:
        _no_outputs(self, stations)
        body = []
        for i, station in enumerate(stations):
            body.append(
                f's{i} = playlist(id="pl{i}", mode="normal", reload_mode="never", '
                f"loop={str(not once).lower()}, {_liq(str(station.m3u))})"
            )
            body.append(self._output(f"s{i}", station, server))
        return self._run(self._script(body), workdir)

    def launch_watch(
        self, station: Station, server: Server, workdir: Path, silence: Path
    ) -> Launched:
        # A watched folder, and a silent file while it has nothing to play: the
        # mount stays up, as with pushsource --idle silence.
        body = [
            'p = playlist(mode="normal", reload_mode="watch", loop=false, '
            f"{_liq(str(station.folder))})",
            f"s = fallback(track_sensitive=false, [p, single({_liq(str(silence))})])",
            self._output("s", station, server),
        ]
        return self._run(self._script(body), workdir)


def _no_outputs(client: Client, stations: Sequence[Station]) -> None:
    """The outputs points are pushsource's alone: one more `output.icecast` per
    station (or one more ezstream process) would measure another program."""
    if any(s.outputs for s in stations):
        raise ValueError(f"{client.key}: the benchmark gives only pushsource several outputs")


def _liq(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def all_clients() -> list[Client]:
    return [Pushsource(), Ezstream(), Liquidsoap(reencode=False), Liquidsoap(reencode=True)]
