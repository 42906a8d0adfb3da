"""What a station is built of, beside its settings: how it connects, how
titles reach its mounts, its server's watch, and its other outputs (each with
the converter its format needs). :class:`~pushsource.ops.runner.StationRunner`
puts them together; nothing here runs anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pushsource.core.icy import METAINT
from pushsource.core.outputs import Reframer, format_key
from pushsource.core.target import IcecastTarget
from pushsource.engine.loop import Engine
from pushsource.engine.outputs import OutputSpec
from pushsource.ops.settings import StationSettings, output_format, resolve_output_target
from pushsource.workers.transcode import Resolver, StationFormat, Transcoder

#: How titles reach one mount: (address, title, superseded) -> why not, or None.
TitleSender = Callable[[str, str, Callable[[], bool]], str | None]


def connector(timeout: float, *, titles_inside: bool) -> Callable[[Any, IcecastTarget, Any], Any]:
    """A station's source connections: SourceSocket, with ICY blocks in the
    stream when titles travel inside it (never to SHOUTcast v1, whose sources
    cannot carry them: those go by admin.cgi)."""

    def connect(loop: Any, target: IcecastTarget, events: Any) -> Any:
        from pushsource.engine.source import SourceSocket

        metaint = METAINT if titles_inside and target.protocol == "icecast" else None
        return SourceSocket(loop, target, events, timeout=timeout, metaint=metaint)

    return connect


def titles_for(target: IcecastTarget, timeout: float) -> TitleSender:
    """How titles reach one output's mount (on a worker; a session of its own)."""
    session: list[Any] = []

    def titles(address: str, title: str, superseded: Callable[[], bool]) -> str | None:
        import requests

        from pushsource.workers.icecast import send_title

        if not session:
            session.append(requests.Session())
        # One try: the engine tries again from a loop timer (Titles).
        return send_title(
            session[0],
            target,
            address,
            title,
            timeout=timeout,
            superseded=superseded,
            retries=1,
        )

    return titles


def watch_of(engine: Engine, target: IcecastTarget) -> Any:
    """The server's watch (status probes, hang detection), one per server."""

    def watch() -> Any:
        from pushsource.engine.watch import ServerWatch

        return ServerWatch(engine.loop, target)

    return engine.watch_of((target.host.casefold(), target.port, target.tls), watch)


@dataclass
class Outputs:
    """A station's other outputs, built."""

    outputs: list[OutputSpec] = field(default_factory=list)
    #: (format key, label, convert) for each other format, once each.
    alternates: list[tuple[str, str, Callable[[Path], Path]]] = field(default_factory=list)
    #: Whether a file's copy in each other format is ready (converted).
    ready: list[Callable[[Path], bool]] = field(default_factory=list)
    transcoders: list[Transcoder] = field(default_factory=list)


def build_outputs(
    settings: StationSettings,
    environ: Mapping[str, str],
    main: IcecastTarget,
    fmt: StationFormat,
    cache: Path,
    engine: Engine,
    converted: Callable[[float], object],
) -> Outputs:
    """The station's ``[[station.output]]`` tables as outputs (``main``: the
    station's own target; an output on another server is named with its
    host in log lines): each other
    format gets each track converted once, ahead (its own Transcoder and
    cache folder), and a Reframer that cuts its frames per Send."""
    built = Outputs()
    for output in settings.outputs:
        out_target = resolve_output_target(settings, output, environ)
        bitrate, rate, channels = output_format(settings, output)
        where = out_target.mount
        if (out_target.host.casefold(), out_target.port) != (main.host.casefold(), main.port):
            where = f"{out_target.host}:{out_target.port}{out_target.mount}"
        reframer = None
        if (bitrate, rate, channels) != (fmt.bitrate, fmt.sample_rate, fmt.channels):
            out_fmt = StationFormat(rate, channels, bitrate)
            fkey = format_key(rate, channels, bitrate)
            label = f"{bitrate} kbps {rate} Hz {'mono' if channels == 1 else 'stereo'}"
            if all(k != fkey for k, _, _ in built.alternates):
                transcoder = Transcoder(cache / fkey, out_fmt)
                built.transcoders.append(transcoder)
                alt_resolver = Resolver(
                    out_fmt, transcoder, strict_bitrate=True, converted=converted
                )
                built.alternates.append((fkey, label, alt_resolver.prepare))
                built.ready.append(alt_resolver.ready)
            reframer = Reframer(fkey, out_fmt.header())
            where = f"{where} ({bitrate} kbps)"
        built.outputs.append(
            OutputSpec(
                out_target,
                titles_for(out_target, settings.timeout),
                watch_of(engine, out_target),
                reframer,
                {
                    "ice-bitrate": str(bitrate),
                    "ice-audio-info": StationFormat(rate, channels, bitrate).audio_info(),
                },
                where,
            )
        )
    return built
