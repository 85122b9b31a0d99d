"""heap.trim: glibc's malloc_trim where there is one, a harmless no-op elsewhere."""

from __future__ import annotations

import sys

from pushreachd import heap


def test_trim_runs_and_says_whether_it_could() -> None:
    trimmed = heap.trim()
    assert isinstance(trimmed, bool)
    if not sys.platform.startswith("linux"):
        assert trimmed is False


def test_trim_is_a_no_op_without_malloc_trim(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(heap, "_malloc_trim", lambda: None)
    assert heap.trim() is False
