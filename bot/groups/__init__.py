"""Personas in busy groups: when each speaks, who answers a message when several
are present, bot-to-bot loops stopped, every decision logged and counted.

- `policy`: the settings (a persona's `groups:` section, the config's `groups`).
- `decide`: the pure decision for one message (time and randomness as arguments).
- `state`: per-channel budget, cooldowns, bot chain (in-process), and counters.
- `store`: the same state in the database, shared by workers (`bot run` uses it).
- `router`: what adapters call: one `Incoming` per present persona.

docs/groups.md explains the rules for moderators.
"""

from bot.groups.decide import ChannelView, Decision, MessageFacts, Present, Verdict, decide
from bot.groups.policy import ChannelGroup, GroupSettings, SpeakOverride, SpeakPolicy
from bot.groups.state import ChannelStates, GroupCounters, GroupState
from bot.groups.store import GroupStore

__all__ = [
    "ChannelGroup",
    "ChannelStates",
    "ChannelView",
    "Decision",
    "GroupCounters",
    "GroupSettings",
    "GroupState",
    "GroupStore",
    "MessageFacts",
    "Present",
    "SpeakOverride",
    "SpeakPolicy",
    "Verdict",
    "decide",
]
