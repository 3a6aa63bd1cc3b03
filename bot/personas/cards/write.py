"""Writing an import's files: YAML that people can read, staged so nothing is half-done.

Every file of one command is written into a hidden staging directory inside the
target directory first, then renamed into place (assets before the persona file
that names them). A failure before the renames leaves the target untouched; one
during them takes back what was already placed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

__all__ = ["dump_yaml", "stage_and_commit"]


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line text, so a system prompt reads like one."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value and not any(c in value for c in "\u2028\u2029\ufeff\x85"):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def dump_yaml(data: Any, header: str = "") -> bytes:
    """`data` as UTF-8 YAML (keys in their order, text unwrapped), after `header`."""
    text = yaml.dump(data, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=1_000_000)
    return (header + text).encode("utf-8")


def stage_and_commit(target: Path, files: dict[str, bytes]) -> list[Path]:
    """Write `files` (relative path → bytes; the persona files last) under `target`.

    Returns the paths written. Raises `OSError` when they cannot be written; then
    nothing of them is left behind.
    """
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=target))
    placed: list[Path] = []
    try:
        for rel, body in files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
        try:
            for rel in files:
                final = target / rel
                final.parent.mkdir(parents=True, exist_ok=True)
                (staging / rel).replace(final)
                placed.append(final)
        except OSError:
            for path in placed:
                path.unlink(missing_ok=True)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return placed
