"""Bad output directories and full disks: a clear error, and nothing half-written left
that looks like a finished export."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import Settings
from bot.export import ExportError, OutputNotEmpty
from bot.export import writer as writer_module
from tests.export.helpers import run_export, texts
from tests.export.ledger import Ledger, bulk_conversations


def _some_data(ledger: Ledger, conversations: int = 3, exchanges: int = 3) -> None:
    for n in range(conversations):
        user = ledger.user(f"P{n}")
        conv = ledger.conversation(f"c{n}")
        for k in range(exchanges):
            ledger.exchange(conv, user, f"question {n}.{k} " + "x" * 200, f"answer {n}.{k}")


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_a_non_empty_output_directory_is_refused(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    _some_data(ledger)
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(OutputNotEmpty, match=r"not empty.*--force"):
        run_export(settings, out)
    assert (out / "precious.txt").read_text() == "keep me"
    assert _leftovers(tmp_path) == []


def test_force_replaces_it_only_once_the_new_export_is_complete(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    _some_data(ledger)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old export")
    run_export(settings, out, force=True)
    assert not (out / "old.txt").exists()
    assert (out / "manifest.json").exists()
    assert len(texts(out)) == 18
    assert _leftovers(tmp_path) == []


def test_an_empty_output_directory_is_fine(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    _some_data(ledger)
    (tmp_path / "out").mkdir()
    run_export(settings, tmp_path / "out")
    assert (tmp_path / "out" / "manifest.json").exists()


def test_an_output_path_that_cannot_be_created_is_a_clear_error(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    _some_data(ledger)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ExportError, match="cannot write to"):
        run_export(settings, blocker / "out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_a_read_only_parent_is_a_clear_error(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    _some_data(ledger)
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(ExportError, match=r"cannot write to .*ro"):
            run_export(settings, parent / "out")
    finally:
        parent.chmod(0o755)
    assert list(parent.iterdir()) == []


def test_permission_denied_while_writing_removes_everything(
    ledger: Ledger, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root ignores permissions, so the refusal is made at the OS call itself.
    _some_data(ledger)
    real_open = os.open

    def refusing_open(
        path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kwargs: object
    ) -> int:
        if str(path).endswith(".jsonl"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, mode, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(ExportError, match="permission denied"):
        run_export(settings, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("fail_after", [0, 3000])
def test_a_disk_that_fills_up_leaves_nothing_behind(
    ledger: Ledger,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fail_after: int,
) -> None:
    _some_data(ledger, conversations=30)
    monkeypatch.setattr(writer_module, "_BUFFER_BYTES", 512)  # many small writes
    real_write = os.write
    written = 0

    def filling_write(fd: int, data: bytes | memoryview) -> int:
        nonlocal written
        if written + len(data) > fail_after:
            raise OSError(errno.ENOSPC, "No space left on device")
        written += len(data)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", filling_write)
    with pytest.raises(ExportError, match=r"disk is full.*removed"):
        run_export(settings, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path) == []


def test_a_disk_full_under_force_keeps_the_old_export(
    ledger: Ledger, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _some_data(ledger)
    out = tmp_path / "out"
    run_export(settings, out)
    before = (out / "manifest.json").read_bytes()

    def full(fd: int, data: bytes | memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(ExportError, match="disk is full"):
        run_export(settings, out, force=True)
    assert (out / "manifest.json").read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_a_database_that_does_not_exist_is_a_clear_error(
    settings: Settings, tmp_path: Path
) -> None:
    settings.database.url = f"sqlite:///{tmp_path}/missing.db"
    with pytest.raises(ExportError, match="does not exist"):
        run_export(settings, tmp_path / "out")
    assert not (tmp_path / "missing.db").exists()
    assert not (tmp_path / "out").exists()


def test_a_database_behind_on_migrations_is_a_clear_error(
    settings: Settings, tmp_path: Path
) -> None:
    from bot.db import create_db_engine, upgrade

    engine = create_db_engine(f"sqlite:///{tmp_path}/old.db")
    upgrade(engine, "0003")
    engine.dispose()
    settings.database.url = f"sqlite:///{tmp_path}/old.db"
    with pytest.raises(ExportError, match="bot db upgrade"):
        run_export(settings, tmp_path / "out")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, where the system lets us mount one (root in a container)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here; the os.write tests above cover ENOSPC")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_really_full_disk(ledger: Ledger, settings: Settings, tiny_disk: Path) -> None:
    bulk_conversations(ledger, conversations=200)  # about 1 MB of records
    with pytest.raises(ExportError, match="disk is full"):
        run_export(settings, tiny_disk / "out")
    assert list(tiny_disk.iterdir()) == []
