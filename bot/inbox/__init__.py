"""The durable inbox: platform events committed before they are acknowledged.

store     `Inbox`, `RawEvent`, `InboxEvent`: the `inbox_events` table
worker    `InboxWorker`: pending events to the adapter, in order per chat
claims    `ChatClaims`: what the worker asks of the workers it shares chats with
recovery  `recover`: on start, finish what a crash left unfinished
outbox    `deliver_command`: a command's reply stored with its event's done mark
cli       `bot inbox list|replay`
"""

from bot.inbox.store import MAX_PAYLOAD_BYTES, Inbox, InboxEvent, RawEvent
from bot.inbox.worker import EventHandler, InboxWorker, Job, WorkerStats
from bot.models import InboxStatus

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "EventHandler",
    "Inbox",
    "InboxEvent",
    "InboxStatus",
    "InboxWorker",
    "Job",
    "RawEvent",
    "WorkerStats",
]
