"""The lorebook engine (SillyTavern World Info semantics): logic modes, regex and case,
CJK whole words, order and positions, recursion, budget, timers, hostile keys."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.llm import ApproxTokenCounter
from bot.personas.lorebook import Lore, LoreBook, LoreScan, TimerState, World
from bot.personas.lorebook.keys import MAX_SCAN_CHARS

APPROX = ApproxTokenCounter()


def book(*entries: dict[str, Any], **lore: Any) -> LoreBook:
    return LoreBook(Lore.model_validate({**lore, "entries": list(entries)}))


def fired(lore: LoreBook, *messages: str, **scan: Any) -> list[str]:
    return [f.label for f in lore.evaluate(LoreScan(messages, **scan), APPROX).fired]


def entry(name: str, keys: list[str], **more: Any) -> dict[str, Any]:
    return {"name": name, "keys": keys, "text": f"about {name}", **more}


# -- selective logic ---------------------------------------------------------------

LOGIC = [
    # (logic, message, fires)
    ("and_any", "the cat", False),
    ("and_any", "the black cat", True),
    ("and_any", "the black and white cat", True),
    ("and_all", "the black cat", False),
    ("and_all", "the black and white cat", True),
    ("not_any", "the cat", True),
    ("not_any", "the black cat", False),
    ("not_all", "the cat", True),
    ("not_all", "the black cat", True),
    ("not_all", "the black and white cat", False),
    # no primary key: never, whatever the secondaries
    ("and_any", "black and white", False),
    ("not_any", "a dog", False),
]


@pytest.mark.parametrize(("logic", "message", "fires"), LOGIC)
def test_secondary_keys_by_selective_logic(logic: str, message: str, fires: bool) -> None:
    lore = book(entry("cat", ["cat"], secondary_keys=["black", "white"], selective_logic=logic))
    assert fired(lore, message) == (["cat"] if fires else [])


def test_the_reason_names_the_key_the_message_and_the_logic() -> None:
    lore = book(entry("cat", ["kitty", "cat"], secondary_keys=["black"]))
    [hit] = lore.evaluate(LoreScan(["hello", "a black cat"]), APPROX).fired
    assert hit.reason == "key 'cat' in history message -1, and secondary key 'black'"


def test_no_secondary_keys_means_the_primary_decides() -> None:
    for logic in ("and_any", "and_all", "not_any", "not_all"):
        assert fired(book(entry("cat", ["cat"], selective_logic=logic)), "a cat") == ["cat"]


# -- regex keys and case -------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "message", "fires"),
    [
        ("/d[o0]gs?/", "two d0gs", True),
        ("/d[o0]gs?/", "two D0GS", False),  # a regex's own flags decide case
        ("/d[o0]gs?/i", "two D0GS", True),
        ("/^hello$/m", "x\nhello\ny", True),
        ("/^hello$/", "x\nhello\ny", False),
        ("/a.b/s", "a\nb", True),
        ("/a.b/", "a\nb", False),
        ("/colou?r/", "what colour", True),
    ],
)
def test_regex_keys(key: str, message: str, fires: bool) -> None:
    assert fired(book(entry("r", [key])), message) == (["r"] if fires else [])


@pytest.mark.parametrize(
    ("case_sensitive", "message", "fires"),
    [(False, "NASA said", True), (False, "nasa said", True), (True, "nasa said", False)],
)
def test_case_sensitivity(case_sensitive: bool, message: str, fires: bool) -> None:
    lore = book(entry("nasa", ["NASA"], case_sensitive=case_sensitive))
    assert fired(lore, message) == (["nasa"] if fires else [])


@pytest.mark.parametrize(
    "key",
    [
        "/(a+)+$/",
        "/(a|aa)+b/",
        "/(x+x+)+y/",
        "/(\\w+\\s?)+$/",
        "/([a-z0-9]+)*!/",
    ],
)
def test_a_runaway_regex_key_is_refused_at_load(key: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ValidationError) as info:
        Lore.model_validate({"entries": [entry("r", ["ok", key])]})
    assert time.perf_counter() - started < 5
    [error] = info.value.errors()
    assert error["loc"] == ("entries", 0, "keys", 1)
    assert "takes too long" in error["msg"]


@pytest.mark.parametrize(
    ("key", "why"),
    [("/(unclosed/", "not a valid regular expression"), ("/x*/", "matches empty text")],
)
def test_a_broken_regex_key_is_refused_at_load(key: str, why: str) -> None:
    with pytest.raises(ValidationError) as info:
        Lore.model_validate({"entries": [entry("r", [key])]})
    assert why in info.value.errors()[0]["msg"]


def test_a_regex_that_runs_out_of_time_skips_its_entry_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bot.personas.lorebook.keys as keys

    lore = book(entry("slow", ["/b+c/"]), entry("plain", ["b"]))
    # A pattern the probes let through that is slow on this text: simulated by a
    # timeout too small for any search.
    monkeypatch.setattr(keys, "REGEX_TIMEOUT_S", 1e-9)
    result = lore.evaluate(LoreScan(["b" * 3000 + " b"]), APPROX)
    assert [f.label for f in result.fired] == ["plain"]
    assert [label for label, _ in result.skipped] == ["slow"]


# -- whole words, CJK ------------------------------------------------------------------

WORDS = [
    (["cat"], True, "a category", False),
    (["cat"], True, "a cat!", True),
    (["cat"], False, "a category", True),  # match_whole_words: false
    (["python"], True, "我在学Python", True),  # CJK next to a Latin key is a boundary
    (["猫"], True, "小猫咪很可爱", True),  # Chinese: no word breaks, found where it is
    (["ねこ"], True, "うちのねこはかわいい", True),  # Japanese kana
    (["東京"], True, "東京タワーに行った", True),
    (["北京 大学"], True, "我在北京大学", True),  # spaces in a CJK key are optional
    (["猫"], True, "犬が好き", False),
    (["ＣＡＴ"], True, "my cat", True),  # NFKC: full-width keys and texts
    (["cat"], True, "my ＣＡＴ", True),
    (["straße"], True, "STRASSE", True),  # case folding
    (["AI猫"], True, "MAI猫", False),  # a Latin end of a CJK key is still a word end
    (["AI猫"], True, "我的AI猫", True),
]


@pytest.mark.parametrize(("keys", "whole", "message", "fires"), WORDS)
def test_whole_words_and_cjk(keys: list[str], whole: bool, message: str, fires: bool) -> None:
    lore = book(entry("e", keys, match_whole_words=whole))
    assert fired(lore, message) == (["e"] if fires else [])


# -- scan depth --------------------------------------------------------------------


def test_scan_depth_per_book_and_per_entry() -> None:
    lore = book(entry("near", ["gull"]), entry("far", ["gull"], scan_depth=3), scan_depth=1)
    history = ["now", "one back", "two back gull"]  # newest first after the new message
    assert fired(lore, *history) == ["far"]
    assert fired(lore, "gull now") == ["near", "far"]


def test_scan_takes_history_oldest_first_and_looks_back_as_far_as_any_entry() -> None:
    lore = book(entry("a", ["x"]), entry("b", ["y"], scan_depth=5), scan_depth=1)
    scan = lore.scan("new", ["1", "2", "3", "4", "5", "6", "7"])
    assert scan.messages == ("new", "7", "6", "5", "4", "3")


# -- order and positions -------------------------------------------------------------


def test_order_places_entries_within_their_position_constant_first_among_equals() -> None:
    lore = book(
        {"name": "c", "constant": True, "text": "C"},
        entry("late", ["k"], order=200),
        entry("early", ["k"], order=10),
        entry("mid", ["k"]),
    )
    result = lore.evaluate(LoreScan(["k"]), APPROX)
    assert result.after.splitlines()[1:] == ["- about early", "- C", "- about mid", "- about late"]


def test_each_position_has_its_own_block() -> None:
    lore = book(
        entry("b", ["k"], position="before_char"),
        entry("a", ["k"], position="after_char"),
        entry("d2", ["k"], position="at_depth", depth=2),
        entry("d0", ["k"], position="at_depth", depth=0),
        entry("d2b", ["k"], position="at_depth", depth=2, order=300),
    )
    result = lore.evaluate(LoreScan(["k"]), APPROX)
    assert result.before.endswith("- about b") and "about a" not in result.before
    assert result.after.endswith("- about a")
    assert [(n.depth, n.text.splitlines()[1:]) for n in result.notes] == [
        (2, ["- about d2", "- about d2b"]),
        (0, ["- about d0"]),
    ]
    assert {f.label: (f.position, f.depth) for f in result.fired}["d2b"] == ("at_depth", 2)


def test_disabled_entries_never_fire() -> None:
    assert fired(book(entry("x", ["k"], enabled=False), {"constant": True, "text": "t",
                                                          "enabled": False}), "k") == []


# -- recursion -----------------------------------------------------------------------


def chain(n: int, **lore: Any) -> LoreBook:
    # e0 is fired by the message; e(i) mentions the key of e(i+1).
    entries = [
        {"name": f"e{i}", "keys": [f"k{i}"], "text": f"see k{i + 1}"} for i in range(n)
    ]
    return book(*entries, **lore)


def test_recursion_is_off_unless_asked() -> None:
    assert fired(chain(4), "k0") == ["e0"]


def test_recursion_follows_entries_up_to_max_recursion() -> None:
    assert fired(chain(6, recursive=True, max_recursion=2), "k0") == ["e0", "e1", "e2"]
    assert fired(chain(6, recursive=True, max_recursion=10), "k0") == [
        f"e{i}" for i in range(6)
    ]
    reasons = {
        f.label: f.reason
        for f in chain(3, recursive=True).evaluate(LoreScan(["k0"]), APPROX).fired
    }
    assert reasons["e1"] == "key 'k1' in the text of entry 'e0' (recursion)"


def test_exclude_and_prevent_recursion() -> None:
    lore = book(
        {"name": "a", "keys": ["start"], "text": "mentions bee and sea"},
        {"name": "b", "keys": ["bee"], "text": "b", "exclude_recursion": True},
        {"name": "c", "keys": ["sea"], "text": "mentions dee", "prevent_recursion": True},
        {"name": "d", "keys": ["dee"], "text": "d"},
        recursive=True,
    )
    assert fired(lore, "start") == ["a", "c"]
    assert fired(lore, "start bee") == ["a", "b", "c"]


def test_recursion_between_entries_that_mention_each_other_ends() -> None:
    lore = book(
        {"name": "a", "keys": ["alpha"], "text": "beta"},
        {"name": "b", "keys": ["beta"], "text": "alpha"},
        recursive=True,
        max_recursion=10,
    )
    assert sorted(fired(lore, "alpha")) == ["a", "b"]


# -- budget --------------------------------------------------------------------------


def test_the_budget_covers_every_position_and_is_never_exceeded() -> None:
    entries = [
        entry(f"e{i}", ["k"], position=pos, depth=i % 3, priority=i)
        for i, pos in enumerate(["before_char", "after_char", "at_depth"] * 6)
    ]
    for budget in (0, 5, 20, 40, 80, 400):
        result = book(*entries, budget_tokens=budget).evaluate(LoreScan(["k"]), APPROX)
        parts = [result.before, result.after, *(n.text for n in result.notes)]
        spent = sum(APPROX.count_text(p) for p in parts if p)
        assert spent == result.tokens <= budget
        assert len(result.fired) + len(result.left_out) == (18 if budget else 0)


def test_priority_wins_the_budget_sticky_and_constant_first() -> None:
    lore = book(
        entry("low", ["k"], priority=-5),
        entry("high", ["k"], priority=5),
        {"name": "const", "constant": True, "text": "about const", "priority": -100},
        entry("sticky", ["zzz"], sticky=5, priority=-100),
        budget_tokens=APPROX.count_text("What you know (lore):\n- about const\n- about sticky"),
    )
    scan = LoreScan(["k"], chat_length=3, timers={"sticky": TimerState(sticky_until=6)})
    result = lore.evaluate(scan, APPROX)
    assert [f.label for f in result.fired] == ["const", "sticky"]
    assert result.left_out == ("high", "low")
    # Without the sticky state, the priorities decide what is left of the budget.
    result = lore.evaluate(LoreScan(["k"], chat_length=3), APPROX)
    assert [f.label for f in result.fired][:2] == ["const", "high"]


# -- timed effects -------------------------------------------------------------------


def run_turns(lore: LoreBook, messages: list[str]) -> list[list[str]]:
    """Each message a turn of two messages (the message and a reply), timers carried."""
    timers: dict[str, TimerState] = {}
    shown: list[list[str]] = []
    for i, message in enumerate(messages):
        result = lore.evaluate(LoreScan([message], chat_length=2 * i + 1, timers=timers), APPROX)
        timers.update(result.timers)
        shown.append([f.label for f in result.fired])
    return shown


def test_sticky_keeps_an_entry_for_its_messages_without_its_key() -> None:
    lore = book(entry("s", ["storm"], sticky=4))
    assert run_turns(lore, ["storm", "calm", "calm", "calm"]) == [["s"], ["s"], ["s"], []]


def test_cooldown_blocks_an_entry_after_it_fired() -> None:
    lore = book(entry("c", ["bell"], cooldown=3))
    assert run_turns(lore, ["bell", "bell", "bell", "bell"]) == [["c"], [], ["c"], []]


def test_cooldown_starts_when_sticky_ends() -> None:
    lore = book(entry("sc", ["bell"], sticky=2, cooldown=2))
    assert run_turns(lore, ["bell"] * 5) == [["sc"], ["sc"], [], ["sc"], ["sc"]]


def test_delay_waits_for_the_conversation_to_be_long_enough() -> None:
    lore = book(entry("d", ["hi"], delay=5), {"name": "k", "constant": True, "text": "t",
                                               "delay": 3})
    assert run_turns(lore, ["hi"] * 4) == [[], ["k"], ["k", "d"], ["k", "d"]]


def test_a_sticky_reason_says_how_long_it_stays() -> None:
    lore = book(entry("s", ["storm"], sticky=6))
    scan = LoreScan(["calm"], chat_length=3, timers={"s": TimerState(sticky_until=7)})
    [hit] = lore.evaluate(scan, APPROX).fired
    assert hit.reason == "sticky (4 more messages)"


# -- worlds --------------------------------------------------------------------------


def test_world_entries_join_the_book_under_their_world() -> None:
    world = World.model_validate({"id": "harbour", "entries": [entry("docks", ["dock"])]})
    lore = LoreBook(Lore.model_validate({"entries": [entry("own", ["dock"])]}), [world])
    result = lore.evaluate(LoreScan(["the dock"]), APPROX)
    assert [(f.label, f.key) for f in result.fired] == [
        ("own", "own"),
        ("harbour: docks", "world:harbour/docks"),
    ]


# -- hostile input, bounded cost ------------------------------------------------------


def test_a_huge_message_costs_the_same_as_its_scanned_part() -> None:
    lore = book(*(entry(f"e{i}", [f"word{i}", f"/w{i}x+y/"]) for i in range(200)))
    huge = "word1 " + "w1xxxxxxxx " * 200_000 + " word2"
    started = time.perf_counter()
    result = lore.evaluate(LoreScan([huge] * 5), APPROX)
    assert time.perf_counter() - started < 5
    assert {"e1", "e2"} <= {f.label for f in result.fired}
    assert len(huge) > 100 * MAX_SCAN_CHARS


regex_keys = st.sampled_from(
    ["/a+b/", "/(ab|cd)+e/", "/\\w+\\s\\w+!/", "/[^x]*y/", "/(?:a|b)c{2,5}d/", "/z/i"]
)
texts = st.text(
    alphabet=st.sampled_from("ab cdxyz!\n猫ねこAB\x00ẞ\u200b"), max_size=3000
) | st.builds(lambda c, n: c * n, st.sampled_from("abcz "), st.integers(0, 20_000))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    keys=st.lists(regex_keys | st.text(min_size=1, max_size=12), min_size=1, max_size=6),
    messages=st.lists(texts, min_size=1, max_size=6),
    budget=st.integers(0, 300),
)
def test_any_keys_on_any_text_stay_bounded_and_within_budget(
    keys: list[str], messages: list[str], budget: int
) -> None:
    try:
        lore_model = Lore.model_validate(
            {
                "budget_tokens": budget,
                "recursive": True,
                "max_recursion": 10,
                "entries": [
                    {"name": f"e{i}", "keys": [k], "text": f"{k} and {keys[0]}"}
                    for i, k in enumerate(keys)
                ],
            }
        )
    except ValidationError:
        return  # a refused key is fine: refused with a reason, at load
    lore = LoreBook(lore_model)
    started = time.perf_counter()
    result = lore.evaluate(LoreScan(messages), APPROX)
    assert time.perf_counter() - started < 3
    assert result.tokens <= budget
    assert len({f.label for f in result.fired}) == len(result.fired)


def test_a_slow_regex_that_passes_the_load_check_is_cut_off_and_logged() -> None:
    from structlog.testing import capture_logs

    from bot.personas.lorebook.timers import lore_turn

    # Quadratic, not exponential: cheap on the short load probes, slow on long text.
    lore = book(*(entry(f"q{i}", ["/\\w+\\s?\\w+\\W\\W/"]) for i in range(20)), entry("ok", ["a"]))
    started = time.perf_counter()
    with capture_logs() as logs:
        result = lore_turn(lore, "a " + "a" * 3990, [], APPROX, 1, {})
    assert time.perf_counter() - started < 2  # the turn's regex allowance, not 20 timeouts
    assert [f.label for f in result.fired] == ["ok"]
    assert result.skipped
    skipped = [e for e in logs if e["event"] == "lore.entry_skipped"]
    assert [e["entry"] for e in skipped] == [label for label, _ in result.skipped]
