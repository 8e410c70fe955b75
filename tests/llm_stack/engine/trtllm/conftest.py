"""Fixtures of the TensorRT-LLM adapter's tests: open streams closed, a fake package."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.llm_stack.engine.trtllm.fakes import FakeLLM, fake_tensorrt_llm
from tests.llm_stack.engine.trtllm.helpers import open_streams


@pytest.fixture(autouse=True)
def _cancel_open_streams() -> Iterator[None]:
    yield
    for stream in open_streams:
        stream.cancel()
    open_streams.clear()


class BuiltLLMs:
    """The LLMs the fake `tensorrt_llm` package built, with their arguments."""

    def __init__(self) -> None:
        self.built: list[FakeLLM] = []


@pytest.fixture
def tensorrt_llm(monkeypatch: pytest.MonkeyPatch) -> BuiltLLMs:
    """The recorded release as a `tensorrt_llm` package in sys.modules."""
    record = BuiltLLMs()

    class RecordingLLM(FakeLLM):
        def __init__(self, **llm_args: object) -> None:
            super().__init__(**llm_args)
            record.built.append(self)

    for name, module in fake_tensorrt_llm(RecordingLLM).items():
        monkeypatch.setitem(sys.modules, name, module)
    return record
