"""How the `bot` command ends: every failure a person can cause is one clear line
on stderr and an exit code, never a traceback.

    0  ok
    1  problems found (`personas check`, `memory import` skipped lines), a persona error
    2  usage error (bad argument, unknown option, missing value) or config error
    3  storage, backend, platform or file unavailable
    70 internal error (a bug)
    130 interrupted

Our own errors say what they are (`BotError.label`, `BotError.exit_code`, see
bot/errors.py). Usage errors come from the copy of click that typer ships (so
`click.ClickException` does not catch them); they are all `typer.TyperException`.
Anything else is a bug: one line saying so, and the traceback with `BOT_TRACEBACK=1`.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any

import typer

from bot.errors import BotError
from bot.logs import redact_text

__all__ = ["printable", "run_app"]


def printable(text: str) -> str:
    """`text` safe to print on a terminal: control characters (escape sequences
    included) shown as escapes, line breaks kept, secrets masked."""
    # Only "\n" breaks a line: splitlines() would also break at \x1c-\x1e, \x85 and
    # \u2028, which must be shown escaped like any other control character.
    lines = text.split("\n")
    return "\n".join(
        "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in line)
        for line in lines
    )


def _say(label: str, message: str) -> None:
    print(printable(redact_text(f"{label}: {message}" if label else message)), file=sys.stderr)


def _usage(exc: typer.TyperException) -> int:
    ctx: Any = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError":  # a group called bare: its help
        # With rich installed typer has printed it already; the message is then empty.
        if exc.format_message().strip():
            print(exc.format_message(), file=sys.stderr)
        return 2
    message = " ".join(exc.format_message().split())  # one line, whatever click wrapped
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    _say("usage error", message + hint)
    return int(getattr(exc, "exit_code", 2)) or 2


def _safe_streams() -> None:
    # A name or message that the terminal's encoding cannot show must not crash the
    # output of an error about it (surrogates from undecodable argv bytes, say).
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def run_app(app: Callable[..., Any], argv: list[str] | None) -> int:
    """Run the typer `app` on `argv` (default: the process's) and return the exit code."""
    _safe_streams()
    try:
        # Outside standalone mode click returns the code of a `typer.Exit`.
        code = app(args=argv, standalone_mode=False, prog_name="bot")
        return code if isinstance(code, int) else 0
    except BotError as exc:
        _say(exc.label, str(exc))
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        _say("", "aborted")
        return 130
    except KeyboardInterrupt:
        return 130
    except typer.TyperException as exc:  # typer's click: usage errors, bad values
        return _usage(exc)
    except BrokenPipeError:
        # `bot ... | head`: the reader left; say nothing more, and do not let the
        # interpreter fail flushing stdout on the way out.
        with open(os.devnull, "w") as devnull:  # noqa: PTH123
            os.dup2(devnull.fileno(), sys.stdout.fileno())
        return 1
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            return 1
        where = f"{exc.filename}: " if exc.filename else ""
        _say("file error", f"{where}{exc.strerror or exc}")
        return 3
    except Exception as exc:
        if os.environ.get("BOT_TRACEBACK"):
            raise
        _say(
            "internal error",
            f"{type(exc).__name__}: {exc} (a bug in personabot: please report it with "
            "the command that caused it; BOT_TRACEBACK=1 shows the traceback)",
        )
        return 70
