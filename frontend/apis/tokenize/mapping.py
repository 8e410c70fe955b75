"""/tokenize bodies → the one validator, hence the ValidatedRequest a generation would get.

A prompt is validated as /v1/completions validates it, messages (and tools) as
/v1/chat/completions does, through that API's own mapping: what is tokenized is what a
generation of the same input sends Triton. vLLM's fields this server does not implement
are refused here by name (UnsupportedParameterError, 400), never ignored.
"""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from frontend.apis.openai.mapping import chat_request
from frontend.apis.openai.protocol import ChatCompletionRequest
from frontend.apis.tokenize.protocol import TokenizeChatRequest, TokenizeCompletionRequest
from frontend.errors import UnsupportedParameterError
from frontend.validation import (
    RequestedGeneration,
    RequestValidator,
    ValidatedRequest,
    check_model,
    check_text,
)

# A generation of one token: the prompt's rules are those of any generation.
_ONE_TOKEN = RequestedGeneration(max_tokens=1)


def tokenize_request(
    body: TokenizeCompletionRequest | TokenizeChatRequest,
    validator: RequestValidator,
    served_model_name: str,
) -> ValidatedRequest:
    """The validated request whose prompt /tokenize counts."""
    check_text(body)
    if body.model is not None:
        check_model(body.model, served_model_name)
    if isinstance(body, TokenizeCompletionRequest):
        return validator.completion(body.prompt, _ONE_TOKEN)
    _refuse_chat_options(body)
    try:
        chat = ChatCompletionRequest.model_validate(
            {"model": served_model_name, "messages": body.messages, "tools": body.tools}
        )
    except ValidationError as invalid:
        # Refused as the same body on /v1/chat/completions would be (422 naming the field).
        raise RequestValidationError(invalid.errors()) from None
    return chat_request(chat, validator)


def _refuse_chat_options(body: TokenizeChatRequest) -> None:
    if not body.add_generation_prompt:
        raise UnsupportedParameterError(
            "add_generation_prompt",
            "add_generation_prompt false is not supported: a chat is rendered as for "
            "generation, with the assistant's turn opened",
        )
    if body.continue_final_message:
        raise UnsupportedParameterError(
            "continue_final_message", "continue_final_message is not supported"
        )
    if body.add_special_tokens:
        raise UnsupportedParameterError(
            "add_special_tokens",
            "add_special_tokens true is not supported with messages: the chat template "
            "writes the model's special tokens",
        )
    for name, value in (
        ("chat_template", body.chat_template),
        ("chat_template_kwargs", body.chat_template_kwargs),
        ("media_io_kwargs", body.media_io_kwargs),
        ("mm_processor_kwargs", body.mm_processor_kwargs),
    ):
        if value is not None:
            raise UnsupportedParameterError(name, f"{name} is not supported")
