import json
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_the_embedded_ones(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.llm.backend == "transformers"
    assert settings.database.url.startswith("sqlite:///")


def test_file_then_environment_then_overrides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(tmp_path, '[llm]\nmodel = "from-file"\nbackend = "openai"\ntimeout_s = 9\n')
    monkeypatch.setenv("BOT_LLM__MODEL", "from-env")
    settings = load_settings(path)
    assert (settings.llm.model, settings.llm.backend, settings.llm.timeout_s) == (
        "from-env",
        "openai",
        9,
    )
    settings = load_settings(path, {"llm": {"model": "from-flag"}})
    assert settings.llm.model == "from-flag"
    assert load_settings(path).llm.model == "from-env"  # overrides do not leak between calls


def test_bad_value_names_key_value_and_expectation(tmp_path: Path) -> None:
    path = write(tmp_path, '[llm]\ntimeout_s = "soon"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert "llm.timeout_s" in message and "'soon'" in message and "valid number" in message
    assert str(path) in message


def test_bad_environment_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_LLM__BACKEND", "gpt")
    with pytest.raises(
        ConfigError, match=r"\$BOT_LLM__BACKEND: llm.backend = 'gpt': .*'transformers' or 'openai'"
    ):
        load_settings()


def test_unknown_key_and_unknown_zone(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"llm\.modle: unknown key"):
        load_settings(write(tmp_path, '[llm]\nmodle = "x"\n'))
    with pytest.raises(ConfigError, match=r"engine\.timezone .*IANA"):
        load_settings(write(tmp_path, '[engine]\ntimezone = "Mars/Olympus"\n'))


def test_secrets_are_refused_in_the_file(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"secrets are not read from the config file.*BOT_LLM__API_KEY"
    ):
        load_settings(write(tmp_path, '[llm]\napi_key = "sk-abc"\n'))


def test_secret_from_env_or_file_is_masked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_LLM__API_KEY", "sk-very-secret-value")
    settings = load_settings()
    assert settings.llm.resolved_api_key().get_secret_value() == "sk-very-secret-value"
    shown = json.dumps(settings.shown())
    assert "sk-very-secret-value" not in shown and "**********" in shown
    assert "sk-very-secret-value" not in repr(settings)

    monkeypatch.delenv("BOT_LLM__API_KEY")
    (tmp_path / "key").write_text("file-secret\n")
    settings = load_settings(write(tmp_path, '[llm]\napi_key_file = "key"\n'))
    assert settings.llm.resolved_api_key().get_secret_value() == "file-secret"
    assert "file-secret" not in json.dumps(settings.shown())


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[llm\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")
