"""The crisis pattern layer: a table per language, hostile spellings, bounded cost."""

from __future__ import annotations

import time
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.safety.crisis import CrisisDetector
from bot.safety.normalize import fold, variants, window

DETECTOR = CrisisDetector()

# (text, expected kind or None). Indirect phrasing and hyperbole on purpose.
CRISIS = [
    # English
    ("I want to kill myself", "self_harm", "en"),
    ("i just want to die", "self_harm", "en"),
    ("everyone would be better off without me", "self_harm", "en"),
    ("I don't want to be alive anymore", "self_harm", "en"),
    ("I want to go to sleep and never wake up", "self_harm", "en"),
    ("there's no reason to go on living", "self_harm", "en"),
    ("I've been thinking about hurting myself again", "self_harm", "en"),
    ("I wrote my goodbye letters last night", "self_harm", "en"),
    ("I'm going to take all my pills tonight", "self_harm", "en"),
    ("I won't be around much longer", "self_harm", "en"),
    ("my stepdad keeps hitting me", "danger", "en"),
    ("my best friend says she wants to kill herself", "self_harm", "en"),
    ("he threatened to kill me", "danger", "en"),
    ("I'm not safe at home", "danger", "en"),
    # Chinese
    ("我不想活了", "self_harm", "zh"),
    ("我真的想死", "self_harm", "zh"),
    ("活着没有意义", "self_harm", "zh"),
    ("没有我大家会更好", "self_harm", "zh"),
    ("我想结束自己的生命", "self_harm", "zh"),
    ("我不想再醒來了", "self_harm", "zh"),
    ("我爸一直打我", "danger", "zh"),
    # German
    ("Ich will mich umbringen", "self_harm", "de"),
    ("ich möchte einfach nicht mehr leben", "self_harm", "de"),
    ("Alle wären besser dran ohne mich", "self_harm", "de"),
    ("Ich denke daran, mir etwas anzutun", "self_harm", "de"),
    ("Ich habe schon einen Abschiedsbrief geschrieben", "self_harm", "de"),
    ("Mein Vater schlägt mich jeden Tag", "danger", "de"),
    ("Mein Bruder will sich umbringen", "self_harm", "de"),
    ("Ich bin in Gefahr", "danger", "de"),
    # Spanish
    ("Quiero morir", "self_harm", "es"),
    ("no quiero seguir viviendo", "self_harm", "es"),
    ("estarían mejor sin mí", "self_harm", "es"),
    ("pienso en quitarme la vida", "self_harm", "es"),
    ("voy a hacerme daño", "self_harm", "es"),
    ("mi padrastro me pega", "danger", "es"),
    ("mi amiga quiere quitarse la vida", "self_harm", "es"),
    ("me amenazó con matarme", "danger", "es"),
    # Japanese
    ("死にたい", "self_harm", "ja"),
    ("もう消えたい", "self_harm", "ja"),
    ("生きていたくない", "self_harm", "ja"),
    ("私がいない方がみんな幸せ", "self_harm", "ja"),
    ("リスカしちゃった", "self_harm", "ja"),
    ("彼氏に殴られた", "danger", "ja"),
    ("友達が自殺するって言ってる", "self_harm", "ja"),
    ("我朋友说她想自杀", "self_harm", "zh"),
]

NOT_CRISIS = [
    "this homework is killing me",
    "I'm dying to see that movie",
    "lol I almost died laughing",
    "my mom is going to kill me when she sees my grades",  # uncertain, not a crisis
    "I hurt myself at the gym yesterday",
    "Suicide Squad was a terrible film",
    "I don't want to live in London",
    "this cake is to die for",
    "kill the process and restart it",
    "笑死我了",
    "想死你了！",
    "作业要累死我了",
    "热死了",
    "Die Hausaufgaben bringen mich um",
    "Ich sterbe vor Lachen",
    "esta tarea me está matando",
    "me muero de risa",
    "no quiero vivir en Madrid",
    "quiero cortarme el pelo",
    "宿題が多すぎて死にそう",
    "死ぬほど笑った",
    "he called me yesterday",
    "他打我电话了",
]


