from bot.text import clean_text, truncate


def test_clean_text_removes_nul_and_controls_keeps_newlines_and_tabs() -> None:
    assert clean_text("a\x00b\x07c\r\nd\te\x1b[31m") == "abc\nd\te[31m"


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
