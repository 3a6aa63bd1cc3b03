"""PersonaRegistry: serving, reloads that keep the last good version, the watcher."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bot.errors import PersonaNotFound
from bot.personas import LoadedPersona, PersonaRegistry

from .conftest import eventually, persona_text, sha

Write = Callable[..., Path]


class Recorder:
    """An on_loaded hook that records every version it is told about."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, loaded: LoadedPersona) -> None:
        await asyncio.sleep(0)  # storage would await here
        self.seen.append((loaded.persona.id, loaded.content_hash))


def problem_logs(logs: Sequence[Mapping[str, Any]]) -> list[str]:
    return [entry["problem"] for entry in logs if entry["event"] == "persona.problem"]


async def test_load_all_serves_valid_files_and_returns_problems(
    write: Write, tmp_path: Path
) -> None:
    write("a.yaml", persona_text("a"))
    write("nested/b.yml", persona_text("b"))
    bad = write("bad.yaml", "id: bad\nname: Bad\n")
    recorder = Recorder()
    registry = PersonaRegistry([tmp_path], on_loaded=recorder)
    problems = await registry.load_all()
    assert [(p.path, p.field) for p in problems] == [(bad, "system_prompt")]
    assert registry.ids() == ["a", "b"]
    assert "a" in registry and "bad" not in registry and len(registry) == 2
    assert sorted(recorder.seen) == [("a", sha(persona_text("a"))), ("b", sha(persona_text("b")))]
    assert [p.persona.id for p in registry.personas()] == ["a", "b"]


async def test_get_unknown_id_names_the_available_ones(write: Write, tmp_path: Path) -> None:
    write("a.yaml", persona_text("a"))
    registry = PersonaRegistry([tmp_path])
    await registry.load_all()
    with pytest.raises(PersonaNotFound, match=r"no persona 'zed' is loaded \(available: a;"):
        registry.get("zed")


async def test_missing_directory_is_a_problem(tmp_path: Path) -> None:
    registry = PersonaRegistry([tmp_path / "nowhere"])
    [problem] = await registry.load_all()
    assert problem.message == "no such file or directory"
    assert registry.ids() == []


async def test_duplicate_ids_first_path_wins(write: Write, tmp_path: Path) -> None:
    write("1.yaml", persona_text("a", marker="first"))
    second = write("2.yaml", persona_text("a", marker="second"))
    registry = PersonaRegistry([tmp_path])
    [problem] = await registry.load_all()
    assert (problem.path, problem.line, problem.field) == (second, 1, "id")
    assert "already served from" in problem.message
    assert registry.get("a").persona.description == "first"


async def test_reload_valid_edit_replaces_atomically(write: Write, tmp_path: Path) -> None:
    path = write("a.yaml", persona_text("a"))
    recorder = Recorder()
    registry = PersonaRegistry([tmp_path], on_loaded=recorder)
    await registry.load_all()
    before = registry.get("a")
    served = registry._snapshot  # white-box: the mapping readers held before the swap
    path.write_text(persona_text("a", marker="v2"))
    assert await registry.reload(path) == []
    assert served.by_id["a"] is before  # copy-on-write: the old mapping was not mutated
    after = registry.get("a")
    assert after.content_hash == sha(persona_text("a", marker="v2"))
    assert after.persona.description == "v2"
    assert before.persona.description == ""  # a version already handed out never changes
    assert recorder.seen[-1] == ("a", after.content_hash)
    assert registry.reload_count == 2


async def test_reload_of_unchanged_content_is_a_no_op(write: Write, tmp_path: Path) -> None:
    path = write("a.yaml", persona_text("a"))
    recorder = Recorder()
    registry = PersonaRegistry([tmp_path], on_loaded=recorder)
    await registry.load_all()
    await registry.reload(path)
    assert len(recorder.seen) == 1


async def test_reload_invalid_edit_keeps_last_good_and_logs(write: Write, tmp_path: Path) -> None:
    path = write("a.yaml", persona_text("a"))
    registry = PersonaRegistry([tmp_path])
    await registry.load_all()
    good = registry.get("a")
    path.write_text(persona_text("a") + "sampling:\n  temperature: hot\n  colour: red\n")
    with capture_logs() as logs:
        problems = await registry.reload(path)
    assert [p.field for p in problems] == ["sampling.temperature", "sampling.colour"]
    assert registry.get("a") is good
    assert problem_logs(logs) == [str(p) for p in problems]
    assert problem_logs(logs)[0] == f"{path}:8:16: sampling.temperature: " + problems[0].message
    [rejected] = [e for e in logs if e["event"] == "persona.rejected"]
    assert rejected["kept_hash"] == good.content_hash
    assert rejected["log_level"] == "warning"


async def test_reload_deleted_file_removes_its_persona(write: Write, tmp_path: Path) -> None:
    path = write("a.yaml", persona_text("a"))
    registry = PersonaRegistry([tmp_path])
    await registry.load_all()
    path.unlink()
    assert await registry.reload(path) == []
    assert "a" not in registry


async def test_reload_changing_the_id_renames(write: Write, tmp_path: Path) -> None:
    path = write("a.yaml", persona_text("a"))
    registry = PersonaRegistry([tmp_path])
    await registry.load_all()
    path.write_text(persona_text("b"))
    await registry.reload(path)
    assert registry.ids() == ["b"]


