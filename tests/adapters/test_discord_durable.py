"""Nothing a person writes on Discord is lost: the inbox, the catch-up from channel
history after a fresh gateway session, poison isolation, nonces and pacing, with the
real discord.py against the fake Discord (tests/fakes/discord_api.py)."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.llm.base import ChatRequest
from tests.adapters.conftest import DiscordBot, DiscordBotFactory
from tests.adapters.test_discord import CONFIG, MENTION, settle, until, until_rows, voiced
from tests.fakes.bot_process import BotChild
from tests.fakes.discord_api import (
    ALWAYS_ON,
    ANN,
    BOB,
    BOT,
    GENERAL,
    GUILD,
    KEYWORDS,
    TOKEN,
    FakeDiscord,
    FakeUser,
    snowflake_at,
)
from tests.fakes.openai_server import FakeOpenAIServer


async def inbox(bot: DiscordBot) -> list[tuple[Any, ...]]:
    return await bot.rows(
        "select event_key, chat, status, reason from inbox_events "
        "where platform = 'discord' order by id"
    )


def contents(fake: FakeDiscord, channel: int) -> list[str]:
    return [m["content"] for m in fake.sent_messages(channel)]


# -- poison -------------------------------------------------------------------------------


async def test_poison_message_creates_cost_one_failure_row_each_and_block_nothing(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord
) -> None:
    bot = await discord_bot(voiced, **CONFIG)
    fake = discord_fake
    dm = fake.dm_channel(ANN)
    good = fake.message(dm, ANN, "still there?")
    poison: list[Any] = [
        {**fake.message(dm, ANN, "x"), "author": None},  # no author object
        {**fake.message(dm, ANN, "x"), "channel_id": "general"},  # not a snowflake
        {**fake.message(dm, ANN, "x"), "guild_id": "not-a-guild"},
        {**fake.message(dm, ANN, "x"), "id": "12ab"},  # keyed by its hash, then failed
        {**fake.message(dm, ANN, "x"), "mentions": "everyone"},
        {k: v for k, v in fake.message(dm, ANN, "no id").items() if k != "id"},
        {"channel_id": str(dm)},  # hardly a message at all
    ]
    for data in poison:  # in the same DM, ahead of the good one: its lane must go on
        await fake.dispatch("MESSAGE_CREATE", data)
    await fake.send_message(good)
    await until(lambda: fake.sent_messages(dm))
    await settle(bot)
    assert contents(fake, dm) == ["Tess heard: still there?"]
    rows = await inbox(bot)
    failed = [r for r in rows if r[2] == "failed"]
    assert len(failed) == len(poison), rows
    assert all(r[3] and r[3].startswith("UnparsableMessage: not a Discord message") for r in failed)
    assert [r[2] for r in rows if r[0] == good["id"]] == ["done"]
    # Poison is the inbox's to keep (for replay), not the ledger's.
    assert await bot.rows("select text from messages where direction = 'in'") == [("still there?",)]
    assert await bot.rows("select count(*) from failures") == [(0,)]


async def test_every_message_create_is_in_the_inbox_raw_before_it_is_answered(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord
) -> None:
    release = asyncio.Event()

    async def held(request: ChatRequest) -> str:
        await release.wait()
        return voiced(request)

    bot = await discord_bot(held, **CONFIG)
    fake = discord_fake
    mention = await fake.send_message(
        fake.message(GENERAL, ANN, f"{MENTION} hold on", mentions=(BOT,))
    )
    chatter = await fake.send_message(fake.message(GENERAL, BOB, "just talking"))
    await until(lambda: bot.backend.requests)  # the turn is generating, not yet answered
    rows = await until_rows(
        bot,
        "select event_key, chat, payload from inbox_events where platform = 'discord' order by id",
    )
    assert [r[0] for r in rows[:2]] == [mention["id"], chatter["id"]]
    assert all(r[1] == str(GENERAL) for r in rows[:2])
    assert json.loads(rows[0][2])["content"] == f"{MENTION} hold on"  # the raw JSON
    release.set()
    await until(lambda: fake.sent_messages(GENERAL))
    await settle(bot)
    # The bot's own reply comes back on the gateway too: stored, and left alone.
    statuses = await bot.rows("select status from inbox_events where platform = 'discord'")
    assert statuses == [("done",)] * 3


# -- catch-up -------------------------------------------------------------------------------


async def test_messages_written_while_the_bot_was_down_are_answered_after_restart(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord
) -> None:
    fake = discord_fake
    dm = fake.dm_channel(ANN)
    bot = await discord_bot(voiced, **CONFIG)
    await fake.send_message(fake.message(dm, ANN, "before"))
    await fake.send_message(fake.message(GENERAL, BOB, "chatter before"))
    await fake.send_message(fake.message(KEYWORDS, BOB, "quiet here afterwards"))
    await until(lambda: fake.sent_messages(dm))
    await settle(bot)
    await bot.shutdown()
    assert not fake.connected()

    # Written while nobody listened: only Discord's history has them.
    away = [await fake.send_message(fake.message(dm, ANN, f"while away {i}")) for i in range(3)]
    await fake.send_message(fake.message(GENERAL, BOB, f"{MENTION} are you back?", mentions=(BOT,)))
    await fake.send_message(fake.message(GENERAL, ANN, "unaddressed, while away"))

    again = await discord_bot(voiced, **CONFIG)
    await until(lambda: len(fake.sent_messages(dm)) == 4, timeout=10)
    await until(lambda: fake.sent_messages(GENERAL))
    await settle(again)
    assert contents(fake, dm) == [
        "Tess heard: before",
        *(f"Tess heard: {m['content']}" for m in away),
    ]  # in the order they were written
    assert contents(fake, GENERAL) == ["Tess heard: Bob: are you back?"]
    assert fake.session_starts == ["identify", "identify"]
    report = again.adapter.intake.catch_ups[-1]
    assert report.read >= 5 and report.over_count == 0
    read = {c.path for c in fake.calls if c.method == "GET" and c.path.endswith("/messages")}
    assert {f"/channels/{dm}/messages", f"/channels/{GENERAL}/messages"} <= read
    # Discord said (GUILD_CREATE's last_message_id) nothing is new there: not read.
    assert f"/channels/{KEYWORDS}/messages" not in read
    stored = await again.rows(
        "select text, status from messages where direction = 'in' and text like '%away%'"
    )
    assert sorted(stored) == sorted(
        [(f"while away {i}", "answered") for i in range(3)]
        + [("unaddressed, while away", "ignored")]
    )


async def test_catch_up_is_bounded_in_count_and_age(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord
) -> None:
    fake = discord_fake
    dm = fake.dm_channel(ANN)
    bob_dm = fake.dm_channel(BOB)
    settings = {**CONFIG, "catch_up_messages": 2, "catch_up_max_age_s": 600}
    bot = await discord_bot(voiced, **settings)
    # Bob's last message (the place catch-up starts from) is an hour old: stored,
    # and expired rather than answered an hour late.
    now = time.time()
    await fake.send_message(
        fake.message(bob_dm, BOB, "an hour ago", message_id=snowflake_at(now - 3600))
    )
    await fake.send_message(fake.message(dm, ANN, "first"))
    await until(lambda: fake.sent_messages(dm))
    await until_rows(bot, "select 1 from messages where text = 'an hour ago'")
    await settle(bot)
    await bot.shutdown()

    for i in range(5):  # more than the count bound
        await fake.send_message(fake.message(dm, ANN, f"away {i}"))
    too_old = snowflake_at(now - 1800, 1)  # after Bob's anchor, but past the age bound
    await fake.send_message(fake.message(bob_dm, BOB, "half an hour ago", message_id=too_old))
    await fake.send_message(fake.message(bob_dm, BOB, "just now"))

    again = await discord_bot(voiced, **settings)
    await until(lambda: len(fake.sent_messages(dm)) == 3 and fake.sent_messages(bob_dm))
    await settle(again)
    # The newest two are the ones people wait on; the older three are left, and said so.
    assert contents(fake, dm) == ["Tess heard: first", "Tess heard: away 3", "Tess heard: away 4"]
    assert contents(fake, bob_dm) == ["Tess heard: just now"]
    report = again.adapter.intake.catch_ups[-1]
    assert report.over_count == 3
    keys = {r[0] for r in await inbox(again)}
    assert str(too_old) not in keys


async def test_a_bound_channel_is_caught_up_before_anything_was_stored_there(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord
) -> None:
    fake = discord_fake
    bot = await discord_bot(voiced, **CONFIG)
    dm = fake.dm_channel(ANN)
    await fake.send_message(fake.message(dm, ANN, "hi"))  # the bot has run here before
    await until(lambda: fake.sent_messages(dm))
    await settle(bot)
    await bot.shutdown()
    # ALWAYS_ON is configured, but nothing was ever said there while the bot listened.
    old = snowflake_at(time.time() - 7200)
    await fake.send_message(fake.message(ALWAYS_ON, BOB, "two hours ago", message_id=old))
    await fake.send_message(fake.message(ALWAYS_ON, BOB, "anyone while you were away?"))
    again = await discord_bot(voiced, **CONFIG)
    await until(lambda: fake.sent_messages(ALWAYS_ON), timeout=10)
    await settle(again)
    assert contents(fake, ALWAYS_ON) == ["Tess heard: Bob: anyone while you were away?"]


async def test_a_resumed_session_replays_what_it_missed_and_does_not_read_history(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord
) -> None:
    fake = discord_fake
    dm = fake.dm_channel(ANN)
    bot = await discord_bot(voiced, **CONFIG)
    await fake.send_message(fake.message(dm, ANN, "one"))
    await until(lambda: fake.sent_messages(dm))
    catch_ups = len(bot.adapter.intake.catch_ups)
    await fake.drop_connections(4000)  # a network blip: discord.py RESUMEs
    await fake.send_message(fake.message(dm, ANN, "two, during the blip"))
    await until(lambda: len(fake.sent_messages(dm)) == 2, timeout=10)
    assert fake.session_starts == ["identify", "resume"]
    assert len(bot.adapter.intake.catch_ups) == catch_ups  # RESUMED is not READY
    history_reads = [c for c in fake.calls if c.method == "GET" and c.path.endswith("/messages")]

    # Discord forgot the session: op 9, a fresh IDENTIFY, READY, and a catch-up.
    fake.invalidate_sessions()
    await fake.drop_connections(4000)
    await fake.send_message(fake.message(dm, ANN, "three, session gone"))
    await until(lambda: len(fake.sent_messages(dm)) == 3, timeout=15)
    assert fake.session_starts[-2:] == ["resume-refused", "identify"]
    assert len(bot.adapter.intake.catch_ups) == catch_ups + 1
    reads = [c for c in fake.calls if c.method == "GET" and c.path.endswith("/messages")]
    assert len(reads) > len(history_reads)
    assert contents(fake, dm) == [
        "Tess heard: one", "Tess heard: two, during the blip", "Tess heard: three, session gone"
    ]  # fmt: skip


async def test_guild_history_messages_keep_their_guild(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord
) -> None:
    # REST messages carry no guild_id; a caught-up server message must not pass for a
    # DM (DMs are always answered): unaddressed, it is context, not a turn.
    fake = discord_fake
    bot = await discord_bot(voiced, **CONFIG)
    await fake.send_message(fake.message(GENERAL, BOB, "anchor"))
    await until_rows(bot, "select 1 from messages where text = 'anchor'")
    await bot.shutdown()
    mallory = FakeUser(200_000_000_000_000_077, "mallory")
    await fake.send_message(fake.message(GENERAL, mallory, "not for you, bot"))
    again = await discord_bot(voiced, **CONFIG)
    await until_rows(again, "select 1 from messages where text = 'not for you, bot'")
    await settle(again)
    assert fake.sent_messages(GENERAL) == []
    assert await again.rows(
        "select c.space, m.status from messages m join conversations c "
        "on c.id = m.conversation_id where m.text = 'not for you, bot'"
    ) == [(str(GUILD), "ignored")]


# -- kill -9 --------------------------------------------------------------------------------

KILL_PERSONA = """\
version: 1
id: tester
name: Tess
description: A terse test persona.
system_prompt: You are Tess. Answer in one short line.
"""


def write_run_config(tmp: Path, *, llm_url: str, fake: FakeDiscord) -> Path:
    """A bot.toml for `bot run`: the fakes' URLs, one persona, no memory, no scheduler."""
    personas = tmp / "personas"
    personas.mkdir(exist_ok=True)
    (personas / "tester.yaml").write_text(KILL_PERSONA, encoding="utf-8")
    lines = [
        "[database]",
        f'url = "sqlite:///{tmp / "bot.db"}"',
        "[llm]",
        'backend = "openai"',
        f'base_url = "{llm_url}"',
        'model = "tiny"',
        "max_concurrency = 64",
        "[personas]",
        f'dirs = ["{personas}"]',
        'default = "tester"',
        "watch = false",
        "[memory]",
        "enabled = false",
        "[scheduler]",
        "enabled = false",
        "[logging]",
        'level = "WARNING"',
        'format = "json"',
        "[discord]",
        f'api_base_url = "{fake.api_base_url}"',
        f'gateway_url = "{fake.gateway_url}"',
    ]
    path = tmp / "bot.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class BotRun(BotChild):
    """`bot run` as a child process on a SQLite file that outlives it, against the
    fake Discord (DISCORD_TOKEN its token, TELEGRAM_TOKEN unset). Logs: bot-<n>.log."""

    def __init__(self, config: Path, fake: FakeDiscord) -> None:
        super().__init__(config, unset=("TELEGRAM_TOKEN",), entry=("-m", "bot.cli"))
        self.fake = fake

    def credentials(self) -> dict[str, str]:
        return {"DISCORD_TOKEN": TOKEN}

    async def start(self, timeout: float = 30.0) -> None:
        """Start it; return once its gateway session is up (READY sent)."""
        sessions = len(self.fake.session_starts)
        await self.spawn()
        await self.wait_until(
            lambda: self.fake.session_starts[sessions:].count("identify") > 0,
            timeout=timeout,
            what="did not connect",
        )


