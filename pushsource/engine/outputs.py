"""A station's outputs: one source connection each, fed by the station's one
timeline (see StationDriver). The first is the station's own URL; others may
be on other servers or in other formats (a Reframer makes their frames).

One output's failure never touches the others: while any output is on air the
station plays on, and a failed output reconnects on its own (the usual
backoff) and rejoins at the station's current position. Only when none is on
air does the station itself go off air (and go on where it stopped)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pushsource.core.outputs import OutputLink, Reframer
from pushsource.core.splice import Splicer

if TYPE_CHECKING:
    from pushsource.core.target import IcecastTarget

log = logging.getLogger("pushsource")


@dataclass
class OutputSpec:
    """What an output is: where it goes, in which format, how titles get there."""

    target: IcecastTarget
    #: (address, title, superseded) -> problem or None; blocks (on a worker).
    titles: Callable[[str, str, Callable[[], bool]], str | None]
    watch: Any = None  # its server's ServerWatch, if any
    reframer: Reframer | None = None  # None: the station's own frames pass through
    headers: dict[str, str] = field(default_factory=dict)  # ice-* it sends beside the station's
    label: str = ""  # for log lines: "/rock-64 (64 kbps)"


class Output(OutputLink):
    """One output: its connection policy (core.outputs.OutputLink) and what
    carries it out, on the engine's thread. The status page reads the plain
    attributes from other threads."""

    def __init__(self, number: int, spec: OutputSpec) -> None:
        super().__init__(label=spec.label or spec.target.mount)
        self.number = number  # 0: the station's own URL
        self.spec = spec
        self.target = spec.target
        self.reframer = spec.reframer
        self.bytes_sent = 0
        self.sock: Any = None
        self.address: str | None = None  # ours, as Icecast sees it (for titles)
        self.timer: Any = None  # its own reconnect
        self.late_said = 0  # the late-copy count last logged, plus a minute's frames
        self.unwatch: Callable[[], None] | None = None
        #: Mends the first frames of each of its connections, which its
        #: listeners get with no byte before them (core.splice).
        self.splicer = Splicer()

    def __repr__(self) -> str:
        return f"Output({self.number}, {str(self.target)!r}, {self.state!r})"

    @property
    def on_air(self) -> bool:
        return self.state == "on air" and self.sock is not None

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def drop(self) -> int:
        """Forget the connection (aborting it); the bytes it never got out."""
        sock, self.sock = self.sock, None
        unsent = 0
        if sock is not None:
            unsent = sock.unsent
            sock.abort()
        self.stop_watching()
        return unsent

    def stop_watching(self) -> None:
        unwatch, self.unwatch = self.unwatch, None
        if unwatch is not None:
            unwatch()
