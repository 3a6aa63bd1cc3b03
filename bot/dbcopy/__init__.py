"""`bot db copy`: move a bot's database between SQLite and PostgreSQL (either way),
resumable after a kill and verified by per-table counts and checksums.

`copy_database` does the copy (bot/dbcopy/copy.py), `verify_databases` only the
comparison (`--verify-only`). docs/storage.md describes both for operators.
"""

from bot.dbcopy.copy import CopyResult, copy_database, verify_databases
from bot.dbcopy.verify import TableCheck

__all__ = ["CopyResult", "TableCheck", "copy_database", "verify_databases"]
