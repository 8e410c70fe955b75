"""Pure helpers of the tensorrt_llm model: input tensors → engine request, deltas → outputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from llm_stack.engine.base import (
    EngineError,
    EngineHealth,
    EngineStats,
    GenerationRequest,
    InvalidRequestError,
    SamplingParams,
    TokenDelta,
    TokenLogprob,
)
from llm_stack.guided_decoding import (
    GUIDE_FIELD,
    GUIDE_TYPE_FIELD,
    Guide,
    InvalidGuideError,
    parse_guide,
)
from llm_stack.model_errors import ErrorCode, ModelError
from llm_stack.sampling_contract import SAMPLING_PARAMETERS
from llm_stack.tokenizer import DETOKENIZE_WINDOW
from llm_stack.word_lists import decode_word_list

Tensors = Mapping[str, npt.NDArray[Any] | None]
T = TypeVar("T")

# The sampling inputs (llm_stack.sampling_contract) and the SamplingParams fields they
# set, with their type; absent ones keep its defaults.
SAMPLING: dict[str, tuple[str, Callable[[Any], Any]]] = {
    p.engine_input: (p.engine_field, p.python_type) for p in SAMPLING_PARAMETERS
}
# Inputs the model reads besides the sampling ones.
OTHER_INPUTS = (
    "input_ids", "input_lengths", "end_id", "pad_id", "streaming", "stop_words_list",
    "bad_words_list", "guided_decoding_guide_type", "guided_decoding_guide",
    "return_log_probs", "num_top_log_probs",
)  # fmt: skip
INPUTS = (*OTHER_INPUTS, *SAMPLING)

# Our input name → the ensemble's, so errors name what the client sent.
CLIENT_NAMES = {
    "streaming": "stream",
    "stop_words_list": "stop_words",
    "bad_words_list": "bad_words",
    **{p.engine_input: p.name for p in SAMPLING_PARAMETERS if p.engine_input != p.name},
}


def _client_name(name: str) -> str:
    return CLIENT_NAMES.get(name, name)


def _scalar(tensors: Tensors, name: str, cast: Callable[[Any], T], default: T) -> T:
    value = tensors.get(name)
    if value is None or value.size == 0:
        return default
    if value.size != 1:
        field = _client_name(name)
        raise InvalidRequestError(
            f"{field} must hold one value, got shape {list(value.shape)}", field=field
        )
    return cast(value.reshape(-1)[0].item())


def _words(tensors: Tensors, name: str) -> tuple[tuple[int, ...], ...]:
    value = tensors.get(name)
    if value is None:
        return ()
    try:
        return decode_word_list(value)
    except ValueError as exc:
        field = _client_name(name)
        raise InvalidRequestError(f"{field}: {exc}", field=field) from None


def _text(tensors: Tensors, name: str) -> str | None:
    value = tensors.get(name)
    if value is None or value.size == 0:
        return None
    if value.size != 1:
        raise InvalidRequestError(
            f"{name} must hold one value, got shape {list(value.shape)}", field=name
        )
    item = value.reshape(-1)[0]
    if isinstance(item, bytes):
        try:
            return item.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequestError(f"{name} is not UTF-8", field=name) from None
    return str(item)


def _guide(tensors: Tensors) -> Guide | None:
    try:
        return parse_guide(_text(tensors, GUIDE_TYPE_FIELD), _text(tensors, GUIDE_FIELD))
    except InvalidGuideError as exc:
        error = InvalidRequestError(str(exc), code=exc.code, field=exc.field)
        error.values = dict(exc.values)  # the limit and the value the guide broke
        raise error from None


def build_request(
    request_id: str, tensors: Tensors, max_input_len: int
) -> tuple[GenerationRequest, bool]:
    """The engine request and whether to stream; raises InvalidRequestError naming the field.

    Value rules are the engine's (`SamplingParams`, the scheduler); this checks shapes.
    """
    ids_array = tensors.get("input_ids")
    if ids_array is None:
        raise InvalidRequestError("input_ids is required", field="input_ids")
    ids: Sequence[int] = ids_array.reshape(-1).tolist()
    length = _scalar(tensors, "input_lengths", int, len(ids))
    if not 0 < length <= len(ids):
        raise InvalidRequestError(
            f"input_lengths is {length}, but input_ids has {len(ids)} ids", field="input_lengths"
        )
    ids = ids[:length]
    if len(ids) > max_input_len:
        raise InvalidRequestError(
            f"prompt has {len(ids)} tokens, exceeds the limit of {max_input_len}",
            code=ErrorCode.PROMPT_TOO_LONG,
            field="text_input",
            tokens=len(ids),
            limit=max_input_len,
        )
    if tensors.get("request_output_len") is None:
        raise InvalidRequestError("max_tokens is required", field="max_tokens")
    given = {param: _scalar(tensors, name, cast, None) for name, (param, cast) in SAMPLING.items()}
    if _scalar(tensors, "return_log_probs", bool, False):
        given["logprobs"] = _scalar(tensors, "num_top_log_probs", int, 0)
    sampling = SamplingParams(**{k: v for k, v in given.items() if v is not None})
    end_id = _scalar(tensors, "end_id", int, -1)
    request = GenerationRequest(
        request_id=request_id,
        prompt_ids=tuple(int(t) for t in ids),
        sampling=sampling,
        stop_sequences=_words(tensors, "stop_words_list"),
        bad_sequences=_words(tensors, "bad_words_list"),
        end_id=end_id if end_id >= 0 else None,
        guide=_guide(tensors),
    )
    return request, _scalar(tensors, "streaming", bool, False)


@dataclass
class SequenceOutput:
    """One sequence's tokens that its responses have not carried yet, and the last few
    they did (the context postprocessing detokenizes the new ones after)."""

    pending: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)  # of `pending`
    context: list[int] = field(default_factory=list)  # the last ids sent, at most the window
    sent: int = 0  # ids the earlier responses carried
    responses: int = 0  # responses taken
    last: TokenDelta | None = None  # the latest delta: counts and finish reason
    done: bool = False  # its final response was taken

    def add(self, delta: TokenDelta, logprobs: bool) -> None:
        """Keep a delta's tokens for the next response (raises EngineError, keeping
        nothing, when logprobs were asked for and they do not match the tokens)."""
        if logprobs and len(delta.logprobs) != len(delta.token_ids):
            raise EngineError(
                f"the engine sent {len(delta.logprobs)} logprobs for {len(delta.token_ids)} tokens"
            )
        self.pending.extend(delta.token_ids)
        if logprobs:
            self.logprobs.extend(delta.logprobs)
        self.last = delta

    @property
    def finished(self) -> bool:
        return self.last is not None and self.last.finished

    def due(self, streaming: bool, interval: int) -> bool:
        """Whether a response is due now: the sequence ended; or, streaming, new tokens
        came and either none went out yet or at least `interval` wait."""
        if self.done or self.last is None:
            return False
        if self.finished:
            return True
        return (
            streaming
            and bool(self.pending)
            and (self.responses == 0 or len(self.pending) >= interval)
        )

    def take(self, logprobs: bool) -> dict[str, npt.NDArray[Any]]:
        """The output tensors of a response carrying the pending tokens."""
        assert self.last is not None
        new = self.pending
        arrays = response_arrays(
            new, self.context, self.sent, self.last, self.logprobs if logprobs else None
        )
        self.context = (self.context + new)[-DETOKENIZE_WINDOW:]
        self.sent += len(new)
        self.pending, self.logprobs = [], []
        self.responses += 1
        self.done = self.finished
        return arrays


def response_arrays(
    new_ids: Sequence[int],
    context: Sequence[int],
    offset: int,
    delta: TokenDelta,
    logprobs: Sequence[TokenLogprob] | None = None,
) -> dict[str, npt.NDArray[Any]]:
    """Output tensors (with the batch dim) for one response carrying `new_ids`, the ids of
    the sequence from `offset` on, after `context` (the ids just before them); the counts
    and finish reason come from `delta`, the sequence's latest; `logprobs` are those of
    `new_ids` (None: not asked for, empty tensors)."""
    entries = logprobs or ()
    # As many alternatives as every entry has (an engine may return fewer than asked).
    k = min((len(e.top) for e in entries), default=0)
    return {
        "output_ids": np.array(new_ids, dtype=np.int32).reshape(1, 1, -1),
        "sequence_length": np.array([[len(new_ids)]], dtype=np.int32),
        "context_ids": np.array(context, dtype=np.int32).reshape(1, -1),
        "output_offset": np.array([[offset]], dtype=np.int32),
        "num_input_tokens": np.array([[delta.num_input_tokens]], dtype=np.int32),
        "num_output_tokens": np.array([[delta.num_output_tokens]], dtype=np.int32),
        "num_cached_tokens": np.array([[delta.num_cached_tokens]], dtype=np.int32),
        "finish_reason": np.array(
            [[(delta.finish_reason.value if delta.finish_reason else "").encode()]], dtype=object
        ),
        "sequence_index": np.array([[delta.index]], dtype=np.int32),
        "output_log_probs": np.array([[e.logprob for e in entries]], dtype=np.float32).reshape(
            1, len(entries)
        ),
        "top_log_probs": np.array(
            [[[v for _, v in e.top[:k]] for e in entries]], dtype=np.float32
        ).reshape(1, len(entries), k),
        "top_token_ids": np.array(
            [[[t for t, _ in e.top[:k]] for e in entries]], dtype=np.int32
        ).reshape(1, len(entries), k),
    }


def kv_cache_blocks(stats: EngineStats) -> dict[str, int]:
    """KV cache blocks as TensorRT-LLM's backend reports them: max, used (running
    sequences' reservations and cached prefixes), free, reused (cached prefixes)."""
    size = stats.block_tokens
    if size <= 0:
        return {"max": 0, "used": 0, "free": 0, "reused": 0, "tokens_per": 0}
    total = stats.kv_cache_tokens // size
    reused = stats.prefix_cache_tokens // size
    used = min(total, -(-stats.kv_reserved_tokens // size) + reused)
    return {"max": total, "used": used, "free": total - used, "reused": reused, "tokens_per": size}


def health_reply(health: EngineHealth) -> dict[str, npt.NDArray[Any]] | ModelError:
    """A health_check request's answer (config.pbtxt): healthy, the output tensors of its
    one final response (finish_reason ""); unhealthy, the error saying why."""
    if health.ok:
        return {"finish_reason": np.array([[b""]], dtype=object)}
    return ModelError(ErrorCode.ENGINE_UNAVAILABLE, f"the engine cannot generate: {health.reason}")
