"""Binding an aiohttp application to a TCP port, with one-line errors (both servers)."""

from __future__ import annotations

import errno

from aiohttp import web

from bot.errors import ConfigError

__all__ = ["listen"]


async def listen(
    app: web.Application, host: str, port: int, *, label: str, in_use: str = ""
) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port; return the runner and the port bound (0: one chosen).

    An address that cannot be bound is a `ConfigError` naming `label` and the reason
    (`in_use` is added to "address already in use")."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        why = {
            errno.EADDRINUSE: "address already in use" + in_use,
            errno.EADDRNOTAVAIL: "not an address of this machine",
            errno.EACCES: "permission denied (ports below 1024 need privileges)",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        raise ConfigError(f"{label}: cannot listen on {host}:{port}: {why}") from None
    addresses = runner.addresses
    return runner, int(addresses[0][1]) if addresses else port
