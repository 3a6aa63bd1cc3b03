"""bot.llm's public face: every exported name resolves, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import bot.llm


def test_all_names_resolve() -> None:
    for name in bot.llm.__all__:
        assert getattr(bot.llm, name) is not None, name
    assert sorted(dir(bot.llm)) == sorted(bot.llm.__all__)


def test_import_does_not_pull_in_heavy_packages() -> None:
    code = (
        "import sys, bot.llm, bot.llm.factory, bot.llm.tiny, bot.llm.transformers_backend\n"
        "heavy = [m for m in ('torch', 'transformers', 'openai', 'peft') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
