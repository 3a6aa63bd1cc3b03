"""The Discord adapter's slash commands: the tree, its sync, and running one.

The tree only declares the commands (and syncs them with Discord); an interaction
never reaches it. It is taken raw from the gateway into the inbox and answered from
there (adapters/_discord_interactions.py): `slash_call` reads which command it is
from the stored payload, `SlashCommands.run` runs it through `Adapter.command`, like
on every platform. Moderators are members with `discord.moderator_permission` or the
role.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
import structlog
from discord import app_commands

from bot.commands import CommandContext
from bot.db import storable

if TYPE_CHECKING:
    from adapters.discord import DiscordAdapter

__all__ = ["MAX_OPTION_CHARS", "SlashCall", "SlashCommands", "slash_call"]

log = structlog.get_logger("adapters.discord")

#: The largest persona file /persona upload reads.
_MAX_UPLOAD_BYTES = 256 * 1024
#: One option's text is cut here: Discord allows 6,000 characters over all options.
MAX_OPTION_CHARS = 2000
_MODERATION = ("mute", "unmute", "ban", "unban", "exempt", "unexempt")


@dataclass(frozen=True, slots=True)
class SlashCall:
    """Which command an interaction asks for, as `Commands` reads it."""

    name: str
    args: str
    #: Answered to the person alone (a switch, which changes the channel, is not).
    ephemeral: bool = True
    #: The resolved attachment of `/persona upload` (Discord's payload).
    upload: dict[str, Any] | None = None


def slash_call(data: Any) -> SlashCall:
    """The command of an interaction's `data` (name, options, resolved), read the way
    the tree declares it; every string bounded and made storable. Raises ValueError
    (or TypeError, KeyError) for what Discord would never send."""
    if not isinstance(data, dict):
        raise TypeError(f"interaction data is a JSON {type(data).__name__}, not an object")
    name = data["name"]
    if not isinstance(name, str) or not 0 < len(name) <= 32:
        raise ValueError(f"not a command name: {str(name)[:40]!r}")
    raw_options = data.get("options") or []
    resolved = data.get("resolved") or {}
    if not isinstance(raw_options, list) or not isinstance(resolved, dict):
        raise TypeError("options is not a list, or resolved not an object")
    if not all(isinstance(o, dict) for o in raw_options):
        raise TypeError("an option is not an object")
    options = {str(o["name"])[:32]: o.get("value") for o in raw_options[:25]}

    def text(key: str) -> str:
        value = options.get(key, "")
        if not isinstance(value, str):
            raise TypeError(f"option {key} is not text")
        return storable(value)[:MAX_OPTION_CHARS]

    def user(key: str) -> str | None:
        value = options.get(key)
        if value is None:
            return None
        if not str(value).isdigit() or len(str(value)) > 20:
            raise ValueError(f"option {key} is not a user id")
        return str(value)

    name = name.lower()
    if name == "persona":
        upload = options.get("upload")
        if upload is not None:
            attachments = resolved.get("attachments") or {}
            found = attachments.get(str(upload)) if isinstance(attachments, dict) else None
            if not isinstance(found, dict):
                raise ValueError("the upload is not among the resolved attachments")
            return SlashCall("persona", "upload", upload=found)
        switch = text("switch").strip()
        # A switch changes the channel for everyone: say so where they see it.
        return SlashCall("persona", switch, ephemeral=not switch)
    if name in ("forget", "timezone"):
        return SlashCall(name, text("what" if name == "forget" else "zone"))
    if name in _MODERATION:
        who = user("user")
        if who is None:
            raise ValueError(f"/{name} without a user")
        duration = text("duration").strip() if name == "mute" else ""
        words = [f"<@{who}>", "all" if options.get("everywhere") is True else ""]
        words += [duration, text("reason")]
        return SlashCall(name, " ".join(w for w in words if w))
    if name == "audit":
        who = user("user")
        return SlashCall(name, f"<@{who}>" if who else "")
    return SlashCall(name, "")  # memory, optout, optin, help, reload, or unknown


class SlashCommands:
    """The slash commands of one `DiscordAdapter`: declared, synced, and run."""

    def __init__(self, adapter: DiscordAdapter) -> None:
        self.adapter = adapter

    def build_tree(self, client: discord.Client) -> app_commands.CommandTree[discord.Client]:
        """The commands as Discord lists them. The callbacks are never called: an
        interaction is taken from the gateway before the tree sees it."""
        tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)

        @tree.command(name="persona", description="Who you are talking with; switch or upload one")
        @app_commands.describe(
            switch="A persona id to switch this channel to (where allowed)",
            upload="Moderators: a persona YAML file to validate and apply",
        )
        async def persona(
            interaction: discord.Interaction,
            switch: str | None = None,
            upload: discord.Attachment | None = None,
        ) -> None: ...

        @tree.command(name="memory", description="What the persona remembers about you")
        async def memory(interaction: discord.Interaction) -> None: ...

        @tree.command(name="forget", description="Delete a memory (an id from /memory) or all")
        @app_commands.describe(what="A memory id from /memory, or all")
        async def forget(interaction: discord.Interaction, what: str) -> None: ...

        @tree.command(name="optout", description="Keep your messages out of training data")
        async def optout(interaction: discord.Interaction) -> None: ...

        @tree.command(name="optin", description="Undo /optout")
        async def optin(interaction: discord.Interaction) -> None: ...

        @tree.command(name="timezone", description="Your time zone, e.g. Europe/Berlin")
        @app_commands.describe(zone="An IANA time zone such as Europe/Berlin")
        async def timezone(interaction: discord.Interaction, zone: str) -> None: ...

        @tree.command(name="help", description="What the persona's commands do")
        async def help_(interaction: discord.Interaction) -> None: ...

        @tree.command(name="reload", description="Moderators: reload every persona file")
        async def reload(interaction: discord.Interaction) -> None: ...

        self._moderation_commands(tree)
        return tree

    def _moderation_commands(self, tree: app_commands.CommandTree[discord.Client]) -> None:
        """/mute /unmute /ban /unban /exempt /unexempt: moderators', audited
        (bot/commands.py `parse_moderation` reads what `slash_call` builds)."""
        described = {
            "mute": "Moderators: the persona stops answering a person (for a while)",
            "unmute": "Moderators: undo /mute",
            "ban": "Moderators: the persona never answers a person",
            "unban": "Moderators: undo /ban",
            "exempt": "Moderators: a person skips the message and token limits",
            "unexempt": "Moderators: undo /exempt",
        }
        for action, description in described.items():

            @app_commands.describe(
                user="The person",
                everywhere="For every persona, not only this channel's",
                duration="Mutes only: 30m, 2h, 7d (empty: until /unmute)",
                reason="Why (kept in the audit)",
            )
            async def command(
                interaction: discord.Interaction,
                user: discord.User,
                everywhere: bool = False,
                duration: str = "",
                reason: str = "",
            ) -> None: ...

            tree.command(name=action, description=description)(command)

        @tree.command(name="audit", description="Moderators: the last moderator actions")
        @app_commands.describe(user="Only the actions about this person")
        async def audit(
            interaction: discord.Interaction, user: discord.User | None = None
        ) -> None: ...

    async def sync(self, tree: app_commands.CommandTree[discord.Client]) -> None:
        # Idempotent on Discord's side (unchanged commands are not re-created). A bot
        # invited without the applications.commands scope still chats: log, go on.
        try:
            synced = await tree.sync()
        except (discord.HTTPException, aiohttp.ClientError) as exc:
            log.error("discord.commands_not_synced", error=str(exc))
            return
        log.info("discord.commands_synced", commands=[c.name for c in synced])

    def _is_moderator(self, interaction: discord.Interaction) -> bool:
        user = interaction.user
        if not isinstance(user, discord.Member):  # a DM: no server roles to check
            return False
        if (
            getattr(interaction.permissions, self.adapter.settings.moderator_permission, False)
            is True
        ):
            return True
        wanted = self.adapter.settings.moderator_role
        return wanted is not None and any(wanted in (str(r.id), r.name) for r in user.roles)

    async def run(self, interaction: discord.Interaction, call: SlashCall) -> str:
        """Run the command; its answer, never an exception (a failure is logged and
        answered as one)."""
        name = call.name
        try:
            channel = interaction.channel_id or 0
            scope = await self.adapter._scope(interaction.guild_id, channel, interaction.user.id)
            text: str | None = None
            filename: str | None = None
            if call.upload is not None:
                upload = discord.Attachment(data=call.upload, state=interaction._state)  # type: ignore[arg-type]
                filename = upload.filename
                if upload.size > _MAX_UPLOAD_BYTES:
                    return f"{filename} is too large for a persona file (over 256 KiB)."
                data = await upload.read()
                if len(data) > _MAX_UPLOAD_BYTES:  # the size said was not the size sent
                    return f"{filename} is too large for a persona file (over 256 KiB)."
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    return f"{filename} is not UTF-8 text; save the YAML as UTF-8."
            ctx = CommandContext(
                scope=scope,
                actor=self.adapter._actor(interaction.user),
                is_moderator=self._is_moderator(interaction),
                allow_switch=self.adapter.settings.allow_switch,
                attachment_text=text,
                attachment_name=filename,
            )
            return await self.adapter.command(name, call.args, ctx)
        except Exception as exc:  # the person still gets an answer; the log gets the rest
            log.exception("discord.command_failed", command=name)
            return f"Sorry, /{name} failed: {type(exc).__name__}."
