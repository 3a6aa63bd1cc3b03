"""The HTTP port of `bot run` for operations: `/metrics`, `/healthz`, `/readyz`.

`OpsServer` serves them (aiohttp); `Readiness` decides what `/readyz` says: the
database answers and its migrations are at this code's head, and every platform
adapter is connected. It listens only when `ops.port` is set (docs/deploy.md).
The moderators' web dashboard is a package of its own, `bot.web.dashboard`.
"""

from bot.web.health import Check, Readiness
from bot.web.server import OpsServer, start_ops

__all__ = ["Check", "OpsServer", "Readiness", "start_ops"]
