"""The decision of who answers a group message (bot/groups/decide.py): tables of
cases, and properties over any message, personas and channel state (hypothesis),
with a seeded random generator and time as an argument."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.groups.decide import (
    SILENT_REASONS,
    SPEAK_REASONS,
    ChannelView,
    MessageFacts,
    Present,
    decide,
    mentions_any,
)
from bot.groups.policy import SpeakPolicy

TESS = Present("tester", ("Tess",), SpeakPolicy())
OTTO = Present("other", ("Otto", "Ottie"), SpeakPolicy())
CHATTY = SpeakPolicy(mode="talkative", talkativeness=0.5, cooldown_s=0)


def one(facts: MessageFacts, *present: Present, view: ChannelView | None = None,
        seed: int = 0, now: float = 1000.0) -> dict[str, tuple[bool, str]]:  # fmt: skip
    decision = decide(facts, present, view or ChannelView(), random.Random(seed), now)
    return {v.persona: (v.speak, v.reason) for v in decision.verdicts}


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (MessageFacts("just chatting"), {"tester": (False, "not_addressed"),
                                         "other": (False, "not_addressed")}),
        (MessageFacts("hey", platform_addressed=True), {"tester": (True, "mention"),
                                                        "other": (False, "other_addressed")}),
        (MessageFacts("Otto, thoughts?", platform_addressed=True),
         {"tester": (False, "other_addressed"), "other": (True, "name")}),
        (MessageFacts("what do you think, ottie?"), {"tester": (False, "other_addressed"),
                                                     "other": (True, "name")}),
        (MessageFacts("Tess and Otto: both of you?"), {"tester": (True, "name"),
                                                       "other": (True, "name")}),
        (MessageFacts("so true", platform_addressed=True, replied_persona="other"),
         {"tester": (False, "other_addressed"), "other": (True, "reply")}),
        (MessageFacts("my friend contessa"), {"tester": (False, "not_addressed"),
                                              "other": (False, "not_addressed")}),
        (MessageFacts("hi", direct=True), {"tester": (True, "direct"),
                                           "other": (False, "other_addressed")}),
        (MessageFacts("Tess?", author_is_bot=True), {"tester": (False, "from_bot"),
                                                     "other": (False, "from_bot")}),
        (MessageFacts("Otto?", author_persona="tester"), {"tester": (False, "own_message"),
                                                          "other": (False, "from_bot")}),
    ],
)  # fmt: skip
def test_who_answers(facts: MessageFacts, expected: dict[str, tuple[bool, str]]) -> None:
    assert one(facts, TESS, OTTO) == expected


def test_keywords_pick_one_persona_the_most_talkative() -> None:
    tess = Present("tester", ("Tess",), SpeakPolicy(keywords=("cats",), talkativeness=0.1))
    otto = Present("other", ("Otto",), SpeakPolicy(keywords=("cats",), talkativeness=0.4))
    got = one(MessageFacts("I love CATS!"), tess, otto)
    assert got == {"tester": (False, "other_chosen"), "other": (True, "keyword")}


def test_bots_are_answered_only_when_allowed_and_the_chain_stops() -> None:
    allowed = Present("tester", ("Tess",), SpeakPolicy(answer_bots=True))
    facts = MessageFacts("Tess, beep", author_is_bot=True)
    assert one(facts, allowed, OTTO)["tester"] == (True, "name")
    assert one(facts, allowed, OTTO)["other"] == (False, "from_bot")
    stopped = one(facts, allowed, OTTO, view=ChannelView(bot_chain=3, max_bot_chain=3))
    assert stopped == {"tester": (False, "bot_chain_limit"), "other": (False, "bot_chain_limit")}


def test_budget_and_cooldown() -> None:
    full = ChannelView(replies_last_minute=5, replies_per_minute=5)
    assert one(MessageFacts("Tess?"), TESS, view=full) == {"tester": (False, "budget")}
    # One reply left, two addressed: the first named in order of presence gets it.
    last = ChannelView(replies_last_minute=4, replies_per_minute=5)
    assert one(MessageFacts("Tess, Otto?"), TESS, OTTO, view=last) == {
        "tester": (True, "name"), "other": (False, "budget")}  # fmt: skip
    always = Present("tester", ("Tess",), SpeakPolicy(mode="always", cooldown_s=30))
    recent = ChannelView(last_unprompted={"tester": 990.0})
    assert one(MessageFacts("hm"), always, view=recent, now=1000.0) == {
        "tester": (False, "cooldown")}  # fmt: skip
    assert one(MessageFacts("hm"), always, view=recent, now=1020.0) == {
        "tester": (True, "always")}  # fmt: skip
    # Being addressed is never cooled down.
    assert one(MessageFacts("Tess?"), always, view=recent)["tester"] == (True, "name")


def test_the_most_talkative_is_chosen_and_rolls() -> None:
    quiet = Present("tester", ("Tess",), SpeakPolicy(mode="talkative", talkativeness=0.2,
                                                     cooldown_s=0))  # fmt: skip
    loud = Present("other", ("Otto",), SpeakPolicy(mode="talkative", talkativeness=0.9,
                                                   cooldown_s=0))  # fmt: skip
    rng = random.Random(42)
    spoke = {"tester": 0, "other": 0}
    for _ in range(2000):
        decision = decide(MessageFacts("nothing for anyone"), [quiet, loud], ChannelView(), rng, 0)
        assert decision.reason("tester") == "other_chosen"
        for persona in decision.speakers:
            spoke[persona] += 1
    assert spoke["tester"] == 0
    assert 0.85 < spoke["other"] / 2000 < 0.95  # its talkativeness, seeded


def test_names_match_whole_words_and_anywhere_in_scripts_without_spaces() -> None:
    assert mentions_any("hey Tess!", ["Tess"])
    assert not mentions_any("contessa", ["Tess"])
    assert mentions_any("小雨你好吗", ["小雨"])
    assert mentions_any("おはようユキさん", ["ユキ"])
    assert mentions_any("HELLO ΣΟΦΊΑ", ["σοφία"])
    assert not mentions_any("a+b", ["a.b"])  # a name is text, never a pattern
    assert mentions_any("ping (*) now", ["(*)"])  # symbols are matched as they are
    assert not mentions_any("anything", [])


def test_a_hostile_text_costs_a_bounded_time() -> None:
    names = [f"name{i}" for i in range(50)] + ["a" * 64]
    text = ("a" * 63 + " ") * 200_000  # 12.8 MB: only the first SCAN_CHARS are read
    started = time.perf_counter()
    assert not mentions_any(text, names)
    assert time.perf_counter() - started < 0.5


# -- properties -------------------------------------------------------------------------

_names = st.sampled_from(["Tess", "Otto", "Ann", "小雨", "cats", "bot"])
_policy = st.builds(
    SpeakPolicy,
    mode=st.sampled_from(["addressed", "always", "talkative"]),
    talkativeness=st.floats(0, 1),
    cooldown_s=st.sampled_from([0.0, 30.0, 120.0]),
    nicknames=st.lists(_names, max_size=2).map(tuple),
    keywords=st.lists(_names, max_size=2).map(tuple),
    answer_bots=st.booleans(),
)
_present = st.lists(
    st.builds(Present, st.sampled_from(["a", "b", "c", "d"]), st.lists(_names, min_size=1,
              max_size=2).map(tuple), _policy), max_size=4)  # fmt: skip
_facts = st.builds(
    MessageFacts,
    text=st.lists(st.one_of(_names, st.text(max_size=8)), max_size=6).map(" ".join),
    author_is_bot=st.booleans(),
    author_persona=st.none() | st.sampled_from(["a", "b", "z"]),
    direct=st.booleans(),
    platform_addressed=st.booleans(),
    replied_persona=st.none() | st.sampled_from(["a", "b", "z"]),
)
_view = st.builds(
    ChannelView,
    replies_last_minute=st.integers(0, 6),
    bot_chain=st.integers(0, 5),
    last_unprompted=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.floats(0, 1000)),
    replies_per_minute=st.integers(0, 5),
    max_bot_chain=st.integers(0, 4),
)


class _CountingRandom(random.Random):
    draws = 0

    def random(self) -> float:
        self.draws += 1
        return super().random()


@settings(max_examples=250, deadline=None)
@given(_facts, _present, _view, st.integers(0, 2**32), st.floats(0, 2000))
def test_decision_properties(
    facts: MessageFacts, present: list[Present], view: ChannelView, seed: int, now: float
) -> None:
    rng = _CountingRandom(seed)
    decision = decide(facts, present, view, rng, now)
    ids = list(dict.fromkeys(p.id for p in present))
    # Every present persona has exactly one verdict, in order, with a known reason.
    assert [v.persona for v in decision.verdicts] == ids
    for v in decision.verdicts:
        assert v.reason in (SPEAK_REASONS if v.speak else SILENT_REASONS)
    speakers = decision.speakers
    # Two personas answer one message only when each was addressed.
    if len(speakers) > 1:
        assert all(decision.reason(p) in ("reply", "name") for p in speakers)
    # The author never answers itself; bots only those who allow it, within the chain.
    assert facts.author_persona not in speakers
    first = {p.id: p for p in reversed(present)}
    if facts.author_is_bot or facts.author_persona is not None:
        assert all(first[p].policy.answer_bots for p in speakers)
        if view.bot_chain >= view.max_bot_chain:
            assert speakers == ()
    # The budget holds outside DMs.
    if not facts.direct and view.replies_per_minute > 0:
        assert len(speakers) <= max(0, view.replies_per_minute - view.replies_last_minute)
    if facts.direct:
        assert len(speakers) <= 1
    # At most one draw, and the same seed decides the same.
    assert rng.draws <= 1
    assert decide(facts, present, view, random.Random(seed), now) == decide(
        facts, present, view, random.Random(seed), now
    )
