"""What the serving path costs per streamed token, with an engine that costs nothing.

A local stack (Triton and the frontend, on loopback) serves the simulated engine as a
timer: every `--step-ms` (20) each of up to `--slots` (256) running sequences gets one
token, so 256 streams are offered 12,800 tokens/s. Closed-loop clients stream
completions of `--max-tokens` (128) tokens, at each level of `--streams` (1, 64, 256),
through two paths in turn:

- `frontend`: POST /v1/completions with stream=true (SSE), over raw keep-alive HTTP/1.1
  connections (one per stream; a few lines of asyncio, not httpx, so 256 streams cost
  the load generator little);
- `grpc`: straight to the ensemble with Triton's gRPC aio client, one stream per request,
  as the frontend calls it.

For each level's measured window it prints the tokens/s on offer, the tokens/s the engine
generated (Triton's `llm_engine_generated_tokens_total`), the tokens/s delivered to the
clients, TTFT and inter-token latency (the gap between token-bearing events) p50/p99,
and the CPU seconds per 1,000 delivered tokens of every server process, read from
/proc: the frontend (its process group), tritonserver, and each Python backend stub by
model name (instances summed); also the load generator's own, and how busy other
processes kept the machine (they share its cores with the servers).

    python -m loadtest.ceiling [--streams 1,64,256] [--targets frontend,grpc]
        [--duration 10] [--warmup 3] [--max-tokens 128] [--repeat 1] [--json out.json]
        [--py-spy DIR --py-spy-level frontend:64]

Each client's first request is shorter (client i of n asks (i + 1) / n of max_tokens), so
requests end and start evenly from the start, as in a long-running closed loop; requests
in flight when a window ends run to their end, uncounted after it. The machine is shared:
`--repeat N` runs each level N times, targets alternating, and keeps each target's round
that delivered the most tokens/s (other processes only ever take from a round).

`--py-spy DIR` records each Python server process (frontend, stubs) with py-spy (install
it from PyPI) during one level's window and prints each one's costliest functions; its
sampling costs the profiled processes CPU, so that level's CPU figures read high.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import tritonclient.grpc.aio as grpcaio

from llm_stack.ensemble_client import metric_value, one_request
from llm_stack.ensemble_contract import EnsembleRequest, has_outputs
from loadtest.host_cpu import CpuMeter, _process_times, cpu_figures
from loadtest.stack import LocalStack
from loadtest.stats import percentile

PROMPT = "Write a long story about a river, a stone and the sea."
MODEL = "gemma-3-270m"  # the frontend's served_model_name
GENERATED = "llm_engine_generated_tokens_total"
TARGETS = ("frontend", "grpc")
_PROC = Path("/proc")
_TICK = os.sysconf("SC_CLK_TCK")
_DRAIN_S = 300.0  # requests in flight when a window ends finish within this


class CeilingError(RuntimeError):
    """A request of the benchmark failed in a way that voids its figures."""


# -- one request's trace ------------------------------------------------------------------


@dataclass
class Trace:
    """One streamed request: when it started, when each token-bearing event arrived and
    how many tokens each carried (perf_counter seconds)."""

    started: float
    times: list[float] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class Window:
    """The measured part of a level, in perf_counter seconds."""

    start: float
    end: float

    @property
    def length(self) -> float:
        return self.end - self.start

    def holds(self, at: float) -> bool:
        return self.start <= at < self.end


@dataclass(frozen=True)
class Latencies:
    """What the clients saw in a window: tokens delivered, TTFT and inter-token gaps."""

    tokens: float
    ttft_s: list[float]
    itl_s: list[float]
    requests: int  # requests that started in the window
    errors: Counter[str]


def window_figures(traces: Iterable[Trace], window: Window) -> Latencies:
    """Tokens whose event arrived in the window; TTFT of requests started in it; gaps
    between consecutive token events that both arrived in it."""
    tokens = 0.0
    ttft: list[float] = []
    itl: list[float] = []
    requests = 0
    errors: Counter[str] = Counter()
    for trace in traces:
        if window.holds(trace.started):
            requests += 1
            if trace.error is not None:
                errors[trace.error] += 1
            elif trace.times:
                ttft.append(trace.times[0] - trace.started)
        previous: float | None = None
        for at, count in zip(trace.times, trace.tokens, strict=True):
            inside = window.holds(at)
            if inside:
                tokens += count
                if previous is not None:
                    itl.append(at - previous)
            previous = at if inside else None
    return Latencies(tokens, ttft, itl, requests, errors)


# -- the frontend path: SSE over raw HTTP/1.1 ---------------------------------------------------


def sse_token_events(chunk: bytes) -> tuple[int, dict[str, Any] | None]:
    """How many token-bearing completion events a piece of an SSE body holds, and the
    usage of one that carries it (the last event before [DONE] with include_usage).

    Parsed only as far as needed: a JSON parse per event would cost the load generator
    more than the rest of its work.
    """
    events = 0
    usage: dict[str, Any] | None = None
    for event in chunk.split(b"\n\n"):
        if not event.startswith(b"data: {"):
            continue
        if b'"error"' in event[:32] or b'"error":{' in event:
            raise CeilingError(f"error event in the stream: {event[:200]!r}")
        if b'"usage":{' in event:
            usage = json.loads(event[6:])["usage"]
        if b'"text":"' in event and b'"text":""' not in event:
            events += 1
    return events, usage


class SseConnection:
    """A keep-alive HTTP/1.1 connection that POSTs and reads a chunked SSE body."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> AsyncIterator[tuple[float, bytes]]:
        """Each chunk of the response body with its arrival time (perf_counter)."""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        status = b""
        for _attempt in range(2):
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            assert self._reader is not None
            self._writer.write(head + body)
            status = await self._reader.readline()
            if status:
                break
            self.close()  # the server closed the idle keep-alive connection: once more
        else:
            raise CeilingError("the frontend closed the connection twice")
        reader = self._reader
        assert reader is not None
        headers: dict[bytes, bytes] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b" 200 " not in status:
            length = int(headers.get(b"content-length", b"0"))
            payload = await reader.readexactly(length) if length else b""
            raise CeilingError(f"frontend answered {status.strip()!r}: {payload[:200]!r}")
        if headers.get(b"transfer-encoding", b"").lower() != b"chunked":
            raise CeilingError("a streamed response that is not chunked")
        while True:
            size = int((await reader.readline()).split(b";", 1)[0], 16)
            if size == 0:
                await reader.readline()  # the blank line after the last chunk
                return
            data = await reader.readexactly(size + 2)
            yield time.perf_counter(), data[:-2]

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


