"""Request records: one JSON line each, appended by users, read back by the runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.records import RecordWriter, RequestRecord, read_records


def test_round_trip_through_a_shared_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "records.jsonl"
    first = RequestRecord("/generate [stream]", True, 1.5, 2.0, "ok", 200, 3, 4, 0.1, 0.02)
    second = RequestRecord("/generate", False, 2.0, 0.01, "rejected", 429)
    third = RequestRecord("/generate", False, 2.5, 0.3, "failed", 502, error="HTTP 502")
    # Two users, two writers on one file.
    with RecordWriter(path) as a, RecordWriter(path) as b:
        a.write(first)
        b.write(second)
        a.write(third)
    assert read_records(path) == [first, second, third]
    assert first.ended == 3.5


def test_missing_file_has_no_records(tmp_path: Path) -> None:
    assert read_records(tmp_path / "none.jsonl") == []


def test_unknown_outcome_is_refused() -> None:
    line = RequestRecord("/generate", False, 0.0, 1.0, "ok", 200).to_json()
    with pytest.raises(ValueError, match="outcome"):
        RequestRecord.from_json(line.replace('"ok"', '"maybe"'))
