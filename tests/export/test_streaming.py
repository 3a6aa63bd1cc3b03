"""Exports stream: rows come in bounded batches from a server-side cursor, and memory
does not grow with the number of messages."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest

from bot.config import Settings
from bot.export import select as select_module
from bot.export import writer as writer_module
from bot.export.select import export_query, open_read_engine, read_in_background, stream_rows
from tests.export.helpers import run_export
from tests.export.ledger import Ledger, bulk_conversations


def test_rows_come_in_batches_of_yield_per(
    ledger: Ledger, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    bulk_conversations(ledger, conversations=10)
    monkeypatch.setattr(select_module, "YIELD_PER", 7)
    engine = open_read_engine(ledger.url)
    try:
        statement = export_query(persona=None, since=None, until=None)
        with engine.connect() as conn:
            sizes = [len(batch) for batch in stream_rows(conn, statement)]
        assert sizes == [7] * (200 // 7) + [200 % 7]
        background = [len(b) for b in read_in_background(engine, statement, depth=2)]
        assert background == sizes
    finally:
        engine.dispose()


def test_stopping_early_stops_the_reader(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    bulk_conversations(ledger, conversations=10)
    monkeypatch.setattr(select_module, "YIELD_PER", 5)
    engine = open_read_engine(ledger.url)
    try:
        batches = read_in_background(
            engine, export_query(persona=None, since=None, until=None), depth=1
        )
        next(batches)
        batches.close()  # joins the reader thread; a hang here fails the test by timeout
    finally:
        engine.dispose()


def _peak_bytes(settings: Settings, out: Path) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        run_export(settings, out)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_messages(
    ledger: Ledger, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small bounds, so that both runs are well past them: the batches in flight and the
    # write buffers are the memory the export is allowed, whatever the data.
    monkeypatch.setattr(select_module, "YIELD_PER", 50)
    monkeypatch.setattr(writer_module, "_BUFFER_BYTES", 4096)
    bulk_conversations(ledger, conversations=50)
    _peak_bytes(settings, tmp_path / "warm")  # imports and compiled templates
    small = _peak_bytes(settings, tmp_path / "small")
    bulk_conversations(ledger, conversations=350, first=50)  # eight times the messages
    large = _peak_bytes(settings, tmp_path / "large")
    # What may grow is per exported pair or person, not per row: one 64-bit hash per
    # (message, reply) pair in the dedup set and a cached pseudonym per person, about
    # 100-200 bytes each. Holding the rows themselves would cost far more: 7,000 more
    # rows of ~130 characters, at least 2.5 MB.
    extra_pairs = 350 * 10
    assert large - small < 250 * extra_pairs, (small, large)


def test_the_bot_keeps_writing_while_an_export_reads(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    bulk_conversations(ledger, conversations=5)
    monkeypatch.setattr(select_module, "YIELD_PER", 10)
    engine = open_read_engine(ledger.url)
    try:
        batches = read_in_background(engine, export_query(persona=None, since=None, until=None))
        first = next(batches)
        # A write transaction (BEGIN IMMEDIATE) while the export's read is open: the
        # export must hold no write lock, or this would wait for the busy timeout.
        user = ledger.user("Writer")
        ledger.said(ledger.conversation("during-export"), user, "written meanwhile")
        rest = sum(len(batch) for batch in batches)
        assert len(first) + rest == 100  # the export's snapshot: not the new row
    finally:
        engine.dispose()
