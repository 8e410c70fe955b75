"""Triton model `postprocessing`: token ids → text, incremental when streaming."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from llm_stack.model_config import ModelParameters
from llm_stack.model_source import resolve_model_path
from llm_stack.stub_lifetime import watch_parent
from llm_stack.tokenizer import load_tokenizer, logprob_texts, text_delta


class TritonPythonModel:
    """Stateless: each response carries all ids so far and where the new ones start."""

    def initialize(self, args: dict[str, Any]) -> None:
        watch_parent()
        params = ModelParameters(json.loads(args["model_config"]))
        kind = params.get_choice("tokenizer", ("gguf", "hf"))
        self.tokenizer = load_tokenizer(kind, resolve_model_path(params.get_str("tokenizer_path")))

    def execute(self, requests: list[Any]) -> list[Any]:
        return [self._one(request) for request in requests]

    def _one(self, request: Any) -> Any:
        tokens = _input(request, "TOKENS_BATCH")  # [1, beams, len]
        lengths = _input(request, "SEQUENCE_LENGTH").reshape(-1)
        offset = int(_input(request, "OUTPUT_OFFSET").reshape(-1)[0])
        finish = _input(request, "FINISH_REASON").reshape(-1)[0]
        final = bool(finish)
        beams = tokens.reshape(-1, tokens.shape[-1]) if tokens.size else np.zeros((1, 0), np.int32)
        texts = [
            text_delta(self.tokenizer, beam[: int(n)].tolist(), offset, final).encode("utf-8")
            for beam, n in zip(beams, lengths, strict=False)
        ]
        # Logprobs come for the new tokens of the one sequence a response carries.
        counted = _input(request, "OUTPUT_LOG_PROBS").size
        pieces: list[bytes] = []
        top: list[list[bytes]] = []
        if counted:
            top_ids = _input(request, "TOP_TOKEN_IDS").reshape(counted, -1).tolist()
            new = beams[0][offset : offset + counted].tolist()
            pieces, top = logprob_texts(self.tokenizer, new, top_ids)
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("OUTPUT", np.array([texts], dtype=object)),
                pb_utils.Tensor("OUTPUT_TOKENS", _bytes_array(pieces, (1, len(pieces)))),
                pb_utils.Tensor(
                    "TOP_TOKENS", _bytes_array(top, (1, len(top), len(top[0]) if top else 0))
                ),
            ]
        )


def _bytes_array(values: Any, shape: tuple[int, ...]) -> Any:
    array = np.empty(shape, dtype=object)
    if array.size:
        array[...] = np.array(values, dtype=object).reshape(shape)
    return array


def _input(request: Any, name: str) -> Any:
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()