def _sending(db: Path) -> int:
    """Replies recorded as leaving but not confirmed: what a kill may repeat."""
    with sqlite3.connect(db) as con:
        row = con.execute(
            "select count(*) from messages where direction = 'out' and status = 'sending'"
        ).fetchone()
    return int(row[0])


async def _write_load(
    fake: FakeDiscord, people: list[FakeUser], per_person: int, rng: random.Random, over_s: float
) -> list[dict[str, Any]]:
    """Each person writes `per_person` DMs at random moments within `over_s`."""
    plan = sorted(
        (rng.uniform(0, over_s), person, i) for person in people for i in range(per_person)
    )
    start = time.monotonic()
    written = []
    for at, person, i in plan:
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))
        dm = fake.dm_channel(person)
        written.append(await fake.send_message(fake.message(dm, person, f"{person.name} {i}")))
    return written


def _bot_replies(fake: FakeDiscord) -> dict[int, int]:
    """Per channel, how many messages the bot created there."""
    return {
        channel: sum(1 for m in messages if m["author"]["id"] == str(BOT.id))
        for channel, messages in fake.history.items()
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_kill_9_in_the_middle_of_a_load_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    people = [FakeUser(300_000_000_000_000_000 + n, f"p{n}") for n in range(40)]
    with FakeOpenAIServer() as llm:
        async with FakeDiscord() as fake:
            fake.record = False  # the load is counted from `history`
            bot = BotRun(write_run_config(tmp_path, llm_url=llm.base_url, fake=fake), fake)
            await bot.start()
            # Everyone has talked with the bot before: an open DM. (A bot cannot list
            # its DMs, so a first DM lost in a crash has no history to be read from.)
            hello = [
                await fake.send_message(fake.message(fake.dm_channel(p), p, "hello"))
                for p in people
            ]
            deadline = time.monotonic() + 20
            while sum(_bot_replies(fake).values()) < len(hello) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            load = asyncio.create_task(_write_load(fake, people, 4, rng, over_s=3.0))
            await asyncio.sleep(rng.uniform(0.5, 3.0))  # somewhere in the load
            await bot.kill()
            in_flight = await asyncio.to_thread(_sending, tmp_path / "bot.db")
            await asyncio.sleep(rng.uniform(0.0, 1.0))  # people go on writing meanwhile
            await bot.start()
            written = await load

            expected = {fake.dm_channel(p): 1 for p in people}
            for message in written:
                expected[int(message["channel_id"])] += 1
            deadline = time.monotonic() + 25
            while _bot_replies(fake) != expected and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            got = _bot_replies(fake)
            assert await bot.stop() == 0, bot.log()
    lost = {c: n - got.get(c, 0) for c, n in expected.items() if got.get(c, 0) < n}
    duplicated = sum(max(0, got.get(c, 0) - n) for c, n in expected.items())
    assert lost == {}, (sum(lost.values()), bot.log())
    # A send in flight at the kill is sent again with the same nonce: Discord (and the
    # fake) answer it with the first message, so not even those repeat.
    assert duplicated == 0, (duplicated, in_flight, fake.nonce_hits)


# -- pacing -----------------------------------------------------------------------------------


async def test_typing_never_starves_replies_under_a_burst(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord
) -> None:
    async def thinking(request: ChatRequest) -> str:
        await asyncio.sleep(0.3)  # long enough for typing indicators to be wanted
        return voiced(request)

    fake = discord_fake  # Discord's limits: 5 per 5 s per channel, 50 requests/s overall
    bot = await discord_bot(thinking, pacing=None, **CONFIG)  # the adapter's own pacing
    people = [FakeUser(310_000_000_000_000_000 + n, f"b{n}") for n in range(80)]
    dms = [fake.dm_channel(p) for p in people]
    started = time.monotonic()
    for person, dm in zip(people, dms, strict=True):  # every message at once
        await fake.send_message(fake.message(dm, person, "quick question"))
    await until(lambda: all(fake.sent_messages(dm) for dm in dms), timeout=20)
    took = time.monotonic() - started
    await settle(bot)
    global_429s = [r for r in fake.rate_limited if r[0] == "global"]
    stats = bot.adapter.pacer.stats
    # Typing is best effort: it used what replies did not need, and no reply waited
    # behind it long enough to draw the global limit.
    assert len(global_429s) <= 2, (len(global_429s), stats)
    assert stats.typing_sent + stats.typing_skipped >= 1
    assert len(fake.typing_posts()) < len(people)
    assert all(len(fake.sent_messages(dm)) == 1 for dm in dms)
    assert took < 15, took


# -- nonces -----------------------------------------------------------------------------------


async def test_a_resent_reply_carries_the_same_nonces_and_discord_makes_nothing_new(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord
) -> None:
    from bot.messages import Outgoing, Scope

    sentence = "A sentence of a reply long enough to be split in parts. "
    bot = await discord_bot(lambda _: sentence * 80, **CONFIG)
    fake = discord_fake
    dm = fake.dm_channel(ANN)
    await fake.send_message(fake.message(dm, ANN, "tell me a lot"))
    [(reply_id, text)] = await until_rows(
        bot, "select id, text from messages where direction = 'out' and status = 'delivered'"
    )
    first = fake.sent_messages(dm)
    assert len(first) >= 3
    assert [m["nonce"] for m in first] == [f"{reply_id}.{i}" for i in range(len(first))]
    assert all(m["enforce_nonce"] is True for m in first)
    # What a restart does with a reply caught `sending`: the same parts again.
    scope = Scope(platform="discord", channel=str(dm), user=str(ANN.id), persona="tester")
    ids = await bot.adapter.send(Outgoing(scope=scope, text=text, message_id=reply_id))
    assert fake.nonce_hits == len(first)
    assert len(fake.created) == len(first)  # nothing new on Discord
    assert ids == [m["id"] for m in fake.created]  # the messages made the first time


async def test_the_fake_honours_enforce_nonce_like_discord(discord_fake: FakeDiscord) -> None:
    import aiohttp

    from tests.fakes.discord_api import TOKEN

    fake = discord_fake
    headers = {"Authorization": f"Bot {TOKEN}"}
    url = f"{fake.api_base_url}/channels/{GENERAL}/messages"
    async with aiohttp.ClientSession(headers=headers) as http:

        async def post(body: dict[str, Any]) -> dict[str, Any]:
            async with http.post(url, json=body) as response:
                assert response.status == 200
                answer: dict[str, Any] = await response.json()
                return answer

        one = await post({"content": "a", "nonce": "n1", "enforce_nonce": True})
        again = await post({"content": "a", "nonce": "n1", "enforce_nonce": True})
        loose = await post({"content": "a", "nonce": "n1"})  # not enforced: a new message
        other = await post({"content": "b", "nonce": "n2", "enforce_nonce": True})
    assert again["id"] == one["id"] and fake.nonce_hits == 1
    assert len({one["id"], loose["id"], other["id"]}) == 3
    assert [m["id"] for m in fake.created] == [one["id"], loose["id"], other["id"]]


# -- hostile payloads, as a class ---------------------------------------------------------------

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.characters(codec=None), max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    data=_JSON | st.dictionaries(st.sampled_from(["id", "channel_id", "guild_id", "author"]), _JSON)
)
def test_the_intake_stores_any_frame_without_raising(data: Any) -> None:
    from adapters._discord_intake import DiscordIntake

    def lane(channel: int, guild: int | None) -> str:
        if guild is not None and guild % 2:
            raise LookupError("a cache that fails")  # the lane falls back, the event stays
        return str(channel)

    intake = DiscordIntake(
        cast(Any, None), cast(Any, None), platform="discord", accept=cast(Any, None),
        chat_for=lane, session_ready=asyncio.Event(), max_messages=1, max_age_s=1.0,
    )  # fmt: skip
    event = intake._raw(data, datetime.now(UTC))
    assert isinstance(event.key, str) and 0 < len(event.key) <= 45
    json.loads(event.payload)  # stored as JSON text, whatever came in
    assert event.chat is None or event.chat.isdigit()


