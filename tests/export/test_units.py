"""Pseudonyms, the split, record shapes and the settings, on their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.errors import ConfigError
from bot.export import Pseudonymizer, split_of
from bot.export.formats import openai_record, sharegpt_record, window_lines


def test_pseudonyms_are_stable_per_key_and_differ_between_keys() -> None:
    a, b = Pseudonymizer(b"k" * 32), Pseudonymizer(b"k" * 32)
    other = Pseudonymizer(b"q" * 32)
    assert a.user("telegram", "42") == b.user("telegram", "42")
    assert a.user("telegram", "42") != other.user("telegram", "42")
    assert a.user("telegram", "42") != a.user("discord", "42")
    assert a.user("telegram", "42").startswith("u_") and len(a.user("telegram", "42")) == 34
    assert a.label("telegram", "42") == "User-" + a.user("telegram", "42")[2:8]
    assert "k" * 16 not in repr(a)


def test_pseudonym_keys_must_not_be_trivial() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Pseudonymizer(b"short")


def test_split_is_deterministic_seeded_and_near_the_fraction() -> None:
    keys = [f"telegram/-/{n}/-/pal" for n in range(4000)]
    first = [split_of(k, seed="s", validation_fraction=0.1) for k in keys]
    assert first == [split_of(k, seed="s", validation_fraction=0.1) for k in keys]
    assert 300 < first.count("validation") < 500
    reseeded = [split_of(k, seed="t", validation_fraction=0.1) for k in keys]
    assert reseeded != first
    assert {split_of(k, seed="s", validation_fraction=0.0) for k in keys} == {"train"}


def test_fast_lines_are_exactly_the_json_of_the_records() -> None:
    turns = [("user", 'he said "hi"\n\t\u2028 ünïcode 中文 \x01 \\'), ("assistant", "ok")]
    chat, sharegpt = window_lines("c_1-2", 'sys "x"', turns)

    def dumps(record: object) -> str:
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"

    assert chat == dumps(openai_record('sys "x"', turns))
    assert sharegpt == dumps(sharegpt_record("c_1-2", 'sys "x"', turns))


def test_the_key_comes_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BOT_EXPORT__HMAC_KEY", raising=False)
    monkeypatch.delenv("BOT_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="BOT_EXPORT__HMAC_KEY"):
        load_settings(None).export.resolved_hmac_key()
    key_file = tmp_path / "key"
    key_file.write_text("from-a-file-" + "f" * 20 + "\n")
    settings = load_settings(None, {"export": {"hmac_key_file": str(key_file)}})
    assert settings.export.resolved_hmac_key().get_secret_value() == "from-a-file-" + "f" * 20
    monkeypatch.setenv("BOT_EXPORT__HMAC_KEY", "short")
    with pytest.raises(ConfigError, match="16 characters"):
        load_settings(None).export.resolved_hmac_key()
    monkeypatch.setenv("BOT_EXPORT__HMAC_KEY", "e" * 32)
    settings = load_settings(None)
    assert "e" * 32 not in json.dumps(settings.shown())


def test_the_key_is_refused_in_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text('[export]\nhmac_key = "in-the-file-is-wrong"\n')
    with pytest.raises(ConfigError, match="BOT_EXPORT__HMAC_KEY"):
        load_settings(config)


def test_bad_export_settings_name_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text("[export]\nvalidation_fraction = 1.5\n")
    with pytest.raises(ConfigError, match=r"export\.validation_fraction"):
        load_settings(config)


def test_the_public_face_of_the_package() -> None:
    import bot.export

    assert len(set(bot.export.__all__)) == len(bot.export.__all__)
    for name in bot.export.__all__:
        assert getattr(bot.export, name) is not None
