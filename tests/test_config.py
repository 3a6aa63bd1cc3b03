import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

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


# -- hostile config: encodings, JSON in variables, secrets in URLs ----------------------


def test_a_non_utf8_file_names_the_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bot.toml"
    path.write_bytes(b'[personas]\ndefault = "samantha"\n\n[llm]\nmodel = "Qw\xe9n"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(err.value) == (
        f"{path}:5 (llm.model): not valid UTF-8 (byte 0xe9); save the file as UTF-8"
    )
    path.write_bytes(b"\xff\xfe[\x00l\x00l\x00m\x00]\x00")  # UTF-16, as some editors save
    with pytest.raises(ConfigError, match=r":1: not valid UTF-8 \(byte 0xff\)"):
        load_settings(path)


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [
        ("BOT_DISCORD__PERSONAS", "{bad", "discord.personas"),
        ("BOT_DISCORD__ALWAYS_ON", "[1, 2", "discord.always_on"),
        ("BOT_PERSONAS__DIRS", "['single quotes']", "personas.dirs"),
        ("BOT_DISCORD", '{"token": "MTIz.secret-in-json', "discord"),
    ],
)
def test_malformed_json_in_a_variable_names_it_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, key: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith(f"${name}: {key}: not valid JSON (")
    assert value not in message and "secret-in-json" not in message


def test_secrets_in_the_file_suggest_only_keys_that_exist(tmp_path: Path) -> None:
    for dotted, file_key in [
        ("llm.api_key", "llm.api_key_file"),
        ("export.hmac_key", "export.hmac_key_file"),
        ("discord.token", None),
        ("telegram.token", None),
        ("telegram.webhook_secret", None),
    ]:
        section, _, key = dotted.partition(".")
        with pytest.raises(ConfigError) as err:
            load_settings(write(tmp_path, f'[{section}]\n{key} = "s3cret-value"\n'))
        message = str(err.value)
        assert "s3cret-value" not in message
        if file_key is None:
            assert "name a file" not in message, message
        else:
            assert f"name a file with {file_key}" in message


def test_a_misspelt_secret_key_is_named_but_its_value_never_shown(tmp_path: Path) -> None:
    token = "MTIzNDU2Nzg5MDEyMzQ1Njc4.abcdef.ghijklmnopqrstuvwxyz0123456"
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, f'[discord]\ntokn = "{token}"\n'))
    assert "discord.tokn: unknown key" in str(err.value) and token not in str(err.value)


def test_the_console_name_may_not_be_the_personas_own_label(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("USER", raising=False)
    assert load_settings().console.display_name == "guest"
    monkeypatch.setenv("BOT_CONSOLE__DISPLAY_NAME", " You ")
    with pytest.raises(ConfigError, match=r"console\.display_name .*'you' is how memory names"):
        load_settings()


_SAFE = string.ascii_letters + string.digits + "-._~"
secrets_ = st.text(alphabet=_SAFE + "!$&'()*+,;=%", min_size=8, max_size=40)


def _url_with(secret: str, where: str, scheme: str) -> str:
    if where == "password":
        return f"{scheme}://bot:{secret}@db.example:5432/personas?sslmode=require"
    if where == "userinfo":
        return f"{scheme}://{secret}@gpu-box.example:8000/v1"
    return f"{scheme}://hooks.example/telegram?x=1&{where}={secret}#top"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    secret=secrets_,
    where=st.sampled_from(["password", "userinfo", "token", "api_key", "access_token", "sig"]),
    scheme=st.sampled_from(["postgresql+psycopg", "https", "http", "mysql"]),
)
def test_config_show_never_contains_a_urls_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, secret: str, where: str, scheme: str
) -> None:
    if where not in ("password", "userinfo"):
        # In a query an unencoded & or # ends the value: the secret would not be one.
        assume("&" not in secret and "#" not in secret)
    url = _url_with(secret, where, scheme)
    assume(secret not in url.replace(secret, ""))  # the secret is not also the host, say
    monkeypatch.chdir(tmp_path)
    for name in ("BOT_DATABASE__URL", "BOT_LLM__BASE_URL", "BOT_TELEGRAM__WEBHOOK_URL"):
        monkeypatch.setenv(name, url)
    shown = json.dumps(load_settings().shown())
    assert secret not in shown and "**********" in shown
    # and a config error about such a value does not echo it either
    monkeypatch.setenv("BOT_TELEGRAM__LISTEN_PORT", url)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "telegram.listen_port" in str(err.value) and secret not in str(err.value)
    monkeypatch.delenv("BOT_TELEGRAM__LISTEN_PORT")