HOSTILE_VALUES: list[Any] = [
    None,
    "",
    "x",
    -1,
    2**70,
    1.5,
    True,
    [],
    {},
    "\ud800",
    [None],
    {"id": {}},
]
FIELDS = [
    "id", "channel_id", "guild_id", "author", "member", "content", "timestamp", "mentions",
    "mention_roles", "attachments", "embeds", "type", "flags", "message_reference",
    "referenced_message", "sticker_items", "edited_timestamp",
]  # fmt: skip


async def test_every_field_of_a_message_replaced_by_hostile_values_costs_at_most_one_failure(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord
) -> None:
    from adapters.discord import UnparsableMessage
    from bot.inbox import InboxEvent, InboxStatus

    bot = await discord_bot(lambda _: "ok", **CONFIG)
    fake = discord_fake
    dm = fake.dm_channel(ANN)
    failures: dict[str, int] = {}
    # Mostly unaddressed server messages (parsed, normalised and stored as context:
    # quick); a DM (answered) for the fields a turn reads.
    cases = [(fake.message(GENERAL, BOB, "context"), field) for field in FIELDS]
    cases += [(fake.message(dm, ANN, "hi"), f) for f in ("author", "content", "attachments")]
    for base, field in cases:
        for value in HOSTILE_VALUES:
            data = {**base, field: value}
            event = InboxEvent(
                id=0, platform="discord", key=str(data.get("id")), chat=None,
                payload=json.dumps(data), status=InboxStatus.PENDING,
                received_at=datetime.now(UTC),
            )  # fmt: skip
            try:
                await asyncio.wait_for(bot.adapter.handle_event(event), 10)
            except UnparsableMessage:
                failures[field] = failures.get(field, 0) + 1
            except Exception as exc:  # the worker records it too; but name it as such
                raise AssertionError(f"{field}={value!r}: {type(exc).__name__}: {exc}") from exc
    # A broken id, channel or author is not a message; a broken decoration is not fatal.
    assert {"id", "channel_id", "author"} <= failures.keys(), failures
    await fake.send_message(fake.message(dm, ANN, "and now?"))
    await until(lambda: any(m["content"] == "ok" for m in fake.sent_messages(dm)))


