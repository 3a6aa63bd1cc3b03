"""The sections of the data that leaves the chats: fine-tune exports and the LoRA
fine-tunes trained and served from them.

Re-exported by `bot.config`; callers keep importing them from there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from bot.config_core import _Section
from bot.errors import ConfigError

__all__ = ["ExportSettings", "FinetuneSettings"]


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
