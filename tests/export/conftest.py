from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import Settings, load_settings
from tests.export.ledger import Ledger, make_ledger

KEY = "k" * 32


@pytest.fixture
def ledger(database_url: str) -> Iterator[Ledger]:
    """A migrated ledger, once on a SQLite file and once on PostgreSQL."""
    made = make_ledger(database_url)
    yield made
    made.engine.dispose()


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A migrated ledger on a SQLite file (for `bot export --db FILE`)."""
    made = make_ledger(f"sqlite:///{tmp_path}/ledger.db")
    yield made
    made.engine.dispose()


@pytest.fixture
def settings(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("BOT_EXPORT__HMAC_KEY", KEY)
    monkeypatch.delenv("BOT_CONFIG", raising=False)
    return load_settings(
        None,
        {
            "database": {"url": ledger.url},
            "export": {"validation_fraction": 0.0, "deny_names": ["Gretchen"]},
        },
    )
