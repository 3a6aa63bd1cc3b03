"""The adapter registry on a real SQLite file: deploy as canary, promote, roll back
(a canary, then a serving adapter back to the one before), and the names it refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.db import Database
from bot.errors import UsageError
from bot.train.registry import (
    AdapterRegistry,
    AdapterStatus,
    check_adapter_name,
    check_persona_id,
)

T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[AdapterRegistry]:
    db = Database.open(f"sqlite:///{tmp_path}/bot.db")
    yield AdapterRegistry(db)
    await db.aclose()


async def add(registry: AdapterRegistry, name: str, share: float, hours: int = 0) -> None:
    await registry.register(
        name=name, persona_id="sam", path=f"/adapters/{name}", sha256="a" * 64,
        base_model="tiny", rank=4, report={"gate": {"passed": True, "checks": []}},
        canary_share=share, now=T0 + timedelta(hours=hours),
    )  # fmt: skip


async def statuses(registry: AdapterRegistry) -> dict[str, str]:
    return {r.name: r.status.value for r in await registry.all("sam")}


async def test_canary_promote_and_rollbacks(registry: AdapterRegistry) -> None:
    await add(registry, "sam-v1", 1.0)  # share 1: serving at once
    await add(registry, "sam-v2", 0.2, hours=1)
    pair = (await registry.active())["sam"]
    assert pair.serving is not None and pair.serving.name == "sam-v1"
    assert pair.canary is not None and pair.canary.canary_share == 0.2
    assert pair.canary.report["gate"]["passed"] is True

    await registry.promote("sam-v2", now=T0 + timedelta(hours=2))
    assert await statuses(registry) == {"sam-v2": "serving", "sam-v1": "retired"}
    await add(registry, "sam-v3", 0.5, hours=3)

    gone, serving = await registry.rollback("sam")  # the canary goes; v2 keeps serving
    assert (gone.name, serving.name if serving else None) == ("sam-v3", "sam-v2")
    gone, serving = await registry.rollback("sam")  # v2 goes; v1 serves again
    assert (gone.name, serving.name if serving else None) == ("sam-v2", "sam-v1")
    assert await statuses(registry) == {
        "sam-v3": "rolled_back", "sam-v2": "rolled_back", "sam-v1": "serving",
    }  # fmt: skip
    gone, serving = await registry.rollback("sam")  # nothing before v1: the base model
    assert gone.name == "sam-v1" and serving is None
    with pytest.raises(UsageError, match="no canary or serving adapter"):
        await registry.rollback("sam")
    assert await registry.live() == []


async def test_one_canary_at_a_time(registry: AdapterRegistry) -> None:
    await add(registry, "sam-a", 0.1)
    await add(registry, "sam-b", 0.1, hours=1)
    assert await statuses(registry) == {"sam-b": "canary", "sam-a": "retired"}
    a = await registry.get("sam-a")
    assert a is not None and a.reason == "replaced by sam-b"


async def test_refusals(registry: AdapterRegistry) -> None:
    await add(registry, "sam-a", 0.1)
    with pytest.raises(UsageError, match="already registered"):
        await add(registry, "sam-a", 0.1)
    with pytest.raises(UsageError, match="from 0 to 1"):
        await add(registry, "sam-b", 1.5)
    with pytest.raises(UsageError, match="no adapter named 'nope'"):
        await registry.promote("nope")
    await registry.promote("sam-a")
    with pytest.raises(UsageError, match="only a canary or candidate"):
        await registry.promote("sam-a")
    with pytest.raises(UsageError, match="not a canary"):
        await registry.set_share("sam-a", 0.5)
    # A decision taken on an old reading rolls back nothing newer.
    await add(registry, "sam-c", 0.3, hours=1)
    with pytest.raises(UsageError, match="no longer the newest"):
        await registry.rollback("sam", only="sam-b")
    assert (await registry.get("sam-c")).status is AdapterStatus.CANARY  # type: ignore[union-attr]


async def test_raising_a_share(registry: AdapterRegistry) -> None:
    await add(registry, "sam-a", 0.1)
    assert (await registry.set_share("sam-a", 0.4)).canary_share == 0.4


HOSTILE_NAMES = [
    "", " ", "a b", "../etc", "a/b", "-leading", ".hidden", "x" * 65, "tab\tname",
    "new\nline", "nul\x00", "émoji😀", "semi;colon", "$(id)", "a:b", "ａ",
]  # fmt: skip


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_odd_adapter_names_are_one_clear_line(name: str) -> None:
    with pytest.raises(UsageError, match="adapter name") as info:
        check_adapter_name(name)
    assert "\n" not in str(info.value).replace("\\n", "")
    assert len(str(info.value)) < 250


@given(st.text(max_size=100))
def test_any_name_is_accepted_only_if_safe(name: str) -> None:
    try:
        check_adapter_name(name)
    except UsageError:
        return
    assert name.isascii() and name.replace("-", "").replace("_", "").replace(".", "").isalnum()
    assert 1 <= len(name) <= 64 and name[0].isalnum()


@pytest.mark.parametrize("persona", ["", "Sam", "sam sam", "../x", "s" * 65, "sam\n"])
def test_odd_persona_ids(persona: str) -> None:
    with pytest.raises(UsageError, match="persona id"):
        check_persona_id(persona)
