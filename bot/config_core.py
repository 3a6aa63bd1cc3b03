"""The sections for the bot's own running: its database, model, personas, engine,
logging, terminal, memory and scheduler.

Re-exported by `bot.config`; callers keep importing them from there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bot.errors import ConfigError

if TYPE_CHECKING:
    from bot.db import PoolOptions

__all__ = [
    "ConsoleSettings",
    "DatabaseSettings",
    "EngineSettings",
    "LLMSettings",
    "LoggingSettings",
    "MemorySettings",
    "PersonaSettings",
    "SchedulerSettings",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Section):
    """Where the ledger lives: a SQLite file (WAL mode, the embedded default) or
    PostgreSQL (`postgresql+psycopg://user:password@host/db`). The pool settings
    bound each process's connections to a server database; SQLite ignores them."""

    url: str = "sqlite:///data/bot.db"
    migrate_on_start: bool = True
    busy_timeout_ms: int = Field(default=5000, ge=0)
    pool_size: int = Field(
        default=5, ge=1, le=1000, description="Connections kept open per process (PostgreSQL)."
    )
    max_overflow: int = Field(
        default=5, ge=0, le=1000, description="Extra connections opened under load, then kept."
    )
    pool_timeout_s: float = Field(
        default=10.0, gt=0, le=3600, description="How long a caller waits for a free connection."
    )
    connect_timeout_s: float = Field(default=5.0, gt=0, le=600)

    def pool(self) -> PoolOptions:
        """These settings as the engine takes them."""
        from bot.db import PoolOptions

        return PoolOptions(
            size=self.pool_size,
            max_overflow=self.max_overflow,
            timeout_s=self.pool_timeout_s,
            connect_timeout_s=self.connect_timeout_s,
        )

    @field_validator("url")
    @classmethod
    def _sqlalchemy_url(cls, value: str) -> str:
        try:
            make_url(value)
        except (ArgumentError, ValueError):
            raise ValueError(
                "a database URL such as sqlite:///data/bot.db or "
                "postgresql+psycopg://user:password@host/db"
            ) from None
        return value


class LLMSettings(_Section):
    """The model that voices the personas (a persona may override backend and model)."""

    backend: Literal["transformers", "openai"] = "transformers"
    model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    tokenizer: str | None = Field(
        default=None,
        description="Hub id or directory of the tokenizer for exact token counts (openai backend).",
    )
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=20)
    max_concurrency: int = Field(default=16, ge=1, le=10_000)
    context_window: int = Field(default=4096, ge=256)
    device: str = "cpu"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"

    def resolved_api_key(self) -> SecretStr | None:
        """The API key from the environment, or read from `api_key_file`."""
        if self.api_key is not None:
            return self.api_key
        if self.api_key_file is not None:
            try:
                return SecretStr(self.api_key_file.read_text(encoding="utf-8").strip())
            except OSError as exc:
                raise ConfigError(
                    f"llm.api_key_file = {str(self.api_key_file)!r}: "
                    f"cannot read it ({exc.strerror})"
                ) from exc
        return None


class PersonaSettings(_Section):
    """Where persona YAML files come from, and which one speaks by default."""

    dirs: list[Path] = Field(default_factory=lambda: [Path("personas")])
    default: str = "samantha"
    watch: bool = True


class EngineSettings(_Section):
    """How a turn is assembled and answered."""

    history_messages: int = Field(default=40, ge=0, le=1000)
    max_input_chars: int = Field(default=4000, ge=100)
    apology: str = "Sorry, I lost my train of thought for a moment. Could you say that again?"
    reply_timeout_s: float = Field(default=120.0, gt=0)
    timezone: str = Field(
        default="UTC", description="IANA zone for people whose own zone is not known yet."
    )
    stale_after_s: float = Field(
        default=900.0,
        gt=0,
        description="A message older than this when the bot gets to it (after a restart) "
        "is recorded as expired, not answered late.",
    )
    inbox_keep_payload_hours: float = Field(
        default=72.0,
        ge=0,
        description="How long a handled event's raw payload is kept (failed ones keep theirs).",
    )
    coalesce_bursts: bool = Field(
        default=True,
        description="A burst from one person (messages waiting behind each other) is "
        "answered once, by its newest message, with the rest in view (docs/safety.md).",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"an IANA time zone such as 'Europe/Berlin', not {value!r}") from None
        return value


class LoggingSettings(_Section):
    """structlog output: JSON in production, readable in a terminal."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class ConsoleSettings(_Section):
    """The terminal adapter: always used by `bot chat`, by `bot run` when enabled."""

    enabled: bool = False
    user_id: str = Field(default="local", min_length=1, max_length=64)
    #: How the person at the terminal is named; memory labels the persona's own
    #: messages "you", so that name is refused.
    display_name: str = Field(
        default_factory=lambda: os.environ.get("USER") or "guest", min_length=1, max_length=64
    )
    #: Where `bot chat` writes its logs and Python warnings in an interactive session,
    #: so the screen holds only the conversation; None: stderr.
    log_file: Path | None = Path("data/chat.log")

    @field_validator("display_name")
    @classmethod
    def _not_the_persona(cls, value: str) -> str:
        if value.strip().casefold() == "you":
            raise ValueError("'you' is how memory names the persona itself; pick another name")
        return value


class MemorySettings(_Section):
    """Long-term memory: search indexes, embeddings, fact extraction and summaries."""

    enabled: bool = True
    embedding_model: str | None = Field(
        default="all-MiniLM-L6-v2",
        description="sentence-transformers model name or directory; none: BM25 only.",
    )
    embedding_runtime: Literal["auto", "onnx", "torch"] = Field(
        default="auto",
        description=(
            "What runs the model: onnx (exported once, ~3x faster per query), torch, "
            "or auto (onnx when onnxruntime is installed, else torch)."
        ),
    )
    embedding_device: str = Field(
        default="cpu",
        description="Where the model runs: cpu, or a torch device such as cuda (run by torch).",
    )
    embedding_cache_dir: Path | None = Field(
        default=None, description="Where ONNX exports are kept; default ~/.cache/persona-bot/onnx."
    )
    extract_facts: bool = Field(default=False, description="Ask the LLM for facts after turns.")
    summary_window: int = Field(default=60, ge=4, description="Messages per summary.")
    quiet_after_minutes: float = Field(default=60.0, gt=0)
    recency_half_life_days: float = Field(default=30.0, gt=0)


class SchedulerSettings(_Section):
    """Proactive messages, follow-ups and upkeep jobs (run by `bot run`)."""

    enabled: bool = True
    #: A job that missed its time by more than this is skipped, not run late: a bot
    #: that was down must not flood people when it comes back.
    misfire_grace_s: int = Field(default=15 * 60, ge=1)
    #: How often people's silences are checked for check-ins, and habits re-synced.
    sweep_minutes: int = Field(default=15, ge=1, le=24 * 60)
    #: Follow-ups dated further ahead than this are clamped to it.
    followup_horizon_days: int = Field(default=60, ge=1, le=3650)
    #: Delete messages older than this many days (summaries and exports stay); None keeps all.
    retention_days: int | None = Field(default=None, ge=1)
    backup_dir: Path | None = Field(default=None, description="Nightly SQLite backups go here.")
    backup_keep: int = Field(default=7, ge=1, le=365)
    backup_cron: str = "30 3 * * *"
    export_cron: str = Field(default="0 4 * * mon", description="Weekly fine-tune export (UTC).")
    export_dir: Path | None = Field(default=None, description="Scheduled exports; None: off.")
