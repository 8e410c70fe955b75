"""Fakes of the TensorRT-LLM API, held to the recorded surface of the pinned release.

`api_surface.json` (written by `record_api.py` from NVIDIA's source of the release in
`llm_stack.engine.trtllm.CHECKED_VERSION`) lists the constructor fields of `TorchLlmArgs`,
`KvCacheConfig`, `SamplingParams` and `GuidedDecodingParams`, the attributes of
`RequestOutput` and `CompletionOutput`, the parameters of `LLM.generate_async` and the
keys of the iteration statistics. Every fake here accepts exactly those names, and values
of the recorded types where the annotation is a plain one: an argument the release does
not have (misspelt, removed) raises TypeError as the real class would, and an attribute
the release's outputs lack raises AttributeError.
"""

from __future__ import annotations

import ast
import asyncio
import json
import types
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SURFACE_PATH = Path(__file__).with_name("api_surface.json")
SURFACE: dict[str, Any] = json.loads(SURFACE_PATH.read_text())
CLASSES: dict[str, Any] = SURFACE["classes"]
VERSION: str = SURFACE["tensorrt_llm_version"]


def readable(class_name: str) -> set[str]:
    """Names an instance of a recorded class has: fields, properties, attributes."""
    cls = CLASSES[class_name]
    return {*cls["fields"], *cls["properties"], *cls["attributes"]}


# -- types ------------------------------------------------------------------------------

_PLAIN: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
    "list": (list, tuple),
    "List": (list, tuple),
    "dict": (dict,),
    "Dict": (dict,),
    "None": (type(None),),
}


def matches(annotation: str, value: Any) -> bool:
    """Whether `value` fits a recorded annotation; names it cannot judge (classes of
    TensorRT-LLM, Any) accept anything."""
    try:
        node = ast.parse(annotation, mode="eval").body
    except SyntaxError:
        return True
    return _fits(node, value)


def _name(node: ast.expr) -> str:
    return ast.unparse(node).removeprefix("typing.")


def _fits(node: ast.expr, value: Any) -> bool:
    if isinstance(node, ast.Constant):
        if node.value is None:
            return value is None
        if isinstance(node.value, str):  # a forward reference: judge its text
            return matches(node.value, value)
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _fits(node.left, value) or _fits(node.right, value)
    if isinstance(node, ast.Subscript):
        outer = _name(node.value)
        inner = node.slice
        args = list(inner.elts) if isinstance(inner, ast.Tuple) else [inner]
        if outer == "Optional":
            return value is None or _fits(args[0], value)
        if outer == "Union":
            return any(_fits(a, value) for a in args)
        if outer == "Literal":
            return any(isinstance(a, ast.Constant) and a.value == value for a in args)
        if outer in ("List", "list", "Sequence"):
            return isinstance(value, list | tuple) and all(_fits(args[0], v) for v in value)
        if outer in ("Dict", "dict"):
            return isinstance(value, dict)
        return True
    name = _name(node)
    if name in _PLAIN:
        kinds = _PLAIN[name]
        if bool not in kinds and isinstance(value, bool):
            return False  # True is an int to Python, not to a field typed int
        return isinstance(value, kinds)
    return True


def check_arguments(class_name: str, kwargs: Mapping[str, Any]) -> None:
    """Raise TypeError as the recorded class would for an unknown or ill-typed argument."""
    fields: dict[str, str] = CLASSES[class_name]["fields"]
    for name, value in kwargs.items():
        if name not in fields:
            raise TypeError(f"{class_name}.__init__() got an unexpected keyword argument {name!r}")
        if not matches(fields[name], value):
            raise TypeError(f"{class_name}.{name} is {fields[name]}, got {value!r}")
    missing = [r for r in CLASSES[class_name]["required"] if r not in kwargs]
    if missing:
        raise TypeError(f"{class_name}.__init__() missing required arguments {missing}")


class Recorded:
    """An instance of a recorded parameter class: the arguments it was given, readable
    as attributes; a field it was not given reads None, a name it lacks raises."""

    class_name = ""

    def __init__(self, **kwargs: Any) -> None:
        check_arguments(self.class_name, kwargs)
        self.kwargs = dict(kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in readable(self.class_name):
            return self.kwargs.get(name)
        raise AttributeError(f"{self.class_name} has no attribute {name!r}")

    def __getitem__(self, name: str) -> Any:
        """What the test gave (KeyError: not given), for assertions."""
        return self.kwargs[name]

    def __contains__(self, name: str) -> bool:
        return name in self.kwargs

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Recorded)
            and type(other) is type(self)
            and (other.kwargs == self.kwargs)
        )

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"{self.class_name}({self.kwargs})"


class FakeSamplingParams(Recorded):
    class_name = "SamplingParams"


