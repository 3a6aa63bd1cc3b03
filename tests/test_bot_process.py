"""The `bot run` harness (tests/fakes/bot_process.py) does what the kill -9 tests
lean on: the environment and log of each start, readiness that fails with the
log's tail, SIGKILL, and a SIGTERM stop with a bounded wait.

The child here is a few lines of Python in place of the CLI (`entry`), so these
run in a second: what is tested is the harness, not the bot.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.bot_process import REPO, BotChild

# Prints what it was started with, says "up", then waits for a signal.
REPORTER = (
    "import json, os, sys, time; "
    "print(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(), 'env': dict(os.environ)}));"
    "print('up', flush=True); time.sleep(60)"
)


def _child(tmp_path: Path, code: str, **kw: Any) -> BotChild:
    config = tmp_path / "bot.toml"
    config.write_text("", encoding="utf-8")
    return BotChild(config, entry=("-c", code), **kw)


def _up(child: BotChild) -> bool:
    return child.log().endswith("up\n")


def _report(child: BotChild, start: int) -> dict[str, object]:
    first = child.log_path(start).read_text(encoding="utf-8").splitlines()[0]
    report: dict[str, object] = json.loads(first)
    return report


async def test_each_start_has_its_environment_arguments_and_own_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_INHERITED", "kept")
    monkeypatch.setenv("HARNESS_UNSET", "dropped")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    child = _child(
        tmp_path, REPORTER, env={"HARNESS_MINE": "1"}, unset=("HARNESS_UNSET",), label="w9"
    )
    assert child.log() == ""  # before the first start
    for start in (0, 1):
        await child.spawn()
        await child.wait_until(lambda: _up(child), timeout=60, what="did not start")
        await child.kill()
        assert child.process is not None and child.process.returncode == -signal.SIGKILL
        assert child.starts == start + 1
    report = _report(child, 0)
    assert report["argv"] == ["run", "--config", str(child.config)]
    assert report["cwd"] == str(tmp_path)
    env = report["env"]
    assert isinstance(env, dict)
    assert env["HARNESS_INHERITED"] == "kept" and env["HARNESS_MINE"] == "1"
    assert "HARNESS_UNSET" not in env
    assert env["PYTHONPATH"] == str(REPO)  # this checkout, whatever was inherited
    assert env["NO_PROXY"] == "127.0.0.1,localhost" and env["HF_HUB_OFFLINE"] == "1"
    # The killed run's log is kept; `log` reads the latest.
    assert child.log_path(0).exists() and child.log_path(1).exists()
    assert child.log() == child.log_path(1).read_text(encoding="utf-8")[-3000:]


async def test_credentials_come_before_the_callers_env(tmp_path: Path) -> None:
    class Tokened(BotChild):
        def credentials(self) -> dict[str, str]:
            return {"SOME_TOKEN": "from-credentials", "OTHER_TOKEN": "t"}

    child = Tokened(tmp_path / "bot.toml", env={"SOME_TOKEN": "from-env"})
    env = child.environment()
    assert env["SOME_TOKEN"] == "from-env" and env["OTHER_TOKEN"] == "t"


async def test_readiness_fails_with_the_log_when_the_child_exits_or_time_runs_out(
    tmp_path: Path,
) -> None:
    dying = _child(
        tmp_path, "print('config broken'); raise SystemExit(5)", label="w1", log_prefix="w1"
    )
    await dying.spawn()

    async def never() -> bool:  # an awaitable condition, as a worker's row count is
        return False

    with pytest.raises(AssertionError, match=r"(?s)w1 exited with 5: .*config broken"):
        await dying.wait_until(never, timeout=60, what="did not join")

    slow = _child(tmp_path, REPORTER)
    await slow.spawn()
    try:
        with pytest.raises(AssertionError, match=r"bot run did not start in 0.3 s"):
            await slow.wait_until(lambda: False, timeout=0.3, what="did not start")
    finally:
        await slow.kill()


async def test_stop_is_sigterm_and_a_bounded_wait(tmp_path: Path) -> None:
    assert await _child(tmp_path, REPORTER).stop() == 0  # never started: nothing to stop
    clean = _child(
        tmp_path,
        "import signal, sys, time; "
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(3)); print('up', flush=True); "
        "time.sleep(60)",
        log_prefix="clean",
    )
    await clean.spawn()
    await clean.wait_until(lambda: _up(clean), timeout=60, what="did not start")
    assert await clean.stop() == 3
    assert await clean.stop() == 3  # already gone: its code again

    stubborn = _child(
        tmp_path,
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)",
        label="w2",
        log_prefix="w2",
    )
    await stubborn.spawn()
    await stubborn.wait_until(lambda: _up(stubborn), timeout=60, what="did not start")
    with pytest.raises(AssertionError, match=r"w2 did not stop in 1.0 s"):
        await stubborn.stop(timeout=1.0)
    assert stubborn.process is not None
    assert stubborn.process.returncode == -signal.SIGKILL  # killed, not left running
