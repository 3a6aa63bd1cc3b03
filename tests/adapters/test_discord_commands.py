"""Reading a slash command from an interaction's stored data (adapters/_discord_commands.py
`slash_call`): whatever the data, the command comes out bounded and storable, or is
refused as malformed (one failure row for its event, nothing sent)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters._discord_client import reset_webhook_routes, use_routes_for_webhooks
from adapters._discord_commands import MAX_OPTION_CHARS, SlashCall, slash_call
from bot.db import storable
from bot.inbox.worker import _EVENT
from tests.adapters.conftest import DiscordBotFactory
from tests.adapters.test_discord import CONFIG, interact, settle, voiced
from tests.fakes.discord_api import ANN, BOB, GENERAL, FakeDiscord

MANAGE_GUILD = 1 << 5

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_names = st.sampled_from(["persona", "forget", "timezone", "ban", "mute", "audit", "help", "x"])


@settings(max_examples=300, deadline=None)
@given(
    name=_names | _json,
    options=st.lists(
        st.fixed_dictionaries({"name": st.sampled_from(["what", "zone", "user", "upload", "switch",
                                                        "reason", "duration", "everywhere"]),
                               "value": _json | st.text(min_size=3000, max_size=3000)}),
        max_size=6,
    ) | _json,
    resolved=_json,
)  # fmt: skip
def test_any_command_data_is_read_bounded_or_refused_as_malformed(
    name: Any, options: Any, resolved: Any
) -> None:
    data = {"name": name, "options": options, "resolved": resolved}
    try:
        call = slash_call(data)
    except (ValueError, TypeError, KeyError):
        return  # one failure row for the event, nothing sent
    assert len(call.args) <= 2 * MAX_OPTION_CHARS + 64  # at most two texts and a mention
    assert storable(call.args) == call.args and call.name == str(name).lower()


def test_the_commands_read_as_the_tree_declares_them() -> None:
    def data(name: str, **options: Any) -> dict[str, Any]:
        listed = [{"name": k, "value": v} for k, v in options.items()]
        return {"name": name, "options": listed, "resolved": {"attachments": {"9": {"id": "9"}}}}

    assert slash_call(data("persona")) == SlashCall("persona", "")
    assert slash_call(data("persona", switch=" other ")) == SlashCall(
        "persona", "other", ephemeral=False
    )
    assert slash_call(data("persona", upload="9")) == SlashCall(
        "persona", "upload", upload={"id": "9"}
    )
    assert slash_call(data("forget", what="all")) == SlashCall("forget", "all")
    assert slash_call(data("mute", user="42", everywhere=True, duration="2h", reason="spam")) == (
        SlashCall("mute", "<@42> all 2h spam")
    )
    assert slash_call(data("ban", user="42", duration="2h")) == SlashCall("ban", "<@42>")
    assert slash_call(data("audit")) == SlashCall("audit", "")
    assert slash_call(data("HELP")) == SlashCall("help", "")


async def test_a_moderator_command_is_done_once_for_its_interaction(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord
) -> None:
    bot = await discord_bot(voiced, **CONFIG)
    payload = discord_fake.interaction(
        "ban", ANN, GENERAL, {"user": BOB, "reason": "spam"}, permissions=MANAGE_GUILD
    )
    assert "Done, ban" in (await interact(discord_fake, payload))["content"]
    await settle(bot)
    rows = await bot.rows(
        "select e.id, e.event_key from moderation_actions m join inbox_events e "
        "on e.id = m.event_id"
    )
    assert [key for _, key in rows] == [f"interaction:{payload['id']}"]
    # Its command run again for the same interaction (a crash before its reply was
    # stored): the ban is not done, or audited, twice.
    event = await bot.adapter.inbox.get(rows[0][0])
    await bot.app.db.run(lambda c: c.exec_driver_sql("delete from interaction_answers"))
    bot.adapter.interactions._now = lambda: event.received_at  # still within its 3 s
    # As the worker hands it over: in its event's context, answers routed to the fake.
    handing = _EVENT.set(event)
    routes = use_routes_for_webhooks(bot.adapter._routes)
    try:
        await bot.adapter.interactions.handle(event)
    finally:
        _EVENT.reset(handing)
        if routes is not None:
            reset_webhook_routes(routes)
    # Its reply was stored and sent, and Discord, answered already, refused it: recorded.
    assert await bot.rows("select status, reason like '%40060%' from interaction_answers") == [
        ("undeliverable", 1)
    ]
    assert await bot.rows("select count(*) from moderation_actions") == [(1,)]