class FakeGuidedDecodingParams(Recorded):
    class_name = "GuidedDecodingParams"


class FakeKvCacheConfig(Recorded):
    class_name = "KvCacheConfig"


class FakeRequestError(RuntimeError):
    """`tensorrt_llm.executor.utils.RequestError`: the LLM API refusing one request."""


# -- outputs ------------------------------------------------------------------------------


@dataclass
class FakeLogprob:
    """`tensorrt_llm.executor.result.Logprob`."""

    logprob: float
    rank: int | None = None


LogprobEntries = list[dict[int, FakeLogprob]] | list[float]


class FakeCompletion:
    """A `CompletionOutput`: only the recorded names exist."""

    __slots__ = ("finish_reason", "index", "logprobs", "token_ids")

    def __init__(
        self,
        token_ids: list[int] | None = None,
        finish_reason: str | None = None,
        index: int = 0,
        logprobs: LogprobEntries | None = None,
    ) -> None:
        self.index = index
        self.token_ids: list[int] | None = [] if token_ids is None else token_ids
        self.finish_reason = finish_reason
        self.logprobs: LogprobEntries | None = [] if logprobs is None else logprobs


@dataclass
class State:
    """One streamed update of sequence `index` (cumulative, like the LLM API's)."""

    token_ids: list[int]
    reason: str | None = None
    cached: int | None = None
    index: int = 0
    logprobs: LogprobEntries | None = None
    finished: bool | None = None  # None: once every sequence has a finish reason


class FakeRequestOutput:
    """A streamed `RequestOutput` of n sequences: the test pushes cumulative states of one
    sequence at a time; abort() cancels every unfinished one. Only the recorded names of
    `RequestOutput` exist on it (`aborted` is the test's own count, kept apart)."""

    __slots__ = ("_states", "aborts", "cached_tokens", "finished", "outputs")

    def __init__(self, n: int = 1) -> None:
        self.outputs = [FakeCompletion(index=i) for i in range(n)]
        self.finished = False
        self.cached_tokens = 0  # set from each response that carries it
        self.aborts = [0]
        self._states: asyncio.Queue[State | BaseException] = asyncio.Queue()

    @property
    def aborted(self) -> int:
        return self.aborts[0]

    def emit(
        self,
        token_ids: list[int],
        finish_reason: str | None = None,
        cached: int | None = None,
        *,
        index: int = 0,
        logprobs: LogprobEntries | None = None,
        finished: bool | None = None,
    ) -> None:
        self._states.put_nowait(State(token_ids, finish_reason, cached, index, logprobs, finished))

    def fail(self, error: BaseException) -> None:
        self._states.put_nowait(error)

    def abort(self) -> None:
        self.aborts[0] += 1
        for output in self.outputs:
            if output.finish_reason is None:
                self.emit(list(output.token_ids or []), "cancelled", index=output.index)

    def __aiter__(self) -> FakeRequestOutput:
        return self

    async def __anext__(self) -> FakeRequestOutput:
        if self.finished:
            raise StopAsyncIteration
        state = await self._states.get()
        if isinstance(state, BaseException):
            raise state
        output = self.outputs[state.index]
        output.token_ids = state.token_ids
        output.finish_reason = state.reason
        if state.logprobs is not None:
            output.logprobs = state.logprobs
        if state.cached is not None:
            self.cached_tokens = state.cached
        self.finished = (
            all(o.finish_reason for o in self.outputs) if state.finished is None else state.finished
        )
        return self


# Public names the fakes give the adapter; each must exist in the release.
_FAKE_NAMES = {
    "CompletionOutput": {"finish_reason", "index", "logprobs", "token_ids"},
    "RequestOutput": {"cached_tokens", "finished", "outputs", "abort"},
}


def _check_fakes_against_surface() -> None:
    for class_name, names in _FAKE_NAMES.items():
        cls = CLASSES[class_name]
        known = {*readable(class_name), *cls["methods"]}
        unknown = names - known
        if unknown:
            raise AssertionError(f"the fake {class_name} has {unknown}, the release does not")


_check_fakes_against_surface()


# -- the LLM ------------------------------------------------------------------------------

FAKE_VOCAB = 32000
# The fake checkpoint's generation_config.json eos_token_id: stop words only while
# SamplingParams.end_id is unset (the LLM API's _prepare_sampling_params runs
# SamplingParams._setup only then).
GENERATION_EOS = (31999,)


class FakeTokenizer:
    """The LLM API's `TransformersTokenizer`: Hugging Face's tokenizer inside."""

    def __init__(self, size: int) -> None:
        self.tokenizer = [f"t{i}" for i in range(size)]