async def test_duplicate_id_is_refused_then_served_when_freed(write: Write, tmp_path: Path) -> None:
    first = write("a.yaml", persona_text("a", marker="first"))
    registry = PersonaRegistry([tmp_path])
    await registry.load_all()
    second = write("b.yaml", persona_text("a", marker="second"))
    [problem] = await registry.reload(second)
    assert problem.path == second and problem.field == "id"
    assert registry.get("a").path == first
    first.unlink()
    await registry.reload(first)
    assert registry.get("a").path == second


async def test_on_loaded_failure_keeps_the_served_version(write: Write, tmp_path: Path) -> None:
    path = write("a.yaml", persona_text("a"))
    calls = 0

    async def flaky(loaded: LoadedPersona) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("database is down")

    registry = PersonaRegistry([tmp_path], on_loaded=flaky)
    await registry.load_all()
    good = registry.get("a")
    path.write_text(persona_text("a", marker="v2"))
    with pytest.raises(RuntimeError):
        await registry.reload(path)
    assert registry.get("a") is good


async def test_concurrent_reloads_are_serialized(write: Write, tmp_path: Path) -> None:
    paths = [write(f"{i}.yaml", persona_text(f"p{i}")) for i in range(10)]
    registry = PersonaRegistry([tmp_path])
    await asyncio.gather(*(registry.reload(p) for p in paths))
    assert registry.ids() == sorted(f"p{i}" for i in range(10))


# --- the real watcher ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def watching(tmp_path: Path) -> AsyncIterator[PersonaRegistry]:
    """A loaded registry over tmp_path with its watcher running and known to be live.

    A context manager rather than a fixture: the watcher task must run on the
    test's own event loop, and async fixtures here run on the session loop.
    """
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "a.yaml").write_text(persona_text("a"))
    registry = PersonaRegistry([tmp_path])
    await registry.load_all()
    stop = asyncio.Event()
    task = asyncio.create_task(registry.watch(stop, debounce_ms=400, step_ms=20))
    try:
        # The watcher starts asynchronously: touch a probe file until a reload shows up.
        probe = tmp_path / "probe.yaml"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while "probe" not in registry:
            assert loop.time() < deadline, "the watcher never reported a change"
            assert not task.done(), task
            probe.write_text(persona_text("probe", marker=f"t{loop.time()}"))
            await asyncio.sleep(0.1)
        yield registry
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)


async def test_watch_valid_edit_serves_the_new_hash(tmp_path: Path) -> None:
    async with watching(tmp_path) as registry:
        new = persona_text("a", marker="edited")
        (tmp_path / "a.yaml").write_text(new)
        await eventually(lambda: registry.get("a").content_hash == sha(new))


async def test_watch_invalid_edit_keeps_last_good_and_logs(tmp_path: Path) -> None:
    async with watching(tmp_path) as registry:
        good = registry.get("a")
        count = registry.reload_count
        with capture_logs() as logs:
            (tmp_path / "a.yaml").write_text(persona_text("a") + "bogus: 1\n")
            await eventually(lambda: registry.reload_count > count and bool(problem_logs(logs)))
        assert registry.get("a") is good
        [logged] = problem_logs(logs)
        assert logged.startswith(f"{tmp_path / 'a.yaml'}:7:1: bogus: unknown field;")


async def test_watch_delete_and_add(tmp_path: Path) -> None:
    async with watching(tmp_path) as registry:
        (tmp_path / "a.yaml").unlink()
        await eventually(lambda: "a" not in registry)
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "new.yml").write_text(persona_text("newcomer"))
        await eventually(lambda: "newcomer" in registry)


async def test_watch_directories_moved_in_and_out(tmp_path: Path) -> None:
    watched_dir = tmp_path / "watched"
    outside = tmp_path / "outside" / "pack"
    outside.mkdir(parents=True)
    (outside / "mover.yaml").write_text(persona_text("mover"))
    async with watching(watched_dir) as registry:
        # A rename brings files in (or out) with no event for the files themselves.
        outside.rename(watched_dir / "pack")
        await eventually(lambda: "mover" in registry)
        (watched_dir / "pack").rename(tmp_path / "outside" / "gone")
        await eventually(lambda: "mover" not in registry)


async def test_watch_ignores_other_files(tmp_path: Path) -> None:
    async with watching(tmp_path) as registry:
        count = registry.reload_count
        (tmp_path / "notes.txt").write_text("id: [")
        (tmp_path / ".a.yaml.swp").write_text("id: [")
        new = persona_text("a", marker="after")
        (tmp_path / "a.yaml").write_text(new)
        await eventually(lambda: registry.get("a").content_hash == sha(new))
        assert registry.reload_count == count + 1


async def test_watch_stops_promptly(tmp_path: Path) -> None:
    registry = PersonaRegistry([tmp_path])
    stop = asyncio.Event()
    task = asyncio.create_task(registry.watch(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, timeout=3)


async def test_watch_without_directories_waits_for_stop(tmp_path: Path) -> None:
    registry = PersonaRegistry([tmp_path / "missing"])
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(registry.watch(stop))
        await asyncio.sleep(0)
        stop.set()
        await asyncio.wait_for(task, timeout=1)
    assert logs[0]["event"] == "persona.watch.no_directories"
