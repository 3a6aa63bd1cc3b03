"""Per-channel state the decision reads: replies in the last minute, the bot-to-bot
chain, each persona's last unprompted reply; and the counters of every decision.

Two keepers of the same state behind one protocol, `ChannelStates`: `GroupState`
here, in the process, and `GroupStore` (bot/groups/store.py), in the database,
which is what `bot run` uses so that a restart and every worker on one database
see the same budget, cooldowns and chain. `GroupState` is the fast path for one
process that may forget (tests, benchmarks, a console): a restart forgets it, so
at worst a channel gets one more minute's budget and a bot chain starts counting
again. Bounded: at most `max_channels` channels are kept, the least recently
active forgotten first, and a channel keeps at most one minute of reply times.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from bot.groups.decide import ChannelView, Decision, MessageFacts

__all__ = [
    "ChannelStates",
    "Chooser",
    "GroupCounters",
    "GroupState",
    "chain_after",
    "note_speakers",
]

WINDOW_S = 60.0

#: What picks the speakers once the channel's state is known (`decide`, bound to
#: the message, the present personas, the random generator and the time).
Chooser = Callable[[ChannelView], Decision]


class ChannelStates(Protocol):
    """Where channel state lives. `decide` reads a channel's state at `now`, lets
    `choose` decide, and records the decision's effect, as one step: no other
    decision on the same channel comes between the read and the write."""

    async def decide(
        self,
        key: str,
        now: float,
        *,
        replies_per_minute: int,
        max_bot_chain: int,
        facts: MessageFacts,
        choose: Chooser,
    ) -> tuple[ChannelView, Decision]:
        """The view `choose` saw and what it decided."""
        ...


def chain_after(chain: int, facts: MessageFacts, decision: Decision) -> tuple[int, list[str]]:
    """The bot chain after a decided message, and the personas that spoke: a person
    resets the chain, an outside bot's message lengthens it, and so does every
    reply of ours (a reply is a bot's message; shown back to our other personas it
    is not counted again)."""
    if not facts.author_is_bot and facts.author_persona is None:
        chain = 0
    elif facts.author_persona is None:
        chain += 1
    spoke = [v.persona for v in decision.verdicts if v.speak]
    return chain + len(spoke), spoke


def note_speakers(decision: Decision, now: float, unprompted: dict[str, float]) -> int:
    """The replies `decision` adds to the channel's budget; each persona that spoke
    unprompted ("always", "talkative") starts its cooldown at `now` in `unprompted`."""
    replies = 0
    for verdict in decision.verdicts:
        if not verdict.speak:
            continue
        replies += 1
        if verdict.reason in ("always", "talkative"):
            unprompted[verdict.persona] = now
    return replies


@dataclass
class _Channel:
    replies: deque[float] = field(default_factory=lambda: deque(maxlen=10_001))
    bot_chain: int = 0
    last_unprompted: dict[str, float] = field(default_factory=dict)

    def prune(self, now: float) -> None:
        while self.replies and now - self.replies[0] >= WINDOW_S:
            self.replies.popleft()


class GroupState:
    """The channels' state, keyed by a place key (the platform's channel or thread)."""

    def __init__(self, max_channels: int = 20_000) -> None:
        self.max_channels = max_channels
        self._channels: OrderedDict[str, _Channel] = OrderedDict()

    def __len__(self) -> int:
        return len(self._channels)

    def _get(self, key: str) -> _Channel:
        found = self._channels.get(key)
        if found is None:
            found = self._channels[key] = _Channel()
            while len(self._channels) > self.max_channels:
                self._channels.popitem(last=False)
        else:
            self._channels.move_to_end(key)
        return found

    def view(
        self, key: str, now: float, *, replies_per_minute: int, max_bot_chain: int
    ) -> ChannelView:
        """A snapshot of `key`'s state at `now`, with its limits, for `decide`."""
        channel = self._get(key)
        channel.prune(now)
        return ChannelView(
            replies_last_minute=len(channel.replies),
            bot_chain=channel.bot_chain,
            last_unprompted=dict(channel.last_unprompted),
            replies_per_minute=replies_per_minute,
            max_bot_chain=max_bot_chain,
        )

    def record(self, key: str, facts: MessageFacts, decision: Decision, now: float) -> None:
        """What a decided message does to the channel (`chain_after`), its replies
        counted in the budget and unprompted ones starting their cooldown."""
        channel = self._get(key)
        channel.bot_chain, _ = chain_after(channel.bot_chain, facts, decision)
        channel.replies.extend([now] * note_speakers(decision, now, channel.last_unprompted))

    async def decide(
        self,
        key: str,
        now: float,
        *,
        replies_per_minute: int,
        max_bot_chain: int,
        facts: MessageFacts,
        choose: Chooser,
    ) -> tuple[ChannelView, Decision]:
        """`view`, `choose`, `record` (no await between them: one step)."""
        view = self.view(
            key, now, replies_per_minute=replies_per_minute, max_bot_chain=max_bot_chain
        )
        decision = choose(view)
        self.record(key, facts, decision, now)
        return view, decision


class GroupCounters:
    """How many times each persona spoke or stayed silent, by reason: what the
    metrics endpoint exports (`snapshot`), and what tests read."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()

    def count(self, decision: Decision) -> None:
        for verdict in decision.verdicts:
            self._counts[("spoke" if verdict.speak else "silent", verdict.reason)] += 1

    def add(self, outcome: str, reason: str) -> None:
        """Count one verdict made outside `decide` (a bot the adapter ignores)."""
        self._counts[(outcome, reason)] += 1

    def get(self, outcome: str, reason: str) -> int:
        """The count of one outcome ("spoke" or "silent") for one reason."""
        return self._counts[(outcome, reason)]

    def snapshot(self) -> dict[str, int]:
        """Every count as "spoke.REASON" / "silent.REASON" → n."""
        return {f"{o}.{r}": n for (o, r), n in sorted(self._counts.items())}
