"""The import's reader process: items come back in order, failures cross the pipe, and a
consumer that stops early leaves no child behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from core.imports.failures import ImportFailed, ImportFailureCode
from jobs.imports.reader_process import ReaderCrashed, run_in_child


def _numbers(count):
    yield from ({"n": n, "pid": os.getpid(), "blob": b"x" * 100_000} for n in range(count))


def test_items_are_produced_in_a_child_in_order():
    items = list(run_in_child(lambda: _numbers(50)))
    assert [item["n"] for item in items] == list(range(50))
    assert {item["pid"] for item in items} != {os.getpid()}


def test_an_import_failure_crosses_the_pipe():
    def failing():
        yield 1
        raise ImportFailed(ImportFailureCode.undecodable, "bad byte", where={"line": 3})

    received: list[int] = []
    with pytest.raises(ImportFailed) as failure:
        received.extend(run_in_child(failing))
    assert received == [1]
    assert (failure.value.code, failure.value.where) == ("undecodable", {"line": 3})


def test_a_bug_in_the_reader_is_reported_with_its_traceback():
    def broken():
        yield 1
        raise KeyError("oops")

    with pytest.raises(ReaderCrashed, match="KeyError"):
        list(run_in_child(broken))


def _children() -> set[int]:
    """Pids of this process's children, zombies included (other fixtures may own some)."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        pids.update(int(pid) for pid in (task / "children").read_text().split())
    return pids


def test_stopping_early_kills_and_reaps_the_child():
    before = _children()
    batches = run_in_child(lambda: _numbers(10_000))
    first = next(batches)
    assert len(_children() - before) == 1
    batches.close()
    assert _children() == before  # killed and reaped: not even a zombie is left
    assert first["n"] == 0


def test_each_item_arrives_as_soon_as_it_is_produced():
    """A batch must not wait in the child's buffer until the next one is produced (parent
    and child would take turns instead of overlapping)."""

    def slow_second():
        yield {"n": 1, "tail": list(range(10))}
        time.sleep(3)
        yield {"n": 2}

    items = run_in_child(slow_second)
    started = time.monotonic()
    assert next(items)["n"] == 1
    assert time.monotonic() - started < 1.5
    items.close()
