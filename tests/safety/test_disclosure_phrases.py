"""Disclosure questions and human claims in each language, and the disclosure text."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.personas import LoadedPersona, load_persona
from bot.safety.disclosure import DEFAULT_DISCLOSURE, asks_if_human, claims_human, disclosure_text
from tests.test_engine import PERSONA

QUESTIONS = [
    "are you a real person?",
    "Am I talking to a bot right now?",
    "r u human",
    "wait, are you an AI?",
    "is this a bot?",
    "你是真人吗？",
    "你是不是机器人",
    "我在跟人聊天吗",
    "Bist du ein Mensch?",
    "Rede ich hier mit einer KI?",
    "Sind Sie ein echter Mensch?",
    "¿Eres humano?",
    "¿Estoy hablando con una persona?",
    "¿Eres real?",
    "あなたは人間ですか？",
    "AIなの？",
    "中の人いるの？",
]
NOT_QUESTIONS = [
    "are you hungry?",
    "what is a human anyway?",
    "is this a good idea?",
    "you are a good friend",
    "Bist du müde?",
    "¿Eres feliz?",
    "今日は暑いですか",
    "你是谁的朋友",
]
CLAIMS = [
    "I'm a real person, I promise.",
    "I am not a bot, silly!",
    "Honestly, I'm human just like you.",
    "我是真人",
    "我不是机器人哦",
    "Ich bin ein Mensch.",
    "Ich bin keine KI!",
    "Soy humana, de verdad.",
    "No soy un bot.",
    "私は人間です。",
    "AIじゃないよ！",
]
NOT_CLAIMS = [
    "I'm an AI, but I'm glad to talk.",
    "I'm only human after all, as the song goes.",
    "I'm not a human, I'm an AI companion.",
    "我是人工智能",
    "Ich bin eine KI.",
    "Soy una IA.",
    "私はAIです。",
    "You're a real person and you matter.",
]


@pytest.mark.parametrize("text", QUESTIONS)
def test_questions_whether_it_is_human_are_recognised(text: str) -> None:
    assert asks_if_human(text) is not None, text


@pytest.mark.parametrize("text", NOT_QUESTIONS)
def test_other_questions_are_not(text: str) -> None:
    assert asks_if_human(text) is None, text


@pytest.mark.parametrize("text", CLAIMS)
def test_replies_claiming_to_be_human_are_caught(text: str) -> None:
    assert claims_human(text) is not None, text


@pytest.mark.parametrize("text", NOT_CLAIMS)
def test_honest_replies_are_not(text: str) -> None:
    assert claims_human(text) is None, text


@pytest.mark.parametrize(
    "text", ["ＡＲＥ ＹＯＵ ＨＵＭＡＮ?", "are y\u200bou hu\u200dman", "are you a r3al person"]
)
def test_questions_are_found_through_width_and_invisible_characters(text: str) -> None:
    assert asks_if_human(text) is not None


def _persona(tmp_path: Path, disclosure: str) -> LoadedPersona:
    path = tmp_path / "tester.yaml"
    text = PERSONA.replace("  ai_disclosure: I am an AI.", f"  ai_disclosure: {disclosure!r}")
    path.write_text(text, encoding="utf-8")
    return load_persona(path)


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("I'm Tess, an AI friend.", "I'm Tess, an AI friend."),
        ("", DEFAULT_DISCLOSURE),
        ("I am a real human, not a bot.", DEFAULT_DISCLOSURE),  # a persona cannot lie here
        ("Just Tess here!", f"Just Tess here! ({DEFAULT_DISCLOSURE})"),
    ],
)
def test_the_disclosure_text_is_the_personas_own_but_always_honest(
    tmp_path: Path, configured: str, expected: str
) -> None:
    loaded = _persona(tmp_path, configured)
    assert disclosure_text(loaded) == expected
