"""Typed settings from `bot.toml` and `BOT_*` environment variables.

Precedence, highest first: explicit overrides (CLI flags), environment variables
(`BOT_LLM__MODEL=...`, nested keys joined by `__`), the TOML file, defaults. The
file is `bot.toml` in the working directory unless `BOT_CONFIG` or `--config`
names another.

Secrets (API keys, platform tokens) are never read from the TOML file: only from
the environment, or from a file whose *path* the config names (`api_key_file`).
They are `SecretStr` everywhere, so they print as `**********`; credentials inside
URLs (a database password, `?token=` in a webhook) are masked wherever a value is
shown, and a config error never echoes a secret's value.

The sections are defined in `bot/config_*.py`, one module per group (core, platforms,
training, safety, web), and re-exported here: `bot.config` is the one import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

# The sections live in modules of their own, one per group; callers keep importing
# them from here, so each is re-exported by name.
from bot.config_core import ConsoleSettings as ConsoleSettings
from bot.config_core import DatabaseSettings as DatabaseSettings
from bot.config_core import EngineSettings as EngineSettings
from bot.config_core import LLMSettings as LLMSettings
from bot.config_core import LoggingSettings as LoggingSettings
from bot.config_core import MemorySettings as MemorySettings
from bot.config_core import PersonaSettings as PersonaSettings
from bot.config_core import SchedulerSettings as SchedulerSettings
from bot.config_platforms import DiscordSettings as DiscordSettings
from bot.config_platforms import TelegramSettings as TelegramSettings
from bot.config_safety import LimitSettings as LimitSettings
from bot.config_safety import ModerationSettings as ModerationSettings
from bot.config_safety import SafetySettings as SafetySettings
from bot.config_source import format_validation, read_toml, settings_error
from bot.config_training import ExportSettings as ExportSettings
from bot.config_training import FinetuneSettings as FinetuneSettings
from bot.config_web import DashboardSettings as DashboardSettings
from bot.config_web import OpsSettings as OpsSettings
from bot.config_web import Role as Role
from bot.errors import ConfigError
from bot.groups.policy import GroupSettings
from bot.logs import MASK, redact_text

__all__ = ["Settings", "load_settings"]

DEFAULT_CONFIG_FILE = Path("bot.toml")

# Keys that hold secrets: refused in the TOML file, masked when shown.
SECRET_KEYS = frozenset(
    {
        "llm.api_key",
        "discord.token",
        "telegram.token",
        "telegram.webhook_secret",
        "export.hmac_key",
        "dashboard.discord_client_secret",
    }
)


class Settings(BaseSettings):
    """The effective configuration of one bot process."""

    model_config = SettingsConfigDict(
        env_prefix="BOT_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    personas: PersonaSettings = Field(default_factory=PersonaSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    export: ExportSettings = Field(default_factory=ExportSettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    #: Personas in group channels: budget, bot chains, who is present (bot/groups).
    groups: GroupSettings = Field(default_factory=GroupSettings)
    #: /metrics, /healthz and /readyz on an HTTP port of `bot run` (bot/web).
    ops: OpsSettings = Field(default_factory=OpsSettings)
    #: The moderators' web dashboard (bot/web/dashboard).
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)

    #: Highest-priority values (CLI flags); set on the per-call subclass made by load_settings.
    _overrides: ClassVar[dict[str, Any]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML data arrives as init kwargs; the environment wins over the file and
        # the CLI overrides win over both.
        return (_DictSource(settings_cls, cls._overrides), env_settings, init_settings)

    def shown(self) -> dict[str, Any]:
        """The effective config as plain data, secrets masked (for `bot config show`)."""
        data: dict[str, Any] = self.model_dump(mode="json")
        key = self.llm.resolved_api_key() if self.llm.api_key_file else self.llm.api_key
        data["llm"]["api_key"] = MASK if key is not None else None
        for dotted in SECRET_KEYS:
            section, _, name = dotted.partition(".")
            if data[section].get(name) is not None:
                data[section][name] = MASK
        # Credentials inside URLs: database.url, llm.base_url, a webhook's ?token=.
        shown: dict[str, Any] = _redact_strings(data)
        return shown


class _DictSource(PydanticBaseSettingsSource):
    """A fixed dict of values, as a settings source."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _redact_strings(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_strings(v) for v in value]
    return value


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    data = read_toml(path)
    for dotted in SECRET_KEYS:
        section, _, key = dotted.partition(".")
        if isinstance(data.get(section), dict) and key in data[section]:
            env = f"BOT_{section.upper()}__{key.upper()}"
            # Suggest a *_file key only where one exists.
            model = Settings.model_fields[section].annotation
            has_file = isinstance(model, type) and f"{key}_file" in model.model_fields
            instead = f" or name a file with {dotted}_file" if has_file else ""
            raise ConfigError(
                f"{path}: {dotted}: secrets are not read from the config file; "
                f"set the environment variable {env}{instead}"
            )
    return data


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the settings; raise `ConfigError` naming key, value and expectation.

    `path` is the TOML file; when None, `$BOT_CONFIG` or `./bot.toml` if it exists.
    `overrides` are nested dicts from CLI flags and win over everything else.
    """
    if path is None:
        env_path = os.environ.get("BOT_CONFIG")
        path = (
            Path(env_path)
            if env_path
            else (DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None)
        )
    elif not path.exists():
        raise ConfigError(f"{path}: config file not found")
    file_data = _read_toml(path) if path is not None else {}
    source = str(path) if path is not None else "config"
    # The platforms' conventional variable names, as well as BOT_DISCORD__TOKEN etc.
    platform_tokens: dict[str, Any] = {}
    for env, section in (("DISCORD_TOKEN", "discord"), ("TELEGRAM_TOKEN", "telegram")):
        if os.environ.get(env) and not os.environ.get(f"BOT_{section.upper()}__TOKEN"):
            platform_tokens[section] = {"token": os.environ[env]}
    overrides = merge_overrides(platform_tokens, overrides or {})
    cls: type[Settings] = Settings
    if overrides:
        # A throwaway subclass carries the overrides, so no state is shared between calls.
        cls = type("Settings", (Settings,), {"_overrides": overrides})
    try:
        return cls(**file_data)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, source, SECRET_KEYS)) from None
    except SettingsError as exc:
        raise settings_error(exc) from None


def merge_overrides(*layers: dict[str, Any]) -> dict[str, Any]:
    """Merge nested override dicts, later layers winning; None values are dropped."""
    out: dict[str, Any] = {}
    for layer in layers:
        cleaned = {
            k: ({kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, dict) else v)
            for k, v in layer.items()
            if v is not None
        }
        out = _deep_merge(out, cleaned)
    return out
