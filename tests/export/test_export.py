"""What goes into a dataset, and what is kept out: consent, filters, dedup, DPO pairs,
system prompts, pseudonyms and the manifest."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta, timezone
from pathlib import Path

import pytest

from bot.config import Settings
from bot.errors import ConfigError
from bot.export import FILTERS
from tests.export.conftest import KEY
from tests.export.helpers import chats, dpo, run_export, texts
from tests.export.ledger import PERSONA_YAML, T0, Ledger

# -- consent ----------------------------------------------------------------------------


def test_nothing_from_people_who_opted_out(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    alice, bob = ledger.user("Alice"), ledger.user("Bob", opted_out=True)
    ca, cb = ledger.conversation("dm-a"), ledger.conversation("dm-b")
    ledger.exchange(ca, alice, "kept question", "kept answer")
    ledger.exchange(cb, bob, "withdrawn question", "withdrawn answer")
    manifest = run_export(settings, tmp_path / "out")
    assert texts(tmp_path / "out") == ["kept question", "kept answer"]
    assert manifest.data["filters"]["opted_out"] == 2


def test_opting_back_in_exports_only_what_came_after(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    carol = ledger.user("Carol")
    conv = ledger.conversation("dm-c")
    ledger.exchange(conv, carol, "said before opting out", "reply before")
    ledger.consent(carol, False, ledger.tick())
    ledger.exchange(conv, carol, "said while opted out", "reply while out")
    ledger.consent(carol, True, ledger.tick())
    ledger.exchange(conv, carol, "said after opting in", "reply after")
    manifest = run_export(settings, tmp_path / "out")
    assert texts(tmp_path / "out") == ["said after opting in", "reply after"]
    assert manifest.data["filters"]["before_opt_in"] == 4


def test_opted_out_again_means_nothing_at_all(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    dan = ledger.user("Dan")
    conv = ledger.conversation("dm-d")
    ledger.consent(dan, False, ledger.tick())
    ledger.consent(dan, True, ledger.tick())
    ledger.exchange(conv, dan, "in between", "reply")
    ledger.consent(dan, False, ledger.tick())  # the flag on users lags; the events decide
    run_export(settings, tmp_path / "out")
    assert texts(tmp_path / "out") == []


def test_in_a_group_only_the_opted_out_persons_turns_go(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    alice, eve = ledger.user("Alice"), ledger.user("Eve", opted_out=True)
    group = ledger.conversation("group", direct=False)
    ledger.exchange(group, alice, "hello all", "hi there")
    ledger.exchange(group, eve, "withdrawn words", "withdrawn reply")
    ledger.exchange(group, alice, "how are you", "great")
    run_export(settings, tmp_path / "out")
    out = texts(tmp_path / "out")
    assert not any("withdrawn" in t for t in out)
    label = out[0].split(":")[0]
    assert label.startswith("User-")  # speaker labels, as the engine shows them in groups
    assert out == [f"{label}: hello all", "hi there", f"{label}: how are you", "great"]


# -- filters, dedup ---------------------------------------------------------------------


def test_every_filter_is_counted(ledger: Ledger, settings: Settings, tmp_path: Path) -> None:
    now = ledger.clock
    alice = ledger.user("Alice")
    conv = ledger.conversation("dm-f")
    ledger.exchange(conv, alice, "keep me 1", "kept reply 1")
    failed = ledger.said(conv, alice, "this one failed", status="failed")
    ledger.replied(conv, alice, failed, "Sorry, I lost my train of thought.", kind="apology")
    ledger.exchange(
        conv,
        alice,
        "deleted question",
        "reply to deleted",
    )
    ledger.exchange(conv, alice, "truncated question", "reply to truncated")
    ledger.exchange(conv, alice, "flag this", "a flagged reply", flagged_at=now, flag_reason="rude")
    ledger.exchange(conv, alice, "lost", "undelivered reply", status="undeliverable")
    ledger.exchange(conv, alice, "say nothing", "   ")
    ledger.exchange(conv, alice, "keep me 1", "kept reply 1")  # a duplicate pair
    ledger.exchange(conv, alice, "keep me 2", "kept reply 2")
    with ledger.engine.begin() as c:
        c.exec_driver_sql(
            "UPDATE messages SET deleted_at = created_at WHERE text = 'deleted question'"
        )
        c.exec_driver_sql("UPDATE messages SET truncated = TRUE WHERE text = 'truncated question'")
    manifest = run_export(settings, tmp_path / "out")
    assert texts(tmp_path / "out") == ["keep me 1", "kept reply 1", "keep me 2", "kept reply 2"]
    filters = manifest.data["personas"]["pal"]["filters"]
    assert filters == {
        **dict.fromkeys(FILTERS, 0),
        "failed": 2,
        "deleted": 2,
        "truncated": 2,
        "flagged": 2,
        "undeliverable": 2,
        "empty": 2,
        "duplicate": 2,
    }
    stats = manifest.data["personas"]["pal"]
    assert stats["messages_read"] == stats["messages_exported"] + sum(filters.values())


def test_short_replies_are_filtered_by_setting(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    settings.export.min_reply_chars = 5
    alice = ledger.user("Alice")
    conv = ledger.conversation("dm-s")
    ledger.exchange(conv, alice, "hi", "ok")
    ledger.exchange(conv, alice, "tell me more", "certainly, here goes")
    manifest = run_export(settings, tmp_path / "out")
    assert texts(tmp_path / "out") == ["tell me more", "certainly, here goes"]
    assert manifest.data["filters"]["too_short"] == 2


def test_duplicates_are_found_across_case_and_spacing(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    a, b = ledger.user("Alice"), ledger.user("Bob")
    ledger.exchange(ledger.conversation("x"), a, "Good  morning!", "Morning! Walk?")
    ledger.exchange(ledger.conversation("y"), b, "good morning!", "morning!   walk?")
    manifest = run_export(settings, tmp_path / "out")
    assert len(chats(tmp_path / "out")) == 1
    assert manifest.data["filters"]["duplicate"] == 2


# -- DPO --------------------------------------------------------------------------------


def test_regenerated_reply_is_chosen_over_the_one_it_replaced(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    alice = ledger.user("Alice")
    conv = ledger.conversation("dm-r")
    asked = ledger.said(conv, alice, "tell me a joke")
    ledger.replied(conv, alice, asked, "first try")
    ledger.replied(conv, alice, asked, "second, better try")
    manifest = run_export(settings, tmp_path / "out")
    assert texts(tmp_path / "out") == ["tell me a joke", "second, better try"]
    [pair] = dpo(tmp_path / "out")
    assert pair["source"] == "regeneration"
    assert pair["prompt"][0]["role"] == "system"
    assert pair["prompt"][-1] == {"role": "user", "content": "tell me a joke"}
    assert pair["chosen"] == [{"role": "assistant", "content": "second, better try"}]
    assert pair["rejected"] == [{"role": "assistant", "content": "first try"}]
    assert manifest.data["filters"]["superseded"] == 1
    assert manifest.data["personas"]["pal"]["dpo_pairs"] == {"regeneration": 1}


def test_thumbs_pair_replies_to_equivalent_prompts(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    a, b, c = ledger.user("Alice"), ledger.user("Bob"), ledger.user("Cleo")
    _, liked = ledger.exchange(ledger.conversation("p1"), a, "What should I cook?", "Pasta!")
    _, disliked = ledger.exchange(ledger.conversation("p2"), b, "what should i  cook?", "Dunno.")
    _, unrated = ledger.exchange(ledger.conversation("p3"), c, "What should I cook?", "Soup.")
    ledger.react(liked, a, "👍")
    ledger.react(disliked, b, "👎🏽")  # skin tones count
    ledger.react(unrated, c, "👍")
    ledger.react(unrated, c, "👍", added=False)  # taken back: no vote
    manifest = run_export(settings, tmp_path / "out")
    [pair] = dpo(tmp_path / "out")
    assert pair["source"] == "feedback"
    assert pair["chosen"][0]["content"] == "Pasta!"
    assert pair["rejected"][0]["content"] == "Dunno."
    assert pair["prompt"][-1]["content"] == "What should I cook?"
    assert manifest.data["personas"]["pal"]["dpo_pairs"] == {"feedback": 1}


def test_votes_overrule_the_regeneration_heuristic(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    alice = ledger.user("Alice")
    conv = ledger.conversation("dm-o")
    asked = ledger.said(conv, alice, "a poem please")
    old = ledger.replied(conv, alice, asked, "roses are red")
    new = ledger.replied(conv, alice, asked, "violets are blue")
    ledger.react(old, alice, "👍")
    ledger.react(new, alice, "👎")
    run_export(settings, tmp_path / "out")
    [pair] = dpo(tmp_path / "out")
    assert pair["source"] == "feedback"
    assert pair["chosen"][0]["content"] == "roses are red"
    assert pair["rejected"][0]["content"] == "violets are blue"


def test_votes_of_opted_out_people_do_not_count(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    a, b = ledger.user("Alice"), ledger.user("Bob")
    gone = ledger.user("Gone", opted_out=True)
    _, r1 = ledger.exchange(ledger.conversation("q1"), a, "hi there", "Hello!")
    _, r2 = ledger.exchange(ledger.conversation("q2"), b, "hi there", "What.")
    ledger.react(r1, a, "👍")
    ledger.react(r2, gone, "👎")
    run_export(settings, tmp_path / "out")
    assert dpo(tmp_path / "out") == []


# -- system prompts and pseudonyms ------------------------------------------------------


def test_system_prompt_is_rendered_for_the_turn_with_pseudonyms(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    berlin = ledger.user("Alice Liddell", timezone="Europe/Berlin")
    conv = ledger.conversation("dm-sys")
    ledger.exchange(conv, berlin, "I am Alice Liddell, alice@example.com", "Hi Alice Liddell!")
    run_export(settings, tmp_path / "out")
    [[system, user, assistant]] = chats(tmp_path / "out")
    # T0 + 1 minute is 09:01 UTC on Monday 2 November: 10:01 in Berlin.
    assert "It is 10:01 on Monday, 2026-11-02 (Europe/Berlin)." in system["content"]
    assert "Keep replies to a short paragraph." in system["content"]  # the persona's guidance
    label = user["content"].split(",")[0].removeprefix("I am ")
    assert label.startswith("User-")
    assert f"You are talking to {label} (u_" in system["content"]
    assert user["content"] == f"I am {label}, <EMAIL>"
    assert assistant["content"] == f"Hi {label}!"
    everything = (tmp_path / "out").joinpath("pal/chat.train.jsonl").read_text()
    assert "Alice" not in everything and "alice-" not in everything


def test_pseudonyms_are_stable_and_depend_on_the_key(
    ledger: Ledger, settings: Settings, tmp_path: Path, monkeypatch: object
) -> None:
    alice = ledger.user("Alice")
    ledger.exchange(ledger.conversation("dm"), alice, "hello", "hi")
    run_export(settings, tmp_path / "a")
    run_export(settings, tmp_path / "b")
    settings.export.hmac_key = type(settings.export.hmac_key)("another-key-" + "z" * 20)  # type: ignore[misc]
    run_export(settings, tmp_path / "c")
    a, b, c = (chats(tmp_path / d)[0][0]["content"] for d in "abc")
    assert a == b
    assert a != c
    for d in "abc":
        for path in (tmp_path / d).rglob("*"):
            if path.is_file():
                assert KEY not in path.read_text()


def test_a_new_persona_version_starts_a_new_record(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    alice = ledger.user("Alice")
    conv = ledger.conversation("dm-v")
    ledger.exchange(conv, alice, "one", "first version")
    v2 = ledger.persona_version(PERSONA_YAML.replace("friendly companion", "grumpy companion"))
    ledger.exchange(conv, alice, "two", "second version", persona_hash=v2)
    manifest = run_export(settings, tmp_path / "out")
    first, second = chats(tmp_path / "out")
    assert "friendly companion" in first[0]["content"] and first[-1]["content"] == "first version"
    assert "grumpy companion" in second[0]["content"] and second[-1]["content"] == "second version"
    assert manifest.data["personas"]["pal"]["persona_versions"] == sorted([ledger.persona_hash, v2])


def test_replies_from_an_unknown_persona_version_are_dropped_and_counted(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    alice = ledger.user("Alice")
    ledger.exchange(ledger.conversation("dm-u"), alice, "hi", "hello", persona_hash="f" * 64)
    manifest = run_export(settings, tmp_path / "out")
    assert chats(tmp_path / "out") == []
    assert manifest.data["filters"]["unknown_persona_version"] == 2


def test_long_conversations_are_cut_into_windows_that_end_on_a_reply(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    settings.export.window_messages = 4
    alice = ledger.user("Alice")
    conv = ledger.conversation("dm-w")
    for n in range(5):
        ledger.exchange(conv, alice, f"q{n}", f"a{n}")
    ledger.said(conv, alice, "unanswered")
    manifest = run_export(settings, tmp_path / "out")
    records = chats(tmp_path / "out")
    assert [[m["content"] for m in r[1:]] for r in records] == [
        ["q0", "a0", "q1", "a1"],
        ["q2", "a2", "q3", "a3"],
        ["q4", "a4"],
    ]
    assert manifest.data["personas"]["pal"]["unanswered"] == 1


def test_a_busy_channel_keeps_windows_bounded(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    settings.export.window_messages = 4
    alice = ledger.user("Alice")
    group = ledger.conversation("busy", direct=False)
    ledger.exchange(group, alice, "first", "reply one")
    for n in range(10):
        ledger.said(group, alice, f"chatter {n}", status="ignored")
    ledger.exchange(group, alice, "hey bot", "reply two")
    manifest = run_export(settings, tmp_path / "out")
    records = [[m["content"].split(": ")[-1] for m in r[1:]] for r in chats(tmp_path / "out")]
    assert records == [["first", "reply one"], ["chatter 8", "chatter 9", "hey bot", "reply two"]]
    stats = manifest.data["personas"]["pal"]
    assert stats["unanswered"] == 8
    assert stats["messages_read"] == stats["messages_exported"] + stats["unanswered"]


# -- split and manifest -----------------------------------------------------------------


def test_split_by_conversation_without_leakage(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    settings.export.validation_fraction = 0.5
    settings.export.window_messages = 2
    for n in range(40):
        user = ledger.user(f"P{n}")
        conv = ledger.conversation(f"conv-{n}")
        for k in range(3):
            ledger.exchange(conv, user, f"c{n} q{k}", f"c{n} a{k}")
    run_export(settings, tmp_path / "out")
    sides = {}
    for split in ("train", "validation"):
        path = tmp_path / "out" / f"pal/sharegpt.{split}.jsonl"
        ids = {json.loads(line)["id"].rsplit("-", 1)[0] for line in path.read_text().splitlines()}
        sides[split] = ids
    assert sides["train"] and sides["validation"]
    assert not sides["train"] & sides["validation"]
    assert len(sides["train"] | sides["validation"]) == 40
    run_export(settings, tmp_path / "again")  # deterministic
    for split in ("train", "validation"):
        name = f"pal/chat.{split}.jsonl"
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_manifest_checksums_and_counts_match_the_files(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    alice = ledger.user("Alice")
    conv = ledger.conversation("dm-m")
    asked = ledger.said(conv, alice, "q")
    ledger.replied(conv, alice, asked, "old")
    ledger.replied(conv, alice, asked, "new")
    out = tmp_path / "out"
    manifest = run_export(settings, out)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest.data
    assert (
        set(on_disk["files"])
        == {str(p.relative_to(out)) for p in out.rglob("*.jsonl")}
        == {"pal/chat.train.jsonl", "pal/sharegpt.train.jsonl", "pal/dpo.train.jsonl"}
    )
    for relpath, stats in on_disk["files"].items():
        data = (out / relpath).read_bytes()
        assert stats["sha256"] == hashlib.sha256(data).hexdigest()
        assert stats["bytes"] == len(data)
        assert stats["records"] == data.count(b"\n")
    assert on_disk["scrubber_version"]
    assert on_disk["split"]["seed"] == settings.export.split_seed
    pal = on_disk["personas"]["pal"]
    assert pal["persona_versions"] == [ledger.persona_hash]
    assert pal["backends"] == {"openai": 1} and pal["models"] == {"tiny": 1}
    assert pal["first_message_at"].startswith("2026-11-02T09:01")
    assert "memories" in on_disk["records"]["system_prompt"]


def test_since_until_and_persona_select(ledger: Ledger, settings: Settings, tmp_path: Path) -> None:
    alice = ledger.user("Alice")
    conv = ledger.conversation("dm-t")
    ledger.exchange(conv, alice, "early", "early reply")
    ledger.clock = T0 + timedelta(days=10)
    ledger.exchange(conv, alice, "late", "late reply")
    run_export(settings, tmp_path / "a", since=T0 + timedelta(days=5))
    assert texts(tmp_path / "a") == ["late", "late reply"]
    run_export(settings, tmp_path / "b", until=T0 + timedelta(days=5))
    assert texts(tmp_path / "b") == ["early", "early reply"]
    manifest = run_export(settings, tmp_path / "c", persona="nobody")
    assert manifest.data["files"] == {}
    # An offset is honoured: 10:00 in Berlin is 09:00 UTC, after the early exchange.
    berlin = timezone(timedelta(hours=1))
    run_export(settings, tmp_path / "d", since=T0.replace(hour=10, tzinfo=berlin))
    assert texts(tmp_path / "d") == ["early", "early reply", "late", "late reply"]
    with pytest.raises(ConfigError, match="not before"):
        run_export(settings, tmp_path / "e", since=T0, until=T0)


def test_a_scheduled_export_goes_to_a_timestamped_directory(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    from bot.export import export_datasets

    settings.export.out_dir = tmp_path / "exports"
    alice = ledger.user("Alice")
    conv = ledger.conversation("dm-sched")
    ledger.exchange(conv, alice, "before now", "kept")
    now = ledger.tick()
    ledger.exchange(conv, alice, "after now", "not yet")
    manifest = export_datasets(settings, now)
    assert manifest.path == tmp_path / "exports" / now.strftime("%Y%m%dT%H%M%SZ")
    assert texts(manifest.path) == ["before now", "kept"]
    assert manifest.data["selection"]["until"] == now.isoformat()
