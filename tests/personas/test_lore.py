"""Persona lore: which entries a turn's texts trigger, their order, and the budget."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.llm import ApproxTokenCounter, HFTokenCounter, TokenCounter
from bot.personas import (
    Lore,
    LoreBook,
    Persona,
    PersonaFileError,
    Problem,
    load_persona,
    persona_json_schema,
)
from bot.personas.lorebook import LORE_HEADING, MAX_SCAN_CHARS

from .conftest import SHIPPED_DIR, VALID

Write = Callable[..., Path]
APPROX = ApproxTokenCounter()


def book(*entries: dict[str, Any], **lore: Any) -> LoreBook:
    return LoreBook(Lore.model_validate({**lore, "entries": list(entries)}))


def fires(keys: list[str], *texts: str, **entry: Any) -> bool:
    """Whether an entry with `keys` applies to `texts`."""
    return bool(book({"keys": keys, "text": "FACT", **entry}).matching(texts))


def names(lore: LoreBook, *texts: str) -> list[str | None]:
    return [entry.name for entry in lore.matching(texts)]


@pytest.fixture(scope="module")
def hf_tokens(tiny_model_dir: Path) -> TokenCounter:
    from transformers import AutoTokenizer

    return HFTokenCounter(AutoTokenizer.from_pretrained(tiny_model_dir))


# -- matching -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I have a cat", True),
        ("My CAT is asleep", True),
        ("Cat!", True),
        ("(cat)", True),
        ("cat_food", False),  # '_' is a word character
        ("a category of things", False),
        ("my bobcat", False),
        ("concatenate", False),
        ("cats", False),  # whole words: list plurals as keys of their own
        ("no animals here", False),
    ],
)
def test_keys_match_whole_words_in_any_case(text: str, expected: bool) -> None:
    assert fires(["cat"], text) is expected


def test_case_sensitive_keys_need_the_exact_capitalisation() -> None:
    assert fires(["May"], "See you in May", case_sensitive=True)
    assert not fires(["May"], "you may go", case_sensitive=True)
    assert fires(["May"], "you may go")  # the default ignores case


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("考试", "我明天有考试，好紧张"),  # Chinese: no spaces between words
        ("テスト", "明日はテストがあります"),  # Japanese
        ("고양이", "고양이가 너무 귀여워요"),  # Korean: a particle glued to the noun
        ("北京 大学", "我想考北京大学"),  # spaces in a CJK key are optional
        ("考试", "考试"),
    ],
)
def test_cjk_keys_match_anywhere(key: str, text: str) -> None:
    assert fires([key], text)


def test_cjk_keys_still_need_their_characters_in_order() -> None:
    assert not fires(["考试"], "试考")
    assert not fires(["考试"], "考 试")  # a space the key does not have


def test_latin_keys_are_whole_words_next_to_cjk_text() -> None:
    assert fires(["python"], "我在学Python，很有意思")
    assert not fires(["python"], "我在学Pythonic风格")


def test_phrases_match_across_any_whitespace_but_not_across_messages() -> None:
    assert fires(["mr whiskers"], "Have you seen Mr\n   Whiskers today?")
    assert not fires(["mr whiskers"], "mrwhiskers")
    assert not fires(["mr whiskers"], "I asked mr", "whiskers said no")


def test_symbols_at_the_ends_of_keys_need_no_word_boundary() -> None:
    assert fires(["c++"], "I write C++ at work")
    assert fires(["c++"], "C++!")
    assert not fires(["c++"], "abc++")  # a letter before the key's first letter
    assert fires(["#tag"], "post it with x#tag")  # '#' may follow anything


def test_full_width_letters_and_case_folding_match() -> None:
    assert fires(["cat"], "ＣＡＴ")  # full-width, as Chinese keyboards type it
    assert fires(["straße"], "STRASSE")
    assert fires(["Straße"], "STRASSE", case_sensitive=False)


def test_any_key_of_an_entry_triggers_it() -> None:
    assert fires(["vet", "doctor"], "the doctor is nice")
    assert fires(["vet", "doctor"], "VET tomorrow")


def test_every_text_is_searched() -> None:
    assert fires(["walk"], "hello", "time for a walk?", "bye")


def test_a_huge_message_is_searched_at_its_start_and_end_only() -> None:
    filler = "x " * MAX_SCAN_CHARS
    assert fires(["lighthouse"], "lighthouse " + filler)
    assert fires(["lighthouse"], filler + " lighthouse")
    assert not fires(["lighthouse"], filler + " lighthouse " + filler)


# -- order, rendering, budget ---------------------------------------------------------


def test_always_on_first_then_by_priority_then_file_order() -> None:
    lore = book(
        {"name": "low", "keys": ["x"], "text": "low"},
        {"name": "always-low", "always": True, "text": "always low"},
        {"name": "high", "keys": ["x"], "text": "high", "priority": 5},
        {"name": "always-high", "always": True, "text": "always high", "priority": 2},
        {"name": "low-2", "keys": ["x"], "text": "low two"},
        {"name": "negative", "keys": ["x"], "text": "negative", "priority": -1},
        {"name": "other", "keys": ["y"], "text": "not triggered", "priority": 99},
    )
    assert names(lore, "x") == ["always-high", "always-low", "high", "low", "low-2", "negative"]
    block = lore.block(["x"], APPROX)
    assert block.text == "\n".join(
        [
            LORE_HEADING,
            "- always high",
            "- always low",
            "- high",
            "- low",
            "- low two",
            "- negative",
        ]
    )
    assert block.shown == ("always-high", "always-low", "high", "low", "low-2", "negative")


def test_always_on_entries_need_no_keys_and_show_for_any_text() -> None:
    lore = book({"always": True, "text": "You live by the sea."})
    expected = f"{LORE_HEADING}\n- You live by the sea."
    assert lore.block(["anything at all"], APPROX).text == expected
    assert lore.block([], APPROX).text == expected


def test_nothing_applies_gives_no_block() -> None:
    lore = book({"keys": ["lighthouse"], "text": "The keeper is Ada."})
    block = lore.block(["what a nice day"], APPROX)
    assert (block.text, block.shown, block.left_out) == ("", (), ())


def test_multiline_text_stays_one_readable_item() -> None:
    lore = book({"always": True, "text": "  The house:\n\n- two floors\n- a red door\n"})
    assert lore.block([], APPROX).text == (
        f"{LORE_HEADING}\n- The house:\n\n  - two floors\n  - a red door"
    )


def test_entries_are_labelled_by_name_or_position() -> None:
    lore = book({"always": True, "text": "a"}, {"name": "bee", "always": True, "text": "b"})
    assert lore.block([], APPROX).shown == ("entries.0", "bee")


@pytest.mark.parametrize("counter", ["approx", "hf"])
def test_budget_skips_what_does_not_fit_and_tries_the_rest(
    counter: str, request: pytest.FixtureRequest
) -> None:
    tokens: TokenCounter = APPROX if counter == "approx" else request.getfixturevalue("hf_tokens")
    long_text = "The lighthouse keeper, Ada, " + "tells long stories about storms " * 12
    entries = [
        {"name": "home", "always": True, "text": "You live by the sea."},
        {"name": "long", "keys": ["sea"], "text": long_text, "priority": 5},
        {"name": "boat", "keys": ["sea"], "text": "Your boat is called Gull."},
        {"name": "shells", "keys": ["sea"], "text": "You collect shells."},
    ]
    fits = "\n".join(
        [
            LORE_HEADING,
            "- You live by the sea.",
            "- Your boat is called Gull.",
            "- " + "You collect shells.",
        ]
    )
    budget = tokens.count_text(fits)
    assert tokens.count_text(f"{LORE_HEADING}\n- You live by the sea.\n- {long_text}") > budget

    block = book(*entries, budget_tokens=budget).block(["the sea"], tokens)
    assert block.text == fits
    assert (block.shown, block.left_out) == (("home", "boat", "shells"), ("long",))
    assert tokens.count_text(block.text) <= budget

    tighter = book(*entries, budget_tokens=budget - 1).block(["the sea"], tokens)
    assert tighter.shown == ("home", "boat") and tighter.left_out == ("long", "shells")
    assert tokens.count_text(tighter.text) <= budget - 1


def test_no_budget_or_no_room_for_any_entry_gives_no_block() -> None:
    entry = {"always": True, "text": "You live by the sea."}
    assert not book(entry, budget_tokens=0).active
    assert book(entry, budget_tokens=0).block(["sea"], APPROX).text == ""
    heading_only = APPROX.count_text(LORE_HEADING)
    block = book(entry, budget_tokens=heading_only).block(["sea"], APPROX)
    assert block.text == "" and block.left_out == ("entries.0",)


def test_an_empty_lore_is_inactive() -> None:
    assert not LoreBook(Lore()).active
    assert LoreBook(Lore()).block(["hello"], APPROX).text == ""


# -- hostile input --------------------------------------------------------------------


def test_regex_characters_in_keys_and_text_are_literal() -> None:
    lore = book(
        {"name": "dots", "keys": ["(.*)"], "text": r"Group \1 and $0 stay as written: (.*)"},
        {"name": "plus", "keys": ["a+b", "[x]", r"\d", "^", "|"], "text": "plus"},
    )
    assert names(lore, "match (.*) literally") == ["dots"]
    assert names(lore, "anything else entirely, 123") == []
    assert names(lore, "is a+b = [x]?") == ["plus"]
    assert names(lore, "a|b") == ["plus"]
    assert "Group \\1 and $0 stay as written: (.*)" in lore.block(["(.*)"], APPROX).text


def test_emoji_nul_and_huge_messages_never_break_it() -> None:
    lore = book(
        {"always": True, "text": "🐶 You are a dog."},
        {"name": "ball", "keys": ["ball", "🎾"], "text": "You love the red ball."},
    )
    huge = "🐶 woof " * 15_000 + "\x00" * 1000 + "ball"
    assert len(huge) > 100_000
    block = lore.block([huge, "", "\x00", "\ud800 lone surrogate", "🎾"], APPROX)
    assert block.shown == ("entries.0", "ball")
    assert names(lore, "a 🎾!") == [None, "ball"]


@settings(max_examples=200, deadline=None)
@given(
    key=st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=30).filter(
        str.strip
    ),
    texts=st.lists(st.text(max_size=300), max_size=5),
)
def test_any_key_fires_when_said_and_no_text_raises(key: str, texts: list[str]) -> None:
    lore = book(
        {"keys": [key], "text": "FACT"}, {"keys": [key], "text": "x", "case_sensitive": True}
    )
    lore.block(texts, APPROX)  # never raises, whatever the texts
    said = f"and then {key} , yes"
    assert len(lore.matching([said])) == 2, repr(key)


# -- the schema and the loader --------------------------------------------------------


def test_lore_defaults() -> None:
    persona = Persona.model_validate({"id": "a", "name": "A", "system_prompt": "You are A."})
    assert persona.lore == Lore()
    assert (persona.lore.budget_tokens, persona.lore.scan_depth) == (400, 4)
    assert persona.lore.entries == ()


def test_keys_and_text_are_trimmed() -> None:
    lore = Lore.model_validate({"entries": [{"keys": [" cat "], "text": "  A cat.\n"}]})
    assert lore.entries[0].keys == ("cat",) and lore.entries[0].text == "A cat."


@pytest.mark.parametrize(
    ("lore", "loc"),
    [
        ({"budget_tokens": -1}, ("budget_tokens",)),
        ({"scan_depth": 101}, ("scan_depth",)),
        ({"entries": [{"text": "x"}]}, ("entries", 0, "keys")),
        ({"entries": [{"keys": [], "text": "x"}]}, ("entries", 0, "keys")),
        ({"entries": [{"keys": ["a", "  "], "text": "x"}]}, ("entries", 0, "keys", 1)),
        ({"entries": [{"keys": ["a"], "text": " \n "}]}, ("entries", 0, "text")),
        ({"entries": [{"keys": ["a"]}]}, ("entries", 0, "text")),
        (
            {"entries": [{"keys": ["a"], "text": "x", "keywords": ["b"]}]},
            ("entries", 0, "keywords"),
        ),
    ],
)
def test_invalid_lore_is_refused(lore: dict[str, Any], loc: tuple[str | int, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        Lore.model_validate(lore)
    assert [tuple(e["loc"]) for e in info.value.errors()] == [loc]


def test_an_invalid_always_flag_is_one_problem_not_two() -> None:
    with pytest.raises(ValidationError) as info:
        Lore.model_validate({"entries": [{"always": "sometimes", "text": "x"}]})
    assert [tuple(e["loc"]) for e in info.value.errors()] == [("entries", 0, "always")]


def test_json_schema_documents_lore() -> None:
    lore = persona_json_schema()["$defs"]["Lore"]
    assert set(lore["properties"]) == {
        "budget_tokens",
        "scan_depth",
        "recursive",
        "max_recursion",
        "worlds",
        "entries",
    }
    entry = persona_json_schema()["$defs"]["LoreEntry"]
    assert entry["required"] == ["text"]
    # Editors also flag an entry without keys that is not always-on.
    assert entry["then"]["required"] == ["keys"]
    flags = entry["if"]["not"]["anyOf"]
    assert [f["properties"] for f in flags] == [
        {"always": {"const": True}},
        {"constant": {"const": True}},
    ]
    assert all(prop.get("description") for prop in entry["properties"].values())


LORE_FILE = (
    VALID
    + """\
