"""The tensorrt_llm model's responses: sent from their own thread, coalesced while a send
is in flight, none lost, duplicated or reordered. No timing: senders block on events."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from response_stream import ResponseStream, SendQueue

from llm_stack.engine.base import EngineError, FinishReason, TokenDelta, TokenLogprob
from llm_stack.model_errors import ErrorCode, ModelError
from llm_stack.tokenizer import DETOKENIZE_WINDOW

FINAL = 1
WAIT_S = 30.0  # a guard against a hang, never a measurement


class Sender:
    """Records (response, flags), and its name in `log`, shared by several senders;
    `gate` (when set up) holds each send until released."""

    def __init__(self, name: str = "", log: list[str] | None = None) -> None:
        self.name = name
        self.log = [] if log is None else log
        self.sent: list[tuple[Any, int]] = []
        self.changed = threading.Condition()
        self.gate: threading.Semaphore | None = None
        self.entered = threading.Semaphore(0)
        self.fail_after: int | None = None

    def send(self, response: Any = None, flags: int = 0) -> None:
        self.entered.release()
        if self.gate is not None:
            assert self.gate.acquire(timeout=WAIT_S)
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            raise RuntimeError("Unable to send response. Response sender has been closed.")
        with self.changed:
            self.sent.append((response, flags))
            self.log.append(self.name)
            self.changed.notify_all()

    def wait_for(self, count: int) -> list[tuple[Any, int]]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.sent) >= count, timeout=WAIT_S)
            return list(self.sent)

    def wait_final(self) -> list[tuple[Any, int]]:
        with self.changed:
            assert self.changed.wait_for(
                lambda: bool(self.sent) and self.sent[-1][1] == FINAL, timeout=WAIT_S
            )
            return list(self.sent)


@pytest.fixture
def sends() -> Iterator[SendQueue]:
    queue = SendQueue("test-responses")
    yield queue
    queue.close()


def make(
    sender: Sender,
    sends: SendQueue,
    n: int = 1,
    *,
    streaming: bool = True,
    logprobs: bool = False,
    interval: int = 1,
    wanted: list[str] | None = None,
) -> ResponseStream:
    return ResponseStream(
        sender,
        sends,
        n=n,
        streaming=streaming,
        logprobs=logprobs,
        stream_interval=interval,
        build=lambda arrays: arrays,
        build_error=lambda error: error,
        final_flag=FINAL,
        wanted=wanted,
    )


def token(t: int, count: int, index: int = 0, finish: FinishReason | None = None) -> TokenDelta:
    """One token `t`, the `count`th of its sequence."""
    return TokenDelta((t,), 4, count, finish, index=index)


def ids(response: dict[str, Any]) -> list[int]:
    return list(response["output_ids"].reshape(-1).tolist())


def value(response: dict[str, Any], name: str) -> Any:
    return response[name].reshape(-1)[0]


def test_an_idle_pipeline_sends_each_token_at_once(sends: SendQueue) -> None:
    sender = Sender()
    stream = make(sender, sends)
    for i in range(1, 5):
        stream.add(token(10 + i, i, finish=FinishReason.LENGTH if i == 4 else None))
        sent = sender.wait_for(i)  # sent before the next token comes
        assert ids(sent[-1][0]) == [10 + i]
    assert [flags for _, flags in sender.sent] == [0, 0, 0, FINAL]


def test_tokens_that_come_during_a_send_go_out_together_in_order_once(sends: SendQueue) -> None:
    sender = Sender()
    sender.gate = threading.Semaphore(0)
    stream = make(sender, sends)
    stream.add(token(1, 1))
    assert sender.entered.acquire(timeout=WAIT_S)  # the first response is being sent
    for i in range(2, 11):
        stream.add(token(i, i))
    sender.gate.release()
    sender.gate.release()
    first, second = sender.wait_for(2)
    assert ids(first[0]) == [1]
    assert ids(second[0]) == list(range(2, 11))  # all of them, in order, once
    assert value(second[0], "output_offset") == 1
    assert second[0]["context_ids"].tolist() == [[1]]
    assert value(second[0], "num_output_tokens") == 10
    assert second[1] == 0
    sender.gate = None
    stream.add(token(11, 11, finish=FinishReason.STOP))
    last = sender.wait_for(3)[-1]
    assert (ids(last[0]), last[1]) == ([11], FINAL)
    assert value(last[0], "finish_reason") == b"stop"


def test_random_interleavings_lose_duplicate_and_reorder_nothing(sends: SendQueue) -> None:
    for seed in range(40):
        rng = random.Random(seed)
        sender = Sender()
        sender.gate = threading.Semaphore(0)
        n = rng.randint(1, 3)
        stream = make(sender, sends, n, interval=rng.choice((1, 1, 2, 5)))
        lengths = [rng.randint(1, 40) for _ in range(n)]
        made = [0] * n
        order = [i for i in range(n) for _ in range(lengths[i])]
        rng.shuffle(order)
        for index in order:
            made[index] += 1
            done = FinishReason.LENGTH if made[index] == lengths[index] else None
            stream.add(token(1000 * index + made[index], made[index], index, done))
            # Let the sender through now and then, so responses go out mid-stream.
            for _ in range(rng.choice((0, 0, 0, 1, 2))):
                sender.gate.release()
        for _ in range(sum(lengths)):
            sender.gate.release()
        sender.wait_final()
        got: list[list[int]] = [[] for _ in range(n)]
        for response, _flags in sender.sent:
            index = int(value(response, "sequence_index"))
            assert value(response, "output_offset") == len(got[index]), seed
            assert response["context_ids"].tolist() == [got[index][-DETOKENIZE_WINDOW:]], seed
            got[index] += ids(response)
        assert got == [[1000 * i + k for k in range(1, lengths[i] + 1)] for i in range(n)], seed
        assert [flags for _, flags in sender.sent].count(FINAL) == 1, seed
        for i in range(n):  # each sequence's last response carries its finish reason
            mine = [r for r, _ in sender.sent if value(r, "sequence_index") == i]
            assert [value(r, "finish_reason") for r in mine][-1] == b"length", seed
            assert all(value(r, "finish_reason") == b"" for r in mine[:-1]), seed


def test_stream_interval_sends_the_first_token_then_at_least_that_many(
    sends: SendQueue,
) -> None:
    sender = Sender()
    stream = make(sender, sends, interval=3)
    stream.add(token(1, 1))
    assert ids(sender.wait_for(1)[0][0]) == [1]  # the first goes alone, at once
    for i in (2, 3, 4):  # 2 and 3 are not due: the next response carries 2, 3 and 4
        stream.add(token(i, i))
    assert ids(sender.wait_for(2)[1][0]) == [2, 3, 4]
    stream.add(token(5, 5))
    stream.add(token(6, 6, finish=FinishReason.STOP))  # the last goes however few
    sent = sender.wait_for(3)
    assert (ids(sent[2][0]), sent[2][1]) == ([5, 6], FINAL)
    assert [flags for _, flags in sent] == [0, 0, FINAL]


def test_not_streaming_sends_one_response_per_sequence(sends: SendQueue) -> None:
    sender = Sender()
    stream = make(sender, sends, n=2, streaming=False)
    for i in range(1, 4):
        stream.add(token(i, i, index=0, finish=FinishReason.LENGTH if i == 3 else None))
    stream.add(token(7, 1, index=1, finish=FinishReason.STOP))
    sent = sender.wait_for(2)
    by_index = {int(value(r, "sequence_index")): (ids(r), flags) for r, flags in sent}
    assert by_index == {0: ([1, 2, 3], 0), 1: ([7], FINAL)} or by_index == {
        0: ([1, 2, 3], FINAL),
        1: ([7], 0),
    }
    assert sent[-1][1] == FINAL


def test_an_error_goes_after_the_tokens_and_ends_the_request(sends: SendQueue) -> None:
    sender = Sender()
    sender.gate = threading.Semaphore(0)
    stream = make(sender, sends)
    stream.add(token(1, 1))
    assert sender.entered.acquire(timeout=WAIT_S)
    stream.add(token(2, 2))
    error = ModelError(ErrorCode.TIMEOUT, "generation exceeded the time limit")
    stream.fail(error)
    stream.add(token(3, 3))  # too late: the request has ended
    for _ in range(3):
        sender.gate.release()
    sent = sender.wait_for(3)
    assert [ids(r) for r, _ in sent[:2]] == [[1], [2]]
    assert sent[2] == (error, FINAL)
    sends.close()  # every send done
    assert len(sender.sent) == 3


def test_a_failed_send_stops_the_stream(sends: SendQueue) -> None:
    sender = Sender()
    sender.fail_after = 1
    stream = make(sender, sends)
    stream.add(token(1, 1))
    sender.wait_for(1)
    stream.add(token(2, 2))
    sends.close()
    assert isinstance(stream.broken, RuntimeError)
    stream.add(token(3, 3, finish=FinishReason.STOP))
    stream.fail(ModelError(ErrorCode.ENGINE_ERROR, "engine error"))
    assert len(sender.sent) == 1


def test_coalesced_tokens_keep_their_logprobs(sends: SendQueue) -> None:
    sender = Sender()
    sender.gate = threading.Semaphore(0)
    stream = make(sender, sends, logprobs=True)

    def logprob(t: int) -> TokenLogprob:
        return TokenLogprob(-t / 10, ((t, -t / 10), (t + 100, -5.0)))

    stream.add(TokenDelta((1,), 4, 1, logprobs=(logprob(1),)))
    assert sender.entered.acquire(timeout=WAIT_S)
    stream.add(TokenDelta((2, 3), 4, 3, logprobs=(logprob(2), logprob(3))))
    stream.add(TokenDelta((4,), 4, 4, FinishReason.STOP, logprobs=(logprob(4),)))
    for _ in range(2):
        sender.gate.release()
    second = sender.wait_for(2)[1][0]
    assert ids(second) == [2, 3, 4]
    assert second["output_log_probs"].tolist() == [pytest.approx([-0.2, -0.3, -0.4])]
    assert second["top_token_ids"].tolist() == [[[2, 102], [3, 103], [4, 104]]]
    with pytest.raises(EngineError, match="1 logprobs for 2 tokens"):
        make(Sender(), sends, logprobs=True).add(TokenDelta((5, 6), 4, 2, logprobs=(logprob(5),)))


def test_only_the_outputs_asked_for_are_built(sends: SendQueue) -> None:
    sender = Sender()
    stream = make(sender, sends, wanted=["output_ids", "finish_reason"])
    stream.add(token(1, 1, finish=FinishReason.STOP))
    response, flags = sender.wait_for(1)[0]
    assert sorted(response) == ["finish_reason", "output_ids"]
    assert flags == FINAL
    assert np.array_equal(response["output_ids"], [[[1]]])


class Request:
    """Counts `is_cancelled()` calls: Triton may have freed a request after its final
    response, so none may come then."""

    def __init__(self) -> None:
        self.asked = 0

    def is_cancelled(self) -> bool:
        self.asked += 1
        return False


def test_cancellation_is_not_asked_once_the_final_response_is_taken(sends: SendQueue) -> None:
    sender = Sender()
    sender.gate = threading.Semaphore(0)
    stream = make(sender, sends)
    request = Request()
    assert stream.cancelled(request) is False
    assert request.asked == 1  # asked while the request runs
    stream.add(token(1, 1, finish=FinishReason.STOP))
    assert sender.entered.acquire(timeout=WAIT_S)  # the final response is being sent
    answers: list[bool] = []
    checker = threading.Thread(target=lambda: answers.append(stream.cancelled(request)))
    checker.start()  # waits for the send, then does not ask
    sender.gate.release()
    checker.join(WAIT_S)
    assert answers == [False]
    assert request.asked == 1
    assert sender.wait_final()[-1][1] == FINAL


def test_a_first_response_goes_before_the_others_in_line(sends: SendQueue) -> None:
    log: list[str] = []
    busy, running, new = Sender("busy", log), Sender("running", log), Sender("new", log)
    busy.gate = threading.Semaphore(0)
    streams = {sender.name: make(sender, sends) for sender in (busy, running, new)}
    streams["running"].add(token(1, 1))
    running.wait_for(1)  # it has sent its first response
    streams["busy"].add(token(1, 1))
    assert busy.entered.acquire(timeout=WAIT_S)  # the sender thread is held here
    streams["running"].add(token(2, 2))  # in line
    streams["new"].add(token(1, 1))  # in line after it, but its first response
    busy.gate.release()
    running.wait_for(2)
    new.wait_for(1)
    assert log == ["running", "busy", "new", "running"]
