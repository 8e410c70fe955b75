"""vLLM's /tokenize and /detokenize wire format: pydantic models, shapes only.

The fields are vLLM's (vllm/entrypoints/serve/tokenize/protocol.py). Those this server
does not implement are declared, so that frontend.apis.tokenize.mapping refuses them by
name (400) instead of ignoring them; fields vLLM does not have are refused (422).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from frontend.apis.openai.protocol import ChatMessageIn


class _TokenizeBase(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(default=None, description="The served model's id, if given.")
    return_token_strs: bool | None = Field(
        default=False,
        description="Also return each token's string in the vocabulary (token_strs).",
    )


class TokenizeCompletionRequest(_TokenizeBase):
    """POST /tokenize body for a prompt."""

    prompt: str = Field(description="The text, tokenized as a completion's prompt is.")
    add_special_tokens: bool = Field(
        default=True, description="Add the tokenizer's special tokens (the BOS), as completions do."
    )


class TokenizeChatRequest(_TokenizeBase):
    """POST /tokenize body for a chat: rendered as chat completions render it."""

    messages: list[ChatMessageIn] = Field(
        description="The conversation, as chat completions take it."
    )
    tools: list[Any] | None = Field(
        default=None, description="Function tools, as chat completions take them."
    )
    add_generation_prompt: bool = Field(
        default=True,
        description="Only true: the assistant's turn is opened, as for generation.",
    )
    continue_final_message: bool = Field(default=False, description="Only false.")
    add_special_tokens: bool = Field(
        default=False, description="Only false: the chat template writes the special tokens."
    )
    chat_template: str | None = Field(
        default=None, description="Not supported: the model's template renders every chat."
    )
    chat_template_kwargs: dict[str, Any] | None = Field(default=None, description="Not supported.")
    media_io_kwargs: dict[str, dict[str, Any]] | None = Field(
        default=None, description="Not supported."
    )
    mm_processor_kwargs: dict[str, Any] | None = Field(default=None, description="Not supported.")


class TokenizeResponse(BaseModel):
    count: int = Field(description="How many tokens: a generation's prompt_tokens.")
    max_model_len: int = Field(description="The most prompt tokens the model accepts.")
    tokens: list[int] = Field(description="The token ids, as the engine gets them.")
    token_strs: list[str] | None = Field(
        default=None, description="With return_token_strs: each id's vocabulary string."
    )


class DetokenizeRequest(BaseModel):
    """POST /detokenize body."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(default=None, description="The served model's id, if given.")
    tokens: list[int] = Field(
        description="Token ids of the model's vocabulary (an id outside it: 400 naming it)."
    )


class DetokenizeResponse(BaseModel):
    prompt: str = Field(
        description="The text of the tokens, control tokens written as their texts "
        '("<bos>"): tokenized with add_special_tokens false, it gives the tokens back.'
    )
