"""The sections of the chat platforms: Discord and Telegram.

Re-exported by `bot.config`; callers keep importing them from there.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from bot.config_core import _Section

__all__ = ["DiscordSettings", "TelegramSettings"]


class DiscordSettings(_Section):
    """The Discord adapter; it starts when `DISCORD_TOKEN` is in the environment."""

    token: SecretStr | None = None
    #: Persona per place: "GUILD_ID" or "GUILD_ID/CHANNEL_ID" -> persona id; "dm" for DMs.
    personas: dict[str, str] = Field(default_factory=dict)
    #: Channel ids where every message is answered, not only mentions and replies.
    always_on: list[str] = Field(default_factory=list)
    #: Words that make the persona answer a message that does not mention it.
    keywords: list[str] = Field(default_factory=list)
    ignore_bots: bool = True
    #: People with this Discord permission (or the role below) may /reload and upload.
    moderator_permission: str = "manage_guild"
    moderator_role: str | None = None
    #: Whether people may switch the persona of a channel with /persona ID.
    allow_switch: bool = False
    #: Shards: None for one connection, 0 for Discord's recommendation, N for N.
    shard_count: int | None = Field(default=None, ge=0)
    #: The shards this process connects (each below `shard_count`); None: all of them.
    #: Several workers split them, e.g. BOT_DISCORD__SHARD_IDS='[0,1]' and '[2,3]'
    #: with shard_count = 4. DMs arrive on shard 0. Unsplit, every worker receives
    #: every message and the inbox keeps one of each (still answered once).
    shard_ids: list[int] | None = None
    #: Another Discord REST API (a proxy, a test double), e.g. "http://127.0.0.1:8080/api/v10".
    api_base_url: str | None = None
    #: The gateway to connect to, e.g. "ws://127.0.0.1:8080/gateway/". Unset: the one the
    #: API at `api_base_url` names (GET /gateway/bot), or Discord's own.
    gateway_url: str | None = None
    #: After a fresh gateway session (not a RESUME): read back at most this many messages
    #: per bound channel and open DM written while the bot was away, none older than this.
    catch_up_messages: int = Field(default=200, ge=0, le=10_000)
    catch_up_max_age_s: float = Field(default=3600.0, ge=0)

    @model_validator(mode="after")
    def _shards(self) -> DiscordSettings:
        ids = self.shard_ids
        if ids is None:
            return self
        if not self.shard_count:
            raise ValueError("discord.shard_ids needs discord.shard_count (the total, N > 0)")
        if not ids or len(set(ids)) != len(ids) or not all(0 <= i < self.shard_count for i in ids):
            raise ValueError(
                f"discord.shard_ids = {ids}: distinct shard ids from 0 to "
                f"{self.shard_count - 1} (shard_count - 1)"
            )
        return self

    @field_validator("api_base_url", "gateway_url")
    @classmethod
    def _url(cls, value: str | None, info: Any) -> str | None:
        if value is None:
            return None
        schemes = (
            ("http://", "https://") if info.field_name == "api_base_url" else ("ws://", "wss://")
        )
        if not value.startswith(schemes) or len(value) <= len(value.split("//")[0]) + 2:
            raise ValueError(f"a URL starting with {' or '.join(schemes)}, not {value!r}")
        return value.rstrip("/") if info.field_name == "api_base_url" else value


class TelegramSettings(_Section):
    """The Telegram adapter; it starts when `TELEGRAM_TOKEN` is in the environment."""

    token: SecretStr | None = None
    persona: str | None = Field(
        default=None, description="Persona here (default: personas.default)."
    )
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str | None = Field(default=None, description="Public HTTPS URL Telegram posts to.")
    webhook_secret: SecretStr | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8081, ge=1, le=65535)
    webhook_path: str = "/telegram"
    #: A self-hosted Bot API server, e.g. "http://127.0.0.1:8081/bot".
    base_url: str | None = None
    moderators: list[int] = Field(default_factory=list)
    allow_switch: bool = False
