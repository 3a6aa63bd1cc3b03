"""structlog setup: JSON lines in production, readable lines in a terminal.

Logs go to stderr (stdout belongs to `bot chat`), or to a file for a chat screen
that must stay clean. A processor redacts secrets: the exact values the
configuration holds, anything shaped like an API key or a bot token, and the
credentials inside URLs (`scheme://user:PASSWORD@host`, `?token=...`), wherever
they appear in an event. `redact_text` does the same for any text shown to people
(`bot config show`, error messages).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

__all__ = ["MASK", "SecretRedactor", "configure_logging", "mask_url_credentials", "redact_text"]

_TOKEN_SHAPES = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),  # OpenAI-style API keys
    re.compile(r"\b\d{6,12}:[A-Za-z0-9_\-]{30,}"),  # Telegram bot tokens
    re.compile(r"\b[MNO][A-Za-z\d_\-]{23,27}\.[A-Za-z\d_\-]{6}\.[A-Za-z\d_\-]{27,40}"),  # Discord
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{12,}"),
)
MASK = "**********"

# The userinfo of a URL: everything between "scheme://" and the last "@" before the
# path, so a password with an unencoded "@" in it is masked whole.
# Bounded repeats keep the cost linear in the text, whatever a hostile string holds.
_URL_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]{0,31}://)(?P<userinfo>[^\s/?#]{0,512})@"
)
# Query (or fragment) parameters whose name says they carry a credential.
_URL_SECRET_PARAM = re.compile(
    r"(?i)(?P<name>[?&;#](?:[^=&#;?\s]{0,64}?)"
    r"(?:token|secret|passw(?:or)?d|pwd|key|auth|sig(?:nature)?|credential|session)"
    r"[^=&#;?\s]{0,64}=)(?P<value>[^&#\s]+)"
)


def _mask_userinfo(match: re.Match[str]) -> str:
    user, colon, _password = match["userinfo"].partition(":")
    # user:password shows the user (it helps to debug); a lone userinfo is often a token.
    return f"{match['scheme']}{user}:{MASK}@" if colon else f"{match['scheme']}{MASK}@"


def mask_url_credentials(text: str) -> str:
    """`text` with the password (or lone token) of every URL's userinfo, and every
    credential-named query parameter (`token=`, `api_key=`, `sig=`...), masked."""
    if "://" in text:
        text = _URL_USERINFO.sub(_mask_userinfo, text)
    if "=" in text:
        text = _URL_SECRET_PARAM.sub(lambda m: m["name"] + MASK, text)
    return text


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the given secrets, token-shaped strings and URL credentials masked."""
    return SecretRedactor(secrets).redact(text)


class SecretRedactor:
    """A structlog processor that masks secret values in every string of an event."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """`text` with every known secret and token-shaped string masked."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for shape in _TOKEN_SHAPES:
            text = shape.sub(lambda m: (m.group(1) if m.lastindex else "") + MASK, text)
        return mask_url_credentials(text)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self._walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._walk(v) for v in value)
        if isinstance(value, BaseException):
            return self.redact(f"{type(value).__name__}: {value}")
        return value

    def __call__(
        self, _logger: Any, _name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in list(event.items()):
            event[key] = self._walk(value)
        return event


class _CurrentStderr:
    """Whatever `sys.stderr` is at the moment of writing, not when logging was set up:
    a process (or a test harness) that swaps and closes stderr never leaves the
    loggers writing into a closed stream."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure_logging(
    *,
    level: str = "INFO",
    fmt: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    file: Path | None = None,
) -> None:
    """Configure structlog (and the stdlib loggers of libraries) for this process.

    With `file`, every record and every Python warning goes to that file (JSON lines,
    appended) instead of `stream`: for `bot chat`, whose screen is the conversation.
    """
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        # Line-buffered and never closed: the file lives as long as the process logs.
        stream = file.open("a", encoding="utf-8", buffering=1)
        fmt = "json"
    out: TextIO = stream or _CurrentStderr()  # type: ignore[assignment]
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    redactor = SecretRedactor(secrets)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redactor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level)),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the stdlib; send them through the same chain.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(getattr(logging, level), logging.WARNING))
    # Python warnings (a library's DeprecationWarning, torch's UserWarnings) are log
    # records too: they go where the logs go, redacted, not straight onto the screen.
    logging.captureWarnings(False)  # re-install over whatever replaced it since
    logging.captureWarnings(True)
