"""FastAPI dependencies as Annotated aliases: the app's parts, the request context, the caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from frontend.auth import ANONYMOUS, ApiKeyStore
from frontend.metrics import FrontendMetrics
from frontend.rate_limit import Clock, RateLimiter
from frontend.request_context import RequestContext, request_context
from frontend.service import Caller, GenerationService
from frontend.settings import FrontendSettings
from frontend.triton_client import TritonPool
from frontend.validation import RequestValidator


@dataclass(frozen=True, slots=True)
class FrontendState:
    """What the lifespan builds, kept on `app.state.frontend`."""

    settings: FrontendSettings
    metrics: FrontendMetrics
    validator: RequestValidator
    keys: ApiKeyStore | None
    service: GenerationService
    pool: TritonPool
    limiter: RateLimiter
    clock: Clock  # wall time, for the `created` fields of OpenAI responses
    started_at: int  # when serving began (Unix seconds): the served model's `created`


# Dependencies are coroutines: FastAPI would run plain functions in a thread pool.


async def _state(request: Request) -> FrontendState:
    state = request.app.state.frontend
    assert isinstance(state, FrontendState)
    return state


StateDep = Annotated[FrontendState, Depends(_state)]


async def _context(request: Request) -> RequestContext:
    return request_context(request)


ContextDep = Annotated[RequestContext, Depends(_context)]

# Documents the Bearer scheme in OpenAPI; the key check itself is ApiKeyStore's.
_bearer = HTTPBearer(auto_error=False, description="API key, when the server requires keys")
# The same key as Anthropic's clients send it; Authorization wins when both come.
_x_api_key = APIKeyHeader(
    name="x-api-key", auto_error=False, description="API key (Anthropic's header), as Bearer"
)


async def _caller(
    request: Request,
    state: StateDep,
    context: ContextDep,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    _api_key: Annotated[str | None, Security(_x_api_key)],
) -> Caller:
    if state.keys is None:
        key_id = ANONYMOUS
        host = request.client.host if request.client else "unknown"
        caller = Caller(key_id=key_id, rate_key=f"ip:{host}")
    else:
        key_id = state.keys.authenticate(
            request.headers.get("authorization"), request.headers.get("x-api-key")
        )
        caller = Caller(key_id=key_id, rate_key=f"key:{key_id}")
    context.key_id = key_id
    return caller


CallerDep = Annotated[Caller, Depends(_caller)]