@pytest.mark.parametrize(("text", "kind", "language"), CRISIS)
def test_crisis_messages_are_found_with_their_language(
    text: str, kind: str | None, language: str | None
) -> None:
    signal = DETECTOR.detect(text)
    if kind is None:
        assert signal is None or signal.kind == "uncertain", signal
        return
    assert signal is not None, text
    assert (signal.kind, signal.language) == (kind, language)


@pytest.mark.parametrize("text", NOT_CRISIS)
def test_hyperbole_and_idioms_are_not_a_crisis(text: str) -> None:
    signal = DETECTOR.detect(text)
    assert signal is None or signal.kind == "uncertain", (text, signal)


@pytest.mark.parametrize(
    "text",
    [
        "I can't take it anymore",
        "I feel so hopeless",
        "ich kann nicht mehr",
        "ya no aguanto",
        "撑不下去了",
        "もう無理",
    ],
)
def test_worrying_but_ambiguous_messages_are_uncertain(text: str) -> None:
    signal = DETECTOR.detect(text)
    assert signal is not None and signal.kind == "uncertain", text


HIDDEN = [
    "I want to ＫＩＬＬ ＭＹＳＥＬＦ",  # full-width
    "I want to k\u200bill my\u200dself",  # zero-width characters
    "i want to k1ll mys3lf",  # leetspeak
    "I want to k i l l myself",  # spaced out
    "I want to k.i.l.l myself",
    "I WANT TO DIIIIIE",  # stretched, shouting
    "I want to ki\u00adll my\u00adself",  # soft hyphens
    "I don’t want to be alive anymore",  # typographic apostrophe
    "Quiero MORIR",
    "ICH WILL MICH UMBRINGEN",
    "我不想活\u200b了",
    "ｼﾆﾀｲ",  # half-width katakana
]


@pytest.mark.parametrize("text", HIDDEN)
def test_obfuscated_spellings_are_found(text: str) -> None:
    signal = DETECTOR.detect(text)
    assert signal is not None and signal.kind == "self_harm", (text, variants(fold(text)))


def test_half_width_forms_fold_to_full_width() -> None:
    assert fold("ﾘｽｶ") == fold("リスカ")
    assert DETECTOR.detect("ﾘｽｶしたい") is not None


@settings(max_examples=200, deadline=None)
@given(
    phrase=st.sampled_from([t for t, k, _ in CRISIS if k is not None]),
    noise=st.lists(st.sampled_from(["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]), max_size=6),
    seed=st.integers(min_value=0, max_value=10_000),
    wide=st.booleans(),
    before=st.text(alphabet="abc xyz.,", max_size=40),
)
def test_any_crisis_phrase_with_invisible_characters_and_width_changes_is_found(
    phrase: str, noise: list[str], seed: int, wide: bool, before: str
) -> None:
    chars = list(phrase)
    for i, mark in enumerate(noise):
        chars.insert((seed + i * 7) % (len(chars) + 1), mark)
    text = "".join(chars)
    if wide:  # ASCII letters as full-width forms
        text = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    signal = DETECTOR.detect(f"{before} {text}")
    assert signal is not None and signal.kind != "uncertain", (text, signal)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_fold_is_idempotent_and_never_grows_much(text: str) -> None:
    folded = fold(text)
    assert fold(folded) == folded
    assert len(folded) <= 3 * len(unicodedata.normalize("NFKC", text)) + 1


@pytest.mark.parametrize(
    "megabyte",
    [
        "a" * 1_000_000,
        "kill " * 200_000,
        ("I " + "x" * 23 + " ") * 40_000,
        "k i l l " * 125_000,
        "想" * 1_000_000,
        "\u200b" * 1_000_000,
        "1" * 1_000_000,
        "don't want to " * 70_000,
    ],
    ids=["letters", "words", "gaps", "spaced", "cjk", "zero-width", "digits", "prefixes"],
)
def test_a_hostile_megabyte_is_scanned_in_bounded_time(megabyte: str) -> None:
    started = time.process_time()
    DETECTOR.detect(megabyte)
    DETECTOR.detect(megabyte + " I want to kill myself")  # the tail is scanned
    assert time.process_time() - started < 2.0


def test_only_a_window_of_a_long_message_is_scanned() -> None:
    long = "x" * 500_000
    assert len(window(long, 20_000)) <= 20_001
    assert DETECTOR.detect("I want to die " + long) is not None  # head
    assert DETECTOR.detect(long + " I want to die") is not None  # tail
