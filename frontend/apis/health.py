"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from frontend.apis.api import Api
from frontend.deps import StateDep

router = APIRouter(tags=["operations"])


class LiveResponse(BaseModel):
    status: Literal["live"] = "live"


class ReadyResponse(BaseModel):
    status: Literal["ready", "not_ready"]
    model: str
    endpoints: dict[str, bool] = Field(description="Triton gRPC endpoint -> model ready")


@router.get("/health/live", response_model=LiveResponse, summary="The process is up")
async def live() -> LiveResponse:
    return LiveResponse()


@router.get(
    "/health/ready",
    response_model=ReadyResponse,
    responses={
        503: {
            "model": ReadyResponse,
            "description": "No Triton endpoint has the model ready and its engine healthy.",
        }
    },
    summary="Triton is reachable, the model ready and its engine able to generate",
)
async def ready(state: StateDep) -> JSONResponse:
    # A fresh probe (bounded by the probe timeout, shared by the checks that come while it
    # runs), which also updates the rotation.
    endpoints = await state.pool.probe()
    is_ready = any(endpoints.values())
    body = ReadyResponse(
        status="ready" if is_ready else "not_ready",
        model=state.settings.model_name,
        endpoints=endpoints,
    )
    return JSONResponse(body.model_dump(), status_code=200 if is_ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus exposition"}},
    summary="Prometheus metrics of this frontend",
)
async def metrics(state: StateDep) -> Response:
    body, content_type = state.metrics.render()
    return Response(body, media_type=content_type)


API = Api(router)
