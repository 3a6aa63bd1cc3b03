"""Discord shards split across workers: `shard_ids` with `shard_count` in config."""

from __future__ import annotations

import discord
import pytest

from adapters._discord_client import Routes, make_client
from bot.config import load_settings
from bot.errors import ConfigError


def test_each_worker_names_its_shards() -> None:
    settings = load_settings(None, {"discord": {"shard_count": 4, "shard_ids": [2, 3]}})
    assert settings.discord.shard_ids == [2, 3]
    client = make_client(
        Routes(None, None),
        sharded=True,
        intents=discord.Intents.default(),
        shard_count=settings.discord.shard_count,
        shard_ids=settings.discord.shard_ids,
    )
    assert isinstance(client, discord.AutoShardedClient)
    assert client.shard_ids == [2, 3] and client.shard_count == 4


@pytest.mark.parametrize(
    ("discord_settings", "problem"),
    [
        ({"shard_ids": [0]}, "needs discord.shard_count"),
        ({"shard_count": 2, "shard_ids": [2]}, "from 0 to 1"),
        ({"shard_count": 2, "shard_ids": [1, 1]}, "distinct"),
        ({"shard_count": 2, "shard_ids": []}, "distinct"),
    ],
)
def test_shard_ids_that_cannot_be_are_refused(
    discord_settings: dict[str, object], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_settings(None, {"discord": discord_settings})
