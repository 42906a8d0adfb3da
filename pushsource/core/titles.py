"""Track titles as listeners get them through Icecast's admin ``updinfo``: safe
to put in ICY metadata, and short enough for Icecast's request. Pure: no I/O.

Icecast 2.4.4 writes a title into each listener's metadata as
``StreamTitle='<title>';`` without escaping anything, so a tag holding
``x';StreamUrl='http://evil/';`` adds a StreamUrl field for every player. And it
reads the whole admin request into a 4 KB buffer: a longer request line is
dropped, and listeners keep the previous track's title.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final
from urllib.parse import quote_plus

#: The most bytes the URL-encoded title may take in ``song=``: the rest of the
#: request (path, mount, other parameters, headers) must fit in Icecast's 4 KB.
MAX_ENCODED: Final = 3000
ELLIPSIS: Final = "\u2026"
_QUOTE: Final = "\u2019"  # a typographic apostrophe: reads the same, delimits nothing

# A quote that would close a field and open another ("';Key='"), or open a field
# ("Key='"): ICY metadata has no escaping, so these quotes become U+2019. A quote and
# a semicolon on their own, as in "'Live'; Don't Stop", stay as they are.
_CLOSES_FIELD: Final = re.compile(r"'(?=\s*;\s*[A-Za-z_][\w-]*\s*=)")
_OPENS_FIELD: Final = re.compile(r"(?<=[A-Za-z0-9_-])(\s*=\s*)'")


def clean_title(title: str) -> str:
    """``title`` fit for every listener's ICY metadata (:func:`safe_title`),
    and a title whose URL-encoded form is longer than MAX_ENCODED bytes is cut
    (between characters) and ends with an ellipsis. Does not raise."""
    return _cut(safe_title(title), MAX_ENCODED)


def safe_title(title: str) -> str:
    """Control characters and line breaks become spaces, and quotes that
    would start another metadata field become U+2019. Does not raise."""
    text = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cs") else ch for ch in title
    )
    return _OPENS_FIELD.sub(lambda m: m.group(1) + _QUOTE, _CLOSES_FIELD.sub(_QUOTE, text))


def cut_bytes(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` UTF-8 bytes: whole, or cut between
    characters with an ellipsis. Does not raise."""
    if len(text.encode("utf-8", "replace")) <= limit:
        return text
    room = limit - len(ELLIPSIS.encode())
    head = text.encode("utf-8", "replace")[:room].decode("utf-8", "ignore")
    return head.rstrip() + ELLIPSIS


def encoded_length(text: str) -> int:
    """Bytes ``text`` takes as a URL query value (UTF-8, percent-encoded)."""
    return len(quote_plus(text, safe=""))


def _cut(text: str, limit: int) -> str:
    if encoded_length(text) <= limit:
        return text
    room = limit - encoded_length(ELLIPSIS)
    used = 0
    for n, ch in enumerate(text):
        used += encoded_length(ch)
        if used > room:
            return text[:n].rstrip() + ELLIPSIS
    return text  # not reached: the whole text was longer than the limit
