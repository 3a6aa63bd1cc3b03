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
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bot.config_source import format_validation, read_toml, settings_error
from bot.errors import ConfigError
from bot.groups.policy import GroupSettings
from bot.logs import MASK, redact_text

if TYPE_CHECKING:
    from bot.db import PoolOptions

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
        default=5, ge=0, le=1000, description="Extra connections opened under load, then closed."
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


class DiscordSettings(_Section):
    """The Discord adapter; it starts when `DISCORD_TOKEN` is in the environment."""

    token: SecretStr | None = None
    #: Persona per place: "GUILD_ID" or "GUILD_ID/CHANNEL_ID" -> persona id; "dm" for DMs.
    personas: dict[str, str] = Field(default_factory=dict)
    #: Channel ids where every message is answered, not only mentions and replies.
    always_on: list[str] = Field(default_factory=list)
    #: Words that make the persona answer a message that does not mention it.
    keywords: list[str] = Field(default_factory=list)
    ignore_bots: bool = True
    #: People with this Discord permission (or the role below) may /reload and upload.
    moderator_permission: str = "manage_guild"
    moderator_role: str | None = None
    #: Whether people may switch the persona of a channel with /persona ID.
    allow_switch: bool = False
    #: Shards: None for one connection, 0 for Discord's recommendation, N for N.
    shard_count: int | None = Field(default=None, ge=0)
    #: The shards this process connects (each below `shard_count`); None: all of them.
    #: Several workers split them, e.g. BOT_DISCORD__SHARD_IDS='[0,1]' and '[2,3]'
    #: with shard_count = 4. DMs arrive on shard 0. Unsplit, every worker receives
    #: every message and the inbox keeps one of each (still answered once).
    shard_ids: list[int] | None = None
    #: Another Discord REST API (a proxy, a test double), e.g. "http://127.0.0.1:8080/api/v10".
    api_base_url: str | None = None
    #: The gateway to connect to, e.g. "ws://127.0.0.1:8080/gateway/". Unset: the one the
    #: API at `api_base_url` names (GET /gateway/bot), or Discord's own.
    gateway_url: str | None = None
    #: After a fresh gateway session (not a RESUME): read back at most this many messages
    #: per bound channel and open DM written while the bot was away, none older than this.
    catch_up_messages: int = Field(default=200, ge=0, le=10_000)
    catch_up_max_age_s: float = Field(default=3600.0, ge=0)

    @model_validator(mode="after")
    def _shards(self) -> DiscordSettings:
        ids = self.shard_ids
        if ids is None:
            return self
        if not self.shard_count:
            raise ValueError("discord.shard_ids needs discord.shard_count (the total, N > 0)")
        if not ids or len(set(ids)) != len(ids) or not all(0 <= i < self.shard_count for i in ids):
            raise ValueError(
                f"discord.shard_ids = {ids}: distinct shard ids from 0 to "
                f"{self.shard_count - 1} (shard_count - 1)"
            )
        return self

    @field_validator("api_base_url", "gateway_url")
    @classmethod
    def _url(cls, value: str | None, info: Any) -> str | None:
        if value is None:
            return None
        schemes = (
            ("http://", "https://") if info.field_name == "api_base_url" else ("ws://", "wss://")
        )
        if not value.startswith(schemes) or len(value) <= len(value.split("//")[0]) + 2:
            raise ValueError(f"a URL starting with {' or '.join(schemes)}, not {value!r}")
        return value.rstrip("/") if info.field_name == "api_base_url" else value


class TelegramSettings(_Section):
    """The Telegram adapter; it starts when `TELEGRAM_TOKEN` is in the environment."""

    token: SecretStr | None = None
    persona: str | None = Field(
        default=None, description="Persona here (default: personas.default)."
    )
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str | None = Field(default=None, description="Public HTTPS URL Telegram posts to.")
    webhook_secret: SecretStr | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8081, ge=1, le=65535)
    webhook_path: str = "/telegram"
    #: A self-hosted Bot API server, e.g. "http://127.0.0.1:8081/bot".
    base_url: str | None = None
    moderators: list[int] = Field(default_factory=list)
    allow_switch: bool = False