class FakeLLM:
    """`tensorrt_llm.LLM` on the PyTorch backend: takes exactly `TorchLlmArgs` fields."""

    def __init__(self, **llm_args: Any) -> None:
        llm_args.setdefault("model", "/models/tiny")
        check_arguments("TorchLlmArgs", llm_args)
        self.args = llm_args
        self.tokenizer = FakeTokenizer(FAKE_VOCAB)
        self.calls: list[dict[str, Any]] = []
        self.handles: list[FakeRequestOutput] = []
        self.stats_items: list[Any] = []
        self.stats_drained = asyncio.Event()
        self.reject: BaseException | None = None
        self.shut_down = False

    def generate_async(self, inputs: Any, **kwargs: Any) -> FakeRequestOutput:
        known = set(CLASSES["BaseLLM"]["methods"]["generate_async"])
        unknown = set(kwargs) - known
        if unknown:
            raise TypeError(f"generate_async() got unexpected keyword arguments {unknown}")
        if self.reject is not None:
            raise self.reject
        params = kwargs.get("sampling_params")
        if not isinstance(params, FakeSamplingParams):
            raise TypeError("sampling_params must be a SamplingParams")
        self.calls.append({"inputs": inputs, "params": params, **kwargs})
        handle = FakeRequestOutput(params.n or 1)
        self.handles.append(handle)
        return handle

    @staticmethod
    def stop_tokens(params: FakeSamplingParams) -> set[int]:
        """The single tokens that end a sequence, as the LLM API sets them up."""
        stops = set(params.stop_token_ids or ())
        if params.end_id is None:
            stops |= set(GENERATION_EOS)
        return stops

    def get_stats_async(self, timeout: float = 2) -> AsyncIterator[Any]:
        assert "get_stats_async" in CLASSES["BaseLLM"]["methods"]

        async def items() -> AsyncIterator[Any]:
            while self.stats_items:
                yield self.stats_items.pop(0)
            self.stats_drained.set()  # after the consumer took the last item

        return items()

    def shutdown(self) -> None:
        self.shut_down = True


def iteration_stats(
    kv: Mapping[str, int] | None = None,
    batching: Mapping[str, int] | None = None,
    **top: Any,
) -> dict[str, Any]:
    """One iteration's statistics as `get_stats_async` yields them; every key must be one
    the release's IterationStats JSON has."""
    keys: dict[str, list[str]] = SURFACE["iteration_stats"]
    for given, allowed, what in (
        (top, keys["IterationStats"], "IterationStats"),
        (kv or {}, keys["KvCacheStats"], "KvCacheStats"),
        (batching or {}, keys["InflightBatchingStats"], "InflightBatchingStats"),
    ):
        unknown = set(given) - set(allowed)
        if unknown:
            raise KeyError(f"{what} has no keys {sorted(unknown)}")
    stats = dict(top)
    if kv is not None:
        stats["kvCacheStats"] = dict(kv)
    if batching is not None:
        stats["inflightBatchingStats"] = dict(batching)
    return stats


def fake_tensorrt_llm(llm_class: type[FakeLLM] = FakeLLM) -> dict[str, types.ModuleType]:
    """A `tensorrt_llm` package of the recorded release, as sys.modules entries; modules the
    release does not have are left out, so importing them fails as it would there."""
    present: dict[str, bool] = SURFACE["modules"]
    root = types.ModuleType("tensorrt_llm")
    root.__version__ = VERSION  # type: ignore[attr-defined]
    root.LLM = llm_class  # type: ignore[attr-defined]
    root.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    llmapi = types.ModuleType("tensorrt_llm.llmapi")
    llmapi.KvCacheConfig = FakeKvCacheConfig  # type: ignore[attr-defined]
    sampling = types.ModuleType("tensorrt_llm.sampling_params")
    sampling.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    sampling.GuidedDecodingParams = FakeGuidedDecodingParams  # type: ignore[attr-defined]
    executor = types.ModuleType("tensorrt_llm.executor")
    utils = types.ModuleType("tensorrt_llm.executor.utils")
    if "RequestError" in SURFACE["exceptions"]:
        utils.RequestError = FakeRequestError  # type: ignore[attr-defined]
    modules = {
        "tensorrt_llm": root,
        "tensorrt_llm.llmapi": llmapi,
        "tensorrt_llm.sampling_params": sampling,
        "tensorrt_llm.executor": executor,
        "tensorrt_llm.executor.utils": utils,
    }
    for name in modules:
        if not present.get(name, False):
            raise AssertionError(f"the fake has {name}, which the release lacks")
    root.llmapi = llmapi  # type: ignore[attr-defined]
    root.sampling_params = sampling  # type: ignore[attr-defined]
    root.executor = executor  # type: ignore[attr-defined]
    executor.utils = utils  # type: ignore[attr-defined]
    return modules
