"""Reading `bot.toml` and wording configuration problems (bot/config.py uses these).

Every message names where the problem is (the file and line, or the `$BOT_*`
variable), the key, and what was expected; a value is shown only when it cannot be
a secret, and with URL credentials and token-shaped strings masked.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from bot.errors import ConfigError
from bot.logs import MASK, redact_text

__all__ = ["MAX_CONFIG_BYTES", "format_validation", "read_toml", "settings_error"]

#: The largest config file read; a bigger one is a mistake (or a device).
MAX_CONFIG_BYTES = 1024 * 1024


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML file at `path` as data; `ConfigError` for a directory, a pipe, a file
    past `MAX_CONFIG_BYTES`, one that is not UTF-8 (line and key named) or not TOML."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    if path.is_fifo() or path.is_socket():  # reading one could wait forever
        raise ConfigError(f"{path}: is a pipe or socket, not a config file")
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; not a config file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(_not_utf8(path, raw, exc)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return data


def _not_utf8(path: Path, raw: bytes, exc: UnicodeDecodeError) -> str:
    """Where a config file stops being UTF-8: line, and the key on that line."""
    before = raw[: exc.start]
    line_no = before.count(b"\n") + 1
    lines = raw.split(b"\n")
    line = lines[line_no - 1].decode("utf-8", "replace")
    section = ""
    for earlier in reversed(lines[: line_no - 1]):
        text = earlier.decode("utf-8", "replace")
        header = re.match(r"\s*\[+\s*([A-Za-z0-9_.\-]{1,64})\s*\]", text)
        if header:
            section = header[1] + "."
            break
    bare_key = re.match(r"\s*([A-Za-z0-9_.\-]{1,64})\s*=", line)
    key = bare_key[1] if bare_key else ""
    where = f" ({section}{key})" if key else (f" (in [{section[:-1]}])" if section else "")
    return (
        f"{path}:{line_no}{where}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); "
        "save the file as UTF-8"
    )


# A key whose name says it holds a credential: its value is never echoed.
_SECRET_NAME = re.compile(r"(?i)token|secret|passw|api_?key|hmac|credential")


def format_validation(error: ValidationError, source: str, secret_keys: frozenset[str]) -> str:
    """One line per problem: where, key, value (masked for secrets, never shown for
    unknown keys) and what was expected."""
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(root)"
        env_name = "BOT_" + "__".join(str(p).upper() for p in item["loc"])
        where = f"${env_name}" if env_name in os.environ else source
        if item["type"] == "extra_forbidden":
            # The key is what is wrong; its value may be a secret under a misspelt name.
            lines.append(f"{where}: {key}: unknown key")
            continue
        if item["type"] == "missing":
            shown = "<missing>"
        elif any(key.startswith(s) for s in secret_keys) or _SECRET_NAME.search(key):
            shown = MASK
        else:
            shown = redact_text(_short_repr(item.get("input")))
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {key} = {shown}: {redact_text(message)}")
    return "\n".join(lines)


def _short_repr(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...(cut)"


def settings_error(exc: SettingsError) -> ConfigError:
    """A `BOT_*` variable that pydantic-settings could not parse (malformed JSON in a
    list or table value), named without echoing its value."""
    cause = exc.__cause__
    field = re.search(r'field "([^"]+)"', str(exc))
    prefix = f"BOT_{field[1].upper()}" if field else "BOT_"
    names = sorted(
        n for n in os.environ if n.upper() == prefix or n.upper().startswith(prefix + "__")
    )
    if isinstance(cause, json.JSONDecodeError):
        names = [n for n in names if os.environ[n] == cause.doc] or names
        reason = f"not valid JSON ({cause.msg}: line {cause.lineno}, column {cause.colno})"
    else:
        reason = f"cannot be parsed ({type(cause).__name__ if cause else exc})"
    name = names[0] if names else prefix
    key = ".".join(part.lower() for part in name.removeprefix("BOT_").split("__"))
    return ConfigError(
        f"${name}: {key}: {reason}; a list or table value is JSON, "
        """e.g. '["a", "b"]' or '{"123": "samantha"}'"""
    )
