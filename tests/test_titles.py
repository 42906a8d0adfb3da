"""clean_title: control characters out, no ICY field injection, ordinary quotes
kept, and a title cut to what Icecast's 4 KB request takes; and the plain log
keeps a title with line breaks on one line."""

from __future__ import annotations

import io
import logging
import sys
from urllib.parse import urlencode

from hypothesis import given
from hypothesis import strategies as st

from pushsource.core.titles import ELLIPSIS, MAX_ENCODED, clean_title, encoded_length
from pushsource.ops.logs import JsonFormatter, PlainFormatter


def test_control_characters_become_spaces() -> None:
    assert clean_title("a\r\nb\tc\x00d\x1b[31me\u2028f") == "a  b c d [31me f"


def test_ordinary_quotes_and_semicolons_arrive_unchanged() -> None:
    for title in ("'Live'; Don't Stop", "Rock 'n' Roll; Part 2", "it's 5 o'clock;", "a=b; c"):
        assert clean_title(title) == title


def test_no_field_can_be_injected() -> None:
    for title in (
        "x';StreamUrl='http://evil.example/';",
        "x'; StreamUrl = 'http://evil.example/",
        "StreamUrl='http://evil.example/'",
    ):
        cleaned = clean_title(title)
        block = f"StreamTitle='{cleaned}';"  # what Icecast 2.4.4 writes, unescaped
        assert "StreamUrl='" not in block.replace(" ", "")
        assert "';StreamUrl" not in block.replace(" ", "")


@given(st.text(max_size=3000))
def test_the_cut_fits_and_keeps_a_prefix(title: str) -> None:
    cleaned = clean_title(title)
    assert encoded_length(cleaned) <= MAX_ENCODED
    assert "\n" not in cleaned and "\r" not in cleaned
    if cleaned.endswith(ELLIPSIS) and not title.endswith(ELLIPSIS):
        stem = cleaned[: -len(ELLIPSIS)]
        assert clean_title(title[: len(stem)]).startswith(stem.rstrip())


def test_a_long_title_is_cut_at_a_character_with_an_ellipsis() -> None:
    title = "日本語のタイトル🎵" * 400
    cleaned = clean_title(title)
    assert cleaned.endswith(ELLIPSIS) and title.startswith(cleaned[:-1])
    query = urlencode({"mount": "/m", "mode": "updinfo", "song": cleaned, "charset": "UTF-8"})
    assert MAX_ENCODED - 20 < len(query) < 3100
    cleaned.encode("utf-8")  # whole characters only


def _formatted(formatter: logging.Formatter, message: str, *args: object) -> str:
    record = logging.LogRecord("pushsource", logging.INFO, __file__, 1, message, args, None)
    return formatter.format(record)


def test_plain_log_lines_cannot_be_forged() -> None:
    title = "Song\n12:00:00 ERROR forged line\r\x1b[2K"
    line = _formatted(PlainFormatter(show_station=False), "now playing %s", title)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert "forged line" in line
    entry = _formatted(JsonFormatter(), "now playing %s", title)
    assert "\n" not in entry


def test_a_traceback_still_spans_lines() -> None:
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(PlainFormatter(show_station=False))
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "pushsource", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    assert "Traceback" in handler.format(record).splitlines()[1]
