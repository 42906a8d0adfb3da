"""The exceptions pushsource raises: one root, subclasses that carry their context."""

from __future__ import annotations

from pathlib import Path


class PushsourceError(Exception):
    """Root of every error pushsource raises on purpose."""

    #: Exit status the command line uses when this error ends the program.
    exit_status = 1


class ConfigError(PushsourceError):
    """The command line or its environment is wrong (bad URL, missing password...)."""

    exit_status = 2


class FrameError(PushsourceError):
    """MPEG audio data that cannot be used, at a byte offset of its input."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.offset = offset


class TrackError(PushsourceError):
    """A file that cannot be played; the station skips it and goes on."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class CacheError(TrackError):
    """A conversion that could not be stored (the cache's disk is full or
    read-only): the disk's fault, not the file's. An output in another format
    goes without its copy; the file itself is not to blame."""


class IcecastError(PushsourceError):
    """Icecast refused the source or the connection to it failed.

    ``status`` is the HTTP status Icecast answered with, or None when there was
    no answer (refused, reset, timed out).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthenticationError(IcecastError):
    """Icecast answered 401: the source user or password is wrong."""

    exit_status = 2


class ProtocolError(IcecastError):
    """What answered is not Icecast speaking HTTP (garbage): retried with
    backoff, like a refusal, not like a server that is down."""


class WrongServerError(ProtocolError):
    """What answered is clearly not the server the URL names (a web server's
    404 page, no HTTP at all): the URL is wrong, so it is not retried, as a
    wrong password is not; it is only retried with backoff, like any other
    garbage, where Icecast had taken the source before in this run."""

    exit_status = 2


class MountInUseError(IcecastError):
    """Icecast answered 403: another source already holds the mount."""


class ConnectionLostError(IcecastError):
    """The source connection ended after Icecast accepted it (reset, closed by
    the server, a stalled or hung server dropped); ``sent`` is how many body
    bytes had gone out (handed to the kernel) by then."""

    def __init__(self, message: str, sent: int) -> None:
        super().__init__(message)
        self.sent = sent


class ControlError(PushsourceError):
    """A control API request that cannot be done; ``status`` is its HTTP status
    (400 bad request, 404 no such station or file, 409 not possible now)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
