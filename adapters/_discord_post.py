"""Posting one part of a reply to Discord, and reading Discord's refusals."""

from __future__ import annotations

from typing import Any

import aiohttp
import discord

from adapters.base import DeliveryError, RateLimited, Unreachable
from bot.messages import Outgoing

__all__ = ["post"]

#: Discord answers these when a DM cannot reach the person: DMs closed or blocked
#: (50007), no server in common any more (50278).
_UNREACHABLE_CODES = frozenset({50007, 50278})


async def post(
    client: discord.Client, outgoing: Outgoing, text: str, *, first: bool, nonce: str | None
) -> str:
    """Send `text` (one part of `outgoing`) and return the message id Discord gave it.

    Mentions can never ping @everyone, @here or a role; in a group place the first
    part replies to the message it answers and pings only that person. With a
    `nonce`, discord.py sends `enforce_nonce`: a resend after a crash returns the
    message Discord already made. Failures are the adapter's: `RateLimited` (with
    Discord's wait, and whether every chat waits), `Unreachable` (the person cannot
    be written to), or `DeliveryError` with Discord's status and code.
    """
    scope = outgoing.scope
    target = client.get_partial_messageable(int(scope.thread or scope.channel))
    reference: discord.MessageReference | None = None
    # In a busy channel a reply says whom it answers; only its first part needs to.
    if not scope.is_direct and outgoing.reply_to_platform_id and first:
        reference = discord.MessageReference(
            message_id=int(outgoing.reply_to_platform_id),
            channel_id=target.id,
            fail_if_not_exists=False,
        )
    mentions = discord.AllowedMentions(
        everyone=False,
        roles=False,
        # Only a person is pinged: an answer to another persona (bot/groups) is
        # addressed to "persona:ID", nobody Discord knows.
        users=[discord.Object(int(scope.user))]
        if reference is not None and scope.user.isdigit()
        else False,
        replied_user=reference is not None,
    )
    options: dict[str, Any] = {"allowed_mentions": mentions}
    if reference is not None:
        options["reference"] = reference
    if nonce is not None:  # discord.py sends enforce_nonce with it
        options["nonce"] = nonce
    try:
        sent = await target.send(text, **options)
    except discord.RateLimited as exc:  # longer than discord.py is willing to wait
        raise RateLimited(exc.retry_after, "(Discord)") from exc
    except discord.Forbidden as exc:
        if exc.code in _UNREACHABLE_CODES:
            raise Unreachable(f"Discord {exc.code}: {exc.text}") from exc
        raise DeliveryError(
            f"Discord refused the message (403, code {exc.code}): {exc.text}"
        ) from exc
    except discord.HTTPException as exc:
        if exc.status == 429:  # a 429 discord.py would not retry (no Via: Cloudflare)
            raise RateLimited(
                _retry_after(exc),
                "(Discord, not retried by discord.py)",
                everything=_is_global(exc),
            ) from exc
        raise DeliveryError(
            f"Discord refused the message ({exc.status}, code {exc.code}): {exc.text}"
        ) from exc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise DeliveryError(f"cannot reach Discord: {type(exc).__name__}: {exc}") from exc
    return str(sent.id)


def _is_global(exc: discord.HTTPException) -> bool:
    """A 429 of the bot's overall limit (every chat waits), not of one route."""
    headers = exc.response.headers if exc.response is not None else {}
    return headers.get("X-RateLimit-Global", "").lower() == "true" or (
        headers.get("X-RateLimit-Scope") == "global"
    )


def _retry_after(exc: discord.HTTPException) -> float:
    header = exc.response.headers.get("Retry-After") if exc.response is not None else None
    try:
        return float(header) if header is not None else 5.0
    except ValueError:
        return 5.0
