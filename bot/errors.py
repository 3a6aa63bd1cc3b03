"""The project's exceptions, in one tree.

    BotError                   label         exit code of `bot`, what
    ├── UsageError             usage error       2  a bad command-line argument or value
    │   └── CardError          card error        2  a card or lorebook that cannot be imported
    │                                               (bot.personas.cards; names file and field)
    ├── ConfigError            config error      2  bad bot.toml / BOT_* values
    ├── PersonaError           persona error     1  a persona file that cannot be used
    │   ├── PersonaNotFound    no persona with that id is loaded
    │   ├── PersonaFileError   a file with problems (bot.personas; `.problems` has them all)
    │   └── PersonaTemplateError  a template that fails to render
    │       └── TemplateSecurityError  a template reaching for Python internals
    │           └── TemplateLimitError  a template past a render bound (bot.personas)
    ├── StorageError           storage error     3  the database cannot be opened or written
    ├── AdapterError           adapter error     3  a platform connection cannot start
    └── BackendError           backend error     3  the LLM backend failed a request
        ├── BackendUnavailable connection refused, timeouts, 5xx after retries
        └── EmptyCompletion    the backend answered with no usable text

Errors carry a message written for the person who has to fix the problem. Each class
says what it is (`label`) and which exit code the `bot` command ends with for it
(`exit_code`), so a new error is labelled and mapped where it is defined, not in a
table somewhere else.
"""

from __future__ import annotations

__all__ = [
    "AdapterError",
    "BackendError",
    "BackendUnavailable",
    "BotError",
    "ConfigError",
    "EmptyCompletion",
    "PersonaError",
    "PersonaNotFound",
    "StorageError",
    "UsageError",
]


class BotError(Exception):
    """Base of every error this project raises on purpose."""

    #: What `bot` prints before the message: "config error: ...".
    label = "error"
    #: The exit code of `bot` when this error ends a command.
    exit_code = 1


class UsageError(BotError):
    """A command-line argument or option is wrong; the message names it."""

    label = "usage error"
    exit_code = 2


class ConfigError(BotError):
    """The configuration is invalid; the message names the key, value and expectation."""

    label = "config error"
    exit_code = 2


class PersonaError(BotError):
    """A persona file could not be loaded."""

    label = "persona error"
    exit_code = 1


class PersonaNotFound(PersonaError):
    """No persona with the requested id is loaded."""


class AdapterError(BotError):
    """A platform adapter cannot start or keep running; the message says why."""

    label = "adapter error"
    exit_code = 3


class StorageError(BotError):
    """The database could not be opened, migrated or written."""

    label = "storage error"
    exit_code = 3


class BackendError(BotError):
    """The LLM backend did not produce a completion."""

    label = "backend error"
    exit_code = 3


class BackendUnavailable(BackendError):
    """The backend could not be reached or kept failing after retries."""


class EmptyCompletion(BackendError):
    """The backend answered, but with no usable text."""
