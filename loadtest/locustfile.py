"""Locust users for the frontend: /generate (plain and streamed) and streamed chat completions.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 [--api-key KEY]
           [--max-tokens uniform:32:128] [--generate-weight 1 --stream-weight 2 --chat-weight 1]

Every body is checked (text, usage), not only the status. Besides each request's own
entry (end-to-end time, the stream read to its end), Locust's statistics get:

- `TTFT <name>`: time to the first token of a streamed request, ms;
- `ITL <name>`: a streamed request's mean gap between tokens after the first, ms;
- `TOKENS <name>`: output tokens of a request (the "response time" columns hold tokens);
- `REJECTED <status> <name>`: 429 and 503 answers (load shed), counted apart from failures.

With `--records FILE` every finished request is also appended to FILE as one JSON line
(loadtest.records), from which the runner computes exact percentiles and goodput.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from locust import FastHttpUser, events, task
from locust.contrib.fasthttp import FAILURE_EXCEPTIONS

from loadtest.load_options import API_KEY_ENV, LoadOptions, add_load_arguments
from loadtest.prompt_set import PromptSet
from loadtest.records import RecordWriter, RequestRecord
from loadtest.streams import (
    BodyError,
    ChatStream,
    Completion,
    GenerateStream,
    SseStream,
    error_type,
    generate_response,
)

REJECTED_STATUSES = frozenset({429, 503})
RequestKind = Literal["generate", "generate_stream", "chat_stream"]
_KINDS: tuple[RequestKind, ...] = ("generate", "generate_stream", "chat_stream")


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]
def _add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--api-key",
        env_var=API_KEY_ENV,
        default="",
        is_secret=True,
        help=f"API key sent as `Authorization: Bearer` (or ${API_KEY_ENV})",
    )
    parser.add_argument(
        "--records",
        env_var="LLM_LOADTEST_RECORDS",
        default="",
        help="append one JSON line per finished request to this file",
    )
    add_load_arguments(parser, env=True)


def _sse_lines(response: Any) -> Iterator[tuple[float, str]]:
    """The body's lines, each with the time it arrived."""
    # The wrapped geventhttpclient response hands out a line as soon as it is in; the
    # public read()/iter_content() wait for a whole block, which would blur TTFT and ITL.
    raw = response._response
    while line := raw.readline(b"\n"):
        yield time.perf_counter(), line.decode("utf-8", errors="replace").rstrip("\n")


