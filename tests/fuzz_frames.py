"""Fuzz pushsource's frame parser by hand, for as long as you like.

Arbitrary bytes are fed to :class:`pushsource.core.frames.FrameParser` in arbitrary
chunkings. Only the parser's own FrameError may escape, only at the end of an
input in which no frame was found, with the end offset in ``.offset`` and as
"(at byte N)" in its message; the frames it hands out are the input's own
bytes, in order, each with the header it claims; and how the input is cut into
chunks changes nothing. (tests/test_frames.py runs a hypothesis property of
the same kind in the normal test run; this is the long-running version.)

With atheris (``pip install atheris``; not a project dependency)::

    python tests/fuzz_frames.py -atheris_runs=2000000
    python tests/fuzz_frames.py -max_total_time=600 /tmp/frames-corpus
    python tests/fuzz_frames.py crash-<hash>     # replay a finding

A corpus directory is seeded with synthetic streams (frames of every MPEG
version and layer, tags, Xing frames, junk) when it is empty; without one a
temporary seeded directory is used. Any other libFuzzer flag works too.

Without atheris the same checks run on seeded random inputs (mixtures of the
same parts, mutated), reproducible from the seed::

    python tests/fuzz_frames.py --seconds 60 --seed 1
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

try:
    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]
except ImportError:  # the fallback loop below needs nothing but the standard library
    atheris = None

if atheris is not None:
    with atheris.instrument_imports():
        from pushsource.core import frames as frames_module
else:
    from pushsource.core import frames as frames_module

from pushsource.errors import FrameError
from tests.synth import (
    Spec,
    apev2,
    id3v1,
    id3v2,
    lyrics3v2,
    make_frames,
    vbri_frame,
    xing_frame,
)

FrameParser = frames_module.FrameParser
Frame = frames_module.Frame
Skipped = frames_module.Skipped
NEED_DATA = frames_module.NEED_DATA
END = frames_module.END
parse_header = frames_module.parse_header

#: Default longest input for atheris (libFuzzer's -max_len).
MAX_LEN = 4096
Event = tuple[str, int, int, str]  # ("frame" | what was skipped, offset, length, header)
#: Events handed out for one input is at most this many per byte (plus slack):
#: a parser that loops for ever fails here instead of hanging the fuzzer.
_EVENTS_PER_BYTE = 2


class Finding(AssertionError):
    """The parser broke one of its promises on an input."""


def parse(data: bytes, sizes: Sequence[int]) -> tuple[list[Event], FrameError | None]:
    """Feed data cut into chunks of ``sizes`` (cycled), then the end of input.

    Returns the events and the FrameError raised at the end, if any. Any other
    exception propagates: that is a finding.
    """
    parser = FrameParser()
    events: list[Event] = []
    chunks = _chunks(data, sizes)
    limit = _EVENTS_PER_BYTE * len(data) + 16
    for chunk in [*chunks, b""]:
        parser.feed(chunk)
        while True:
            try:
                event = parser.next_event()
            except FrameError as error:
                if chunk:
                    raise Finding(f"FrameError before the end of input: {error}") from error
                return events, error
            if event is NEED_DATA:
                if not chunk:
                    raise Finding("NEED_DATA after the end of input")
                break
            if event is END:
                if chunk:
                    raise Finding("END before the end of input")
                break
            if isinstance(event, Frame):
                events.append(("frame", event.offset, len(event.data), repr(event.header)))
                if data[event.offset : event.offset + len(event.data)] != event.data:
                    raise Finding(f"frame at {event.offset} is not the input's bytes")
                if parse_header(event.data) != event.header:
                    raise Finding(f"frame at {event.offset} has another header than it says")
            elif isinstance(event, Skipped):
                events.append((event.what, event.offset, event.length, ""))
            else:
                raise Finding(f"unknown event {event!r}")
            if len(events) > limit:
                raise Finding(f"more than {limit} events from {len(data)} bytes")
    return events, None


#: At most this many chunks per input: byte-by-byte feeding of long inputs is
#: slow and finds nothing that short ones do not (test_frames.py does it too).
MAX_CHUNKS = 256


def _chunks(data: bytes, sizes: Sequence[int]) -> list[bytes]:
    if not sizes:
        return [data] if data else []
    smallest = -(-len(data) // MAX_CHUNKS)
    out, at, i = [], 0, 0
    while at < len(data):
        size = max(sizes[i % len(sizes)], smallest)
        out.append(data[at : at + size])
        at += size
        i += 1
    return out


def check(data: bytes, sizes: Sequence[int]) -> None:
    """Every promise, for one input and one chunking. Raises Finding."""
    events, error = parse(data, sizes)
    if error is not None:
        if error.offset != len(data):
            raise Finding(f"FrameError offset {error.offset}, input is {len(data)} bytes")
        if not str(error).endswith(f"(at byte {error.offset})"):
            raise Finding(f"FrameError message without its offset: {error}")
        if any(kind == "frame" for kind, *_ in events):
            raise Finding("FrameError after frames were handed out")
    frames = [(offset, length) for kind, offset, length, _ in events if kind == "frame"]
    for (a, n), (b, _) in itertools.pairwise(frames):
        if b < a + n:
            raise Finding(f"frames at {a} (+{n}) and {b} overlap or go backwards")
    whole, whole_error = parse(data, ())
    if whole != events or (whole_error is None) != (error is None):
        raise Finding(f"chunks of {list(sizes)} give other events than the whole input")


# -- inputs ------------------------------------------------------------------------


def seed_parts() -> list[bytes]:
    """Building blocks of plausible streams."""
    specs = [
        Spec(),
        Spec(rate_index=1, mono=True),
        Spec(crc=True),
        Spec(version="2", bitrate_index=8),
        Spec(version="2.5", bitrate_index=4, rate_index=2),
        Spec(layer=2, bitrate_index=10),
        Spec(layer=1, bitrate_index=4),
    ]
    parts = [b"".join(make_frames(4, spec, seed=i)) for i, spec in enumerate(specs)]
    parts += [id3v1(), apev2(), lyrics3v2(), id3v2(bytes(40)), id3v2(bytes(20), flags=0x10)]
    parts += [xing_frame(), xing_frame(magic=b"Info"), vbri_frame(), b"\xff\xfb\x90\x64"]
    parts += [b"ID3", b"TAG", b"APETAGEX", b"LYRICSBEGIN", b"\xff" * 8, bytes(50)]
    return parts


def seed_inputs(rng: random.Random, count: int) -> list[bytes]:
    parts = seed_parts()
    return [b"".join(rng.choice(parts) for _ in range(rng.randrange(1, 7))) for _ in range(count)]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A few random edits: flip, insert, delete, duplicate or cut."""
    out = bytearray(data)
    for _ in range(rng.randrange(0, 6)):
        op = rng.randrange(5)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out:
            out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[at:at] = rng.randbytes(rng.randrange(1, 40))
        elif op == 2:
            del out[at : at + rng.randrange(1, 200)]
        elif op == 3 and out:
            start = rng.randrange(len(out))
            out[at:at] = out[start : start + rng.randrange(1, 500)]
        elif op == 4:
            del out[at:]
    return bytes(out)


