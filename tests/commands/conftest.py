"""Fixtures of the commands' tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from browser import chromium


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium (tests/browser.py), one per test module."""
    yield from chromium(tmp_path_factory.mktemp("chromium-profile"))
