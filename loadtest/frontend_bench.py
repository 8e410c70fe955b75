"""What the frontend costs: its req/s and latency next to raw Triton gRPC, in one run.

Triton serves only the echo model (tests/echo_model_repository), so the model costs
next to nothing and what remains is transport and the frontend itself. The same
non-streaming request goes (a) straight to Triton with the gRPC aio client, as the
frontend calls it, and (b) to POST /generate on a frontend process in front of that
Triton. Each side runs at every concurrency level for a fixed time after a warm-up,
`--repeat` times alternately; the run with the median req/s is reported.

    python -m loadtest.frontend_bench [--concurrency 1,64] [--duration 10]
        [--model-repository tests/echo_model_repository]

Targets: at concurrency 64 the frontend reaches >= 0.6x Triton's req/s; at concurrency 1
it adds <= 1 ms to the median latency. The load generator shares the machine with both
servers, so run it on an otherwise idle host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tritonclient.grpc.aio as grpcaio

from launcher.triton_server import TritonPorts, TritonServer, wheel_install
from llm_stack.ensemble_contract import (
    EnsembleRequest,
    parse_response,
    stream_request,
)
from loadtest.stack import FrontendProcess

# The tests' echo model, in a checkout; an installed loadtest takes --model-repository.
ECHO_REPOSITORY = Path(__file__).resolve().parent.parent / "tests" / "echo_model_repository"
ECHO_MODEL = "echo"
PROMPT = "The quick brown fox jumps over the lazy dog"

Call = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class Result:
    target: str
    concurrency: int
    requests: int
    seconds: float
    latencies_s: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[index] * 1000


async def measure(
    target: str, call: Call, concurrency: int, warmup_s: float, duration_s: float
) -> Result:
    """Run `concurrency` loops of `call` for warm-up then `duration_s`; time the latter."""
    latencies: list[float] = []
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s

    async def loop(worker: int) -> None:
        while True:
            began = time.perf_counter()
            if began >= stop_at:
                return
            await call(worker)
            if began >= measure_from:
                latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(loop(w) for w in range(concurrency)))
    ended = time.perf_counter()
    return Result(target, concurrency, len(latencies), ended - measure_from, latencies)


def triton_call(client: grpcaio.InferenceServerClient, max_tokens: int) -> Call:
    """One ensemble-contract request straight to Triton, until its final response."""
    request = EnsembleRequest(text_input=PROMPT, max_tokens=max_tokens, stream=False)

    async def call(_worker: int) -> None:
        async def one() -> Any:
            payload = stream_request(request)
            payload["model_name"] = ECHO_MODEL
            yield payload

        responses = client.stream_infer(one(), stream_timeout=30)
        async for result, error in responses:
            if error is not None:
                raise RuntimeError(error.message())
            if parse_response(result).final:
                return

    return call


class HttpConnection:
    """A minimal keep-alive HTTP/1.1 client, so the load generator costs little CPU."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> bytes:
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        for _attempt in range(2):
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            assert self._reader is not None
            self._writer.write(request)
            status = await self._reader.readline()
            if status:
                return await self._read_rest(status)
            # The server closed the idle keep-alive connection: reconnect once.
            self.close()
        raise RuntimeError("the frontend closed the connection twice")

    async def _read_rest(self, status: bytes) -> bytes:
        assert self._reader is not None
        length = 0
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self._reader.readexactly(length)
        if b" 200 " not in status:
            raise RuntimeError(f"frontend answered {status!r}: {payload[:200]!r}")
        return payload

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


def frontend_call(connections: list[HttpConnection], max_tokens: int) -> Call:
    body = json.dumps({"prompt": PROMPT, "max_tokens": max_tokens}).encode()

    async def call(worker: int) -> None:
        await connections[worker].post("/generate", body)

    return call


async def run_all(
    grpc_url: str, frontend_port: int, levels: Sequence[int], args: argparse.Namespace
) -> list[Result]:
    results = []
    client = grpcaio.InferenceServerClient(grpc_url)
    try:
        for concurrency in levels:
            connections = [HttpConnection("127.0.0.1", frontend_port) for _ in range(concurrency)]
            runs: dict[str, list[Result]] = {"triton-grpc": [], "frontend": []}
            calls = {
                "triton-grpc": triton_call(client, args.max_tokens),
                "frontend": frontend_call(connections, args.max_tokens),
            }
            try:
                # Alternating runs, so a noisy neighbour hurts both sides alike.
                for _ in range(args.repeat):
                    for target, call in calls.items():
                        runs[target].append(
                            await measure(target, call, concurrency, args.warmup, args.duration)
                        )
            finally:
                for connection in connections:
                    connection.close()
            for target_runs in runs.values():
                results.append(sorted(target_runs, key=lambda r: r.rps)[len(target_runs) // 2])
    finally:
        await client.close()
    return results


def report(results: Sequence[Result]) -> str:
    lines = [
        f"{'concurrency':>11}  {'target':<12} {'requests':>9} {'req/s':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8}",
    ]
    for r in results:
        lines.append(
            f"{r.concurrency:>11}  {r.target:<12} {r.requests:>9} {r.rps:>9.1f} "
            f"{r.percentile_ms(50):>8.2f} {r.percentile_ms(99):>8.2f}"
        )
    by_key = {(r.target, r.concurrency): r for r in results}
    for concurrency in sorted({r.concurrency for r in results}):
        raw, fe = by_key[("triton-grpc", concurrency)], by_key[("frontend", concurrency)]
        added = statistics.median(fe.latencies_s) * 1000 - statistics.median(raw.latencies_s) * 1000
        lines.append(
            f"concurrency {concurrency}: frontend/raw req/s = {fe.rps / raw.rps:.2f}x, "
            f"added p50 = {added:+.2f} ms"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--concurrency", default="1,64", help="comma-separated levels")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; the median is shown")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument(
        "--frontend-log-level", default="warning", help="info writes an access-log line a request"
    )
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=ECHO_REPOSITORY,
        help=f"a model repository with the {ECHO_MODEL!r} model (default: {ECHO_REPOSITORY})",
    )
    args = parser.parse_args(argv)
    if not (args.model_repository / ECHO_MODEL / "config.pbtxt").is_file():
        parser.error(f"no {ECHO_MODEL!r} model in {args.model_repository}")
    levels = [int(level) for level in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory(prefix="frontend-bench-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        triton = TritonServer(
            install=wheel_install(work / "triton"),
            model_repository=args.model_repository.resolve(),
            ports=TritonPorts.free(),
            log_file=work / "triton.log",
        )
        frontend = FrontendProcess(
            [triton.grpc_url],
            work / "frontend.log",
            env={
                "LLM_FRONTEND_MODEL_NAME": ECHO_MODEL,
                "LLM_FRONTEND_ABORT_MODEL": "",
                "LLM_FRONTEND_LOG_LEVEL": args.frontend_log_level,
                "LLM_FRONTEND_MAX_CONCURRENT_REQUESTS": str(max(levels) * 2),
            },
        )
        try:
            triton.start()
            triton.wait_ready(ECHO_MODEL, timeout=120)
            frontend.start()
            results = asyncio.run(run_all(triton.grpc_url, frontend.port, levels, args))
        finally:
            frontend.stop()
            triton.stop()
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
