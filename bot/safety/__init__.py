"""Safety: the stage the engine runs around every turn, and its checks.

stage        `SafetyStage` (before_turn, after_generation, moderate), the check
             protocols
stream       the stream guard: streamed text shown only once checked
normalize    text as the patterns see it (NFKC, case, invisible characters, leetspeak)
crisis       crisis detection (patterns per language, optional classifier) and reply
disclosure   "are you human?" questions and replies that claim to be human
"""

from bot.safety.stage import (
    EventSink,
    InputCheck,
    InputContext,
    InputHit,
    InputVerdict,
    OutputCheck,
    OutputContext,
    OutputVerdict,
    SafetyEvent,
    SafetyStage,
)
from bot.safety.stream import StreamGuard

__all__ = [
    "EventSink",
    "InputCheck",
    "InputContext",
    "InputHit",
    "InputVerdict",
    "OutputCheck",
    "OutputContext",
    "OutputVerdict",
    "SafetyEvent",
    "SafetyStage",
    "StreamGuard",
]
