"""The external merge sort against Python's own stable ``sorted``: runs spilled to files, a
merge of many runs (more than the fan-in), ties kept in input order, cleanup."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestream.udfs.offline import ordering
from featurestream.udfs.offline.ordering import sorted_by_time


def _time(item: tuple[int, str]) -> int:
    return item[0]


# Few distinct times, so ties are common; the tag tells equal-time items apart.
ITEMS = st.lists(st.tuples(st.integers(-5, 5), st.text(max_size=3)), max_size=300)


@settings(max_examples=200, deadline=None)
@given(items=ITEMS, run_size=st.integers(1, 40))
def test_equals_stable_sorted(items: list[tuple[int, str]], run_size: int) -> None:
    assert list(sorted_by_time(iter(items), _time, run_size=run_size)) == sorted(items, key=_time)


def test_more_runs_than_the_fan_in(tmp_path: Path) -> None:
    items = [((i * 7919) % 101, f"#{i}") for i in range(ordering.MAX_FAN_IN * 5 + 3)]
    result = list(sorted_by_time(items, _time, run_size=2, spill_dir=tmp_path))
    assert result == sorted(items, key=_time)
    assert not list(tmp_path.iterdir())  # the spill directory is gone


def test_closed_early_removes_the_spill(tmp_path: Path) -> None:
    sorted_items = sorted_by_time([(3 - i % 4, "") for i in range(100)], _time, run_size=10,
                                  spill_dir=tmp_path)
    assert next(sorted_items) == (0, "")
    assert list(tmp_path.iterdir())  # runs on disk while iterating
    sorted_items.close()
    assert not list(tmp_path.iterdir())


def test_run_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="run_size"):
        list(sorted_by_time([], _time, run_size=0))
