"""Triton model `preprocessing`: text or chat messages → token ids, stop/bad words → word lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from chat_template import ChatTemplateError, load_chat_template, parse_messages
from prompt_encoding import RequestError, decode_strings, encode_prompt, encode_words

from llm_stack.model_config import ModelParameters
from llm_stack.model_errors import ErrorCode, ModelError, error_response
from llm_stack.model_source import resolve_model_path
from llm_stack.tokenizer import load_tokenizer


class TritonPythonModel:
    """Tokenizes with the same vocabulary the engine uses."""

    def initialize(self, args: dict[str, Any]) -> None:
        params = ModelParameters(json.loads(args["model_config"]))
        kind = params.get_choice("tokenizer", ("gguf", "hf"))
        self.tokenizer = load_tokenizer(kind, resolve_model_path(params.get_str("tokenizer_path")))
        self.max_input_len = params.get_int("max_input_len", minimum=1)
        self.max_words = params.get_int("max_words", minimum=0)
        # Rendered here, next to the vocabulary, so every Triton client gets the same chat.
        self.chat_template = load_chat_template(
            params.get_str("chat_template"),
            model_template=self.tokenizer.chat_template,
            model_dir=Path(args["model_repository"]),
            bos_token=self.tokenizer.bos_token,
            eos_token=self.tokenizer.eos_token,
        )
        pb_utils.Logger.log_info(f"preprocessing: chat template from {self.chat_template.origin}")

    def execute(self, requests: list[Any]) -> list[Any]:
        # One response per request: a bad request fails alone, not its batch.
        return [self._one(request) for request in requests]

    def _one(self, request: Any) -> Any:
        try:
            return pb_utils.InferenceResponse(output_tensors=self._encode(request))
        except RequestError as exc:
            return error_response(pb_utils, exc.model_error())
        except ChatTemplateError as exc:
            pb_utils.Logger.log_error(f"preprocessing: {exc}")
            return error_response(pb_utils, ModelError(ErrorCode.TEMPLATE_ERROR, str(exc)))

    def _prompt_ids(self, request: Any) -> list[int]:
        """MESSAGES, when given, rendered with the chat template; else QUERY as it is."""
        raw_messages = _optional(request, "MESSAGES")
        if raw_messages is not None:
            values = decode_strings(raw_messages.reshape(-1), "messages")
            prompt = self.chat_template.render(parse_messages(values[0] if values else ""))
            # The template writes the BOS itself.
            return encode_prompt(
                self.tokenizer, prompt, self.max_input_len, add_special=False, field="messages"
            )
        query = decode_strings(_input(request, "QUERY").reshape(-1), "text_input")
        return encode_prompt(self.tokenizer, query[0] if query else "", self.max_input_len)

    def _encode(self, request: Any) -> list[Any]:
        ids = self._prompt_ids(request)
        output_len = _input(request, "REQUEST_OUTPUT_LEN").reshape(-1)
        words = {}
        for name, field in (("STOP_WORDS_DICT", "stop_words"), ("BAD_WORDS_DICT", "bad_words")):
            raw = _optional(request, name)
            values = decode_strings(raw.reshape(-1), field) if raw is not None else []
            words[name] = encode_words(self.tokenizer, values, self.max_words, field)
        end_id = _optional(request, "END_ID")
        pad_id = _optional(request, "PAD_ID")
        return [
            pb_utils.Tensor("INPUT_ID", np.array([ids], dtype=np.int32)),
            pb_utils.Tensor("REQUEST_INPUT_LEN", np.array([[len(ids)]], dtype=np.int32)),
            pb_utils.Tensor("REQUEST_OUTPUT_LEN", output_len.astype(np.int32).reshape(1, 1)),
            pb_utils.Tensor("STOP_WORDS_IDS", words["STOP_WORDS_DICT"][np.newaxis]),
            pb_utils.Tensor("BAD_WORDS_IDS", words["BAD_WORDS_DICT"][np.newaxis]),
            # -1: the engine's own end-of-generation tokens (EOS and end-of-turn).
            pb_utils.Tensor("OUT_END_ID", _id_or(end_id, -1)),
            pb_utils.Tensor("OUT_PAD_ID", _id_or(pad_id, self.tokenizer.pad_id)),
        ]


def _input(request: Any, name: str) -> Any:
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()


def _optional(request: Any, name: str) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _id_or(value: Any, default: int) -> Any:
    number = int(value.reshape(-1)[0]) if value is not None else default
    return np.array([[number]], dtype=np.int32)
