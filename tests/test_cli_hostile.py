"""Every `bot` command, found by walking the command tree (a new command is covered
without touching this file), against a person's mistakes: unknown options, missing
and malformed values, a --db that is missing, a text file, random bytes or a
directory, a --config that is no config. Each must end with its documented exit
code and one clear line on stderr, never a traceback.

The table runs in-process through `bot.cli.main` (the console script's own entry
point, so the same code path), because a subprocess per case would take minutes;
the last tests run a few cases as real subprocesses, the way a person sees them.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
import typer

from bot.cli import app, main
from bot.cli_errors import run_app
from bot.errors import ConfigError, StorageError, UsageError

REPO = Path(__file__).resolve().parent.parent

#: Commands that create a database that is not there (the rest must refuse to).
CREATES_DATABASE = {"chat", "db upgrade", "memory import", "moderators add", "run"}
#: Commands whose run is not bounded by their arguments (they talk to people).
LONG_RUNNING = {"chat", "run"}
#: Arguments some commands need to get as far as their database.
EXTRA = {
    "memory forget": ["--all"],
    "memory search": ["--query", "x"],
    "inbox replay": ["--failed"],
    "moderators add": ["--role", "viewer", "--password-stdin"],
    # The card's format comes from its name; a bad config is refused before writing.
    "personas export": ["--out", "card.png"],
}


@dataclass(frozen=True)
class Command:
    path: str
    command: Any

    @property
    def argv(self) -> list[str]:
        return self.path.split()

    def options(self) -> list[Any]:
        return [p for p in self.command.params if p.param_type_name == "option"]

    def has(self, name: str) -> bool:
        return any(name in p.opts for p in self.options())

    def required_args(self, tmp: Path) -> list[str]:
        """Values for the required parameters that get the command past parsing."""
        args: list[str] = []
        for param in self.command.params:
            if not param.required:
                continue
            value = _placeholder(param, tmp)
            args += [value] if param.param_type_name == "argument" else [param.opts[0], value]
        return args + EXTRA.get(self.path, [])


def _kind(param: Any) -> Any:
    """The Python type a parameter takes (typer keeps it on its own parameters)."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        return descriptor.annotation
    return {"integer": int, "float": float, "path": Path}.get(getattr(param.type, "name", ""), str)


def _placeholder(param: Any, tmp: Path) -> str:
    kind = _kind(param)
    if kind in (int, float):
        return "1"
    if kind is Path:
        line = {
            "platform": "console",
            "channel": "c",
            "user": "u",
            "persona": "p",
            "role": "user",
            "text": "hi",
            "timestamp": "2026-01-01T00:00:00Z",
        }
        path = tmp / "input.jsonl"
        path.write_text(json.dumps(line) + "\n", encoding="utf-8")
        return str(path)
    return "x"


def _walk(command: Any, prefix: str = "") -> Iterator[Command]:
    subcommands: dict[str, Any] = getattr(command, "commands", {}) or {}
    if prefix and (not subcommands or getattr(command, "invoke_without_command", False)):
        yield Command(prefix, command)
    for name, sub in sorted(subcommands.items()):
        yield from _walk(sub, f"{prefix} {name}".strip())


COMMANDS = list(_walk(typer.main.get_command(app)))
IDS = [c.path for c in COMMANDS]


def test_the_walk_finds_every_command() -> None:
    paths = set(IDS)
    expected = {"chat", "run", "db upgrade", "db current", "config show", "personas check"}
    assert expected | {"memory show", "schedule list", "export", "models tiny"} <= paths


@pytest.fixture(autouse=True)
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(("BOT_", "DISCORD_", "TELEGRAM_")):
            monkeypatch.delenv(name)
    for name in (
        "HF_HUB_DISABLE_PROGRESS_BARS",
        "TRANSFORMERS_VERBOSITY",
        "TOKENIZERS_PARALLELISM",
    ):
        monkeypatch.delenv(name, raising=False)  # `bot chat` sets them: restored after
    monkeypatch.setenv("BOT_MEMORY__EMBEDDING_MODEL", "none")
    monkeypatch.setenv("BOT_EXPORT__HMAC_KEY", "a-test-key-of-enough-length")
    monkeypatch.chdir(tmp_path)
    handlers = logging.getLogger().handlers[:]
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers = handlers


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


