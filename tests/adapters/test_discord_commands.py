"""Reading a slash command from an interaction's stored data (adapters/_discord_commands.py
`slash_call`): whatever the data, the command comes out bounded and storable, or is
refused as malformed (one failure row for its event, nothing sent)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters._discord_commands import MAX_OPTION_CHARS, SlashCall, slash_call
from bot.db import storable

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
