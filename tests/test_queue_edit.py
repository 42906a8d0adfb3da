"""Queue edits in O(n) (issue 19): the set-based ``_edited`` and
``ListSource.edit`` give exactly what the list-based originals gave, and an
enqueue still finds a queued file under another name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushsource.engine.loop import Engine
from pushsource.errors import ControlError
from pushsource.ops.runner import StationRunner
from pushsource.ops.settings import StationSettings
from pushsource.workers.feed import ListSource, _edited
from pushsource.workers.folder import QueueEdit
from tests.support.media import make_clean_mp3


def reference_edited(queued: list[Path], edit: QueueEdit) -> list[Path]:
    """The O(n²) original, kept as the specification (benchmarks.queue has a copy)."""
    paths = [p for p in edit.front if p not in edit.remove]
    paths += [p for p in queued if p not in edit.remove and p not in paths]
    paths += [p for p in edit.enqueue if p not in paths]
    ordered = [p for p in edit.order if p in paths]
    return ordered + [p for p in paths if p not in ordered]


# A few names, so lists overlap and hold duplicates (the cases sets could get wrong).
_paths = st.lists(st.sampled_from([Path(f"/m/{n}.mp3") for n in "abcdefgh"]), max_size=12)
_edits = st.builds(
    QueueEdit,
    order=_paths.map(tuple),
    front=_paths.map(tuple),
    remove=_paths.map(tuple),
    enqueue=_paths.map(tuple),
)


@given(_paths, _edits)
def test_edited_is_the_original(queued: list[Path], edit: QueueEdit) -> None:
    assert _edited(queued, edit) == reference_edited(queued, edit)


@given(_paths, st.lists(_edits, max_size=4))
def test_list_source_edits_as_the_original(queued: list[Path], edits: list[QueueEdit]) -> None:
    source = ListSource(queued)
    expected = list(queued)
    for edit in edits:
        source.edit(edit)
        expected = reference_edited(expected, edit)
        assert source.queued() == expected


def test_a_large_edit_keeps_order_and_duplicates() -> None:
    queued = [Path(f"/m/{i}.mp3") for i in range(3000)]
    moved = [queued[1500], *queued[:1500], *queued[1501:]]
    edit = QueueEdit(tuple(moved), front=(queued[7], queued[7]), enqueue=(Path("/m/new.mp3"),))
    assert _edited(queued, edit) == reference_edited(queued, edit)
    assert _edited(queued, edit)[:2] == [queued[1500], queued[0]]


@pytest.fixture
def once_runner(tmp_path: Path) -> Iterator[StationRunner]:
    """A ``--once`` station whose folder is named through a link: its list
    holds the files under the link's name, not their resolved one."""
    real = tmp_path / "real"
    real.mkdir()
    for name in ("a", "b"):
        make_clean_mp3(real / f"{name}.mp3", 0.3, freq=300)
    (tmp_path / "music").symlink_to(real)
    settings = StationSettings(
        folder=tmp_path / "music",
        url="icecast://source:pw@127.0.0.1:9/rock",
        id="rock",
        once=True,
        state=tmp_path / "state.json",
        cache=tmp_path / "cache",
    )
    engine = Engine().start()
    station = StationRunner(settings, {}, engine=engine)
    station._setup()  # as start() would, but the station never connects
    station.feed.refresh()
    yield station
    engine.stop()
    station.close()


def test_enqueue_finds_a_file_queued_under_another_name(once_runner: StationRunner) -> None:
    queued = once_runner.driver.queued()
    assert [p.name for p in queued] == ["a.mp3", "b.mp3"]
    assert all(p != p.resolve() for p in queued)  # the case a plain comparison misses
    with pytest.raises(ControlError) as twice:
        once_runner.enqueue("b.mp3")
    assert twice.value.status == 409
    once_runner.move("b.mp3", 0)
    assert [p.name for p in once_runner.driver.queued()] == ["b.mp3", "a.mp3"]
    once_runner.remove("a.mp3")
    assert [p.name for p in once_runner.driver.queued()] == ["b.mp3"]
    once_runner.enqueue("a.mp3")
    assert [p.name for p in once_runner.driver.queued()] == ["b.mp3", "a.mp3"]


def test_the_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    # Small, so the suite keeps benchmarks.queue working; its figures are not judged.
    from benchmarks.queue import main

    assert main(["--sizes", "50", "--rounds", "1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [row[:2] for row in rows if row[:1] == ["50"]] == [
        ["50", "move"],
        ["50", "remove"],
        ["50", "enqueue"],
    ]
    assert all(len(row) == 6 for row in rows if row[:1] == ["50"])  # before and after