# -- atheris -----------------------------------------------------------------------


def fuzz_one_input(raw: bytes) -> None:
    """libFuzzer's entry point: the first bytes choose the chunking."""
    assert atheris is not None
    provider = atheris.FuzzedDataProvider(raw)
    sizes = [provider.ConsumeIntInRange(1, 2048) for _ in range(provider.ConsumeIntInRange(0, 4))]
    check(provider.ConsumeBytes(provider.remaining_bytes()), sizes)


def run_atheris(argv: list[str]) -> None:
    assert atheris is not None
    dirs = [a for a in argv[1:] if not a.startswith("-")]
    if not dirs:
        argv = [*argv, tempfile.mkdtemp(prefix="frames-corpus-")]
        dirs = argv[-1:]
    corpus = Path(dirs[0])
    if not corpus.is_file():  # a file is an input to replay
        corpus.mkdir(parents=True, exist_ok=True)
    if corpus.is_dir() and not any(corpus.iterdir()):
        rng = random.Random(0)
        for i, data in enumerate(seed_inputs(rng, 200)):
            # One byte for "no chunk sizes", then the stream.
            (corpus / f"seed-{i:03d}").write_bytes(b"\x00" + data)
    if not any(a.startswith("-max_len=") for a in argv):
        argv.append(f"-max_len={MAX_LEN}")  # longer inputs find little more, slowly
    atheris.Setup(argv, fuzz_one_input)
    atheris.Fuzz()


# -- without atheris -----------------------------------------------------------------


def run_fallback(
    seconds: float, seed: int, report: Callable[[str], None], runs: int | None = None
) -> int:
    """Seeded random inputs until ``seconds`` pass (or ``runs`` were checked);
    returns how many were checked. A finding is saved to crash-frames.bin."""
    rng = random.Random(seed)
    pool = seed_inputs(rng, 200)
    deadline = time.monotonic() + seconds
    done = 0
    while time.monotonic() < deadline and (runs is None or done < runs):
        if rng.random() < 0.2:
            data = rng.randbytes(rng.randrange(0, 3000))
        else:
            data = mutate(rng.choice(pool), rng)
            if rng.random() < 0.05:
                pool[rng.randrange(len(pool))] = data  # keep some mutants to mutate further
        sizes = [rng.randrange(1, 2049) for _ in range(rng.randrange(0, 4))]
        if rng.random() < 0.05:
            sizes = [1]  # byte by byte: slow, so not too often
        try:
            check(data, sizes)
        except BaseException:
            (Path.cwd() / "crash-frames.bin").write_bytes(data)
            report(f"finding after {done} inputs; saved to crash-frames.bin, chunks {sizes}")
            raise
        done += 1
        if done % 20000 == 0:
            report(f"{done} inputs checked")
    return done


_FALLBACK_FLAGS = ("--seconds", "--seed", "--fallback")


def main(argv: list[str]) -> int:
    ours = any(a.split("=", 1)[0] in _FALLBACK_FLAGS for a in argv[1:])
    if atheris is not None and not ours:
        run_atheris(argv)
        return 0
    fallback = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    fallback.add_argument("--seconds", type=float, default=60.0)
    fallback.add_argument("--seed", type=int, default=1)
    fallback.add_argument("--fallback", action="store_true", help="no atheris, even if installed")
    fallback.add_argument("-atheris_runs", type=int, default=None, help="stop after this many")
    args, _ = fallback.parse_known_args(argv[1:])
    if atheris is None:
        print("atheris is not installed: checking seeded random inputs instead", file=sys.stderr)
    runs = run_fallback(
        args.seconds, args.seed, lambda s: print(s, file=sys.stderr), args.atheris_runs
    )
    print(f"{runs} inputs checked (seed {args.seed}): no finding")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
