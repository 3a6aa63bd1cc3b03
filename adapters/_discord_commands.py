"""The Discord adapter's slash commands: the tree, its sync, and answering them.

Every command runs through `Adapter.command`, like on every platform; it is answered
at once when quick, else deferred ("thinking…") and followed up, within Discord's
3 s. Moderators are members with `discord.moderator_permission` or the role.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
import structlog
from discord import app_commands

from adapters.base import split_message
from bot.commands import CommandContext

if TYPE_CHECKING:
    from adapters.discord import DiscordAdapter

__all__ = ["SlashCommands"]

log = structlog.get_logger("adapters.discord")

#: The largest persona file /persona upload reads.
_MAX_UPLOAD_BYTES = 256 * 1024
#: Discord wants an interaction answered within 3 s; past this we defer and follow up.
_ANSWER_WITHIN_S = 2.0


class SlashCommands:
    """The slash commands of one `DiscordAdapter`."""

    def __init__(self, adapter: DiscordAdapter) -> None:
        self.adapter = adapter

    def build_tree(self, client: discord.Client) -> app_commands.CommandTree[discord.Client]:
        tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)
        adapter = self

        @tree.command(name="persona", description="Who you are talking with; switch or upload one")
        @app_commands.describe(
            switch="A persona id to switch this channel to (where allowed)",
            upload="Moderators: a persona YAML file to validate and apply",
        )
        async def persona(
            interaction: discord.Interaction,
            switch: str | None = None,
            upload: discord.Attachment | None = None,
        ) -> None:
            if upload is not None:
                await adapter._slash(interaction, "persona", "upload", upload=upload)
            elif switch:
                # A switch changes the channel for everyone: say so where they see it.
                await adapter._slash(interaction, "persona", switch, ephemeral=False)
            else:
                await adapter._slash(interaction, "persona", "")

        @tree.command(name="memory", description="What the persona remembers about you")
        async def memory(interaction: discord.Interaction) -> None:
            await adapter._slash(interaction, "memory", "")

        @tree.command(name="forget", description="Delete a memory (an id from /memory) or all")
        @app_commands.describe(what="A memory id from /memory, or all")
        async def forget(interaction: discord.Interaction, what: str) -> None:
            await adapter._slash(interaction, "forget", what)

        @tree.command(name="optout", description="Keep your messages out of training data")
        async def optout(interaction: discord.Interaction) -> None:
            await adapter._slash(interaction, "optout", "")

        @tree.command(name="optin", description="Undo /optout")
        async def optin(interaction: discord.Interaction) -> None:
            await adapter._slash(interaction, "optin", "")

        @tree.command(name="timezone", description="Your time zone, e.g. Europe/Berlin")
        @app_commands.describe(zone="An IANA time zone such as Europe/Berlin")
        async def timezone(interaction: discord.Interaction, zone: str) -> None:
            await adapter._slash(interaction, "timezone", zone)

        @tree.command(name="help", description="What the persona's commands do")
        async def help_(interaction: discord.Interaction) -> None:
            await adapter._slash(interaction, "help", "")

        @tree.command(name="reload", description="Moderators: reload every persona file")
        async def reload(interaction: discord.Interaction) -> None:
            await adapter._slash(interaction, "reload", "")

        self._moderation_commands(tree)
        return tree

    def _moderation_commands(self, tree: app_commands.CommandTree[discord.Client]) -> None:
        """/mute /unmute /ban /unban /exempt /unexempt: moderators', audited
        (bot/commands.py `parse_moderation` reads what these build)."""
        adapter = self
        described = {
            "mute": "Moderators: the persona stops answering a person (for a while)",
            "unmute": "Moderators: undo /mute",
            "ban": "Moderators: the persona never answers a person",
            "unban": "Moderators: undo /ban",
            "exempt": "Moderators: a person skips the message and token limits",
            "unexempt": "Moderators: undo /exempt",
        }
        for action, description in described.items():

            def make(action: str) -> Any:
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
                ) -> None:
                    words = [f"<@{user.id}>", "all" if everywhere else ""]
                    words += [duration.strip() if action == "mute" else "", reason]
                    await adapter._slash(interaction, action, " ".join(w for w in words if w))

                return command

            tree.command(name=action, description=description)(make(action))

        @tree.command(name="audit", description="Moderators: the last moderator actions")
        @app_commands.describe(user="Only the actions about this person")
        async def audit(interaction: discord.Interaction, user: discord.User | None = None) -> None:
            await adapter._slash(interaction, "audit", f"<@{user.id}>" if user else "")

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

    async def _slash(
        self,
        interaction: discord.Interaction,
        name: str,
        args: str,
        *,
        ephemeral: bool = True,
        upload: discord.Attachment | None = None,
    ) -> None:
        """Run `/name args` and answer it: at once when quick, else defer and follow up."""
        async with self.adapter._in_hand() as taking:
            if taking:
                await self._answer_command(interaction, name, args, ephemeral, upload)
                return
        with suppress(discord.HTTPException, aiohttp.ClientError):
            await interaction.response.send_message(
                "I am restarting; try again in a minute.", ephemeral=True
            )

    async def _answer_command(
        self,
        interaction: discord.Interaction,
        name: str,
        args: str,
        ephemeral: bool,
        upload: discord.Attachment | None,
    ) -> None:
        work = asyncio.ensure_future(self._run_command(interaction, name, args, upload))
        deferred = False
        try:
            answer = await asyncio.wait_for(asyncio.shield(work), timeout=_ANSWER_WITHIN_S)
        except TimeoutError:
            try:
                await interaction.response.defer(ephemeral=ephemeral, thinking=True)
            except (discord.HTTPException, aiohttp.ClientError) as exc:
                # Too late to answer (the interaction expired): the command still runs.
                log.error("discord.command_defer_failed", command=name, error=str(exc))
                return
            deferred = True
            answer = await work
        parts = split_message(answer, self.adapter.max_message_length) or ["(nothing to say)"]
        none = discord.AllowedMentions.none()
        try:
            if not deferred:
                await interaction.response.send_message(
                    parts[0], ephemeral=ephemeral, allowed_mentions=none
                )
                parts = parts[1:]
            for part in parts:
                await interaction.followup.send(part, ephemeral=ephemeral, allowed_mentions=none)
        except (discord.HTTPException, aiohttp.ClientError) as exc:
            log.error("discord.command_answer_failed", command=name, error=str(exc))

    async def _run_command(
        self,
        interaction: discord.Interaction,
        name: str,
        args: str,
        upload: discord.Attachment | None,
    ) -> str:
        try:
            channel = interaction.channel_id or 0
            scope = await self.adapter._scope(interaction.guild_id, channel, interaction.user.id)
            text: str | None = None
            if upload is not None:
                if upload.size > _MAX_UPLOAD_BYTES:
                    return f"{upload.filename} is too large for a persona file (over 256 KiB)."
                try:
                    text = (await upload.read()).decode("utf-8")
                except UnicodeDecodeError:
                    return f"{upload.filename} is not UTF-8 text; save the YAML as UTF-8."
            ctx = CommandContext(
                scope=scope,
                actor=self.adapter._actor(interaction.user),
                is_moderator=self._is_moderator(interaction),
                allow_switch=self.adapter.settings.allow_switch,
                attachment_text=text,
                attachment_name=None if upload is None else upload.filename,
            )
            return await self.adapter.command(name, args, ctx)
        except Exception as exc:  # the person still gets an answer; the log gets the rest
            log.exception("discord.command_failed", command=name)
            return f"Sorry, /{name} failed: {type(exc).__name__}."
