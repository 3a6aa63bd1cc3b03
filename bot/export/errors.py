"""Export errors, placed in the project's tree (bot/errors.py):

    ConfigError
    └── OutputNotEmpty        the output directory exists and has files (exit code 2)
    StorageError
    └── ExportError           the dataset could not be read or written (exit code 3)

Either way nothing is left behind that looks like a finished export.
"""

from __future__ import annotations

from bot.errors import ConfigError, StorageError

__all__ = ["ExportError", "OutputNotEmpty"]


class ExportError(StorageError):
    """Reading the ledger or writing the dataset failed; the message says what and where."""


class OutputNotEmpty(ConfigError):
    """The output directory exists and is not empty, and `force` was not given."""
