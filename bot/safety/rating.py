"""Mature personas: where they may speak, and the age question where no flag says.

A persona declares `safety.content_rating`: "general" and "teen" speak anywhere;
"mature" only where the place is known to be for adults:

    a place with an age-restricted flag (Discord's `nsfw` channels, threads by their
    parent; `Incoming.age_restricted` is True/False)
        flagged: the turn goes on. Not flagged: the persona stays silent, and the
        reason is recorded (verdict "age_restricted").
    a place with no such flag (Telegram, the console: `age_restricted` is None)
        the persona asks its `age_gate_message` first and records the answer in the
        people store (`users.age_answer`, `age_answered_at`): "adult" lets every
        later turn go on, "minor" is told once that the persona is for adults and
        then meets silence. Anything that is not an answer is asked again.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import Connection, Table, select, update
from sqlmodel import SQLModel

from bot.db import Database
from bot.models import User
from bot.safety.normalize import fold
from bot.safety.stage import InputContext, InputHit

__all__ = ["AgeStore", "RatingCheck", "read_age_answer"]

_users: Table = SQLModel.metadata.tables[User.__tablename__]

# Answers to "are you 18 or older?" in the languages the persona files use.
_YES = re.compile(
    r"^(?:yes|yeah|yep|yup|y|sure|of course|i am|i'm an adult|i am an adult|ja|jawohl|"
    r"klar|si|sí|claro|oui|是|是的|对|对的|嗯|成年|我成年了|已成年|はい|ええ|うん|成人です|"
    r"네|예|да)$"
)
_NO = re.compile(
    r"^(?:no|nope|nah|n|i'm not|i am not|nein|non|不|不是|没有|未成年|いいえ|いや|"
    r"未成年です|아니요|아니|нет)$"
)
_AGE = re.compile(r"(?<!\d)(\d{1,3})(?!\d)")
_TRIM = re.compile(r"[\s.!?,;:。！？，、…~～]+")


def read_age_answer(text: str) -> str | None:
    """"adult", "minor", or None when `text` is not an answer to the age question.
    A bare age ("25", "I'm 16") answers too."""
    folded = _TRIM.sub(" ", fold(text[:200])).strip()
    if not folded:
        return None
    if _YES.match(folded):
        return "adult"
    if _NO.match(folded):
        return "minor"
    ages = _AGE.findall(folded)
    if len(ages) == 1 and len(folded) <= 24:
        age = int(ages[0])
        if 5 <= age <= 120:
            return "adult" if age >= 18 else "minor"
    return None


class AgeStore:
    """The age answer in the people store (`users`), by platform user id."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def answer(self, platform: str, user: str) -> str | None:
        """"adult", "minor", or None when never answered."""
        value = await self.db.read(
            lambda c: c.execute(
                select(_users.c.age_answer).where(
                    _users.c.platform == platform, _users.c.platform_user_id == user
                )
            ).scalar()
        )
        return str(value) if value else None

    async def record(
        self, platform: str, user: str, answer: str, *, now: datetime | None = None
    ) -> None:
        """Record the answer (the person's row exists: their message was stored)."""
        at = now or datetime.now(UTC)

        def work(conn: Connection) -> None:
            conn.execute(
                update(_users)
                .where(_users.c.platform == platform, _users.c.platform_user_id == user)
                .values(age_answer=answer[:16], age_answered_at=at)
            )

        await self.db.run(work)


class RatingCheck:
    """The input check for mature personas (see the module docstring). Verdicts:
    "age_restricted" (silence), "age_gate" (the question, or telling a minor the
    persona is for adults), "age_confirmed" (the turn goes on, with guidance),
    "minor" (silence after that)."""

    name = "rating"

    def __init__(self, ages: AgeStore, *, minor_message: str | None = None) -> None:
        self.ages = ages
        self.minor_message = minor_message or (
            "Thank you for being honest. This character is for adults only, so I can't "
            "chat with you here."
        )

    async def check(self, ctx: InputContext) -> InputHit | None:
        safety = ctx.loaded.persona.safety
        if getattr(safety, "content_rating", "general") != "mature":
            return None
        flag = ctx.incoming.age_restricted
        if flag is True:
            return None
        if flag is False:
            return InputHit(
                self.name,
                "age_restricted",
                "a mature persona in a channel that is not age-restricted",
                reply="",
            )
        scope = ctx.scope
        known = await self.ages.answer(scope.platform, scope.user)
        if known == "adult":
            return None
        if known == "minor":
            return InputHit(self.name, "minor", "answered the age question: under 18", reply="")
        answer = read_age_answer(ctx.text)
        if answer is None:
            return InputHit(
                self.name, "age_gate", "asked the age question", reply=safety.age_gate_message
            )
        await self.ages.record(scope.platform, scope.user, answer, now=ctx.now)
        if answer == "minor":
            # Kind "age_gate": a fixed reply of a kind a restart redelivers.
            return InputHit(
                self.name,
                "age_gate",
                "answered the age question: under 18",
                reply=self.minor_message,
                details={"answer": answer},
            )
        return InputHit(
            self.name,
            "age_confirmed",
            "answered the age question: adult",
            guidance="The person has just confirmed they are an adult. Thank them briefly "
            "and start the conversation in your own voice.",
            details={"answer": answer},
        )
