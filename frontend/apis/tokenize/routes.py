"""POST /tokenize and POST /detokenize in vLLM's shapes, answered by Triton.

Tokenizing goes through the shared pipeline (keys, validation counted against the rate
limit, one request per minute's budget, metrics by route) to Triton's preprocessing
model (frontend.tokenization): a count is the prompt_tokens of a generation of the same
prompt, or of a chat completion of the same messages. Errors take OpenAI's body shape,
as vLLM's do.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from frontend.apis.api import Api
from frontend.apis.openai.errors import openai_error_body, openai_error_docs
from frontend.apis.tokenize.mapping import tokenize_request
from frontend.apis.tokenize.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
    TokenizeResponse,
)
from frontend.deps import CallerDep, ContextDep, StateDep
from frontend.openapi import constrain
from frontend.settings import FrontendSettings
from frontend.tokenization import (
    MAX_TOKEN_ID,
    charge_request,
    check_token_ids,
    checked,
    detokenize,
    tokenize,
)
from frontend.validation import FieldRules, check_model

TOKENIZE_PATH = "/tokenize"
DETOKENIZE_PATH = "/detokenize"
tokenize_router = APIRouter(tags=["tokenize"])
detokenize_router = APIRouter(tags=["tokenize"])

_ERRORS = openai_error_docs(
    {
        400: "The body is not JSON, asks for what this server does not implement "
        "(`param` names it), or holds a token id outside the model's vocabulary (code "
        "invalid_token_id, `param` e.g. tokens[3]).",
        422: "A value breaks a rule of generation's: the message names the field, "
        "the limit and the value (also a prompt with more tokens than the model accepts).",
        429: "Requests per minute exceeded; see Retry-After.",
        503: "The model server unavailable or its queue full; see Retry-After.",
    }
)


@tokenize_router.post(
    TOKENIZE_PATH,
    response_model=TokenizeResponse,
    responses=_ERRORS,
    summary="Token ids of a prompt, or of messages rendered as chat completions render them",
)
async def tokenize_route(
    body: TokenizeCompletionRequest | TokenizeChatRequest,
    state: StateDep,
    caller: CallerDep,
    context: ContextDep,
) -> JSONResponse:
    settings = state.settings
    validated = await state.service.validated(
        caller, partial(tokenize_request, body, state.validator, settings.served_model_name)
    )
    if settings.log_prompts:
        context.prompt = validated.input_text
    headers = await charge_request(state.limiter, state.metrics, caller)
    tokenized = await tokenize(
        state.pool,
        validated,
        context.request_id,
        # A chat's template writes its special tokens (the field, refused unless false there,
        # is vLLM's "on top of the template's").
        add_special_tokens=(
            body.add_special_tokens if isinstance(body, TokenizeCompletionRequest) else True
        ),
        token_strings=bool(body.return_token_strs),
    )
    answer = TokenizeResponse(
        count=tokenized.count,
        max_model_len=tokenized.max_input_len,
        tokens=list(tokenized.ids),
        token_strs=None if tokenized.token_strings is None else list(tokenized.token_strings),
    )
    return JSONResponse(answer.model_dump(mode="json"), headers=headers)


def _check_detokenize(body: DetokenizeRequest, served_model_name: str) -> None:
    if body.model is not None:
        check_model(body.model, served_model_name)
    check_token_ids(body.tokens)


@detokenize_router.post(
    DETOKENIZE_PATH,
    response_model=DetokenizeResponse,
    responses=_ERRORS,
    summary="The text of token ids (control tokens written as their texts)",
)
async def detokenize_route(
    body: DetokenizeRequest,
    state: StateDep,
    caller: CallerDep,
    context: ContextDep,
) -> JSONResponse:
    await checked(
        state.limiter,
        state.metrics,
        caller,
        partial(_check_detokenize, body, state.settings.served_model_name),
    )
    headers = await charge_request(state.limiter, state.metrics, caller)
    text = await detokenize(state.pool, body.tokens, context.request_id)
    return JSONResponse(DetokenizeResponse(prompt=text).model_dump(mode="json"), headers=headers)


def describe_tokenize(
    schemas: dict[str, Any], rules: FieldRules, settings: FrontendSettings
) -> None:
    """The served model's id, and the token ids' range."""
    served = {"string": {"enum": [settings.served_model_name]}}
    for name in ("TokenizeCompletionRequest", "TokenizeChatRequest", "DetokenizeRequest"):
        constrain(schemas[name]["properties"]["model"], served)
    tokens = schemas["DetokenizeRequest"]["properties"]["tokens"]
    tokens["items"] = {**tokens["items"], "minimum": 0, "maximum": MAX_TOKEN_ID}


APIS = (
    Api(
        tokenize_router,
        error_prefix=TOKENIZE_PATH,
        error_body=openai_error_body,
        ruled_schemas=("TokenizeCompletionRequest", "TokenizeChatRequest"),
        document=describe_tokenize,
    ),
    # Its own entry only for its error shape (one prefix per Api).
    Api(detokenize_router, error_prefix=DETOKENIZE_PATH, error_body=openai_error_body),
)
