import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.text import clean_text, strip_controls, truncate


def test_clean_text_removes_nul_and_controls_keeps_newlines_and_tabs() -> None:
    assert clean_text("a\x00b\x07c\r\nd\te\x1b[31m") == "abc\nd\te"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("\x1b[31mred\x1b[0m", "red"),  # colours go whole, no "[31m" left behind
        ("\x1b[2J\x1b[Hwiped", "wiped"),  # clear screen, cursor home
        ("\x1b]0;pwned\x07title", "title"),  # window title (OSC, BEL-terminated)
        ("\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\", "link"),  # hyperlink (ST)
        ("\x9b31mC1\x9d0;t\x9c", "C1"),  # 8-bit CSI and OSC
        ("a\x1bcb", "ab"),  # a two-character escape (ESC c resets the terminal)
        ("bell\x07 back\x08space del\x7f", "bell backspace del"),
        ("cr\rlf\r\nend", "cr\nlf\nend"),
        ("\x1b", ""),
        ("\x00" * 10, ""),
    ],
)
def test_strip_controls_removes_escape_sequences_whole(raw: str, clean: str) -> None:
    assert strip_controls(raw) == clean


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


ESCAPY = st.sampled_from(["\x1b", "[", "]", "\x07", "\x9b", "\x9d", "\x9c", "3", ";", "m", "\r"])


@given(st.text(alphabet=ESCAPY | st.characters()))
def test_strip_controls_leaves_no_control_character(text: str) -> None:
    cleaned = strip_controls(text)
    assert not CONTROL.search(cleaned)
    assert strip_controls(cleaned) == cleaned
    cleaned.encode("utf-8")


def test_clean_text_replaces_lone_surrogates() -> None:
    cleaned = clean_text("ok \ud800 and \udfff")
    assert cleaned == "ok \ufffd and \ufffd"
    cleaned.encode("utf-8")  # would raise on a surrogate


def test_clean_text_keeps_cjk_emoji_and_zero_width_joiners() -> None:
    text = "你好，世界 👩‍💻 こんにちは"
    assert clean_text(text) == text


def test_truncate_cuts_at_word_boundary_and_reports_it() -> None:
    text = "word " * 100
    cut, was_cut = truncate(text, 52)
    assert was_cut and len(cut) <= 52 and cut.endswith("word")
    assert truncate("short", 10) == ("short", False)


def test_truncate_without_spaces_cuts_at_limit() -> None:
    cut, was_cut = truncate("好" * 500, 100)
    assert was_cut and cut == "好" * 100
