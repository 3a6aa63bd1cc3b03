"""The persona file's sampling and model sections (part of schema version 1, see
`bot.personas.schema`): how replies are sampled, and which model voices them.

`sampling.extra` holds only options the servers know, each bounded: both backends
pass them on to the model server or generation loop, where an unbounded one
(`num_beams: 100000`) would take the server down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, WrapValidator, model_validator

__all__ = ["ModelChoice", "Sampling", "SamplingExtra", "Section", "ValidatedAs"]


class Section(BaseModel):
    """A section of the persona file: unknown keys are errors, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SamplingExtra(Section):
    """Further sampling options, each known to the servers and bounded.

    Unknown keys are refused: both backends pass options on to the model server or
    generation loop, where one like `num_beams: 100000` takes the server down.
    """

    top_k: int | None = Field(
        default=None, ge=1, le=1000, description="Sample from the k most likely tokens only."
    )
    min_p: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Drop tokens less likely than this fraction of the most likely one.",
    )
    presence_penalty: float | None = Field(
        default=None, ge=-2, le=2, description="Penalty for tokens already present, -2 to 2."
    )
    frequency_penalty: float | None = Field(
        default=None, ge=-2, le=2, description="Penalty by how often a token occurred, -2 to 2."
    )
    min_tokens: int | None = Field(
        default=None,
        ge=0,
        le=8192,
        description="Generate at least this many tokens (at most max_tokens).",
    )
    stop_token_ids: tuple[Annotated[int, Field(ge=0, le=10_000_000)], ...] | None = Field(
        default=None, max_length=32, description="Token ids that end a reply."
    )


@dataclass(frozen=True, slots=True)
class ValidatedAs:
    """Annotation marking a plain field that is validated as `model`, so that the
    loader can name the allowed keys when a key is unknown."""

    model: type[BaseModel]


def _known_extra(value: Any, handler: Any) -> dict[str, Any]:
    # Validated as a model (errors at sampling.extra.<key>), kept as the plain mapping
    # of the options that were set, which is what the backends pass on.
    return SamplingExtra.model_validate(value).model_dump(exclude_none=True)


class Sampling(Section):
    """Sampling options for the persona's replies."""

    temperature: float = Field(default=0.8, ge=0, le=2, description="Randomness, 0 to 2.")
    top_p: float = Field(default=0.95, gt=0, le=1, description="Nucleus sampling mass, (0, 1].")
    max_tokens: int = Field(
        default=256, ge=1, le=8192, description="Upper bound on tokens per reply."
    )
    stop: tuple[str, ...] = Field(default=(), description="Strings that end a reply.")
    repetition_penalty: float | None = Field(
        default=None,
        gt=0,
        le=2,
        description="Penalty for repeated tokens (1.0 = none, at most 2); unset: server default.",
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=2**63 - 1,
        description="Fixed seed for reproducible sampling.",
    )
    extra: Annotated[
        dict[str, Any],
        WrapValidator(_known_extra),
        WithJsonSchema(SamplingExtra.model_json_schema()),
        ValidatedAs(SamplingExtra),
    ] = Field(
        default_factory=dict,
        description="Further sampling options passed to the server (vLLM's extra_body): "
        "top_k, min_p, presence_penalty, frequency_penalty, min_tokens, stop_token_ids; "
        "e.g. {min_p: 0.05}.",
    )

    @model_validator(mode="after")
    def _min_below_max(self) -> Sampling:
        if self.extra.get("min_tokens", 0) > self.max_tokens:
            raise ValueError(
                f"extra.min_tokens ({self.extra['min_tokens']}) is more than max_tokens "
                f"({self.max_tokens})"
            )
        return self


class ModelChoice(Section):
    """Which model voices the persona; unset fields use the bot's configuration."""

    backend: Literal["openai", "transformers"] | None = Field(
        default=None, description="LLM backend; unset: the configured default (llm.backend)."
    )
    name: str | None = Field(
        default=None, description="Model name or path; unset: the configured llm.model."
    )
    adapter: str | None = Field(
        default=None,
        description="LoRA adapter name (for vLLM: the served name of an adapter loaded with "
        "--lora-modules).",
    )
    context_window: int | None = Field(
        default=None, ge=256, description="Context size in tokens; unset: llm.context_window."
    )
