import re
import time
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.postprocess import StreamCleaner, clean_reply


def test_strips_echoed_role_labels() -> None:
    assert clean_reply("Samantha: Hi there!", names=["Samantha"]) == "Hi there!"
    assert clean_reply("assistant: Samantha: hello", names=["Samantha"]) == "hello"
    assert clean_reply("**Samantha**: hey", names=["Samantha"]) == "hey"
    assert clean_reply("小雨：你好", names=["小雨"]) == "你好"


def test_keeps_a_name_that_is_not_a_label() -> None:
    assert clean_reply("Samantha is my name.", names=["Samantha"]) == "Samantha is my name."


def test_cuts_at_stop_strings_and_template_tokens() -> None:
    assert clean_reply("Hello\nUser: next", stops=["\nUser:"]) == "Hello"
    assert clean_reply("Fine.<|im_end|><|im_start|>user\nmore") == "Fine."


def test_empty_after_cleaning_is_empty() -> None:
    assert clean_reply("  assistant:  ") == ""
    assert clean_reply("<|im_end|>") == ""


def feed_all(cleaner: StreamCleaner, pieces: list[str]) -> str:
    return "".join(cleaner.feed(p) for p in pieces) + cleaner.finish()


def test_stream_cleaner_strips_label_split_across_chunks() -> None:
    cleaner = StreamCleaner(names=["Samantha"])
    out = feed_all(cleaner, ["Sam", "antha", ": I'm ", "here", " for you."])
    assert out == "I'm here for you."


def test_stream_cleaner_stops_at_stop_string_split_across_chunks() -> None:
    cleaner = StreamCleaner(stops=["\nUser:"])
    out = feed_all(cleaner, ["Sure thing.", "\nUs", "er: what", " else"])
    assert out == "Sure thing."
    assert cleaner.stopped


@given(st.lists(st.text(max_size=12), max_size=20))
def test_stream_cleaner_agrees_with_clean_reply(pieces: list[str]) -> None:
    names, stops = ["Biscuit"], ["###"]
    whole = clean_reply("".join(pieces), names=names, stops=stops)
    streamed = feed_all(StreamCleaner(names=names, stops=stops), pieces)
    assert streamed.strip() == whole


def test_a_trailing_template_token_start_is_kept_by_both() -> None:
    # The flaky case from issue #9: "<|" that never becomes a token is text.
    for pieces in (["hello <|"], ["hello <", "|"], ["hi", " <|im_", "end"], ["<|"]):
        whole = clean_reply("".join(pieces), names=["Biscuit"], stops=["###"])
        assert feed_all(StreamCleaner(names=["Biscuit"], stops=["###"]), pieces) == whole
    assert clean_reply("hello <|") == "hello <|"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Hi\x00 there", "Hi there"),
        ("\x1b[31mred\x1b[0m alert", "red alert"),
        ("title\x1b]0;pwned\x07 set", "title set"),
        ("bell\x07\x08\x7f", "bell"),
        ("line\r\nnext\rthird", "line\nnext\nthird"),
        ("lone \ud800 surrogate", "lone \ufffd surrogate"),
        ("Biscuit:\x1b[1m hi", "hi"),
        ("ok<|eot_id|>more", "ok"),
        ("ok<｜end▁of▁sentence｜>more", "ok"),
        ("ok</s>[INST] next", "ok"),
        ("ok<end_of_turn>\n<start_of_turn>user", "ok"),
        ("ok<|im_\x00end|>more", "ok"),  # a control character cannot hide a token
    ],
)
def test_control_characters_and_tokens_never_survive(raw: str, clean: str) -> None:
    assert clean_reply(raw, names=["Biscuit"]) == clean
    pieces = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    assert feed_all(StreamCleaner(names=["Biscuit"]), pieces) == clean


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")

# Pieces that make labels, stops, template tokens and escape sequences, whole and split.
HOSTILE = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "Biscuit", "Bis", "cuit", "biscuit", "assistant", "ai", "bot", ":", "：", " ",
            "\n", "**", "[", "]", "<|", "|>", "<", "|", ">", "im_end", "<|im_end|>",
            "</s>", "[INST]", "#", "##", "###", "\x1b", "\x1b[", "31m", "\x1b]0;", "\x07",
            "\x00", "\r", "\r\n", "\t", "\x9b", "\ud800",
        ]
    ),
)


@settings(max_examples=400)
@given(st.lists(HOSTILE, max_size=24), st.randoms(use_true_random=False))
def test_streamed_is_exactly_the_whole_and_clean(pieces: list[str], rnd: Random) -> None:
    names, stops = ["Biscuit"], ["###"]
    whole = clean_reply("".join(pieces), names=names, stops=stops)
    # The same text in other chunkings, down to single characters.
    text = "".join(pieces)
    cuts = sorted(rnd.sample(range(len(text) + 1), min(len(text) + 1, rnd.randint(0, 8))))
    rechunked = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    for chunks in (pieces, list(text), rechunked):
        cleaner = StreamCleaner(names=names, stops=stops)
        out = [cleaner.feed(p) for p in chunks] + [cleaner.finish()]
        assert "".join(out) == whole, chunks
    assert not CONTROL.search(whole)
    assert clean_reply(whole, names=names, stops=stops) == whole  # nothing left to clean
    whole.encode("utf-8")


def test_stream_cleaner_emits_early_and_is_linear_enough() -> None:
    cleaner = StreamCleaner(names=["Samantha"], stops=["\nUser:"])
    first = [cleaner.feed(w + " ") for w in ("I", "think", "the", "sea", "is", "lovely", "today")]
    assert "".join(first).startswith("I think the sea")  # not everything held to the end
    # The longest reply a persona may ask for (8192 tokens, a delta each) stays cheap:
    # each delta looks back at a bounded tail only (about 15 µs a delta measured).
    started = time.perf_counter()
    for i in range(8192):
        cleaner.feed("word " if i % 50 else "x. <b> [ok]\n")
    assert time.perf_counter() - started < 5.0
    assert not cleaner.stopped