lore:
  entries:
    - name: home
      always: true
      text: You live by the sea.
    - name: keeper
      text: The keeper is Ada.
    - name: boat
      keys: [boat]
      text: ""
    - name: gull
      keys: [gull, "  "]
      text: Gulls steal chips.
"""
)


def test_loader_reports_lore_problems_at_file_line_and_field(write: Write) -> None:
    path = write("lore.yaml", LORE_FILE)
    with pytest.raises(PersonaFileError) as info:
        load_persona(path)
    problems: list[Problem] = info.value.problems
    assert [(p.line, p.column, p.field) for p in problems] == [
        (12, 7, "lore.entries.1.keys"),  # no keys: at the entry
        (16, 13, "lore.entries.2.text"),  # at the empty value
        (18, 20, "lore.entries.3.keys.1"),  # at the blank key
    ]
    no_keys, empty_text, blank_key = problems
    assert "needs at least one key" in no_keys.message and "always: true" in no_keys.message
    assert empty_text.message == "the text is empty: write what the persona knows"
    assert "a key is blank" in blank_key.message
    assert str(no_keys).startswith(f"{path}:12:7: lore.entries.1.keys: an entry needs")


def test_loader_accepts_lore_and_the_book_uses_it(write: Write) -> None:
    path = write(
        "ok.yaml",
        VALID + "lore:\n  scan_depth: 2\n  entries:\n    - {keys: [boat], text: Gull.}\n",
    )
    lore = load_persona(path).persona.lore
    assert lore.scan_depth == 2
    assert LoreBook(lore).block(["my boat"], APPROX).text == f"{LORE_HEADING}\n- Gull."


def test_shipped_lore_triggers_in_english_and_chinese() -> None:
    biscuit = LoreBook(load_persona(SHIPPED_DIR / "biscuit.yaml").persona.lore)
    assert [e.name for e in biscuit.matching(["Park later?"])] == ["home", "the park"]
    assert [e.name for e in biscuit.matching(["Parking is hard"])] == ["home"]
    xiaoyu = LoreBook(load_persona(SHIPPED_DIR / "xiaoyu.yaml").persona.lore)
    assert [e.name for e in xiaoyu.matching(["下周就期末了，还要背单词"])] == [
        "学习方法",
        "考试",
        "英语",
    ]
    for lore in (biscuit, xiaoyu):  # every shipped entry fits its budget at once
        everything = [k for e in lore.lore.entries for k in e.keys]
        assert not lore.block([" ".join(everything)], APPROX).left_out
