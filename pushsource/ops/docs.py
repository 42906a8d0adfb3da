"""The man page and the shell completions, made from the command line's own
parser, so neither can fall behind an option (``pushsource manpage``,
``pushsource completion bash|zsh``).

argparse-manpage and shtab do the writing: each knows its format's corners
(troff escapes, zsh's _arguments specs) better than a page of our own would.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pushsource import __version__

SHELLS = ("bash", "zsh")

#: What the parser does not say (troff: .TP is a tagged paragraph).
_SECTIONS = (
    (
        "exit status",
        ".TP\n0\nall went well (check: every station checks out)\n"
        ".TP\n1\na failure: a server that cannot be reached, a station that stopped\n"
        ".TP\n2\na configuration error or a wrong password: one line says which\n",
    ),
    (
        "environment",
        ".TP\nPUSHSOURCE_PASSWORD\nthe source password when the URL has none\n"
        ".TP\nPUSHSOURCE_TOKEN\nthe control API's token for actions\n"
        ".TP\nXDG_STATE_HOME, XDG_CACHE_HOME\n"
        "where the play state and converted copies go by default\n",
    ),
    (
        "signals",
        ".TP\nSIGTERM, SIGINT\nstop every station cleanly\n"
        ".TP\nSIGHUP\nlook at the folders again; under run --config, also read the config "
        "file again and apply it: stations added start, removed ones stop, changed ones "
        "restart alone, the others are not touched; a config that does not check out is "
        "refused, one line per problem, and nothing changes (pushsource reload does the same)\n"
        ".TP\nSIGUSR1\nskip the track playing\n"
        ".TP\nSIGUSR2\nrestart in place: exec the installed pushsource anew (same PID), "
        "handing the source connections over (pushsource restart sends it)\n",
    ),
    ("see also", "icecast2(1), ezstream(1)\n"),
)

#: Arguments that name a directory, by their metavar; other paths are files.
_DIRECTORIES = frozenset({"FOLDER", "DIR"})


def manpage(parser: argparse.ArgumentParser) -> str:
    """pushsource(1) in troff: every command and option, with its help."""
    from argparse_manpage.manpage import Manpage  # only when asked for

    data = {
        "project_name": "pushsource",
        "version": __version__,
        "manual_title": "pushsource manual",
        "description": "a folder-driven source client for Icecast",
    }
    page = Manpage(parser, data)
    for heading, text in _SECTIONS:
        page.add_section(heading, ">", text)
    return str(page)


def completion(parser: argparse.ArgumentParser, shell: str) -> str:
    """A completion script for ``shell`` (bash or zsh): commands, options,
    choices, and file or directory names where an argument is a path."""
    import shtab  # only when asked for

    _mark_paths(parser, shtab.FILE, shtab.DIRECTORY)
    script: str = shtab.complete(parser, shell=shell)
    return script


def _mark_paths(parser: argparse.ArgumentParser, file: object, directory: object) -> None:
    """Tell shtab which arguments are paths: those typed Path, and those whose
    metavar says so."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _mark_paths(sub, file, directory)
            continue
        metavar = action.metavar if isinstance(action.metavar, str) else ""
        if metavar in _DIRECTORIES:
            action.complete = directory  # type: ignore[attr-defined]
        elif action.type is Path or metavar in ("FILE", "PATH"):
            action.complete = file  # type: ignore[attr-defined]
