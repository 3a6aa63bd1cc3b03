"""bot.personas exposes exactly its documented names."""

from __future__ import annotations

import inspect

import bot.personas


def test_all_names_exist_once() -> None:
    names = bot.personas.__all__
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(bot.personas, name) is not None, name


def test_no_undocumented_public_names() -> None:
    public = {
        name
        for name in vars(bot.personas)
        if not name.startswith("_") and name not in {"annotations"}
    }
    modules = {
        "cards",
        "greetings",  # first messages; imported by the engine
        "loader",
        "lorebook",
        "preview",  # bot personas preview; imported by the CLI
        "problems",
        "registry",
        "render",
        "schema",
        "schedule",
    }
    assert public - modules == set(bot.personas.__all__)


def test_public_callables_and_classes_have_docstrings() -> None:
    for name in bot.personas.__all__:
        value = getattr(bot.personas, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__doc__, name
