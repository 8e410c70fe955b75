"""One line of JSON per finished request, written by the Locust users, read by the runner.

Locust's own statistics round response times and cannot tell which requests met both
latency objectives at once; these records keep every request exactly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, get_args

Outcome = Literal["ok", "rejected", "failed"]
_OUTCOMES: tuple[str, ...] = get_args(Outcome)


@dataclass(frozen=True)
class RequestRecord:
    """A finished request: `ok`, `rejected` (429/503: load shed) or `failed` (anything else)."""

    endpoint: str
    stream: bool
    started: float  # wall clock, seconds since the epoch
    e2e_s: float
    outcome: Outcome
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None  # streamed requests only
    itl_s: float | None = None  # mean gap between tokens after the first; needs 2+ tokens
    error: str | None = None
    user: str = ""  # which simulated user sent it

    @property
    def ended(self) -> float:
        return self.started + self.e2e_s

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> RequestRecord:
        data = json.loads(line)
        if data.get("outcome") not in _OUTCOMES:
            raise ValueError(f"unknown outcome in record: {data.get('outcome')!r}")
        return cls(**data)


class RecordWriter:
    """Appends records to a file, one `write` per line so users sharing it do not interleave."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("a", encoding="utf-8", buffering=1)

    def write(self, record: RequestRecord) -> None:
        self._file.write(record.to_json() + "\n")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_records(path: Path) -> list[RequestRecord]:
    """Every record in a file; none when the file does not exist."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [RequestRecord.from_json(line) for line in lines if line.strip()]
