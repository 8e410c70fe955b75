"""Triton model `preprocessing`: text or chat messages → token ids, stop/bad words → word lists."""

from __future__ import annotations

import json
import os
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from chat_template import (
    ChatTemplateError,
    load_chat_template,
    parse_messages,
    parse_tools_input,
)
from prompt_encoding import (
    Limits,
    RequestError,
    decode_text,
    decode_words,
    encode_chat,
    encode_prompt,
    encode_words,
    one_request,
)
from token_ids import detokenize, token_strings_tensor

from llm_stack.model_config import ModelParameters
from llm_stack.model_errors import ErrorCode, ModelError, error_response
from llm_stack.model_source import resolve_model_path
from llm_stack.stub_lifetime import watch_parent
from llm_stack.tokenizer import Vocabulary, load_tokenizer

# The ensemble's name of each input, for errors the client can act on.
FIELDS = {
    "QUERY": "text_input",
    "MESSAGES": "messages",
    "TOOLS": "tools",
    "REQUEST_OUTPUT_LEN": "max_tokens",
    "BAD_WORDS_DICT": "bad_words",
    "STOP_WORDS_DICT": "stop_words",
    "END_ID": "end_id",
    "PAD_ID": "pad_id",
    # Direct calls (/tokenize, /detokenize), by the names their clients send.
    "ADD_SPECIAL_TOKENS": "add_special_tokens",
    "RETURN_TOKEN_STRINGS": "return_token_strs",
    "TOKEN_IDS": "tokens",
}


_MAX_NICE = 19  # the lowest CPU priority Linux has