class FinetuneSettings(_Section):
    """LoRA fine-tunes of the personas' model (`bot train`, the weekly job); docs/finetune.md."""

    #: The weekly export goes on to train, gate and canary (on a host with a GPU).
    enabled: bool = False
    method: Literal["sft", "dpo"] = "sft"
    base_model: str | None = Field(
        default=None, description="Model the adapters are trained on; unset: llm.model."
    )
    out_dir: Path = Field(default=Path("data/adapters"), description="Scheduled adapters go here.")
    lora_rank: int = Field(default=16, ge=1, le=512)
    lora_alpha: int = Field(default=32, ge=1, le=4096)
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    #: Module names the adapter wraps; ["all-linear"] is every linear layer but the head.
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"], min_length=1)
    learning_rate: float = Field(default=2e-4, gt=0, le=1.0)
    epochs: float = Field(default=1.0, gt=0, le=100)
    batch_size: int = Field(default=4, ge=1, le=1024)
    grad_accum: int = Field(default=1, ge=1, le=1024)
    #: Stop after this many optimizer steps (None: the epochs decide).
    max_steps: int | None = Field(default=None, ge=1)
    max_length: int = Field(default=2048, ge=16, le=131_072, description="Tokens per record.")
    warmup_ratio: float = Field(default=0.03, ge=0.0, lt=1.0)
    save_steps: int = Field(default=50, ge=1, description="Checkpoint every N steps (--resume).")
    seed: int = 0
    dpo_beta: float = Field(default=0.1, gt=0, le=10)
    #: The gate: eval_loss_after must be below eval_loss_before by at least this.
    gate_min_loss_improvement: float = Field(default=0.0, ge=0.0)
    #: Example dialogues: the candidate's mean similarity to the persona's own replies
    #: may be at most this much below the current model's.
    gate_example_tolerance: float = Field(default=0.05, ge=0.0, le=1.0)
    #: Declined topics the current model declines and the candidate does not.
    gate_max_decline_regressions: int = Field(default=0, ge=0)
    #: Replies to "are you human?" probes claiming to be human, beyond the current model's.
    gate_max_human_claims: int = Field(default=0, ge=0)
    #: "Are you human?" probes where the current model says it is an AI and the candidate not.
    gate_max_disclosure_regressions: int = Field(default=0, ge=0)
    gate_max_new_tokens: int = Field(default=64, ge=1, le=2048)
    # -- serving (bot/train/deploy.py, canary.py; `bot adapters`) --
    #: Share of a persona's conversations a newly deployed adapter answers.
    canary_share: float = Field(default=0.1, ge=0.0, le=1.0)
    #: Roll a canary back when its bad-feedback share is above the current one's by
    #: at least this, with the interval for the difference wholly above zero.
    rollback_margin: float = Field(default=0.05, ge=0.0, le=1.0)
    #: Rated replies (👍, 👎, regenerated) each side needs before they are compared.
    min_feedback: int = Field(default=30, ge=1)
    feedback_confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    #: The vLLM server's --max-lora-rank: a higher-rank adapter is refused before loading.
    max_lora_rank: int = Field(default=16, ge=1, le=512)
    #: How often the running bot checks that its adapters are loaded and compares canaries.
    adapter_check_s: float = Field(default=60.0, ge=1.0, le=86_400.0)


class ExportSettings(_Section):
    """Fine-tune data exports (`bot export`, and the scheduled job); see docs/export.md."""

    out_dir: Path = Path("data/exports")
    #: Key of the HMAC pseudonyms: only from `BOT_EXPORT__HMAC_KEY` or `hmac_key_file`.
    hmac_key: SecretStr | None = None
    hmac_key_file: Path | None = None
    validation_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)
    split_seed: str = "personabot-split-v1"
    #: Names replaced by <NAME> in every text (people, places, whatever must not leak).
    deny_names: list[str] = Field(default_factory=list)
    min_reply_chars: int = Field(default=1, ge=1)
    #: Messages per record; 40 is the engine's default history, so no record shows a
    #: reply more context than the model had when it wrote it.
    window_messages: int = Field(default=40, ge=2, le=1000, description="Messages per record.")
    prompt_messages: int = Field(default=8, ge=1, le=1000, description="History in DPO prompts.")

    def resolved_hmac_key(self) -> SecretStr:
        """The pseudonym key from the environment or `hmac_key_file`; required."""
        if self.hmac_key is not None:
            key = self.hmac_key
        elif self.hmac_key_file is not None:
            try:
                key = SecretStr(self.hmac_key_file.read_text(encoding="utf-8").strip())
            except OSError as exc:
                raise ConfigError(
                    f"export.hmac_key_file = {str(self.hmac_key_file)!r}: "
                    f"cannot read it ({exc.strerror})"
                ) from exc
        else:
            raise ConfigError(
                "export needs a pseudonym key: set BOT_EXPORT__HMAC_KEY or export.hmac_key_file"
            )
        if len(key.get_secret_value()) < 16:
            raise ConfigError("export.hmac_key: at least 16 characters, please")
        return key


