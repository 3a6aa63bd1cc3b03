"""The aiohttp server behind `ops.port`: `/metrics`, `/healthz`, `/readyz`.

- `/healthz`: 200 while the process's event loop answers (a liveness probe: restart
  the worker when it stops answering).
- `/readyz`: 200 when every `Readiness` check passes, else 503; the body is JSON
  with each check and its reason (a readiness probe: send no traffic meanwhile).
- `/metrics`: the Prometheus text format of this worker's `Metrics` registry; the
  database's queue counts are read first if older than `ops.metrics_cache_s`.

Access logs are off: a scrape every few seconds is not news.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.web.health import Readiness
from bot.web.listen import listen

if TYPE_CHECKING:
    from bot.app import App
    from bot.config import OpsSettings
    from bot.metrics import Metrics

__all__ = ["OpsServer", "start_ops"]

log = structlog.get_logger("bot.web")


class OpsServer:
    """Serves one worker's `/metrics`, `/healthz` and `/readyz` on `host:port`."""

    def __init__(
        self, metrics: Metrics, readiness: Readiness, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.metrics = metrics
        self.readiness = readiness
        self.host = host
        #: The port asked for; after `start`, the port actually bound (0: any free one).
        self.port = port
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        """The aiohttp application (routes only; `start` serves it)."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    @property
    def url(self) -> str:
        """http://host:port of the running server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Listen; `ConfigError` when the address cannot be bound (in use, not ours)."""
        self._runner, self.port = await listen(
            self.application(),
            self.host,
            self.port,
            label="ops",
            in_use=" (another worker on this port?)",
        )
        log.info("ops.listening", url=self.url)

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> OpsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- handlers ------------------------------------------------------------------------

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "worker": self.metrics.worker})

    async def _readyz(self, _request: web.Request) -> web.Response:
        checks = await self.readiness.check()
        ready = all(check.ok for check in checks)
        body = {
            "ready": ready,
            "worker": self.metrics.worker,
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
        }
        return web.Response(
            text=json.dumps(body, ensure_ascii=False) + "\n",
            status=200 if ready else 503,
            content_type="application/json",
        )

    async def _metrics(self, _request: web.Request) -> web.Response:
        await self.metrics.refresh()
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def start_ops(
    settings: OpsSettings, app: App, adapters: Sequence[Any] = ()
) -> OpsServer | None:
    """Start the ops server of a `bot run` worker when `settings.port` is set (None
    when it is not): its metrics, database and these adapters' readiness and
    delivery counts."""
    if settings.port is None:
        return None
    metrics = app.metrics
    metrics.ttl_s = settings.metrics_cache_s
    metrics.read_timeout_s = settings.ready_timeout_s
    metrics.watch_database(app.db)
    metrics.watch_delivery(adapters)
    readiness = Readiness(app.db, adapters, timeout_s=settings.ready_timeout_s)
    server = OpsServer(metrics, readiness, host=settings.host, port=settings.port)
    await server.start()
    return server
