"""The Telegram intake's pieces on their own, as properties over hostile input: any
batch is stored exactly as received, any mangled update parses or fails with a
reason (and nothing else), offsets confirm only real update ids, backoff is bounded.
(adapters/_telegram_intake.py, adapters/_telegram_parse.py)"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters._telegram_intake import Backoff, RawUpdatesBot, next_offset, raw_events
from adapters._telegram_parse import UnparsableUpdate, display_name, parse_update

# -- poison and bad Unicode: the class, as properties -----------------------------------

# Any text, lone surrogates included (what json.loads makes of "\\ud800").
_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=20) | st.text(
    st.sampled_from(["\ud800", "\udfff", "\udc00", "a", "\U0001f600", "\x00", "\u202e"]),
    max_size=8,
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=20,
)
_BOT = RawUpdatesBot("123:abc")
_VALID = {
    "update_id": 7,
    "message": {
        "message_id": 1,
        "date": 1_700_000_000,
        "chat": {"id": 5, "type": "private"},
        "from": {"id": 5, "is_bot": False, "first_name": "Ann"},
        "text": "hi",
    },
}


@settings(max_examples=300, deadline=None)
@given(st.lists(_JSON, max_size=5))
def test_any_batch_is_stored_exactly_as_received(items: list[Any]) -> None:
    events = raw_events(items)
    assert len(events) == len(items)
    for item, event in zip(items, events, strict=True):
        event.payload.encode("utf-8")  # storable: no lone surrogate left in the text
        # ...and it is the very JSON received (as it was on the wire: ASCII-escaped).
        assert json.loads(event.payload) == json.loads(json.dumps(item))
        assert event.chat is None or len(event.chat) <= 64


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_mangled_update_parses_or_fails_with_a_reason_and_nothing_else(
    data: st.DataObject,
) -> None:
    update = json.loads(json.dumps(_VALID))
    message = update["message"]
    parts = [update, message, message["chat"], message["from"]]
    for _ in range(data.draw(st.integers(0, 3))):
        target = data.draw(st.sampled_from(parts))
        key = data.draw(st.sampled_from([*target, "extra", "poll", "sticker", "entities"]))
        if data.draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = data.draw(_JSON)
    payload = raw_events([update])[0].payload
    try:
        parsed = parse_update(payload, _BOT)
    except UnparsableUpdate as exc:
        assert str(exc)  # a reason, stored with the failure
        return
    user = parsed.message.from_user if parsed.message is not None else None
    if user is not None:
        name = display_name(user)  # never fatal, whatever the name fields hold
        assert isinstance(name, str) and len(name) <= 256
        name.encode("utf-8")  # repaired: storable


@pytest.mark.parametrize(
    ("items", "offset"),
    [
        ([], None),
        ([{"update_id": 3}, {"update_id": 9}, {"update_id": 4}], 10),
        ([{"update_id": True}, {"update_id": "12"}, [1], None], None),
        ([{"update_id": 2**62}], 2**62 + 1),
    ],
)
def test_the_offset_confirms_only_updates_with_an_id(items: list[Any], offset: int | None) -> None:
    assert next_offset(items, None) == offset


def test_backoff_doubles_to_its_ceiling_and_resets() -> None:
    backoff = Backoff(0.5, 30.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(12)]
    assert 0.37 <= delays[0] <= 0.63 and all(d <= 37.5 for d in delays)
    assert delays[-1] >= 22.5  # at the ceiling, never a hot loop
    backoff.reset()
    assert backoff.next_delay() <= 0.63


def _dm(text: object = "hi", **overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "message_id": 1,
        "date": 0,
        "chat": {"id": 7, "type": "private"},
        "from": {"id": 7, "is_bot": False, "first_name": "Ann"},
        "text": text,
    }
    message.update(overrides)
    return {"update_id": 1, "message": message}


@pytest.mark.parametrize(
    ("item", "author"),
    [
        (_dm(), "7"),
        (_dm(None), "7"),  # a photo, a sticker: still a plain message
        (_dm("/help"), None),  # a command answers by itself
        (_dm("  /start"), None),
        (_dm(chat={"id": -5, "type": "group"}), None),  # groups never coalesce
        (_dm(**{"from": {"id": 9, "is_bot": True}}), None),
        (_dm(**{"from": {"id": True}}), None),
        (_dm(**{"from": "7"}), None),
        ({"update_id": 1, "edited_message": _dm()["message"]}, None),
        ({"update_id": 1, "message": "not a dict"}, None),
        ([], None),
    ],
)
def test_the_author_is_read_only_from_a_plain_private_message(item: Any, author: Any) -> None:
    (event,) = raw_events([item])
    assert event.author == author


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    )
)
def test_reading_the_author_never_raises(item: Any) -> None:
    (event,) = raw_events([{"update_id": 1, "message": item}])
    assert event.author is None or isinstance(event.author, str)
