"""Card macros: the known ones act, everything else (unknown macros, Jinja syntax)
renders exactly as written; the export's reverse gives the card text back."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.personas import Persona, render_system_prompt
from bot.personas.cards.macros import MacroContext, from_template, to_plain, to_template
from tests.personas.cards.test_import import CTX

SERA = MacroContext("Sera", fields={"description": "{{user}} is here", "personality": "calm"})


def _render(template: str) -> str:
    # Brackets around it: the render strips surrounding blank space.
    persona = Persona(id="sera", name="Sera", system_prompt="[" + template + "]")
    return render_system_prompt(persona, CTX)[1:-1]


@pytest.mark.parametrize(
    ("card", "rendered"),
    [
        ("{{char}} and {{user}}", "Sera and Robin"),
        ("{{Char}} <BOT> <CHAR> <USER> {{USER}}", "Sera Sera Sera Robin Robin"),
        (
            "{{time}} {{date}} {{weekday}} {{isotime}} {{isodate}}",
            "07:30 2024-05-01 Wednesday 07:30 2024-05-01",
        ),
        ("a{{newline}}b{{trim}}{{noop}}{{// a comment}}", "a\nb"),
        ("{{idle_duration}}", "a while"),
        ("{{personality}} / {{charPersonality}}", "calm / calm"),
        ("{{description}}", "{{user}} is here"),  # a field's text is inserted as text
        (
            "{{lastMessage}} {{ 7*7 }} {% if true %}x{% endif %} {# c #}",
            "{{lastMessage}} {{ 7*7 }} {% if true %}x{% endif %} {# c #}",
        ),
        ("{% endraw %}{{char}}{% raw %}", "{% endraw %}Sera{% raw %}"),
        ("{{{char}}}", "{Sera}"),
        ("{", "{"),
        ("}}{{", "}}{{"),
    ],
)
def test_macros_render(card: str, rendered: str) -> None:
    assert _render(to_template(card, SERA)) == rendered


def test_random_pick_roll() -> None:
    for _ in range(20):
        assert _render(to_template("{{random:a,b}}", SERA)) in ("a", "b")
        assert _render(to_template("{{random::x, y::z}}", SERA)) in ("x, y", "z")
        assert 1 <= int(_render(to_template("{{roll:d6}}", SERA))) <= 6
    picked = {_render(to_template("{{pick::p::q}}", SERA)) for _ in range(5)}
    assert len(picked) == 1 and picked <= {"p", "q"}  # stable, as SillyTavern's pick


def test_plain_text_has_static_values() -> None:
    assert (
        to_plain("{{char}} meets {{user}} {{random:a,b}} {% x %}", SERA)
        == "Sera meets User a {% x %}"
    )


def test_original_is_the_main_prompt() -> None:
    # Composed at import (build.compose_system_prompt); here only as a macro value.
    ctx = MacroContext("Sera", original="MAIN")
    assert _render(to_template("{{original}} more", ctx)) == "MAIN more"


_PIECES = st.lists(
    st.one_of(
        st.text(alphabet="{}%#-raw endRAW()*|\"'\\ \nxé", max_size=12),
        st.sampled_from(
            ["{{char}}", "{{user}}", "{{x}}", "{%", "{#", "{{", "}}", "{% endraw %}", "{% raw %}"]
        ),
    ),
    max_size=12,
)


@given(_PIECES)
@settings(max_examples=300, deadline=None)
def test_any_text_renders_as_written(pieces: list[str]) -> None:
    """Whatever a card says, only {{char}}/{{user}} act; the rest comes out as written,
    and `from_template` gives the card text back."""
    text = "".join(pieces)
    template = to_template(text, MacroContext("Sera"))
    names = {"char": "Sera", "user": "Robin"}
    expected = re.sub(r"\{\{(char|user)\}\}", lambda m: names[m[1]], text)
    assert _render(template) == expected
    assert from_template(template) == text
