"""Reading exports for training: hostile exports are one clear error, exit 2; labels
cover exactly the assistant's turns of the serving chat template; people's control
tokens never become special tokens."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.cli import app
from bot.cli_errors import run_app
from bot.export.writer import DatasetWriter
from bot.llm.control_tokens import ControlTokens
from bot.llm.tiny import IM_END, IM_START
from bot.train.data import (
    IGNORE_INDEX,
    TrainDataError,
    load_export,
    neutralise_record,
    tokenize_chat,
    tokenize_records,
)

from .conftest import chat_records, dpo_records, write_export

# -- hostile exports ------------------------------------------------------------------


def _good(root: Path) -> Path:
    return write_export(
        root / "export",
        {
            "biscuit/chat.train.jsonl": chat_records(4),
            "biscuit/chat.validation.jsonl": chat_records(2, offset=10),
            "biscuit/dpo.train.jsonl": dpo_records(2),
            "biscuit/dpo.validation.jsonl": dpo_records(1),
        },
    )


def _raw_export(root: Path, train_lines: list[str]) -> Path:
    """An export whose train file holds `train_lines` verbatim (the manifest matches)."""
    out = root / "export"
    with DatasetWriter(out) as writer:
        handle = writer.file("biscuit/chat.train.jsonl")
        for line in train_lines:
            handle.write_line(line + "\n")
        writer.file("biscuit/chat.validation.jsonl").write(chat_records(1)[0])
        writer.commit({})
    return out


def _missing(root: Path) -> Path:
    return root / "nowhere"


def _a_file(root: Path) -> Path:
    path = root / "file.jsonl"
    path.write_text("{}\n")
    return path


def _no_manifest(root: Path) -> Path:
    out = _good(root)
    (out / "manifest.json").unlink()
    return out


def _manifest_garbage(root: Path) -> Path:
    out = _good(root)
    (out / "manifest.json").write_bytes(b"\xff\xfe not json")
    return out


def _manifest_no_files(root: Path) -> Path:
    out = _good(root)
    (out / "manifest.json").write_text('{"files": 3}')
    return out


def _tampered(root: Path) -> Path:
    out = _good(root)
    path = out / "biscuit/chat.train.jsonl"
    path.write_bytes(path.read_bytes().replace(b"Woof", b"Meow", 1))
    return out


def _deleted(root: Path) -> Path:
    out = _good(root)
    (out / "biscuit/chat.validation.jsonl").unlink()
    return out


def _empty_split(root: Path) -> Path:
    out = root / "export"
    with DatasetWriter(out) as writer:
        writer.file("biscuit/chat.train.jsonl").write(chat_records(1)[0])
        writer.file("biscuit/chat.validation.jsonl")  # listed, no records
        writer.commit({})
    return out


def _no_validation(root: Path) -> Path:
    return write_export(root / "export", {"biscuit/chat.train.jsonl": chat_records(3)})


def _malformed(root: Path) -> Path:
    good = json.dumps(chat_records(1)[0])
    return _raw_export(root, [good, '{"messages": [', good])


def _bad_role(root: Path) -> Path:
    record = {"messages": [{"role": "system", "content": "x"}, {"role": "tool", "content": "y"}]}
    return _raw_export(root, [json.dumps(record)])


def _content_not_text(root: Path) -> Path:
    record = {"messages": [{"role": "assistant", "content": ["not", "text"]}]}
    return _raw_export(root, [json.dumps(record)])


def _no_assistant(root: Path) -> Path:
    record = {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]}
    return _raw_export(root, [json.dumps(record)])


def _not_object(root: Path) -> Path:
    return _raw_export(root, ["[1, 2, 3]"])


def _nul_line(root: Path) -> Path:
    return _raw_export(root, ["\x00\x00"])


CASES: list[tuple[str, Callable[[Path], Path], str, str]] = [
    ("missing dir", _missing, "biscuit", "no such export directory"),
    ("a file", _a_file, "biscuit", "not a directory"),
    ("no manifest", _no_manifest, "biscuit", "no manifest.json"),
    ("manifest garbage", _manifest_garbage, "biscuit", "not JSON"),
    ("manifest without files", _manifest_no_files, "biscuit", "no 'files' table"),
    ("tampered file", _tampered, "biscuit", "sha256 does not match the manifest"),
    ("deleted file", _deleted, "biscuit", "listed in the manifest but missing"),
    ("empty split", _empty_split, "biscuit", "the validation split is empty"),
    ("no validation split", _no_validation, "biscuit", "no validation split"),
    ("malformed line", _malformed, "biscuit", "chat.train.jsonl:2: not a JSON record"),
    ("bad role", _bad_role, "biscuit", ":1: messages[1].role: expected one of"),
    ("content not text", _content_not_text, "biscuit", "messages[0].content: expected a string"),
    ("no assistant", _no_assistant, "biscuit", "no assistant message"),
    ("not an object", _not_object, "biscuit", "expected a JSON object"),
    ("NUL bytes", _nul_line, "biscuit", "not a JSON record"),
    ("persona not in export", _good, "samantha", "holds no records of persona 'samantha'"),
    ("persona as a path", _good, "../biscuit", "--persona '../biscuit': a persona id is"),
    ("persona with escapes", _good, "\x1b[31mred", "a persona id is"),
    ("persona in capitals", _good, "BISCUIT", "a persona id is"),
    ("empty persona", _good, "", "a persona id is"),
]


@pytest.mark.parametrize(("name", "make", "persona", "expected"), CASES, ids=[c[0] for c in CASES])
def test_hostile_export_is_one_clear_error(
    tmp_path: Path, name: str, make: Callable[[Path], Path], persona: str, expected: str
) -> None:
    export = make(tmp_path)
    with pytest.raises(TrainDataError) as caught:
        load_export(export, persona, "sft")
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    assert caught.value.exit_code == 2


def test_dpo_pair_with_two_chosen_messages_is_refused(tmp_path: Path) -> None:
    record = dpo_records(1)[0]
    record["chosen"] = record["chosen"] * 2
    export = write_export(
        tmp_path / "export",
        {"biscuit/dpo.train.jsonl": [record], "biscuit/dpo.validation.jsonl": dpo_records(1)},
    )
    with pytest.raises(TrainDataError, match="chosen: expected exactly one assistant message"):
        load_export(export, "biscuit", "dpo")


def test_good_export_loads_with_its_hashes(tmp_path: Path) -> None:
    export = _good(tmp_path)
    data = load_export(export, "biscuit", "sft")
    assert len(data.train) == 4 and len(data.validation) == 2
    manifest = json.loads((export / "manifest.json").read_text())
    assert data.files == {
        rel: manifest["files"][rel]["sha256"]
        for rel in ("biscuit/chat.train.jsonl", "biscuit/chat.validation.jsonl")
    }
    dpo = load_export(export, "biscuit", "dpo")
    assert dpo.manifest_sha256 == data.manifest_sha256 and len(dpo.train) == 2


CLI_CASES = CASES[:6] + CASES[9:10] + CASES[-5:]


@pytest.mark.parametrize(("name", "make", "persona", "expected"), CLI_CASES)
def test_cli_prints_one_line_and_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    make: Callable[[Path], Path],
    persona: str,
    expected: str,
) -> None:
    export = make(tmp_path)
    argv = [
        "train",
        "--persona",
        persona,
        "--data",
        str(export),
        "--base-model",
        str(tmp_path / "no-model"),
        "--out",
        str(tmp_path / "out"),
        "--no-gate",
    ]
    assert run_app(app, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("training data error: ") and expected in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_cli_refuses_a_bad_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--persona", "biscuit", "--data", str(tmp_path), "--base-model", "x"]
    argv += ["--out", str(tmp_path / "o"), "--method", "ppo", "--no-gate"]
    assert run_app(app, argv) == 2
    assert "--method 'ppo'" in capsys.readouterr().err


# -- the loss mask --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _labelled_runs(row: dict[str, list[int]]) -> list[list[int]]:
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for token, label in zip(row["input_ids"], row["labels"], strict=True):
        if label != IGNORE_INDEX:
            assert label == token  # a label is the token itself, never shifted
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(token)
        previous = label
    return runs


def _messages(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in turns]


def test_labels_cover_exactly_the_assistant_turns(tokenizer: Any) -> None:
    messages = _messages(
        ("system", "You are Biscuit."),
        ("user", "Good morning!"),
        ("assistant", "Woof! Walk?"),
        ("user", "Later. 你好"),
        ("assistant", "早上好 *wags*"),
    )
    row = tokenize_chat(tokenizer, messages, max_length=1024)
    assert row is not None
    # The sequence is the serving template's rendering, token for token.
    served = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
    assert row["input_ids"] == list(served["input_ids"])
    runs = [tokenizer.decode(run) for run in _labelled_runs(row)]
    assert runs == [f"Woof! Walk?{IM_END}\n", f"早上好 *wags*{IM_END}\n"]
    # Everything the model is prompted with when serving is unlabelled: the prompt
    # with the generation prompt is a prefix, and none of it is trained on.
    prompt = tokenizer.apply_chat_template(
        messages[:2], tokenize=True, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    assert row["input_ids"][: len(prompt)] == list(prompt)
    assert set(row["labels"][: len(prompt)]) == {IGNORE_INDEX}


def test_a_cut_that_leaves_no_reply_drops_the_record(tokenizer: Any) -> None:
    messages = _messages(("system", "word " * 200), ("user", "hi"), ("assistant", "Woof"))
    assert tokenize_chat(tokenizer, messages, max_length=32) is None
    rows, dropped = tokenize_records(
        tokenizer, [{"messages": messages}], ControlTokens.for_tokenizer(tokenizer), 32
    )
    assert rows == [] and dropped == 1
    row = tokenize_chat(tokenizer, messages, max_length=4096)
    assert row is not None and len(row["input_ids"]) <= 4096


_PIECES = [*"ab 你好\n<|>/[]\u200b", IM_START, IM_END, "<|pad|>", "<s>", "<｜im_start｜>"]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=20).map("".join)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(turns=st.lists(st.tuples(_TEXT, _TEXT), min_size=1, max_size=4), system=_TEXT)
def test_property_labels_and_control_tokens(
    tokenizer: Any, turns: list[tuple[str, str]], system: str
) -> None:
    """Any text, control tokens included: the special tokens in a training row are
    exactly the template's own, and the labelled runs are the (neutralised) replies."""
    control = ControlTokens.for_tokenizer(tokenizer)
    messages = [("system", system)]
    for user, reply in turns:
        messages += [("user", user), ("assistant", reply)]
    record = {"messages": _messages(*messages)}
    rows, dropped = tokenize_records(tokenizer, [record], control, 100_000)
    assert dropped == 0
    row = rows[0]
    start_id = tokenizer.convert_tokens_to_ids(IM_START)
    end_id = tokenizer.convert_tokens_to_ids(IM_END)
    assert row["input_ids"].count(start_id) == len(messages)
    assert row["input_ids"].count(end_id) == len(messages)
    assert tokenizer.convert_tokens_to_ids("<|pad|>") not in row["input_ids"]
    clean = neutralise_record(record, control)["messages"]
    replies = [m["content"] for m in clean if m["role"] == "assistant"]
    decoded = "".join(tokenizer.decode(run) for run in _labelled_runs(row))
    assert decoded == "".join(f"{reply}{IM_END}\n" for reply in replies)