def assert_one_line(err: str, out: str, label: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{label}: "), err
    assert "Traceback" not in err + out


# -- arguments ------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_an_unknown_option_is_one_usage_line(
    command: Command, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *command.argv, "--no-such-option")
    assert code == 2
    assert_one_line(err, out, "usage error")
    assert "--no-such-option" in err and f"bot {command.path} --help" in err


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_an_option_without_its_value_is_one_usage_line(
    command: Command, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    valued = [o for o in command.options() if not o.is_flag and o.opts[0] != "--help"]
    if not valued:
        pytest.skip("no option takes a value")
    for option in valued:
        code, out, err = run(
            capsys, *command.argv, *command.required_args(tmp_path), option.opts[0]
        )
        assert code == 2, (option.opts, err)
        assert_one_line(err, out, "usage error")


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_a_missing_required_value_is_one_usage_line(
    command: Command, capsys: pytest.CaptureFixture[str]
) -> None:
    if not any(p.required for p in command.command.params):
        pytest.skip("nothing is required")
    code, out, err = run(capsys, *command.argv)
    assert code == 2
    assert_one_line(err, out, "usage error")
    assert "Missing" in err


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_a_number_that_is_not_one_is_one_usage_line(
    command: Command, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    numeric = [o for o in command.options() if _kind(o) in (int, float)]
    if not numeric:
        pytest.skip("no numeric option")
    for option in numeric:
        code, out, err = run(
            capsys, *command.argv, *command.required_args(tmp_path), option.opts[0], "many"
        )
        assert code == 2, err
        assert_one_line(err, out, "usage error")


@pytest.mark.parametrize("group", ["", "db", "memory", "personas", "schedule", "config"])
def test_a_bare_group_shows_its_help(group: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *group.split())
    assert code == 2
    assert "Usage:" in err + out and "Traceback" not in err + out


# -- databases ------------------------------------------------------------------------

DB_COMMANDS = [c for c in COMMANDS if c.has("--db")]


def test_every_command_that_reads_a_database_takes_db() -> None:
    paths = {c.path for c in DB_COMMANDS}
    assert {"db current", "memory show", "memory search", "schedule list", "export"} <= paths


def _bad_databases(tmp: Path) -> dict[str, Path]:
    text = tmp / "notes.txt"
    text.write_text("these are my notes, not a database\n", encoding="utf-8")
    noise = tmp / "noise.db"
    noise.write_bytes(bytes(range(256)) * 16)
    directory = tmp / "a-directory.db"
    directory.mkdir()
    almost = tmp / "almost.db"  # the right magic, then garbage
    almost.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    return {"text": text, "noise": noise, "directory": directory, "almost": almost}


@pytest.mark.parametrize("command", [c for c in DB_COMMANDS if c.path not in LONG_RUNNING])
@pytest.mark.parametrize("kind", ["text", "noise", "directory", "almost"])
def test_a_db_that_is_not_a_database_is_one_storage_line(
    command: Command, kind: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = _bad_databases(tmp_path)[kind]
    before = path.read_bytes() if path.is_file() else None
    code, out, err = run(capsys, *command.argv, *command.required_args(tmp_path), "--db", str(path))
    assert code == 3, err
    assert_one_line(err, out, "storage error")
    assert str(path) in err or kind == "almost"
    assert before is None or path.read_bytes() == before  # untouched


@pytest.mark.parametrize(
    "command", [c for c in DB_COMMANDS if c.path not in CREATES_DATABASE], ids=lambda c: c.path
)
def test_a_missing_db_is_refused_not_created(
    command: Command, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "typo" / "bot.db"
    code, out, err = run(
        capsys, *command.argv, *command.required_args(tmp_path), "--db", str(missing)
    )
    assert code == 3, err
    assert_one_line(err, out, "storage error")
    assert "does not exist" in err
    assert not missing.exists() and not missing.parent.exists()


def test_chat_with_a_db_that_is_not_a_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for path in _bad_databases(tmp_path).values():
        code, out, err = run(capsys, "chat", "--backend", "openai", "--db", str(path))
        assert code == 3, err
        assert_one_line(err, out, "storage error")


# -- config files ---------------------------------------------------------------------

CONFIG_COMMANDS = [c for c in COMMANDS if c.has("--config")]


def _bad_configs(tmp: Path) -> dict[str, tuple[Path, str]]:
    latin1 = tmp / "latin1.toml"
    latin1.write_bytes(b'[llm]\nmodel = "caf\xe9"\n')
    noise = tmp / "noise.toml"
    noise.write_bytes(bytes(range(256)))
    broken = tmp / "broken.toml"
    broken.write_text("[llm\nmodel = 1\n", encoding="utf-8")
    unknown = tmp / "unknown.toml"
    unknown.write_text('[llm]\nmodle = "x"\n', encoding="utf-8")
    folder = tmp / "folder.toml"
    folder.mkdir()
    fifo = tmp / "fifo.toml"
    os.mkfifo(fifo)  # nobody writes to it: reading would wait forever
    return {
        "fifo": (fifo, "is a pipe or socket"),
        "latin1": (latin1, "latin1.toml:2 (llm.model): not valid UTF-8"),
        "noise": (noise, "not valid UTF-8"),
        "broken": (broken, "not valid TOML"),
        "unknown": (unknown, "llm.modle: unknown key"),
        "folder": (folder, "is a directory"),
        "missing": (tmp / "nope.toml", "not found"),
    }


@pytest.mark.parametrize("command", CONFIG_COMMANDS, ids=lambda c: c.path)
def test_a_config_that_is_no_config_is_one_config_line(
    command: Command, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name, (path, expected) in _bad_configs(tmp_path).items():
        code, out, err = run(
            capsys, *command.argv, *command.required_args(tmp_path), "--config", str(path)
        )
        assert code == 2, (name, err)
        assert_one_line(err, out, "config error")
        assert expected in err, (name, err)


# -- what a person sees -----------------------------------------------------------------


def bot(*args: str) -> subprocess.CompletedProcess[str]:
    """`bot ARGS` as a subprocess in the current (temporary) directory."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    full.update({"HF_HUB_OFFLINE": "1", "BOT_MEMORY__EMBEDDING_MODEL": "none"})
    full["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="backslashreplace",
        env=full,
        timeout=120,
    )


def test_plain_bot_shows_help_without_a_traceback() -> None:
    result = bot()
    assert result.returncode == 2
    shown = result.stdout + result.stderr  # typer prints it itself where rich is installed
    assert "Usage:" in shown and "chat" in shown and "schedule" in shown
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("chat", "--nope"),
        ("memory", "show"),
        ("memory", "search", "--user", "u", "--persona", "p", "--k", "0"),
        ("db", "current", "--db", "/nonexistent/dir/bot.db"),
        ("export", "--since", "last tuesday"),
    ],
    ids=" ".join,
)
def test_mistakes_as_a_subprocess_are_one_line(args: tuple[str, ...]) -> None:
    result = bot(*args)
    assert result.returncode in (2, 3), result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and ": " in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not Path("/nonexistent").exists()


def test_undecodable_and_control_characters_in_arguments_are_shown_escaped() -> None:
    # argv bytes that are not UTF-8 arrive as surrogates; an escape sequence as text.
    result = bot("config", "show", "--config", os.fsdecode(b"\xff\xfe") + "\x1b[31mred.toml")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("config error: ") and "not found" in result.stderr
    assert "\x1b" not in result.stderr and "\\x1b" in result.stderr
    assert "Traceback" not in result.stderr


# -- how run_app ends what it does not know -------------------------------------------


def _app_raising(error: BaseException) -> typer.Typer:
    tiny = typer.Typer()

    @tiny.command()
    def boom() -> None:
        raise error

    @tiny.command()
    def fine() -> None:
        typer.echo("fine")

    return tiny


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (RuntimeError("surprise"), 70, "internal error: RuntimeError: surprise (a bug in"),
        (PermissionError(13, "Permission denied", "/srv/x"), 3, "file error: /srv/x: Permission"),
        (UsageError("--x 'y': no"), 2, "usage error: --x 'y': no"),
        (StorageError("the disk\nis full"), 3, "storage error: the disk"),
        (ConfigError("key = 'postgresql://u:pw-123456@h/db': bad"), 2, "config error: key = "),
    ],
    ids=["bug", "oserror", "usage", "storage", "config"],
)
def test_run_app_ends_everything_with_its_line_and_code(
    error: BaseException, code: int, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_app(_app_raising(error), ["boom"]) == code
    out, err = capsys.readouterr()
    assert err.startswith(line) and "Traceback" not in err + out
    assert "pw-123456" not in err  # secrets masked in every message


def test_a_bug_shows_its_traceback_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="surprise"):
        run_app(_app_raising(RuntimeError("surprise")), ["boom"])


def test_ok_and_interrupted(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_app(_app_raising(KeyboardInterrupt()), ["fine"]) == 0
    assert capsys.readouterr().out == "fine\n"
    assert run_app(_app_raising(KeyboardInterrupt()), ["boom"]) == 130
