"""Output moderation: the checks a generated reply passes before it is stored or sent.

    DeclinedTopicCheck   a topic the persona declines (`safety.decline_topics`)
    BlocklistCheck       a term of the persona's (`safety.blocklist`) or the
                         channel's (`safety.moderation.blocklists`) blocklist
    PersonalDataCheck    someone's personal data (the export scrubber's detectors),
                         unless the person wrote it in the message being answered
    ModerationEndpoint   an OpenAI-compatible `/v1/moderations` endpoint
    GuardModelCheck      a safety model such as Llama Guard served by vLLM

Terms are matched on the folded text (`bot.safety.normalize`): NFKC, case, accents,
zero-width characters, letters spaced or dotted apart, leetspeak. A term written in a
spaced script matches whole words only ("ass" is not found in "class"); a CJK or
Thai term anywhere. Each check returns the reason it blocks (never the matched
personal data itself) or None; `bot.safety.stage` regenerates once, then deflects.
"""

from __future__ import annotations

from bot.config import Settings
from bot.export.scrub import Scrubber

# The checks live in modules of their own; callers keep importing them from here.
from bot.safety.moderation_models import FailMode as FailMode
from bot.safety.moderation_models import GuardModelCheck, ModerationEndpoint
from bot.safety.moderation_personal import PERSONAL_KINDS as PERSONAL_KINDS
from bot.safety.moderation_personal import PersonalDataCheck, personal_data
from bot.safety.moderation_terms import MAX_CHARS as MAX_CHARS
from bot.safety.moderation_terms import MAX_TERM_CHARS as MAX_TERM_CHARS
from bot.safety.moderation_terms import MAX_TERMS as MAX_TERMS
from bot.safety.moderation_terms import (
    BlocklistCheck,
    DeclinedTopicCheck,
    TermMatcher,
    channel_keys,
)
from bot.safety.stage import OutputCheck

__all__ = [
    "BlocklistCheck",
    "DeclinedTopicCheck",
    "GuardModelCheck",
    "ModerationEndpoint",
    "PersonalDataCheck",
    "TermMatcher",
    "channel_keys",
    "moderation_checks",
    "personal_data",
]


def moderation_checks(settings: Settings) -> list[OutputCheck]:
    """The output checks `settings.safety.moderation` asks for, in order: cheap
    local ones first, the model check last (it is asked only about text that
    passed the others)."""
    config = settings.safety.moderation
    checks: list[OutputCheck] = []
    if config.declined_topics:
        checks.append(DeclinedTopicCheck())
    checks.append(BlocklistCheck(config.blocklists))
    if config.personal_data:
        checks.append(PersonalDataCheck(Scrubber(deny_names=())))
    if config.model == "off":
        return checks
    base_url = config.base_url or settings.llm.base_url
    if config.model == "openai":
        secret = settings.llm.resolved_api_key()
        key = secret.get_secret_value() if secret is not None else None
        checks.append(
            ModerationEndpoint(
                base_url,
                model=config.model_name,
                api_key=key,
                timeout_s=config.timeout_s,
                fail=config.fail,
                categories=config.categories,
            )
        )
        return checks
    from bot.llm.openai_backend import OpenAIBackend

    numbers = [int(c.lstrip("Ss")) for c in config.categories if c.lstrip("Ss").isdigit()]
    model = config.model_name or settings.llm.model
    checks.append(
        GuardModelCheck(
            OpenAIBackend(base_url, model, timeout_s=config.timeout_s, max_retries=0),
            model=model,
            timeout_s=config.timeout_s,
            fail=config.fail,
            categories=numbers,
            owned=True,
        )
    )
    return checks
