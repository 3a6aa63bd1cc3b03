"""`bot run` as a child process of a test: the one way tests start, wait on, stop
and kill it.

`BotChild` starts `bot run --config <config>` with the inherited environment (less
the names in `unset`), the platform's token (`credentials`), what every such child
needs (no proxy for the fakes on 127.0.0.1, the Hugging Face hub offline, this
checkout on PYTHONPATH) and the caller's `env`; it runs in the config's folder.
Each start writes its own log there, `<log_prefix>-<n>.log` (n counts the starts
from 0), so a restarted bot's output does not overwrite the killed one's.
`wait_until` waits for a readiness condition the caller names (a fake saw a poll,
a gateway session, a worker row), failing at once with the log's tail if the child
exits first. `kill` is SIGKILL (no
shutdown, no flush); `stop` is SIGTERM and a bounded wait for a clean exit.

Used by tests/adapters/_telegram_process.py (`BotProcess`), tests/cluster/_workers.py
(`Worker`) and tests/adapters/test_discord_durable.py (`BotRun`).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path

__all__ = ["CLI_ENTRY", "REPO", "BotChild"]

REPO = Path(__file__).resolve().parents[2]
#: How `python` is told to run the CLI: its arguments before `run --config ...`.
CLI_ENTRY: tuple[str, ...] = ("-c", "from bot.cli import main; main()")
#: Every child's environment on top of the inherited one: the fakes listen on
#: 127.0.0.1 (a proxy from the environment must not take those calls), nothing is
#: downloaded, and `bot` is imported from this checkout.
BASE_ENV: dict[str, str] = {
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
    "HF_HUB_OFFLINE": "1",
    "PYTHONPATH": str(REPO),
}


class BotChild:
    """One `bot run` child at a time; `start` again after `kill` starts a fresh one.

    `label` names it in failure messages ("bot run", or a worker's name); `entry` is
    how Python runs the CLI (`CLI_ENTRY`, or `("-m", "bot.cli")`).
    """

    def __init__(
        self,
        config: Path,
        *,
        env: Mapping[str, str] | None = None,
        unset: Iterable[str] = (),
        label: str = "bot run",
        log_prefix: str = "bot",
        entry: Sequence[str] = CLI_ENTRY,
    ) -> None:
        self.config = config
        self.env: dict[str, str] = dict(env or {})
        self.unset = frozenset(unset)
        self.label = label
        self.log_prefix = log_prefix
        self.entry = tuple(entry)
        self.process: asyncio.subprocess.Process | None = None
        #: Starts so far; the latest run's log is number `starts - 1`.
        self.starts = 0

    def credentials(self) -> dict[str, str]:
        """The platform's token variable(s), read at each start; `env` may override."""
        return {}

    def environment(self) -> dict[str, str]:
        """The child's environment, as of now (read at each start): the inherited one
        less `unset`, then `credentials()`, `BASE_ENV` and `env`, later ones winning."""
        inherited = {k: v for k, v in os.environ.items() if k not in self.unset}
        return {**inherited, **self.credentials(), **BASE_ENV, **self.env}

    def log_path(self, start: int) -> Path:
        """The log of start number `start` (from 0)."""
        return self.config.parent / f"{self.log_prefix}-{start}.log"

    async def spawn(self) -> asyncio.subprocess.Process:
        """Start `bot run` and return at once (nothing waited on)."""
        with self.log_path(self.starts).open("wb") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, *self.entry, "run", "--config", str(self.config),
                stdout=out, stderr=out, env=self.environment(), cwd=self.config.parent,
            )  # fmt: skip
        self.starts += 1
        return self.process

    async def wait_until(
        self,
        ready: Callable[[], bool | Awaitable[bool]],
        *,
        timeout: float,
        what: str,
        poll: float = 0.02,
    ) -> None:
        """Poll `ready` (a function, or one returning an awaitable) until it is true.

        Raises AssertionError with the log's tail if the child exits first or
        `timeout` seconds pass: "<label> exited with <code>", "<label> <what> in
        <timeout> s" (`what` e.g. "did not start").
        """
        deadline = time.monotonic() + timeout
        while not await _truth(ready()):
            if self.process is not None and self.process.returncode is not None:
                raise AssertionError(
                    f"{self.label} exited with {self.process.returncode}: {self.log()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.label} {what} in {timeout} s: {self.log()}")
            await asyncio.sleep(poll)

    def log(self, tail: int = 3000) -> str:
        """The end of the latest run's output ("" before the first start)."""
        path = self.log_path(self.starts - 1)
        return path.read_text(encoding="utf-8", errors="replace")[-tail:] if path.exists() else ""

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no goodbye; returns once it is reaped."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self, timeout: float = 90.0) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code.

        Past `timeout` it is killed and AssertionError raised with the log's tail.
        """
        # Generous: a clean stop finishes the replies in hand first (Discord's drain
        # alone may take 30 s), which on a loaded machine takes a while.
        if self.process is None:
            return 0
        if self.process.returncode is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            await self.kill()
            raise AssertionError(
                f"{self.label} did not stop in {timeout} s: {self.log()}"
            ) from None


async def _truth(value: bool | Awaitable[bool]) -> bool:
    if inspect.isawaitable(value):
        return bool(await value)
    return bool(value)