class LlmUser(FastHttpUser):
    """A client that sends one request after another (closed loop, optional think time)."""

    # Without in-flight batching, 16 users queue for tens of seconds; that is a finding.
    network_timeout = 600.0
    connection_timeout = 10.0

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        parsed = environment.parsed_options
        self.options = LoadOptions.from_namespace(parsed) if parsed else LoadOptions()
        self.prompts = PromptSet.load(self.options.prompts)
        self.rng = random.Random()
        self.user_id = uuid.uuid4().hex[:12]
        api_key = getattr(parsed, "api_key", "") if parsed else ""
        self.auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        records = getattr(parsed, "records", "") if parsed else ""
        self.records = RecordWriter(Path(records)) if records else None
        self.chat_model = self.options.chat_model
        self.weights = (
            self.options.generate_weight,
            self.options.stream_weight,
            self.options.chat_weight,
        )

    def wait_time(self) -> float:
        return self.options.think_time_s

    def on_start(self) -> None:
        if self.options.chat_weight and not self.chat_model:
            self.chat_model = self._served_model()

    def _served_model(self) -> str:
        """The first model the server lists, as an OpenAI client would pick it."""
        with self.client.get(
            "/v1/models", name="/v1/models", headers=self.auth, catch_response=True
        ) as response:
            try:
                models = response.json()["data"]
                return str(models[0]["id"])
            except (ValueError, KeyError, IndexError, TypeError):
                response.failure(f"HTTP {response.status_code}: no model in GET /v1/models")
                return ""

    def on_stop(self) -> None:
        if self.records is not None:
            self.records.close()
            self.records = None

    @task
    def one_request(self) -> None:
        kind = self.rng.choices(_KINDS, weights=self.weights)[0]
        prompt = self.prompts.pick(self.rng)
        max_tokens = self.options.max_tokens.sample(self.rng)
        if kind == "chat_stream":
            body: dict[str, Any] = {
                "model": self.chat_model,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens,
                "temperature": self.options.temperature,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            self._call("/v1/chat/completions", "/v1/chat/completions [stream]", body, ChatStream())
            return
        body = {
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": self.options.temperature,
            "stream": kind == "generate_stream",
        }
        if kind == "generate_stream":
            self._call("/generate", "/generate [stream]", body, GenerateStream())
        else:
            self._call("/generate", "/generate", body, None)

    def _call(self, path: str, name: str, body: dict[str, Any], stream: SseStream | None) -> None:
        """Send one request, check its body, report it to Locust and the records."""
        headers = dict(self.auth)
        if stream is not None:
            headers["Accept"] = "text/event-stream"
            headers["Accept-Encoding"] = "identity"
        started = time.time()
        t0 = time.perf_counter()
        with self.client.post(
            path,
            json=body,
            name=name,
            headers=headers,
            stream=stream is not None,
            catch_response=True,
        ) as response:
            status = int(response.status_code)
            if status in REJECTED_STATUSES:
                # Load shedding is the server working as designed: count it, but neither
                # as a failure nor as a latency sample of the endpoint.
                response.request_meta["request_type"] = "REJECTED"
                response.request_meta["name"] = f"{status} {name}"
                response.success()
                self._record(name, stream, started, t0, "rejected", status)
                return
            completion: Completion | None = None
            received = 0
            elapsed = 0.0
            try:
                if status == 0:
                    raise BodyError(f"no response: {type(response.error).__name__}")
                if status != 200:
                    raise BodyError(f"HTTP {status} {error_type(response.content or b'')}".strip())
                if stream is None:
                    content = response.content or b""
                    received = len(content)
                    completion = generate_response(content)
                else:
                    for at, line in _sse_lines(response):
                        received += len(line) + 1
                        stream.feed(line, at)
                    completion = stream.result()
            except BodyError as exc:
                response.failure(str(exc))
                self._record(name, stream, started, t0, "failed", status, error=str(exc))
            except FAILURE_EXCEPTIONS as exc:
                message = f"broken response: {type(exc).__name__}"
                response.failure(message)
                self._record(name, stream, started, t0, "failed", status, error=message)
            finally:
                elapsed = time.perf_counter() - t0
                response.request_meta["response_time"] = elapsed * 1000
                response.request_meta["response_length"] = received
        if completion is not None:
            self._report(name, stream is not None, started, t0, elapsed, completion)

    def _report(
        self,
        name: str,
        streamed: bool,
        started: float,
        t0: float,
        e2e: float,
        completion: Completion,
    ) -> None:
        ttft = itl = None
        if streamed and completion.first_token_at is not None:
            ttft = completion.first_token_at - t0
            self._fire("TTFT", name, ttft * 1000)
            if completion.completion_tokens >= 2 and completion.last_token_at is not None:
                itl = (completion.last_token_at - completion.first_token_at) / (
                    completion.completion_tokens - 1
                )
                self._fire("ITL", name, itl * 1000)
        self._fire("TOKENS", name, completion.completion_tokens)
        if self.records is not None:
            self.records.write(
                RequestRecord(
                    endpoint=name,
                    stream=streamed,
                    started=started,
                    e2e_s=e2e,
                    outcome="ok",
                    status=200,
                    prompt_tokens=completion.prompt_tokens,
                    completion_tokens=completion.completion_tokens,
                    ttft_s=ttft,
                    itl_s=itl,
                    user=self.user_id,
                )
            )

    def _fire(self, request_type: str, name: str, value: float) -> None:
        self.environment.events.request.fire(
            request_type=request_type,
            name=name,
            response_time=value,
            response_length=0,
            exception=None,
            context={},
        )

    def _record(
        self,
        name: str,
        stream: SseStream | None,
        started: float,
        t0: float,
        outcome: Literal["rejected", "failed"],
        status: int,
        error: str | None = None,
    ) -> None:
        if self.records is not None:
            self.records.write(
                RequestRecord(
                    endpoint=name,
                    stream=stream is not None,
                    started=started,
                    e2e_s=time.perf_counter() - t0,
                    outcome=outcome,
                    status=status,
                    error=error,
                    user=self.user_id,
                )
            )