class TritonPythonModel:
    """Tokenizes with the same vocabulary the engine uses."""

    def initialize(self, args: dict[str, Any]) -> None:
        watch_parent()
        params = ModelParameters(json.loads(args["model_config"]))
        kind = params.get_choice("tokenizer", ("gguf", "hf"))
        tokenizer = load_tokenizer(kind, resolve_model_path(params.get_str("tokenizer_path")))
        if not isinstance(tokenizer, Vocabulary):
            raise TypeError(f"the {kind} tokenizer does not show its vocabulary")
        self.tokenizer = tokenizer
        self.limits = Limits.from_parameters(params)
        # Below the engine in the CPU scheduler's eyes: tokenizing a flood of large
        # prompts (most of them refused) must not take the cores the engine's steps need
        # (on 2 cores, four such clients put every request at 5x its idle latency).
        os.nice(min(params.get_int("cpu_nice", minimum=0), _MAX_NICE))
        # Read once here: the size proof of a too-long prompt needs it for every request.
        self.max_token_bytes = self.tokenizer.max_token_bytes
        # Off: a message's content is text, so no client writes the markup of turns.
        self.special_in_content = params.get_bool("allow_special_tokens_in_content")
        # Rendered here, next to the vocabulary, so every Triton client gets the same chat.
        self.chat_template = load_chat_template(
            params.get_str("chat_template"),
            model_template=self.tokenizer.chat_template,
            model_dir=Path(args["model_repository"]),
            bos_token=self.tokenizer.bos_token,
            eos_token=self.tokenizer.eos_token,
        )
        pb_utils.Logger.log_info(
            f"preprocessing: chat template from {self.chat_template.origin}; control tokens "
            f"in message contents are {'tokens' if self.special_in_content else 'text'}; "
            f"a token stands for at most {self.max_token_bytes} bytes"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        # One response per request: a bad request fails alone, not its batch.
        return [self._one(request) for request in requests]

    def _one(self, request: Any) -> Any:
        try:
            if request.is_cancelled():
                return error_response(
                    pb_utils, ModelError(ErrorCode.CANCELLED, "preprocessing: request cancelled")
                )
            return pb_utils.InferenceResponse(output_tensors=self._encode(request))
        except RequestError as exc:
            return error_response(pb_utils, exc.model_error())
        except ChatTemplateError as exc:
            pb_utils.Logger.log_error(f"preprocessing: {exc}")
            return error_response(pb_utils, ModelError(ErrorCode.TEMPLATE_ERROR, str(exc)))
        except Exception:
            # The details stay in the server's log; the client learns only that it failed.
            pb_utils.Logger.log_error(f"preprocessing: {traceback.format_exc()}")
            return error_response(
                pb_utils,
                ModelError(
                    ErrorCode.ENGINE_ERROR,
                    "preprocessing failed on this request (internal error, logged by the server)",
                ),
            )

    def _encode(self, request: Any) -> list[Any]:
        limits = self.limits
        # Cheap checks first: shapes and sizes, before anything is decoded or tokenized.
        inputs = {name: _row(request, name) for name in FIELDS}
        if inputs["TOKEN_IDS"] is not None:
            # /detokenize: the text of the ids is the whole answer.
            text = detokenize(self.tokenizer, inputs["TOKEN_IDS"].reshape(-1).tolist())
            return [pb_utils.Tensor("TEXT", np.array([[text.encode("utf-8")]], dtype=np.object_))]
        words = {}
        for name in ("STOP_WORDS_DICT", "BAD_WORDS_DICT"):
            row = inputs[name]
            words[name] = (
                decode_words(row, FIELDS[name], limits.max_words, limits.max_word_bytes)
                if row is not None
                else []
            )
        ids = self._prompt_ids(
            inputs["MESSAGES"], inputs["QUERY"], inputs["TOOLS"], inputs["ADD_SPECIAL_TOKENS"]
        )
        lists = {
            name: encode_words(self.tokenizer, values, limits.max_words, FIELDS[name])
            for name, values in words.items()
        }
        outputs = [
            pb_utils.Tensor("INPUT_ID", np.array([ids], dtype=np.int32)),
            pb_utils.Tensor("REQUEST_INPUT_LEN", np.array([[len(ids)]], dtype=np.int32)),
            pb_utils.Tensor("REQUEST_OUTPUT_LEN", _number(inputs["REQUEST_OUTPUT_LEN"], 0)),
            pb_utils.Tensor("STOP_WORDS_IDS", lists["STOP_WORDS_DICT"][np.newaxis]),
            pb_utils.Tensor("BAD_WORDS_IDS", lists["BAD_WORDS_DICT"][np.newaxis]),
            # -1: the engine's own end-of-generation tokens (EOS and end-of-turn).
            pb_utils.Tensor("OUT_END_ID", _number(inputs["END_ID"], -1)),
            pb_utils.Tensor("OUT_PAD_ID", _number(inputs["PAD_ID"], self.tokenizer.pad_id)),
            # For /tokenize: the ensemble does not ask for it, so Triton leaves it out there.
            pb_utils.Tensor("MAX_INPUT_LEN", np.array([[limits.max_input_len]], dtype=np.int32)),
        ]
        if _flag(inputs["RETURN_TOKEN_STRINGS"], default=False):
            outputs.append(
                pb_utils.Tensor("TOKEN_STRINGS", token_strings_tensor(self.tokenizer, ids))
            )
        return outputs

    def _prompt_ids(self, messages: Any, query: Any, tools: Any, add_special: Any) -> list[int]:
        """MESSAGES (with TOOLS), when given, rendered with the chat template; else QUERY
        as it is, with the tokenizer's BOS unless ADD_SPECIAL_TOKENS is false (TOOLS and
        ADD_SPECIAL_TOKENS are each for one of the two only, refused with the other)."""
        limits, bound = self.limits, self.max_token_bytes
        if messages is None:
            if tools is not None:
                raise RequestError("tools needs messages (a chat)", field="tools")
            if query is None:
                raise RequestError("text_input or messages is required", field="text_input")
            text = decode_text(query.reshape(-1)[0], "text_input", limits.max_prompt_bytes)
            return encode_prompt(
                self.tokenizer,
                text,
                limits.max_input_len,
                max_token_bytes=bound,
                add_special=_flag(add_special, default=True),
            )
        if add_special is not None:
            # The chat template writes the model's special tokens itself.
            raise RequestError(
                "add_special_tokens is for a prompt, not messages", field="add_special_tokens"
            )
        tool_list = None
        if tools is not None:
            raw_tools = decode_text(tools.reshape(-1)[0], "tools", limits.max_tools_bytes)
            tool_list = parse_tools_input(raw_tools, max_depth=limits.max_tool_json_depth)
        raw = decode_text(messages.reshape(-1)[0], "messages", limits.max_messages_bytes)
        chat = parse_messages(
            raw,
            max_messages=limits.max_messages,
            max_depth=limits.max_messages_depth,
            max_arguments_depth=limits.max_tool_json_depth,
        )
        # The template writes the BOS itself.
        segments = self.chat_template.segments(
            chat, special_in_content=self.special_in_content, tools=tool_list
        )
        return encode_chat(self.tokenizer, segments, limits.max_input_len, max_token_bytes=bound)


def _row(request: Any, name: str) -> Any:
    """The request's row of input `name` (None when not sent), one prompt per request."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else one_request(tensor.as_numpy(), FIELDS[name])


def _flag(row: Any, *, default: bool) -> bool:
    return bool(row.reshape(-1)[0]) if row is not None else default


def _number(row: Any, default: int) -> Any:
    number = int(row.reshape(-1)[0]) if row is not None else default
    return np.array([[number]], dtype=np.int32)
