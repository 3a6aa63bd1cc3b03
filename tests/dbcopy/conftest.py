"""Fixtures for `bot db copy`: a SQLite database filled through the bot's stores."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from tests.dbcopy.fill import fill


@pytest.fixture(scope="session")
def _filled_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Filled once a session (a few seconds through the real stores), copied per test.
    path = tmp_path_factory.mktemp("dbcopy") / "filled.db"
    asyncio.run(fill(f"sqlite:///{path}"))
    return path


@pytest.fixture
def filled_sqlite(_filled_template: Path, tmp_path: Path) -> str:
    """The URL of a copy (for this test alone) of a SQLite database the stores filled."""
    path = tmp_path / "source.db"
    shutil.copyfile(_filled_template, path)
    return f"sqlite:///{path}"
