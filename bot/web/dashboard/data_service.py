"""What the conversations and people pages read and change, without HTTP.

Every function takes a SQLAlchemy `Connection` (run it with `db.read` / `db.run`)
and is the same SQL on SQLite and PostgreSQL. Every list is bounded and paged by a
key (never OFFSET): conversations by (last message time, id), messages and people
by id. Text search looks at the newest `SEARCH_WINDOW` messages only, so a search
for a rare word costs at most that many rows, however large the ledger grows.

Changes (`flag_reply`, `unflag_reply`, `correct_reply`) write their audit row in
the same transaction. The audit keeps no message text: a correction is recorded by
its length and SHA-256, so that a later forget, which deletes the reply row (and
the correction on it), leaves no byte of it behind in the audit log either.
"""

from __future__ import annotations

# The parts, one job each; callers keep importing every name from here.
from bot.web.dashboard.data_conversations import (
    SEARCH_WINDOW,
    ConversationFilter,
    ConversationPage,
    ConversationRow,
    list_conversations,
    parse_cursor,
)
from bot.web.dashboard.data_flags import (
    CORRECTION_MAX_CHARS,
    correct_reply,
    flag_reply,
    message_persona,
    unflag_reply,
)
from bot.web.dashboard.data_flags import FLAG_REASON_MAX_CHARS as FLAG_REASON_MAX_CHARS
from bot.web.dashboard.data_messages import MessageRow, MessageView, conversation_view
from bot.web.dashboard.data_messages import Why as Why
from bot.web.dashboard.data_people import MemoryRow as MemoryRow
from bot.web.dashboard.data_people import PersonRow as PersonRow
from bot.web.dashboard.data_people import PersonView, list_people, person_view
from bot.web.dashboard.data_people import memory_persona as memory_persona
from bot.web.dashboard.data_tables import PAGE, NotFound

__all__ = [
    "CORRECTION_MAX_CHARS",
    "PAGE",
    "SEARCH_WINDOW",
    "ConversationFilter",
    "ConversationPage",
    "ConversationRow",
    "MessageRow",
    "MessageView",
    "NotFound",
    "PersonView",
    "conversation_view",
    "correct_reply",
    "flag_reply",
    "list_conversations",
    "list_people",
    "message_persona",
    "parse_cursor",
    "person_view",
    "unflag_reply",
]
