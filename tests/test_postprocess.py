from hypothesis import given
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