def completion_body(max_tokens: int) -> bytes:
    return json.dumps(
        {
            "model": MODEL,
            "prompt": PROMPT,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()


async def frontend_request(connection: SseConnection, body: bytes) -> Trace:
    """One streamed completion; its tokens spread evenly over its token events (the
    usage says how many there were, an event does not)."""
    trace = Trace(time.perf_counter())
    usage: dict[str, Any] | None = None
    try:
        async for at, chunk in connection.post("/v1/completions", body):
            events, chunk_usage = sse_token_events(chunk)
            trace.times.extend([at] * events)
            usage = chunk_usage or usage
    except (CeilingError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
        connection.close()
        trace.error = f"{type(exc).__name__}: {str(exc)[:80]}"
        return trace
    completion = int(usage["completion_tokens"]) if usage else len(trace.times)
    share = completion / len(trace.times) if trace.times else 0.0
    trace.tokens = [share] * len(trace.times)
    return trace


# -- the gRPC path: straight to the ensemble -------------------------------------------------


async def grpc_request(client: grpcaio.InferenceServerClient, max_tokens: int) -> Trace:
    """One streamed ensemble request; each response's tokens from the count it carries."""
    trace = Trace(time.perf_counter())
    request = EnsembleRequest(text_input=PROMPT, max_tokens=max_tokens, stream=True)
    outputs = ("text_output", "num_output_tokens")
    seen = 0
    responses = client.stream_infer(one_request(request, outputs=outputs), stream_timeout=_DRAIN_S)
    try:
        # Read to the stream's end (its OK status), as llm_stack.ensemble_client does: a
        # call dropped open is cancelled, which Triton 2.51 holds against the ensemble.
        async for result, error in responses:
            at = time.perf_counter()
            if error is not None:
                trace.error = f"{type(error).__name__}: {str(error)[:80]}"
                continue
            if has_outputs(result):
                count = int(result.as_numpy("num_output_tokens").reshape(-1)[0])
                if count > seen:
                    trace.times.append(at)
                    trace.tokens.append(count - seen)
                    seen = count
    except grpc.RpcError as exc:
        if not seen or trace.error:
            trace.error = trace.error or f"RpcError: {exc.code()}"
    return trace


# -- server processes and their CPU ------------------------------------------------------------


def server_processes(triton_pid: int, frontend_pid: int, proc: Path = _PROC) -> dict[int, str]:
    """Each server process's pid and label: `frontend` (its process group: every worker),
    `tritonserver`, and each Python backend stub by its model's name (`stub:<model>`,
    read from its command line: the model.py path, <model>/<version>/model.py).

    The stubs' watchers (a shell loop each, in Triton's group, with a `sleep` a second)
    are left out: they cost nothing per token, and come and go.
    """
    found: dict[int, str] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        times = _process_times(proc, entry.name)
        if times is None:
            continue
        pid, group = int(entry.name), times[0]
        if group == frontend_pid:
            found[pid] = "frontend"
        elif pid == triton_pid:
            found[pid] = "tritonserver"
        elif group == triton_pid:
            label = _stub_label(proc, entry.name)
            if label is not None:
                found[pid] = label
    return found


def _stub_label(proc: Path, pid: str) -> str | None:
    try:
        args = (proc / pid / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    model_py = next((a for a in args if a.endswith(b"/model.py")), None)
    if model_py is None or not args[0].endswith(b"_stub"):
        return None
    return "stub:" + Path(model_py.decode(errors="replace")).parent.parent.name


def cpu_seconds(pids: Mapping[int, str], proc: Path = _PROC, tick: int = _TICK) -> dict[int, float]:
    """User + system CPU seconds of each live process so far."""
    out: dict[int, float] = {}
    for pid in pids:
        times = _process_times(proc, str(pid))
        if times is not None:
            out[pid] = (times[1][0] + times[1][1]) / tick
    return out


def cpu_by_label(
    pids: Mapping[int, str], before: Mapping[int, float], after: Mapping[int, float]
) -> dict[str, float]:
    """CPU seconds each label used between two samples (a process gone by then: none)."""
    used: dict[str, float] = {}
    for pid, label in pids.items():
        if pid in before and pid in after:
            used[label] = used.get(label, 0.0) + max(0.0, after[pid] - before[pid])
    return used


# -- one level ----------------------------------------------------------------------------------


@dataclass
class LevelResult:
    """One target at one number of streams, over its measured window."""

    target: str
    streams: int
    window_s: float
    offered_tps: float
    generated_tps: float | None
    delivered_tps: float
    ttft_ms: tuple[float | None, float | None]  # p50, p99
    itl_ms: tuple[float | None, float | None]
    requests: int
    errors: dict[str, int]
    cpu_s: dict[str, float]  # by process label, in the window
    loadgen_cpu_s: float
    others_share: float | None  # of the machine's CPU, used by processes outside the test
    processes: dict[str, int]  # how many processes each label has

    def per_1k(self, cpu_s: float) -> float | None:
        """CPU seconds per 1,000 delivered tokens."""
        tokens = self.delivered_tps * self.window_s
        return cpu_s / tokens * 1000 if tokens > 0 else None

    @property
    def server_cpu_s(self) -> float:
        return sum(self.cpu_s.values())


@dataclass(frozen=True)
class LevelPlan:
    target: str
    streams: int
    warmup_s: float
    duration_s: float
    max_tokens: int
    offered_tps: float


def first_max_tokens(index: int, plan: LevelPlan) -> int:
    """max_tokens of client `index`'s first request: (index + 1) / streams of the rest's."""
    return max(1, -(-plan.max_tokens * (index + 1) // plan.streams))


def best_run(runs: Sequence[LevelResult]) -> LevelResult:
    """The round that delivered the most tokens/s: other processes on the machine only
    ever take from a round (as `timeit` keeps the fastest run, not the mean)."""
    return max(runs, key=lambda r: r.delivered_tps)


Request = Callable[[int, int], Awaitable[Trace]]  # (client index, max_tokens) -> its trace


def py_spy() -> str | None:
    """The py-spy executable: beside this interpreter (a virtual environment), or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


class Profiler:
    """py-spy recordings of the Python server processes during one level's window."""

    def __init__(self, out_dir: Path, level: tuple[str, int]) -> None:
        self.out_dir = out_dir
        self.level = level
        self._running: list[tuple[str, Path, subprocess.Popen[bytes]]] = []

    def start(self, pids: Mapping[int, str], duration_s: float) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        seen: Counter[str] = Counter()
        for pid, label in sorted(pids.items()):
            if label == "tritonserver":
                continue  # no Python interpreter to sample
            seen[label] += 1
            name = f"{label.replace(':', '-')}-{seen[label]}"
            path = self.out_dir / f"{name}.txt"
            seconds = str(max(1, round(duration_s)))
            command = [
                py_spy() or "py-spy", "record", "--pid", str(pid), "--duration", seconds,
                "--rate", "200", "--format", "raw", "--nonblocking", "--output", str(path),
            ]  # fmt: skip
            log = (self.out_dir / f"{name}.log").open("wb")
            self._running.append((name, path, subprocess.Popen(command, stdout=log, stderr=log)))

    def finish(self) -> dict[str, list[tuple[str, float]]]:
        """Each recording's costliest functions and lines (self time, share of samples)."""
        tops: dict[str, list[tuple[str, float]]] = {}
        for name, path, process in self._running:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            if path.is_file():
                collapsed = path.read_text()
                tops[f"{name}: functions"] = top_functions(collapsed)
                tops[f"{name}: lines"] = top_functions(collapsed, count=8, by_line=True)
        self._running = []
        return tops


def top_functions(
    collapsed: str, count: int = 12, by_line: bool = False
) -> list[tuple[str, float]]:
    """The functions (or, `by_line`, the lines) most often on top of the stack in py-spy's
    raw (collapsed) output, with their share of all samples. A native call (a send, a
    tensor built in C++) shows as its Python caller's line."""
    self_samples: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        total += int(samples)
        frame = stack.rsplit(";", 1)[-1]
        if not by_line:
            # "name (file.py:123)" -> "name (file.py)": every line of a function together.
            head, sep, where = frame.rpartition(" (")
            frame = f"{head} ({where.rsplit(':', 1)[0]})" if sep and ":" in where else frame
        self_samples[frame] += int(samples)
    if not total:
        return []
    return [(frame, n / total) for frame, n in self_samples.most_common(count)]


async def run_level(
    plan: LevelPlan,
    request: Request,
    stack: LocalStack,
    profiler: Profiler | None = None,
) -> tuple[LevelResult, dict[str, list[tuple[str, float]]]]:
    """`plan.streams` closed-loop clients for warm-up + window; requests in flight at the
    window's end run to their end (their tokens after it are not counted)."""
    assert stack.triton is not None
    assert stack.frontend is not None
    triton_pid, frontend_pid = stack.triton.pid, stack.frontend.pid
    assert triton_pid is not None
    assert frontend_pid is not None
    metrics_url = stack.triton_metrics_url
    begin = time.perf_counter()
    window = Window(begin + plan.warmup_s, begin + plan.warmup_s + plan.duration_s)
    traces: list[Trace] = []

    async def client(index: int) -> None:
        # Each client's first request is shorter than the rest, 1/streams of max_tokens
        # more per client: requests then end (and new ones start) evenly from the first
        # round on, as in a long-running closed loop, so even a short window sees TTFTs.
        traces.append(await request(index, first_max_tokens(index, plan)))
        while time.perf_counter() < window.end:
            traces.append(await request(index, plan.max_tokens))

    meter = CpuMeter([triton_pid, frontend_pid])
    sampled: dict[str, Any] = {}

    async def sample(key: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        pids = server_processes(triton_pid, frontend_pid)
        sampled[key] = {
            "at": time.perf_counter(),
            "pids": pids,
            "cpu": cpu_seconds(pids),
            "self": time.process_time(),
            "machine": meter.sample(),
        }
        # Triton's counter lags by at most the model's metrics period (0.25 s).
        sampled[key]["generated"] = await asyncio.to_thread(metric_value, metrics_url, GENERATED)
        if key == "start" and profiler is not None:
            profiler.start(pids, plan.duration_s)

    await asyncio.gather(
        *(client(i) for i in range(plan.streams)),
        sample("start", window.start),
        sample("end", window.end),
    )
    tops = profiler.finish() if profiler is not None else {}
    start, end = sampled["start"], sampled["end"]
    length = end["at"] - start["at"]
    seen = window_figures(traces, Window(start["at"], end["at"]))
    pids = {**start["pids"], **end["pids"]}
    others = cpu_figures(start["machine"], end["machine"], servers_are_ours=True).others
    result = LevelResult(
        target=plan.target,
        streams=plan.streams,
        window_s=length,
        offered_tps=plan.offered_tps,
        generated_tps=(end["generated"] - start["generated"]) / length,
        delivered_tps=seen.tokens / length,
        ttft_ms=_ms(seen.ttft_s),
        itl_ms=_ms(seen.itl_s),
        requests=seen.requests,
        errors=dict(seen.errors),
        cpu_s=cpu_by_label(pids, start["cpu"], end["cpu"]),
        loadgen_cpu_s=end["self"] - start["self"],
        others_share=others,
        processes=dict(Counter(pids.values())),
    )
    return result, tops


def _ms(values: Sequence[float]) -> tuple[float | None, float | None]:
    p50, p99 = percentile(values, 50), percentile(values, 99)
    return (None if p50 is None else p50 * 1000, None if p99 is None else p99 * 1000)


# -- the report ---------------------------------------------------------------------------------

_FIRST = ("frontend", "tritonserver", "stub:preprocessing", "stub:tensorrt_llm")


def process_columns(results: Sequence[LevelResult]) -> list[str]:
    """Labels in path order: frontend, tritonserver, the stubs; others after."""
    labels = {label for r in results for label in r.cpu_s}
    known = [label for label in (*_FIRST, "stub:postprocessing") if label in labels]
    return known + sorted(labels - set(known))


def report(results: Sequence[LevelResult]) -> str:
    """The table: rates, latencies, and CPU seconds per 1,000 delivered tokens."""
    columns = process_columns(results)
    short = [c.removeprefix("stub:") for c in columns]
    header = (
        "| target | streams | offered tok/s | generated tok/s | delivered tok/s | "
        "delivered/generated | TTFT p50 / p99 ms | ITL p50 / p99 ms | "
        + " | ".join(short)
        + " | servers | load generator | other load |"
    )
    lines = [
        "CPU: seconds per 1,000 delivered tokens (= ms per token), per process.",
        "",
        header,
        "|" + " --- |" * (header.count("|") - 1),
    ]
    for r in results:
        cpu = [_fmt(r.per_1k(r.cpu_s.get(c, 0.0)), 3) for c in columns]
        generated = r.generated_tps
        ratio = r.delivered_tps / generated if generated else None
        lines.append(
            f"| {r.target} | {r.streams} | {r.offered_tps:,.0f} | {_fmt(generated, 0)} | "
            f"{r.delivered_tps:,.0f} | {_fmt(ratio, 2)} | "
            f"{_fmt(r.ttft_ms[0], 1)} / {_fmt(r.ttft_ms[1], 1)} | "
            f"{_fmt(r.itl_ms[0], 1)} / {_fmt(r.itl_ms[1], 1)} | "
            + " | ".join(cpu)
            + f" | {_fmt(r.per_1k(r.server_cpu_s), 3)} | {_fmt(r.per_1k(r.loadgen_cpu_s), 3)} | "
            + ("-" if r.others_share is None else f"{r.others_share:.0%}")
            + " |"
        )
    lines.append("")
    lines.append(
        "other load: the share of the machine's CPU that processes outside the test used "
        "meanwhile (they compete with the servers for its cores)."
    )
    for r in results:
        if r.errors:
            lines.append(f"{r.target} at {r.streams} streams: errors {r.errors}")
    counts = {label: n for r in results for label, n in r.processes.items()}
    lines.append(
        "processes: "
        + ", ".join(f"{label} x{counts[label]}" for label in columns if label in counts)
    )
    return "\n".join(lines)


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def profile_report(tops: Mapping[str, list[tuple[str, float]]]) -> str:
    lines = []
    for name, functions in sorted(tops.items()):
        lines.append(f"{name} on top of the stack, share of the busy samples")
        lines += [f"  {share:6.1%}  {frame}" for frame, share in functions]
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------------


def engine_env(step_ms: float, slots: int) -> dict[str, str]:
    """The sim engine as a timer: a step every `step_ms` for up to `slots` sequences."""
    return {
        "LLM_STACK_ENGINE": "sim",
        "LLM_STACK_SIM_PRESET": "custom",
        "LLM_STACK_SIM_STEP_BASE_MS": str(step_ms),
        "LLM_STACK_SIM_STEP_PER_SEQUENCE_US": "0",
        "LLM_STACK_SIM_STEP_PER_CONTEXT_TOKEN_NS": "0",
        "LLM_STACK_SIM_PREFILL_TOKENS_PER_S": "0",
        "LLM_STACK_MAX_BATCH_SIZE": str(slots),
        "LLM_STACK_MAX_QUEUE_SIZE": str(max(64, slots)),
    }


async def run_all(
    args: argparse.Namespace, stack: LocalStack
) -> tuple[list[LevelResult], dict[str, list[tuple[str, float]]]]:
    """Every level: each target in turn, `args.repeat` rounds; per target the round that
    delivered the most tokens/s is kept (the machine is shared: others' load varies)."""
    assert stack.triton is not None
    assert stack.frontend is not None
    frontend_port = stack.frontend.port
    client = grpcaio.InferenceServerClient(stack.triton.grpc_url)
    bodies: dict[int, bytes] = {}
    results: list[LevelResult] = []
    tops: dict[str, list[tuple[str, float]]] = {}
    try:
        for streams in args.streams:
            runs: dict[str, list[LevelResult]] = {target: [] for target in args.targets}
            for round_ in range(args.repeat):
                for target in args.targets:
                    connections = [
                        SseConnection("127.0.0.1", frontend_port) for _ in range(streams)
                    ]

                    async def frontend(
                        i: int, max_tokens: int, conns: list[SseConnection] = connections
                    ) -> Trace:
                        body = bodies.get(max_tokens) or bodies.setdefault(
                            max_tokens, completion_body(max_tokens)
                        )
                        return await frontend_request(conns[i], body)

                    async def direct(_i: int, max_tokens: int) -> Trace:
                        return await grpc_request(client, max_tokens)

                    plan = LevelPlan(
                        target,
                        streams,
                        args.warmup,
                        args.duration,
                        args.max_tokens,
                        offered_tps=min(streams, args.slots) * 1000.0 / args.step_ms,
                    )
                    profile = (
                        args.py_spy is not None
                        and round_ == 0
                        and (target, streams) == args.py_spy_level
                    )
                    profiler = (
                        Profiler(args.py_spy / f"{target}-{streams}", (target, streams))
                        if profile
                        else None
                    )
                    try:
                        result, level_tops = await run_level(
                            plan, frontend if target == "frontend" else direct, stack, profiler
                        )
                    finally:
                        for connection in connections:
                            connection.close()
                    runs[target].append(result)
                    tops.update(level_tops)
                    print(
                        f"{target} x{streams} (round {round_ + 1}): "
                        f"{result.delivered_tps:,.0f} tokens/s delivered",
                        file=sys.stderr,
                        flush=True,
                    )
            results.extend(best_run(target_runs) for target_runs in runs.values())
    finally:
        await client.close()
    return results, tops


def _level(value: str) -> tuple[str, int]:
    target, _, streams = value.partition(":")
    if target not in TARGETS or not streams.isdigit():
        raise argparse.ArgumentTypeError(f"expected TARGET:STREAMS, e.g. frontend:64; got {value}")
    return target, int(streams)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--streams", default="1,64,256", help="comma-separated levels")
    parser.add_argument("--targets", default=",".join(TARGETS), help="frontend, grpc or both")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds a level")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=1, help="rounds a level; the best shown")
    parser.add_argument("--step-ms", type=float, default=20.0, help="the engine timer's step")
    parser.add_argument("--slots", type=int, default=256, help="the engine's sequences at once")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--py-spy", type=Path, default=None, help="record profiles into DIR")
    parser.add_argument("--py-spy-level", type=_level, default=("frontend", 64))
    args = parser.parse_args(argv)
    args.streams = [int(s) for s in args.streams.split(",")]
    args.targets = [t for t in args.targets.split(",") if t]
    if any(t not in TARGETS for t in args.targets) or not args.targets:
        parser.error(f"--targets takes {' and/or '.join(TARGETS)}")
    if min(*args.streams, args.max_tokens, args.repeat) < 1 or args.step_ms <= 0:
        parser.error("--streams, --max-tokens, --repeat and --step-ms must be positive")
    if args.py_spy is not None and py_spy() is None:
        parser.error("--py-spy needs py-spy beside this Python or on PATH (pip install py-spy)")

    with tempfile.TemporaryDirectory(prefix="ceiling-") as tmp:
        work = args.work_dir or Path(tmp)
        stack = LocalStack(
            work,
            triton_env=engine_env(args.step_ms, args.slots),
            frontend_env={
                "LLM_FRONTEND_LOG_LEVEL": "warning",
                "LLM_FRONTEND_MAX_CONCURRENT_REQUESTS": str(2 * max(args.streams)),
                "LLM_FRONTEND_MAX_TOKENS_LIMIT": str(max(1024, args.max_tokens)),
            },
        )
        with stack:
            stack.warm_up()
            results, tops = asyncio.run(run_all(args, stack))
    print(report(results))
    if tops:
        print()
        print(profile_report(tops))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    failed = sum(sum(r.errors.values()) for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
