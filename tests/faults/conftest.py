"""Fixtures of the fault suite: each scenario gets a system of its own."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from happ_devtools.certs import DevTls
from happ_devtools.fake_llm import FakeLlm
from tests.faults.harness import Faults, fault_system

StartFaults = Callable[..., AbstractAsyncContextManager[Faults]]


@pytest.fixture
def faults_for(request: pytest.FixtureRequest, tls: DevTls, tmp_path: Path) -> StartFaults:
    """``async with faults_for(llm, **env) as faults``: a fresh system for this test,
    its logs and report kept under test-artifacts/faults/<test name>/."""

    def start(llm: FakeLlm, **env: str) -> AbstractAsyncContextManager[Faults]:
        return fault_system(request.node.name, tls, tmp_path, llm, **env)

    return start
