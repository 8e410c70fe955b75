"""Which API's error shape answers a path."""

from __future__ import annotations

from frontend.errors import FrontendError, error_body
from frontend.handlers import ErrorShapes


def _shape_a(error: FrontendError, request_id: str) -> dict[str, object]:
    return {"a": error.message}


def _shape_b(error: FrontendError, request_id: str) -> dict[str, object]:
    return {"b": error.message}


def test_the_longest_matching_prefix_gives_the_shape() -> None:
    shapes = ErrorShapes({"/v1": _shape_a, "/v1/messages": _shape_b})
    assert shapes.body_for("/v1/messages") is _shape_b
    assert shapes.body_for("/v1/messages/count_tokens") is _shape_b
    assert shapes.body_for("/v1/chat/completions") is _shape_a
    assert shapes.body_for("/v1") is _shape_a


def test_a_path_of_no_api_gets_the_frontends_own_shape() -> None:
    shapes = ErrorShapes({"/v1": _shape_a})
    assert shapes.body_for("/v10/models") is error_body
    assert shapes.body_for("/generate") is error_body
    assert ErrorShapes().body_for("/v1/models") is error_body
