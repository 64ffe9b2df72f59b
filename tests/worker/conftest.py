"""Fixtures of the worker tests."""

from __future__ import annotations

import pytest
from procs import worker_env


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of worker processes: one torch thread, a statistics cache shared by
    the session's tests."""
    return worker_env(tmp_path_factory.getbasetemp() / "ganhpo-cache")
