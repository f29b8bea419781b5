"""Live tests need the built binary and a pipeline to run; the Rust integration test
(`tests/it/orchestrators.rs`) sets these up (simulator, PostgreSQL) and passes them in."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def live() -> dict[str, str]:
    names = ("SYNCLINE_BIN", "SYNCLINE_CONFIG")
    if not all(os.environ.get(n) for n in names):
        pytest.skip("needs SYNCLINE_BIN and SYNCLINE_CONFIG (run by tests/it/orchestrators.rs)")
    return {n: os.environ[n] for n in names}
