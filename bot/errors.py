"""The project's exceptions, in one tree.

    BotError
    ├── ConfigError            bad bot.toml / BOT_* values (exit code 2)
    ├── PersonaError           a persona file that cannot be used
    │   ├── PersonaNotFound    no persona with that id is loaded
    │   ├── PersonaFileError   a file with problems (bot.personas; `.problems` has them all)
    │   └── PersonaTemplateError  a template that fails to render
    │       └── TemplateSecurityError  a template reaching for Python internals
    ├── StorageError           the database cannot be opened or written
    ├── AdapterError           a platform connection cannot start (bad token, missing intent)
    └── BackendError           the LLM backend failed a request
        ├── BackendUnavailable connection refused, timeouts, 5xx after retries
        └── EmptyCompletion    the backend answered with no usable text

Errors carry a message written for the person who has to fix the problem.
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
]


class BotError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(BotError):
    """The configuration is invalid; the message names the key, value and expectation."""


class PersonaError(BotError):
    """A persona file could not be loaded."""


class PersonaNotFound(PersonaError):
    """No persona with the requested id is loaded."""


class AdapterError(BotError):
    """A platform adapter cannot start or keep running; the message says why."""


class StorageError(BotError):
    """The database could not be opened, migrated or written."""


class BackendError(BotError):
    """The LLM backend did not produce a completion."""


class BackendUnavailable(BackendError):
    """The backend could not be reached or kept failing after retries."""


class EmptyCompletion(BackendError):
    """The backend answered, but with no usable text."""
