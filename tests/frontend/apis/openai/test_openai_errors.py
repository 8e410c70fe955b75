"""The frontend's errors in OpenAI's body shape."""

from __future__ import annotations

import pytest

from frontend import errors as e
from frontend.apis.openai.errors import openai_error_body


@pytest.mark.parametrize(
    ("error", "body"),
    [
        (e.UnsupportedParameterError("best_of", "best_of 2 is not supported: only 1"),
         {"message": "best_of 2 is not supported: only 1", "type": "invalid_request_error",
          "param": "best_of", "code": "unsupported_parameter"}),
        (e.OutOfRangeError("temperature", 3.0, "0..2"),
         {"message": "temperature 3.0 is outside 0..2", "type": "invalid_request_error",
          "param": "temperature", "code": "invalid_request"}),
        (e.UnknownApiKeyError(),
         {"message": "the API key is not valid", "type": "authentication_error", "param": None,
          "code": "authentication_failed"}),
        (e.RateLimitedError("requests", "slow down", {}),
         {"message": "slow down", "type": "rate_limit_error", "param": None,
          "code": "rate_limited"}),
        (e.TritonQueueFullError(),
         {"message": "the model server's queue is full, retry later", "type": "server_error",
          "param": None, "code": "model_overloaded"}),
        (e.TritonInternalError(),
         {"message": "the model server failed to process the request", "type": "server_error",
          "param": None, "code": "model_error"}),
    ],
)  # fmt: skip
def test_openai_shape_keeps_message_and_names_param(
    error: e.FrontendError, body: dict[str, object]
) -> None:
    assert openai_error_body(error, "r") == {"error": body}
