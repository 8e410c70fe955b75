"""Triton model `postprocessing`: token ids → text, incremental when streaming."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from llm_stack.model_config import ModelParameters
from llm_stack.model_source import resolve_model_path
from llm_stack.stub_lifetime import watch_parent
from llm_stack.tokenizer import load_tokenizer, logprob_texts, text_deltas

# The empty logprob texts of a response that asked for none, shared by every such response.
_NO_TOKENS = np.empty((1, 0), dtype=object)
_NO_TOP_TOKENS = np.empty((1, 0, 0), dtype=object)


class TritonPythonModel:
    """Stateless: each response carries its new ids and the few before them
    (CONTEXT_IDS), so any instance serves any response. A batch of responses is read,
    detokenized in one pass and answered; its cost per response is the reading and the
    writing of a few small tensors."""

    def initialize(self, args: dict[str, Any]) -> None:
        watch_parent()
        params = ModelParameters(json.loads(args["model_config"]))
        kind = params.get_choice("tokenizer", ("gguf", "hf"))
        self.tokenizer = load_tokenizer(kind, resolve_model_path(params.get_str("tokenizer_path")))

    def execute(self, requests: list[Any]) -> list[Any]:
        # Each response's (context, new ids, final), for one text_deltas pass.
        items: list[tuple[list[int], list[int], bool]] = []
        logprobs: list[tuple[list[int], list[list[int]]] | None] = []
        for request in requests:
            tensors = {tensor.name(): tensor for tensor in request.inputs()}
            new = tensors["TOKENS_BATCH"].as_numpy().reshape(-1).tolist()  # [1, 1, n]
            context = tensors["CONTEXT_IDS"].as_numpy().reshape(-1).tolist()
            final = bool(tensors["FINISH_REASON"].as_numpy().reshape(-1)[0])
            items.append((context, new, final))
            # Logprobs come for the new tokens of the one sequence a response carries.
            counted = tensors["OUTPUT_LOG_PROBS"].as_numpy().size
            if counted:
                top_ids = tensors["TOP_TOKEN_IDS"].as_numpy().reshape(counted, -1).tolist()
                logprobs.append((new[:counted], top_ids))
            else:
                logprobs.append(None)
        texts = text_deltas(self.tokenizer, items)
        responses = []
        for text, asked in zip(texts, logprobs, strict=True):
            output = np.empty((1, 1), dtype=object)
            output[0, 0] = text.encode("utf-8")
            if asked is None:
                pieces, top = _NO_TOKENS, _NO_TOP_TOKENS
            else:
                new_texts, top_texts = logprob_texts(self.tokenizer, *asked)
                pieces = _bytes_array(new_texts, (1, len(new_texts)))
                top = _bytes_array(
                    top_texts, (1, len(top_texts), len(top_texts[0]) if top_texts else 0)
                )
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("OUTPUT", output),
                        pb_utils.Tensor("OUTPUT_TOKENS", pieces),
                        pb_utils.Tensor("TOP_TOKENS", top),
                    ]
                )
            )
        return responses


def _bytes_array(values: Any, shape: tuple[int, ...]) -> Any:
    array = np.empty(shape, dtype=object)
    if array.size:
        array[...] = np.array(values, dtype=object).reshape(shape)
    return array
