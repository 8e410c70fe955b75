"""create_app: the FastAPI application, its lifespan, middleware, handlers and APIs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import Scope

from frontend.admission import ConcurrencyGate
from frontend.apis import health
from frontend.apis.anthropic import routes as anthropic
from frontend.apis.api import Api
from frontend.apis.generate import routes as generate
from frontend.apis.openai import routes as openai
from frontend.apis.responses import routes as responses
from frontend.apis.tokenize import routes as tokenize
from frontend.auth import ApiKeyStore
from frontend.deps import FrontendState
from frontend.handlers import ErrorShapes, install_error_handlers
from frontend.metrics import FrontendMetrics
from frontend.middleware import FrontendMiddleware
from frontend.openapi import install_openapi
from frontend.rate_limit import Clock, RateLimiter, make_storage
from frontend.routing import PrefixRouting
from frontend.service import GenerationService
from frontend.settings import FrontendSettings
from frontend.triton_client import PoolConfig, TritonPool
from frontend.validation import RequestValidator, ValidationLimits

# Usage accounting still pending at shutdown gets this long to finish.
_DRAIN_S = 5.0
# What a browser may send cross-origin: the key either way (Authorization, or x-api-key as
# Anthropic's clients send it), and the headers Anthropic's clients send with each request
# (its SDK adds anthropic-dangerous-direct-browser-access in a browser).
CORS_ALLOWED_HEADERS = [
    "Authorization",
    "Content-Type",
    "X-Request-ID",
    "x-api-key",
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
]
# The APIs the app serves: a new one is a package under frontend.apis and a line here.
APIS: tuple[Api, ...] = (
    generate.API,
    openai.API,
    responses.API,
    anthropic.API,
    *tokenize.APIS,
    health.API,
)


def create_app(settings: FrontendSettings, *, clock: Clock = time.time) -> FastAPI:
    """The frontend app for `settings`; `clock` (wall time) feeds rate-limit headers."""
    metrics = FrontendMetrics(per_key=settings.metrics_per_key)
    # Key files are read now so a bad one fails at start-up, not on the first request.
    keys = (
        ApiKeyStore.from_settings(settings.api_keys, settings.api_keys_file)
        if settings.auth_enabled
        else None
    )
    limits = ValidationLimits(
        max_prompt_chars=settings.max_prompt_chars,
        max_tokens=settings.max_tokens_limit,
        max_stop_sequences=settings.max_stop_sequences,
        max_stop_chars=settings.max_stop_chars,
        max_top_k=settings.max_top_k,
        max_n=settings.max_n,
        max_messages=settings.max_messages,
        tool_call_parser=settings.tool_call_parser,
    )
    validator = RequestValidator(limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = TritonPool(
            settings.triton_urls,
            PoolConfig(
                model_name=settings.model_name,
                timeout_s=settings.request_timeout_s,
                probe_interval_s=settings.health_probe_interval_s,
                probe_timeout_s=settings.health_probe_timeout_s,
                down_probe_interval_s=settings.health_probe_down_interval_s,
                reconnect_backoff_max_s=settings.reconnect_backoff_max_s,
                keepalive_s=settings.grpc_keepalive_s,
                abort_model=settings.abort_model or None,
                routing=PrefixRouting(
                    settings.prefix_routing_chars, settings.prefix_routing_load_factor
                ),
            ),
            metrics,
        )
        await pool.start()
        limiter = RateLimiter(
            make_storage(settings.rate_limit_storage_url),
            rpm=settings.rate_limit_rpm,
            tpm=settings.rate_limit_tpm,
            clock=clock,
        )
        gate = ConcurrencyGate(
            # Each worker holds its share: together they hold the bound (settings.workers).
            settings.worker_max_concurrent_requests,
            queue_limit=settings.worker_max_queued_requests,
            queue_timeout_s=settings.queue_timeout_s,
            retry_after_s=settings.overload_retry_after_s,
            observer=metrics.show_generations,
        )
        service = GenerationService(pool, gate, limiter, metrics)
        app.state.frontend = FrontendState(
            settings, metrics, validator, keys, service, pool, limiter, clock, int(clock())
        )
        try:
            yield
        finally:
            await service.drain(_DRAIN_S)
            await limiter.close()
            await pool.close()

    app = FastAPI(
        title="LLM frontend",
        summary="Validated, rate-limited, monitored text generation in front of Triton",
        version="1.0",
        lifespan=lifespan,
    )
    error_shapes = ErrorShapes(
        {api.error_prefix: api.error_body for api in APIS if api.error_prefix and api.error_body}
    )
    install_error_handlers(app, metrics, error_shapes)
    for api in APIS:
        app.include_router(api.router)
    # The document states the limits of these settings, as the validator applies them.
    install_openapi(app, settings, limits, APIS)

    # The routes that take a body have no path parameters: their paths name them exactly.
    known_paths = {
        path
        for api in APIS
        for route in api.router.routes
        if isinstance(path := getattr(route, "path", None), str)
    }

    def route_name(scope: Scope) -> str:
        """The route template for metrics; a bounded set, whatever paths clients send."""
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str):
            return path
        # Rejected before routing (413): the route the path would have reached.
        return scope["path"] if scope["path"] in known_paths else "unmatched"

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=CORS_ALLOWED_HEADERS,
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
            ],
        )
    # Added last, so outermost: the request id and the access log cover everything.
    app.add_middleware(
        FrontendMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        route_name=route_name,
        body_timeout_s=settings.body_timeout_s,
        error_shapes=error_shapes,
    )
    return app