async def test_replies_in_a_busy_guild_channel_leave_in_the_order_of_the_messages(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord
) -> None:
    delays = iter([0.4, 0.0, 0.3, 0.0, 0.2, 0.0])  # earlier turns are slower

    async def uneven(request: ChatRequest) -> str:
        await asyncio.sleep(next(delays, 0.0))
        return voiced(request)

    fake = discord_fake
    bot = await discord_bot(uneven, **CONFIG)
    asked = []
    for i in range(6):  # Ann's questions with Bob's chatter between them
        asked.append(
            await fake.send_message(
                fake.message(GENERAL, ANN, f"{MENTION} question {i}", mentions=(BOT,))
            )
        )
        await fake.send_message(fake.message(GENERAL, BOB, f"chatter {i}"))
    await until(lambda: len(fake.sent_messages(GENERAL)) == 6, timeout=15)
    await settle(bot)
    answered = [str(m["message_reference"]["message_id"]) for m in fake.sent_messages(GENERAL)]
    assert answered == [m["id"] for m in asked]


def test_a_discord_py_without_the_parser_table_is_one_clear_error() -> None:
    from types import SimpleNamespace

    from adapters._discord_intake import DiscordIntake
    from bot.errors import AdapterError

    client = SimpleNamespace(_connection=SimpleNamespace(parsers={"READY": print}))
    intake = DiscordIntake(
        cast(Any, client), cast(Any, None), platform="discord", accept=cast(Any, None),
        chat_for=lambda c, g: str(c), session_ready=asyncio.Event(), max_messages=1,
        max_age_s=1.0,
    )  # fmt: skip
    with pytest.raises(AdapterError, match="no parser table"):
        intake.install()
