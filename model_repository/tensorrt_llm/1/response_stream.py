"""A request's responses, sent by a thread of their own and coalesced while one is sent.

The Python backend's `send()` returns only once Triton has taken the response (the stub
waits for the server's thread to pass it on: python_backend r24.10, ResponseSender::Send
and ResponseSendDecoupled), so the model's loop never sends: it hands each sequence's
tokens to its request's `ResponseStream`, and one `SendQueue` thread sends them. A
request has at most one send at a time; tokens that come meanwhile wait and go out
together in its next response. With the sender idle a token goes out at once; the busier
the pipeline, the more tokens a response carries, so no more responses are sent than it
takes. Optionally, `stream_interval` tokens at least per streamed response (vLLM's and
SGLang's `--stream-interval`), the first response and the last excepted.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Collection
from typing import Any, Protocol

import numpy.typing as npt
from engine_request import SequenceOutput

from llm_stack.engine.base import TokenDelta
from llm_stack.model_errors import ModelError

log = logging.getLogger(__name__)

Arrays = dict[str, npt.NDArray[Any]]


class Sender(Protocol):
    """A Triton response sender (`request.get_response_sender()`)."""

    def send(self, response: Any = None, flags: int = 0) -> None: ...


class SendQueue:
    """One thread that sends the responses of every request: a request at a time, in the
    order they became due, each request back at the end of the line after its turn.
    Requests whose first response is due go first (their time to first token would
    otherwise wait for a turn of every running request)."""

    def __init__(self, name: str = "tensorrt_llm-responses") -> None:
        self._ready = threading.Condition(threading.Lock())
        self._first: deque[ResponseStream] = deque()
        self._rest: deque[ResponseStream] = deque()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, stream: ResponseStream, first: bool = False) -> None:
        with self._ready:
            (self._first if first else self._rest).append(stream)
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not (self._first or self._rest or self._closing):
                    self._ready.wait()
                if self._first:
                    stream = self._first.popleft()
                elif self._rest:
                    stream = self._rest.popleft()
                else:
                    return
            stream.flush()

    def close(self, timeout: float = 10.0) -> None:
        """Send what is due, then end the thread."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join(timeout)


class ResponseStream:
    """The responses of one request of `n` sequences (each response says which, in
    sequence_index); its last is flagged final.

    `add` and `fail` come from the model's loop, `flush` from the SendQueue's thread.
    `build` turns output tensors into a response, `build_error` an error into one;
    `final_flag` is Triton's TRITONSERVER_RESPONSE_COMPLETE_FINAL.
    """

    def __init__(
        self,
        sender: Sender,
        sends: SendQueue,
        *,
        n: int,
        streaming: bool,
        logprobs: bool,
        stream_interval: int,
        build: Callable[[Arrays], Any],
        build_error: Callable[[ModelError], Any],
        final_flag: int,
        wanted: Collection[str] | None = None,
    ) -> None:
        self._sender = sender
        self._sends = sends
        self._streaming = streaming
        self._logprobs = logprobs
        self._interval = stream_interval
        self._build = build
        self._build_error = build_error
        self._final = final_flag
        self._wanted = None if wanted is None else frozenset(wanted)
        self._lock = threading.Lock()
        # Held while responses are taken and sent, and while Triton is asked whether the
        # request is cancelled: never after the final response (see `cancelled`).
        self._sending = threading.Lock()
        self._outputs = [SequenceOutput() for _ in range(n)]
        self._running = n
        self._error: ModelError | None = None
        self._queued = False  # in the SendQueue's line, or being sent
        self._started = False  # a response was taken
        self._ended = False  # the final response was taken
        self.broken: BaseException | None = None  # a send failed: nothing more goes out

    @property
    def running(self) -> int:
        """Sequences whose last delta has not come yet."""
        return self._running

    def cancelled(self, request: Any) -> bool:
        """Whether Triton flags `request` cancelled (its `is_cancelled()`); False once its
        final response was taken: Triton may have freed the request then, and asking
        about it would read freed memory (python_backend asks its response factory,
        which the final response deletes)."""
        with self._sending:
            if self._ended:
                return False
            return bool(request.is_cancelled())

    def add(self, delta: TokenDelta) -> None:
        """Take one engine delta (EngineError, keeping nothing, if its logprobs do not
        match its tokens)."""
        with self._lock:
            if self._ended or self._error is not None:
                return
            self._outputs[delta.index].add(delta, self._logprobs)
            self._running -= delta.finished
            wake = self._wake()
            first = not self._started
        if wake:
            self._sends.put(self, first=first)

    def fail(self, error: ModelError) -> None:
        """End the request with `error`, after the tokens already come (a no-op once the
        final response was taken)."""
        with self._lock:
            if self._ended or self._error is not None:
                return
            self._error = error
            wake = self._wake()
            first = not self._started
        if wake:
            self._sends.put(self, first=first)

    def _wake(self) -> bool:
        # Under the lock: whether to join the line (not when there already).
        if self._queued or not self._due():
            return False
        self._queued = True
        return True

    def _due(self) -> bool:
        return not self._ended and (
            self._error is not None
            or any(o.due(self._streaming, self._interval) for o in self._outputs)
        )

    def _take(self) -> list[tuple[Arrays | ModelError, int]]:
        """Under the lock: the responses due now, the last flagged final when it ends the
        request."""
        items: list[tuple[Arrays | ModelError, int]] = []
        self._started = True
        if self._error is not None:
            # Whatever came before the error goes out first; then the error ends it.
            for output in self._outputs:
                if output.due(self._streaming, interval=1):
                    items.append((output.take(self._logprobs), 0))
            items.append((self._error, self._final))
            self._ended = True
            return items
        for output in self._outputs:
            if output.due(self._streaming, self._interval):
                items.append((output.take(self._logprobs), 0))
        if self._running == 0 and items:
            items[-1] = (items[-1][0], self._final)
            self._ended = True
        return items

    def flush(self) -> None:
        """Send what is due (the SendQueue's thread; never raises)."""
        with self._sending:
            with self._lock:
                items = self._take()
            try:
                for item, flags in items:
                    if isinstance(item, ModelError):
                        response = self._build_error(item)
                    else:
                        if self._wanted is not None:
                            item = {k: v for k, v in item.items() if k in self._wanted}
                        response = self._build(item)
                    self._sender.send(response, flags=flags)
            except Exception as exc:  # the client is gone, or Triton let go of the request
                log.debug("could not send a response", exc_info=True)
                with self._lock:
                    self.broken = exc
                    self._ended = True
                    self._queued = False
                return
        with self._lock:
            again = self._due()
            self._queued = again
        if again:
            self._sends.put(self)