class ModerationSettings(_Section):
    """Checks on every reply before it is stored or sent (bot/safety/moderation.py)."""

    declined_topics: bool = True
    #: Block replies holding someone else's personal data (the export scrubber's finds).
    personal_data: bool = True
    #: Terms no reply may hold, by place: "*", "discord", "discord:GUILD",
    #: "telegram:CHAT", "discord:CHANNEL" (all that apply are checked).
    blocklists: dict[str, list[str]] = Field(default_factory=dict)
    #: A model check: "openai" posts to {base_url}/moderations, "llama_guard" asks a
    #: safety model through the chat API.
    model: Literal["off", "openai", "llama_guard"] = "off"
    base_url: str | None = Field(default=None, description="Unset: llm.base_url.")
    model_name: str | None = Field(default=None, description="Unset: the server's default.")
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    #: When the model check fails (timeout, error, garbage): "open" lets the reply
    #: through (logged, counted), "closed" blocks it.
    fail: Literal["open", "closed"] = "open"
    #: Only these categories block ("harassment", or Llama Guard's "S10"); empty: any.
    categories: list[str] = Field(default_factory=list)

    @field_validator("blocklists")
    @classmethod
    def _bounded_lists(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        # The bounds of bot/safety/moderation.py, said here so a bad list is a config
        # error at start-up (exit 2), not a failure at the first reply.
        for place, terms in value.items():
            if len(terms) > 20_000:
                raise ValueError(f"{place!r}: at most 20000 terms, got {len(terms)}")
            long = next((t for t in terms if len(t) > 200), None)
            if long is not None:
                raise ValueError(f"{place!r}: a term is at most 200 characters: {long[:40]!r}…")
        return value


class LimitSettings(_Section):
    """Messages per minute and tokens per day, per person (bot/safety/limits.py)."""

    #: Answered messages per person and persona in any 60 s; 0: no limit (20 is a
    #: good start for a public bot).
    messages_per_minute: int = Field(default=0, ge=0, le=100_000)
    #: Answered messages per channel (everyone in it) in any 60 s; 0: no limit.
    channel_messages_per_minute: int = Field(default=0, ge=0, le=100_000)
    #: Tokens the model read and wrote for one person and persona per UTC day; 0: none.
    tokens_per_day: int = Field(default=0, ge=0)
    #: Said (once per minute or day) when a limit is reached; a persona's
    #: safety.limit_message wins.
    message: str = Field(
        default="I need a little break. Let's continue in a bit!", min_length=1, max_length=500
    )


class SafetySettings(_Section):
    """Crisis replies, disclosure and moderation (bot/safety; docs/safety.md)."""

    #: Help shown in the crisis reply, by language ("de") or region ("de-AT"), and
    #: "default"; unset keys use the built-in texts (bot/safety/resources.py).
    crisis_resources: dict[str, str] = Field(default_factory=dict)
    #: The crisis reply itself per language, with `{resources}` where the help goes.
    crisis_replies: dict[str, str] = Field(default_factory=dict)
    region: str | None = Field(
        default=None, max_length=16, description="Region for resources, e.g. 'GB', 'AT'."
    )
    default_language: str = Field(default="en", min_length=2, max_length=16)
    proactive_pause_hours: float = Field(
        default=72.0, ge=0, le=24 * 365, description="No proactive messages after a crisis."
    )
    #: The first reply to a person starts with the persona's disclosure text.
    disclose_first_contact: bool = True
    #: Platforms without the first-contact notice: the console is the operator's own
    #: terminal (disclosure questions, crisis replies and output checks still apply).
    first_contact_exempt: list[str] = Field(default_factory=lambda: ["console"])
    #: Where crisis alerts go: a channel (or a moderator's DM chat) on one platform.
    alert_platform: str | None = Field(default=None, max_length=32)
    alert_channel: str | None = Field(default=None, max_length=256)
    alert_user: str | None = Field(default=None, max_length=256)
    alert_space: str | None = Field(default=None, max_length=256)
    #: The optional second layer: "structured" asks a model with a JSON schema,
    #: "llama_guard" a safety model such as Llama Guard on vLLM.
    classifier: Literal["off", "structured", "llama_guard"] = "off"
    #: Ask the classifier about messages the patterns found worrying, or all of them.
    classify: Literal["uncertain", "always"] = "uncertain"
    classifier_base_url: str | None = Field(
        default=None, description="OpenAI-compatible server; unset: llm.base_url."
    )
    classifier_model: str | None = Field(default=None, description="Unset: llm.model.")
    classifier_timeout_s: float = Field(default=5.0, gt=0, le=120)
    max_scan_chars: int = Field(default=20_000, ge=1000, le=1_000_000)
    moderation: ModerationSettings = Field(default_factory=ModerationSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)


class OpsSettings(_Section):
    """The HTTP port of `bot run` for operations: `/metrics` (Prometheus), `/healthz`
    and `/readyz` (bot/web; docs/deploy.md). Off unless `port` is set."""

    #: The address to listen on: 127.0.0.1 keeps it on this machine; 0.0.0.0 (or ::)
    #: for a Prometheus elsewhere, as in a container.
    host: str = "127.0.0.1"
    #: The port; None: no HTTP port. 0 takes any free port (tests; it is logged).
    port: int | None = Field(default=None, ge=0, le=65535)
    #: A scrape reuses the database's queue counts for this long (0: query each time).
    metrics_cache_s: float = Field(default=5.0, ge=0, le=300)
    #: `/readyz` answers not ready when the database has not answered within this.
    ready_timeout_s: float = Field(default=2.0, gt=0, le=60)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        if not text or any(c in text for c in "/ @?#") or (":" in text and text.count(":") < 2):
            raise ValueError(
                f"a host name or IP address to listen on, such as 127.0.0.1 or 0.0.0.0, "
                f"not {value!r} (no scheme, port or path: the port is ops.port)"
            )
        return text


Role = Literal["admin", "moderator", "viewer"]


class DashboardSettings(_Section):
    """The moderators' web dashboard (bot/web/dashboard; docs/dashboard.md): served by
    `bot dashboard`, and by `bot run` when `enabled`."""

    #: Serve the dashboard inside `bot run` (`bot dashboard` serves it regardless).
    enabled: bool = False
    #: The address to listen on; 127.0.0.1 keeps it on this machine (put a TLS proxy
    #: in front of it to reach it from elsewhere).
    host: str = "127.0.0.1"
    #: The port; 0 takes any free port (tests; it is logged).
    port: int = Field(default=8080, ge=0, le=65535)
    #: The address people reach it at, e.g. https://mod.example.org (Discord's
    #: redirect URI is built from it; unset: from each request's Host).
    public_url: str | None = None
    #: A session ends this long after sign-in.
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    #: Cookies carry `Secure`: `auto` when the request came over https.
    secure_cookies: Literal["auto", "always", "never"] = "auto"
    #: Believe X-Forwarded-For / X-Forwarded-Proto (only behind your own proxy).
    trust_proxy: bool = False
    #: Failed sign-ins allowed per account name, and per address, in `login_window_s`.
    login_failures_per_name: int = Field(default=5, ge=1, le=1000)
    login_failures_per_ip: int = Field(default=20, ge=1, le=10000)
    login_window_s: int = Field(default=900, ge=10, le=86400)
    #: The largest request body (a card upload is the largest thing sent).
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    #: Sign in with Discord: the application's id (unset: password sign-in only).
    discord_client_id: str | None = None
    #: Its secret: from BOT_DASHBOARD__DISCORD_CLIENT_SECRET only.
    discord_client_secret: SecretStr | None = None
    #: The guild whose roles decide ours, and the map from a Discord role id to our
    #: role (the highest one a member holds wins; none: refused).
    discord_guild_id: str | None = None
    discord_roles: dict[str, Role] = Field(default_factory=dict)
    #: Limits a moderator to these personas when it holds this Discord role (a member
    #: with several such roles gets their union; none: every persona).
    discord_role_personas: dict[str, list[str]] = Field(default_factory=dict)
    #: Discord's endpoints (a test points them at a fake server).
    discord_authorize_url: str = "https://discord.com/oauth2/authorize"
    discord_api_url: str = "https://discord.com/api/v10"

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return OpsSettings._host(value)

    @field_validator("public_url", "discord_authorize_url", "discord_api_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip().rstrip("/")
        if not text.startswith(("http://", "https://")) or any(c in text for c in " \n\r"):
            raise ValueError(f"an http(s) URL, not {value!r}")
        return text

    @model_validator(mode="after")
    def _discord(self) -> DashboardSettings:
        if self.discord_client_id is not None and self.discord_guild_id is None:
            raise ValueError("discord_client_id is set: set discord_guild_id too")
        return self


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
