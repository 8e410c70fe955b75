"""The serving-path benchmark: its window figures, its SSE client, its /proc reading, its
report, and one short run through a real stack with the sim engine as a timer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from llm_stack.engine.factory import create_engine
from llm_stack.engine.sim_engine import SimEngine, SimTiming
from llm_stack.model_repository_config import model_parameters
from loadtest.ceiling import (
    CeilingError,
    LevelPlan,
    LevelResult,
    SseConnection,
    Trace,
    Window,
    best_run,
    completion_body,
    cpu_by_label,
    cpu_seconds,
    engine_env,
    first_max_tokens,
    frontend_request,
    main,
    process_columns,
    report,
    server_processes,
    sse_token_events,
    top_functions,
    window_figures,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


# -- window figures ---------------------------------------------------------------------


def test_tokens_ttft_and_gaps_count_only_inside_the_window() -> None:
    window = Window(10.0, 20.0)
    traces = [
        # Started before the window: its tokens inside count, its TTFT does not.
        Trace(8.0, [9.0, 10.5, 11.0], [1, 1, 1]),
        # Started inside: TTFT 0.5; the gap 12.0 -> 12.5 counts, 19.5 -> 20.5 does not.
        Trace(11.5, [12.0, 12.5, 19.5, 20.5], [1, 2, 1, 1]),
        Trace(15.0, [], [], error="RpcError: UNAVAILABLE"),
        Trace(20.0, [20.1], [1]),  # after the window
    ]
    seen = window_figures(traces, window)
    assert seen.tokens == 2 + 4
    assert seen.ttft_s == [0.5]
    assert seen.itl_s == pytest.approx([0.5, 0.5, 7.0])
    assert seen.requests == 2
    assert seen.errors == {"RpcError: UNAVAILABLE": 1}


def test_first_requests_are_staggered_so_requests_turn_over_evenly() -> None:
    plan = LevelPlan("grpc", 4, 1.0, 1.0, 128, 200.0)
    assert [first_max_tokens(i, plan) for i in range(4)] == [32, 64, 96, 128]
    one = LevelPlan("grpc", 256, 1.0, 1.0, 128, 200.0)
    assert first_max_tokens(0, one) == 1
    assert first_max_tokens(255, one) == 128


def test_the_best_round_is_kept() -> None:
    runs = [_result("grpc", 8, tps, {}) for tps in (200.0, 300.0, 100.0)]
    assert best_run(runs) is runs[1]


# -- the frontend's SSE, read cheaply ------------------------------------------------------------


def _event(text: str | None = None, finish: str | None = None, usage: object = None) -> bytes:
    choices = [] if text is None else [{"text": text, "index": 0, "finish_reason": finish}]
    body = {"object": "text_completion", "choices": choices, "usage": usage}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def test_sse_token_events_count_text_events_and_read_the_usage() -> None:
    assert sse_token_events(_event(" the")) == (1, None)
    assert sse_token_events(_event(" a") + _event(" b")) == (2, None)
    assert sse_token_events(_event("", finish="length")) == (0, None)
    usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert sse_token_events(_event(usage=usage)) == (0, usage)
    assert sse_token_events(b"data: [DONE]\n\n") == (0, None)
    with pytest.raises(CeilingError, match="error event"):
        sse_token_events(b'data: {"error":{"type":"overloaded"}}\n\n')


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _server(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return await reader.readexactly(length)


def _chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


USAGE = {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}
STREAM = (
    _event(" one"),
    _event(" two") + _event(" three"),  # two events in one chunk: 2 tokens each
    _event("", finish="length"),
    _event(usage=USAGE),
    b"data: [DONE]\n\n",
)
OK_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


async def test_an_sse_connection_reads_chunks_and_keeps_alive() -> None:
    requests: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not reader.at_eof():
            try:
                requests.append(await _read_request(reader))
            except asyncio.IncompleteReadError:
                break
            writer.write(OK_HEAD + _chunked(*STREAM))
            await writer.drain()
        writer.close()

    async for port in _server(handler):
        connection = SseConnection("127.0.0.1", port)
        body = completion_body(6)
        traces = [await frontend_request(connection, body) for _ in range(2)]
        connection.close()
    assert len(requests) == 2  # one connection, kept alive
    assert json.loads(requests[0])["stream_options"] == {"include_usage": True}
    for trace in traces:
        assert trace.error is None
        assert len(trace.times) == 3
        assert trace.tokens == [2.0, 2.0, 2.0]  # 6 tokens over 3 events
        assert trace.times[0] >= trace.started


async def test_an_sse_connection_reconnects_once_after_an_idle_close() -> None:
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await _read_request(reader)
        served += 1
        writer.write(OK_HEAD + _chunked(*STREAM))
        await writer.drain()
        writer.close()  # no keep-alive: the next request finds the connection closed

    async for port in _server(handler):
        connection = SseConnection("127.0.0.1", port)
        for _ in range(2):
            trace = await frontend_request(connection, completion_body(6))
            assert trace.error is None
        connection.close()
    assert served == 2


async def test_a_refusal_is_a_traced_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        body = b'{"error":{"type":"overloaded"}}'
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: %d\r\n\r\n" % len(body))
        writer.write(body)
        await writer.drain()

    async for port in _server(handler):
        connection = SseConnection("127.0.0.1", port)
        trace = await frontend_request(connection, completion_body(6))
        connection.close()
    assert trace.error is not None
    assert "503" in trace.error
    assert trace.times == []


# -- server processes from /proc ---------------------------------------------------------


def _proc(root: Path, pid: int, group: int, utime: int, stime: int, argv: list[str]) -> None:
    (root / str(pid)).mkdir()
    # pid (comm) state ppid pgrp session ... utime stime cutime cstime (fields 14-17).
    fields = ["S", "1", str(group), str(group)] + ["0"] * 7 + [str(utime), str(stime), "0", "0"]
    (root / str(pid) / "stat").write_text(f"{pid} (x y) " + " ".join(fields) + " 0 0\n")
    (root / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def _stub(model: str, instance: str) -> list[str]:
    return [
        "/w/backends/python/triton_python_backend_stub",
        f"/repo/model_repository/{model}/1/model.py",
        "shm",
        instance,
    ]


def test_server_processes_by_label_and_their_cpu(tmp_path: Path) -> None:
    triton, frontend = 100, 200
    _proc(tmp_path, triton, triton, 50, 10, ["tritonserver"])
    _proc(tmp_path, 101, triton, 30, 5, _stub("tensorrt_llm", "tensorrt_llm_0_0"))
    _proc(tmp_path, 102, triton, 7, 1, _stub("preprocessing", "preprocessing_0_0"))
    _proc(tmp_path, 103, triton, 9, 1, _stub("preprocessing", "preprocessing_0_1"))
    _proc(tmp_path, 104, triton, 1, 0, ["/bin/sh", "-c", "while ... model.py"])  # a watcher
    _proc(tmp_path, frontend, frontend, 40, 2, ["python", "-m", "frontend"])
    _proc(tmp_path, 201, frontend, 20, 2, ["python", "-m", "frontend"])  # a worker
    _proc(tmp_path, 300, 300, 99, 9, ["someone", "else"])
    (tmp_path / "self").mkdir()
    pids = server_processes(triton, frontend, tmp_path)
    assert pids == {
        100: "tritonserver",
        101: "stub:tensorrt_llm",
        102: "stub:preprocessing",
        103: "stub:preprocessing",
        200: "frontend",
        201: "frontend",
    }
    before = cpu_seconds(pids, tmp_path, tick=10)
    assert before[101] == pytest.approx(3.5)
    after = {**before, 101: 4.0, 102: before[102] + 0.2, 201: before[201] + 1.0}
    del after[103]  # gone since: counted for nothing
    used = cpu_by_label(pids, before, after)
    assert used == pytest.approx(
        {"tritonserver": 0.0, "stub:tensorrt_llm": 0.5, "stub:preprocessing": 0.2, "frontend": 1.0}
    )


# -- the report ------------------------------------------------------------------------------


def _result(target: str, streams: int, delivered: float, cpu: dict[str, float]) -> LevelResult:
    return LevelResult(
        target=target,
        streams=streams,
        window_s=10.0,
        offered_tps=streams * 50.0,
        generated_tps=delivered * 1.25,
        delivered_tps=delivered,
        ttft_ms=(25.0, 40.0),
        itl_ms=(20.0, 31.5),
        requests=12,
        errors={},
        cpu_s=cpu,
        loadgen_cpu_s=0.5,
        others_share=0.2,
        processes={label: 1 for label in cpu},
    )


def test_the_report_gives_cpu_per_thousand_delivered_tokens() -> None:
    cpu = {"stub:postprocessing": 2.0, "frontend": 3.0, "tritonserver": 4.0, "stub:x": 0.5}
    result = _result("frontend", 64, 1000.0, cpu)  # 10,000 tokens in the window
    assert result.per_1k(3.0) == pytest.approx(0.3)
    assert process_columns([result]) == [
        "frontend",
        "tritonserver",
        "stub:postprocessing",
        "stub:x",
    ]
    text = report([result, _result("grpc", 64, 0.0, {"tritonserver": 1.0})])
    columns = "| frontend | tritonserver | postprocessing | x | servers | load generator |"
    assert columns + " other load |" in text
    row = "| frontend | 64 | 3,200 | 1,250 | 1,000 | 0.80 | 25.0 / 40.0 | 20.0 / 31.5 |"
    assert row + " 0.300 | 0.400 | 0.200 | 0.050 | 0.950 | 0.050 | 20% |" in text
    assert "| grpc | 64 | 3,200 | 0 | 0 | - |" in text  # nothing delivered: no ratio


def test_top_functions_reads_py_spy_collapsed_stacks() -> None:
    collapsed = "\n".join(
        [
            "<module> (a.py:1);loop (a.py:5);send (b.py:9) 30",
            "<module> (a.py:1);loop (a.py:5);decode (c.py:2) 40",
            "<module> (a.py:1);loop (a.py:5);decode (c.py:3) 20",
            "<module> (a.py:1);idle (a.py:7) 10",
            "garbage",
        ]
    )
    assert top_functions(collapsed, count=2) == [("decode (c.py)", 0.6), ("send (b.py)", 0.3)]
    by_line = top_functions(collapsed, count=2, by_line=True)
    assert by_line == [("decode (c.py:2)", 0.4), ("send (b.py:9)", 0.3)]
    assert top_functions("") == []


# -- the engine it runs, and its command line ------------------------------------------------------


def test_the_engine_is_the_issues_timer() -> None:
    config = REPO_ROOT / "model_repository" / "tensorrt_llm" / "config.pbtxt"
    engine = create_engine(model_parameters(config, engine_env(20.0, 256)))
    assert isinstance(engine, SimEngine)
    assert engine.config.timing == SimTiming(0.0, 20.0, 0.0, 0.0)
    assert engine.config.max_batch_size == 256
    assert engine.config.kv_cache_tokens >= 256 * (64 + 1024)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--targets", "frontend,http"], "--targets takes frontend and/or grpc"),
        (["--streams", "0"], "must be positive"),
        (["--repeat", "0"], "must be positive"),
        (["--py-spy-level", "grpc"], "expected TARGET:STREAMS"),
    ],
)
def test_bad_arguments_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


# -- one short run through a real stack -------------------------------------------------------


@pytest.mark.integration
def test_a_short_run_through_the_stack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ceiling.json"
    argv = ["--streams", "2", "--duration", "2", "--warmup", "1", "--max-tokens", "8"]
    argv += ["--repeat", "2"]
    assert main([*argv, "--step-ms", "5", "--json", str(out), "--work-dir", str(tmp_path)]) == 0
    levels = json.loads(out.read_text())
    assert [(r["target"], r["streams"]) for r in levels] == [("frontend", 2), ("grpc", 2)]
    for level in levels:
        assert level["errors"] == {}
        assert level["delivered_tps"] > 0
        assert level["generated_tps"] > 0
        assert level["ttft_ms"][0] is not None
        assert {"frontend", "tritonserver", "stub:tensorrt_llm", "stub:postprocessing"} <= set(
            level["cpu_s"]
        )
        assert level["processes"]["stub:preprocessing"] == 2
    assert "| frontend | 2 | 400 |" in capsys.readouterr().out
