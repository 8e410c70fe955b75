"""Load-test fixtures: frontends (`python -m frontend`, as deployed) against the session Triton."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from launcher.triton_server import TritonServer
from loadtest.stack import FrontendProcess

StartFrontend = Callable[..., FrontendProcess]


@pytest.fixture
def start_frontend(
    triton: TritonServer, tmp_path: Path
) -> Iterator[StartFrontend]:
    """Starts frontends on free ports with extra LLM_FRONTEND_* settings; stops them after."""
    started: list[FrontendProcess] = []

    def start(**env: str) -> FrontendProcess:
        frontend = FrontendProcess(
            [triton.grpc_url], tmp_path / f"frontend{len(started)}.log", env=env
        )
        frontend.start()
        started.append(frontend)
        return frontend

    try:
        yield start
    finally:
        for frontend in started:
            frontend.stop()