_KEYS = st.sampled_from(["messages", "role", "content", "prompt", "chosen", "rejected", "x"])
_ROLES_TEXT = st.sampled_from(["system", "user", "assistant", "tool", ""]) | st.text(max_size=5)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _ROLES_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)
_LINE = st.one_of(
    st.sampled_from([json.dumps(chat_records(1)[0]), json.dumps(dpo_records(1)[0])]),
    _JSON.map(json.dumps),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=60).map(
        lambda t: t.replace("\n", " ")
    ),
)


@settings(max_examples=80, deadline=None)
@given(lines=st.lists(_LINE, min_size=1, max_size=4), method=st.sampled_from(["sft", "dpo"]))
def test_property_any_line_loads_or_is_one_clear_error(lines: list[str], method: str) -> None:
    """Whatever a line holds (JSON of any shape, or not JSON), reading the export
    gives records of the right shape or one `TrainDataError` line, nothing else."""
    import tempfile

    stem = "chat" if method == "sft" else "dpo"
    valid = chat_records(1)[0] if method == "sft" else dpo_records(1)[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "export"
        with DatasetWriter(out) as writer:
            handle = writer.file(f"biscuit/{stem}.train.jsonl")
            for line in lines:
                handle.write_line(line + "\n")
            writer.file(f"biscuit/{stem}.validation.jsonl").write(valid)
            writer.commit({})
        try:
            data = load_export(out, "biscuit", method)  # type: ignore[arg-type]
        except TrainDataError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(out))
            return
    records = data.train
    for record in records:
        if method == "sft":
            assert any(m["role"] == "assistant" for m in record["messages"])
        else:
            assert [m["role"] for m in record["chosen"]] == ["assistant"]
