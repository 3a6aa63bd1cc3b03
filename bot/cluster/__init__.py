"""Several `bot run` processes on one PostgreSQL database, with no configuration.

node     `ClusterNode`: this worker's row and its advisory locks (worker, leader,
         chats) on a connection of its own; dead workers found and adopted
claims   the inbox queries: discover chats with work, pull a chat's next event,
         claim events without a chat (FOR UPDATE SKIP LOCKED)
lanes    `ClusterClaims`: those two joined for the inbox worker's lanes
leader   `Leadership`: one worker polls Telegram and runs the scheduler
single   `SingleProcessLock`: a SQLite file serves one `bot run` at a time

How it fits together is in docs/architecture.md ("Several workers").
"""

from bot.cluster.leader import Leadership
from bot.cluster.node import ClusterNode, worker_name
from bot.cluster.single import SingleProcessLock

__all__ = ["ClusterNode", "Leadership", "SingleProcessLock", "worker_name"]
