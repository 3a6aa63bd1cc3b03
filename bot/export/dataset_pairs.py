"""The DPO pairs of an export: moderators' corrections, regenerations and opposite
votes, each written once (a base of `DatasetBuilder`, bot/export/dataset.py, which
owns the state declared here).
"""

from __future__ import annotations

from typing import Any

from bot.export.dataset_records import (
    PersonaStats,
    _Conversation,
    _Item,
    _normal,
    _pair_hash,
    _vote_of,
)
from bot.export.dataset_turns import BuilderTurns
from bot.export.formats import dpo_record
from bot.export.prompts import SystemPrompts, TurnContext
from bot.export.writer import DatasetWriter

__all__ = ["BuilderPairs"]

_PENDING_PER_PROMPT = 8


class BuilderPairs(BuilderTurns):
    """The DPO side of `DatasetBuilder`."""

    _writer: DatasetWriter
    _systems: SystemPrompts
    _seen_dpo: set[int]
    _pending: dict[tuple[str, str, int], tuple[int, list[tuple[Any, ...]]]]

    def _write(self, relpath: str, record: dict[str, Any]) -> None:
        self._writer.file(relpath).write(record)

    def _dpo(
        self, conv: _Conversation, stats: PersonaStats, source: str, record: dict[str, Any]
    ) -> None:
        key = _pair_hash(
            record["prompt"][-1]["content"],
            record["chosen"][0]["content"],
            record["rejected"][0]["content"],
        )
        if key in self._seen_dpo or record["chosen"] == record["rejected"]:
            return
        self._seen_dpo.add(key)
        stats.dpo_pairs[source] += 1
        self._write(f"{conv.persona}/dpo.{conv.split}.jsonl", record)

    def _regenerations(
        self,
        conv: _Conversation,
        stats: PersonaStats,
        asked: _Item | None,
        ctx: TurnContext,
        chosen: str,
        rejected: list[str],
    ) -> None:
        if asked is None:
            return
        system = self._systems.render(ctx)
        if system is None:
            return
        prompt = self._prompt(conv, asked)
        for other in rejected:
            self._dpo(
                conv,
                stats,
                "regeneration",
                dpo_record(system, prompt, chosen, other, "regeneration"),
            )

    def _correction(self, conv: _Conversation, stats: PersonaStats, row: Any, text: str) -> None:
        """A moderator's corrected reply (chosen) against the reply it corrects."""
        chosen = row.correction.strip()
        if not chosen or not text or not row.persona_hash:
            return
        asked = self._find(conv, row.reply_to_id)
        if asked is None:
            return
        system = self._systems.render(self._context(conv, row, asked))
        if system is None:
            return
        self._dpo(
            conv,
            stats,
            "correction",
            dpo_record(
                system,
                self._prompt(conv, asked),
                self._clean(conv, chosen),
                self._clean(conv, text),
                "correction",
            ),
        )

    def _vote(
        self,
        conv: _Conversation,
        stats: PersonaStats,
        row: Any,
        content: str,
        asked: _Item | None,
        ctx: TurnContext,
    ) -> None:
        """Pair a rated reply with an earlier one of the opposite vote, or wait for one."""
        vote = _vote_of(row)
        if vote == 0 or asked is None:
            return
        system = self._systems.render(ctx)
        if system is None:
            return
        candidate = (system, self._prompt(conv, asked), content)
        key = (conv.persona, conv.split, _pair_hash(_normal(asked.plain)))
        waiting = self._pending.get(key)
        if waiting is not None and waiting[0] == -vote:
            other = waiting[1].pop(0)
            if not waiting[1]:
                del self._pending[key]
            good, bad = (candidate, other) if vote > 0 else (other, candidate)
            self._dpo(
                conv, stats, "feedback", dpo_record(good[0], good[1], good[2], bad[2], "feedback")
            )
        elif waiting is None:
            self._pending[key] = (vote, [candidate])
        elif len(waiting[1]) < _PENDING_PER_PROMPT:
            waiting[1].append(candidate)
