"""Fixtures the interop tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Served


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """``wavegate serve --tls --control-port 0`` in a subprocess, stopped afterwards."""
    running = Served(tmp_path)
    yield running
    running.stop()
