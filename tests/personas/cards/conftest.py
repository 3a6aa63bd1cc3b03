"""Running `bot personas import/export` in-process, as the console script does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bot.cli import app
from bot.cli_errors import run_app

Bot = Callable[..., tuple[int, str, str]]


@pytest.fixture
def bot(capsys: pytest.CaptureFixture[str]) -> Bot:
    """`bot(*args)` → (exit code, stdout, stderr) of one `bot` command."""

    def call(*args: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        code = run_app(app, [str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return call
