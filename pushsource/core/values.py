"""Text that travels to Icecast in a source request's ``ice-*`` headers: checked
before anything connects, and put on the wire the way Icecast 2.4.4 takes it.

Icecast 2.4.4 reads the whole source request (request line and headers) into a
4 KB buffer and drops the connection when it does not fit, so every value has a
byte limit that leaves room for the rest. Header bytes are kept as they come:
UTF-8 bytes show correctly in /status-json.xsl and reach listeners as the
``icy-name``/``icy-genre``/``icy-description`` bytes, while a Latin-1 byte
(``caf\\xe9``) is not UTF-8 and the value vanishes from the status page. So
values go out as UTF-8 (core/source.py's request_head encodes the head so).
Pure: no I/O.
"""

from __future__ import annotations

import unicodedata
from typing import Final

#: The longest value, in UTF-8 bytes, of each setting that becomes a header.
HEADER_LIMITS: Final = {"name": 512, "description": 1024, "genre": 256, "station_url": 512}


def header_problem(value: str, limit: int) -> str | None:
    """What makes ``value`` unfit for a header of at most ``limit`` UTF-8 bytes, or
    None: control characters (a CR or LF would end the header and start
    another), text that is not UTF-8 (surrogate escapes from a command line),
    or too many bytes. Does not raise."""
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            return f"must not contain control characters or line breaks (found {ch!r})"
        if unicodedata.category(ch) == "Cs":
            return "is not valid UTF-8 text"
    size = len(value.encode("utf-8"))
    if size > limit:
        return f"is {size} bytes long; at most {limit} fit in Icecast's request"
    return None
