"""Hostile templates: every CPU, memory and nesting bomb is refused at check, quickly,
at its file:line, without a traceback; and whatever a template does, a render stays
within its bounds or fails as a persona error."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.personas import (
    RENDER_LIMITS,
    Persona,
    PersonaTemplateError,
    PromptContext,
    RenderLimits,
    TemplateLimitError,
    TemplateSecurityError,
    check_paths,
    render_greeting,
    render_system_prompt,
)
from bot.personas._templates import check_template

Write = Callable[..., Path]

BIG = "'x' * 99999"

#: (class of bomb, template). Each is one line, so its problem is at the file's line 4.
BOMBS: list[tuple[str, str]] = [
    # CPU: loops
    (
        "nested range loops",
        "{% for a in range(10000) %}{% for b in range(10000) %}x{% endfor %}{% endfor %}",
    ),
    (
        "silent nested loops",
        "{% for a in range(9999) %}{% for b in range(9999) %}{% endfor %}{% endfor %}",
    ),
    ("loop over a long string", "{% for c in " + BIG + " %}{% endfor %}"),
    ("huge range", "{% for i in range(10**12) %}{% endfor %}"),
    (
        "exponential macro tree",
        "{% macro f(n) %}{% if n < 60 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}"
        "{{ f(0) }}",
    ),
    (
        "slow steps (the deadline)",
        "{% set xs = (range(10000)|list) * 9 %}{% for i in range(10000) %}{{ xs|max }}{% endfor %}",
    ),
    # memory: multiplication
    ("string multiplication", "{{ 'x' * 10**9 }}"),
    ("string multiplication in two steps", "{% set s = " + BIG + " %}{{ s * 99999 }}"),
    ("list multiplication", "{{ [0] * 10**9 }}"),
    ("integer power", "{{ 2 ** (10**10) }}"),
    ("integer power in steps", "{% set x = 10 ** 30000 %}{{ x * x * x * x }}"),
    # memory: widths
    ("center width", "{{ 'x'|center(10**9) }}"),
    ("str.center width", "{{ 'x'.center(10**9) }}"),
    ("ljust width", "{{ 'x'.ljust(10**9) }}"),
    ("rjust width", "{{ 'x'.rjust(10**9) }}"),
    ("zfill width", "{{ '1'.zfill(10**9) }}"),
    ("expandtabs width", "{{ ('\\t' * 99999).expandtabs(99999) }}"),
    ("indent width", "{{ ('x\\n' * 49999)|indent(99999) }}"),
    ("indent string", "{{ ('x\\n' * 49999)|indent('y' * 99999) }}"),
    ("format filter width", "{{ '%0999999999d'|format(1) }}"),
    ("% width", "{{ '%*d' % (999999999, 1) }}"),
    ("% mapping width", "{{ '%(a)999999999s' % {'a': 1} }}"),
    ("% precision", "{{ '%.999999999f' % 1.5 }}"),
    ("str.format width", "{{ '{:>999999999}'.format(1) }}"),
    ("str.format computed width", "{{ '{:{}}'.format(1, 10**9) }}"),
    ("wordwrap joiner", "{{ ('x ' * 49999)|wordwrap(1, wrapstring='y' * 99999) }}"),
    ("round digits", "{{ 1.5|round(10**9, 'ceil') }}"),
    ("batch padding", "{{ [1]|batch(10**9, 0)|list }}"),
    ("slice count", "{{ [1]|slice(10**9)|list }}"),
    # memory: growth
    ("replace growth", "{{ (" + BIG + ")|replace('x', 'y' * 99999) }}"),
    ("str.replace growth", "{{ (" + BIG + ").replace('x', 'y' * 99999) }}"),
    ("replace of the empty string", "{{ (" + BIG + ")|replace('', 'z' * 999) }}"),
    ("join growth", "{{ range(9999)|join('y' * 99999) }}"),
    ("str.join growth", "{{ ('y' * 99999).join(['a'] * 9999) }}"),
    (
        "doubling with ~",
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s|length }}",
    ),
    (
        "doubling with +",
        "{% set ns = namespace(s=[1]) %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
        "{% endfor %}{{ ns.s|length }}",
    ),
    ("format fields", "{{ ('{0}' * 20000).format(" + BIG + ") }}"),
    ("% conversions", "{{ ('%s' * 50000) % ((" + BIG + ",) * 50000) }}"),
    ("% widths", "{{ ('%99999s' * 500) % ((1,) * 500) }}"),
    ("format filter conversions", "{{ ('%s' * 500)|format(*((" + BIG + ",) * 500)) }}"),
    ("shared references", "{{ [[" + BIG + "]] * 9999 }}"),
    ("join of lists", "{{ ([range(9999)|list] * 9999)|join }}"),
    (
        "doubling literals",
        "{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = [ns.l, ns.l] %}"
        "{% endfor %}{{ ns.l }}",
    ),
    ("namespace of big values", "{% set s = " + BIG + " %}{{ namespace(a=s, b=s, c=s) }}"),
    ("sum of lists", "{{ ([[0] * 9999] * 9999)|sum(start=[]) }}"),
    (
        "captured loop output",
        "{% set s = "
        + BIG
        + " %}{% macro m() %}{% for i in range(9999) %}{{ s }}{% endfor %}{% endmacro %}"
        "{{ m()|length }}",
    ),
    (
        "captured loop text",
        "{% set c %}{% for i in range(9999) %}"
        + "lorem ipsum " * 100
        + "{% endfor %}{% endset %}{{ c|length }}",
    ),
    ("long output", "{% for i in range(9999) %}{{ 'x' * 999 }}{% endfor %}"),
    # recursion
    ("macro recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
    ("block recursion", "{% block a %}{{ self.a() }}{% endblock %}"),
    ("recursive loop", "{% for x in [[1]] recursive %}{{ loop(x) }}{% endfor %}"),
    # nesting
    ("nested parentheses", "{{ " + "(" * 500 + "1" + ")" * 500 + " }}"),
    ("nested lists", "{{ " + "[" * 500 + "]" * 500 + " }}"),
    ("nested dicts", "{{ " + "{'a': " * 300 + "1" + "}" * 300 + " }}"),
    ("nested blocks", "{% if true %}" * 300 + "x" + "{% endif %}" * 300),
    ("nested loops", "{% for i in [1] %}" * 100 + "x" + "{% endfor %}" * 100),
    ("unary chain", "{{ " + "- " * 5000 + "1 }}"),
    ("not chain", "{{ " + "not " * 5000 + "1 }}"),
    ("operator chain", "{{ 1" + " + 1" * 20000 + " }}"),
    ("filter chain", "{{ 'x'" + "|upper" * 5000 + " }}"),
    ("attribute chain", "{{ user" + ".id" * 5000 + " }}"),
    ("conditional chain", "{{ " + "1 if false else " * 3000 + "1 }}"),
    ("too long", "x" * 100_001),
    # refused by the sandbox only at render time
    ("computed private attribute", "{{ user|attr('__cl' ~ 'ass__') }}"),
    ("computed private item", "{{ user[('_' ~ '_class__')] }}"),
    ("unlisted method", "{{ (1).to_bytes(10**9, 'big') }}"),
    ("constructor method", "{{ now.fromtimestamp(0) }}"),
    ("translate", "{{ 'x'.translate({120: 'y' * 99999}) }}"),
    ("mutation", "{{ persona.style.traits.append('evil') }}"),
    ("unknown attribute", "{{ user.nickname }}"),
    ("type error", "{{ 'a' + 1 }}"),
    ("division by zero", "{{ 1 // 0 }}"),
]


def bomb_file(template: str, *, field: str = "system_prompt", persona_id: str = "bomb") -> str:
    text = f"id: {persona_id}\nname: Bomb\n{field}: |\n  {template}\n"
    return text if field == "system_prompt" else text + "system_prompt: You are Bomb.\n"


def test_bomb_files_put_the_template_on_line_4() -> None:
    assert bomb_file("X").splitlines()[3] == "  X"
    assert bomb_file("X", field="greeting").splitlines()[3] == "  X"


@pytest.mark.parametrize(("kind", "template"), BOMBS, ids=[kind for kind, _ in BOMBS])
def test_every_bomb_is_refused_by_check_quickly_at_its_line(
    kind: str, template: str, write: Write
) -> None:
    path = write("bomb.yaml", bomb_file(template), dedent=False)
    started = time.monotonic()
    problems = check_paths([path])
    elapsed = time.monotonic() - started
    assert problems, kind
    [problem] = problems
    assert (problem.path, problem.line, problem.field) == (path, 4, "system_prompt")
    assert problem.message and "Traceback" not in problem.message
    # A trial render stops at 0.5 s; two sample contexts and a loaded machine.
    assert elapsed < 5.0, (kind, elapsed)


@pytest.mark.parametrize(
    ("kind", "template"),
    [
        b
        for b in BOMBS
        if b[0] in {"nested range loops", "string multiplication", "macro recursion"}
    ],
)
def test_a_bomb_greeting_is_refused_too(kind: str, template: str, write: Write) -> None:
    path = write("bomb.yaml", bomb_file(template, field="greeting"), dedent=False)
    [problem] = check_paths([path])
    assert (problem.line, problem.field) == (4, "greeting")


def test_the_cli_refuses_bombs_without_a_traceback(tmp_path: Path) -> None:
    chosen = [
        "nested range loops",
        "string multiplication",
        "center width",
        "replace growth",
        "macro recursion",
        "nested parentheses",
        "slow steps (the deadline)",
        "computed private attribute",
    ]
    directory = tmp_path / "personas"
    directory.mkdir()
    for index, (_, template) in enumerate(b for b in BOMBS if b[0] in chosen):
        text = bomb_file(template, persona_id=f"bomb{index}")
        (directory / f"bomb{index}.yaml").write_text(text, encoding="utf-8")
    (directory / "good.yaml").write_text(
        "id: good\nname: Good\nsystem_prompt: Hi {{ user.display_name }}.\n", encoding="utf-8"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "personas", "check", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(chosen)
    for index in range(len(chosen)):
        [line] = [ln for ln in lines if ln.startswith(f"{directory / f'bomb{index}.yaml'}:4:3:")]
        assert ": system_prompt: " in line
    assert "good.yaml" not in result.stdout
    assert elapsed < 60, elapsed


CTX = PromptContext(
    "Ann", "u-1", "discord", datetime(2024, 5, 1, 7, 30, tzinfo=ZoneInfo("UTC")), "UTC", True
)


def unchecked(template: str) -> Persona:
    """A persona whose template skipped every load-time check: the render must hold."""
    base = Persona.model_validate({"id": "alice", "name": "Alice", "system_prompt": "x"})
    return base.model_copy(update={"system_prompt": template, "greeting": template})


#: Bombs that are plain mistakes, not refusals of the sandbox or its bounds.
MISTAKES = {"unknown attribute", "type error", "division by zero"}


@pytest.mark.parametrize(("kind", "template"), BOMBS, ids=[kind for kind, _ in BOMBS])
def test_an_unchecked_bomb_fails_its_render_as_a_persona_error(kind: str, template: str) -> None:
    started = time.monotonic()
    with pytest.raises(PersonaTemplateError) as info:
        render_system_prompt(unchecked(template), CTX)
    assert time.monotonic() - started < RENDER_LIMITS.max_wall_seconds + 1.5
    assert info.value.field == "system_prompt" and info.value.persona_id == "alice"
    # Refused by a bound or the sandbox, not failing by accident on the way there.
    assert isinstance(info.value, TemplateSecurityError) == (kind not in MISTAKES), info.value
    with pytest.raises(PersonaTemplateError):
        render_greeting(unchecked(template), CTX)


@pytest.mark.parametrize(
    ("template", "kind"),
    [
        (
            "{% for a in range(100) %}{% for b in range(200) %}{% endfor %}{% endfor %}",
            TemplateLimitError,
        ),
        ("{{ 'x' * 10**6 }}", TemplateLimitError),
        ("{{ user.__class__ }}", TemplateSecurityError),
        ("{{ (1).to_bytes(4, 'big') }}", TemplateSecurityError),
        ("{{ user.nickname }}", PersonaTemplateError),
    ],
)
def test_errors_say_which_kind_of_refusal(template: str, kind: type[Exception]) -> None:
    with pytest.raises(kind) as info:
        render_system_prompt(unchecked(template), CTX)
    if kind is PersonaTemplateError:
        assert not isinstance(info.value, TemplateSecurityError)
    if kind is TemplateSecurityError:
        assert not isinstance(info.value, TemplateLimitError)


def test_limits_are_arguments(ctx: PromptContext) -> None:
    loop = unchecked("{% for i in range(50) %}.{% endfor %}")
    assert render_system_prompt(loop, ctx) == "." * 50
    with pytest.raises(TemplateLimitError, match="loops run more than 10 times"):
        render_system_prompt(loop, ctx, limits=RenderLimits(max_loop_iterations=10))
    with pytest.raises(TemplateLimitError, match="longer than 20 characters"):
        render_system_prompt(loop, ctx, limits=RenderLimits(max_output_chars=20))


def test_the_line_of_a_render_failure_is_reported(write: Write) -> None:
    path = write(
        "late.yaml",
        "id: late\nname: Late\nsystem_prompt: |\n  Fine.\n  Still fine.\n  {{ 'x' * 10**9 }}\n",
        dedent=False,
    )
    [problem] = check_paths([path])
    assert (problem.line, problem.column, problem.field) == (6, 3, "system_prompt")
    assert "fails when rendered with sample values" in problem.message


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ 'a\nb'|indent(2) }}", "a\n  b"),
        ("{{ 'a\nb'|indent('> ', first=true) }}", "> a\n> b"),
        ("{{ 'a b c'|wordwrap(2, wrapstring='|') }}", "a|b|c"),
        ("{{ [1, 2, 3]|batch(2, 0)|list }}", "[[1, 2], [3, 0]]"),
        ("{{ [1, 2, 3]|slice(2)|list }}", "[[1, 2], [3]]"),
        ("{{ [1.5, 2]|sum }}", "3.5"),
        ("{{ 2.345|round(2) }}", "2.35"),
        ("{{ 'x'.ljust(3, '.') ~ 'y'.rjust(3) ~ '7'.zfill(3) }}", "x..  y007"),
        ("{{ 'a\tb'.expandtabs(4) }}", "a   b"),
        (
            "{{ '%-4s|%5.1f|%(a)s' % ('ab', 2.25, 1) if false else '%-4s|%5.1f' % ('ab', 2.25) }}",
            "ab  |  2.2",
        ),
        ("{{ '%(a)s-%(a)s' % {'a': 1} }}", "1-1"),
        ("{{ '{0}-{0}-{k}'.format(1, k=2) }}", "1-1-2"),
        ("{{ '{a}'.format_map({'a': 3}) }}", "3"),
        ("{{ ['a', 'b']|join('-') ~ '+'.join(['c', 'd']) }}", "a-bc+d"),
        ("{{ 'abc'|replace('b', 'BB') ~ 'abc'.replace('c', '') }}", "aBBcab"),
        ("{{ 'ab'|center(6) ~ '|' }}", "ab  |"),
        (
            "{% for k, v in {'a': 1}.items() %}{{ k }}{{ v }}{% endfor %}{{ (1, 2)|list }}",
            "a1[1, 2]",
        ),
        ("{{ range(3)|map('string')|join }}{{ [3, 1, 2]|sort|first }}", "0121"),
        ("{{ 2 ** 10 }} {{ 7 // 2 }} {{ 'ab' * 2 }} {{ [0] * 2 }}", "1024 3 abab [0, 0]"),
        ("{% set c = cycler('a', 'b') %}{{ c.next() }}{{ c.next() }}", "ab"),
        (
            "{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}"
            "{% endfor %}{{ ns.n }}",
            "3",
        ),
    ],
)
def test_bounded_filters_and_methods_work_as_usual(
    template: str, expected: str, ctx: PromptContext
) -> None:
    assert render_system_prompt(unchecked(template), ctx) == expected


def test_ordinary_templates_still_render(ctx: PromptContext) -> None:
    template = (
        "{% macro item(t) %}- {{ t|title }}{% endmacro %}"
        "{% for t in persona.style.traits %}{{ item(t) }}{{ loop.length }}{% endfor %}"
        "{{ 'x'|center(9) }}|{{ '%05d'|format(42) }}|{{ '{:>4}'.format(7) }}|"
        "{{ ['a', 'b']|join(', ') }}|{{ 'hi'|replace('i', 'o') }}|{{ now.strftime('%H:%M') }}|"
        "{{ user.display_name ~ '!' }}|{{ range(3)|sum }}|{{ 'a b'.split()|length }}"
    )
    persona = Persona.model_validate(
        {"id": "a", "name": "A", "system_prompt": template, "style": {"traits": ["kind"]}}
    )
    assert render_system_prompt(persona, ctx) == (
        "- Kind1    x    |00042|   7|a, b|ho|07:30|Ann!|3|2"
    )


# -- the property: hostile pieces in any combination -------------------------------------

_ATOMS = st.sampled_from(
    [
        "'x'",
        "1",
        "10**9",
        "99999",
        "range(9999)",
        "user.display_name",
        BIG,
        "[1, 2]",
        "now",
        "persona.style.traits",
        "'{:>99999999}'",
        "'%099999999d'",
        "ns.s",
        "'\\t\\n'",
        "user",
    ]
)


def _combine(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(inner, st.sampled_from(["*", "+", "~", "**", "%", "//"]), inner).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})"
    )
    filtered = st.tuples(
        inner,
        st.sampled_from(
            ["center", "indent", "replace('x', ", "join", "format", "wordwrap", "batch", "round"]
        ),
        inner,
    ).map(lambda t: f"({t[0]}|{t[1]}{'(' if not t[1].endswith(', ') else ''}{t[2]}))")
    methods = st.tuples(
        inner,
        st.sampled_from(["center", "ljust", "zfill", "replace('x', ", "join", "format"]),
        inner,
    ).map(lambda t: f"({t[0]}).{t[1]}{'(' if not t[1].endswith(', ') else ''}{t[2]})")
    attrs = st.tuples(
        inner, st.sampled_from(["__class__", "to_bytes", "id", "items", "upper"])
    ).map(lambda t: f"({t[0]}|attr('{t[1]}'))")
    return binary | filtered | methods | attrs


_EXPRESSIONS = st.recursive(_ATOMS, _combine, max_leaves=6)


def _statements(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    loop = st.tuples(_EXPRESSIONS, inner).map(
        lambda t: f"{{% for i in {t[0]} %}}{t[1]}{{% endfor %}}"
    )
    cond = st.tuples(_EXPRESSIONS, inner).map(lambda t: f"{{% if {t[0]} %}}{t[1]}{{% endif %}}")
    grow = _EXPRESSIONS.map(lambda e: f"{{% set ns.s = ns.s ~ {e} %}}")
    macro = inner.map(
        lambda body: f"{{% macro m(n) %}}{body}{{{{ m(n) }}}}{{% endmacro %}}{{{{ m(1) }}}}"
    )
    capture = inner.map(lambda body: f"{{% set c %}}{body}{body}{{% endset %}}{{{{ c }}}}")
    sequence = st.lists(inner, min_size=2, max_size=3).map("".join)
    return loop | cond | grow | macro | capture | sequence


_TEMPLATES = st.recursive(
    _EXPRESSIONS.map(lambda e: f"{{{{ {e} }}}}") | st.sampled_from(["text ", "(((", "{{", "}}"]),
    _statements,
    max_leaves=5,
).map(lambda body: "{% set ns = namespace(s='') %}" + body)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(_TEMPLATES)
def test_hostile_templates_render_within_bounds_or_are_refused(template: str) -> None:
    started = time.monotonic()
    issues = check_template(template)
    assert all(issue.line >= 1 and issue.message for issue in issues)
    try:
        text = render_system_prompt(unchecked(template), CTX)
    except PersonaTemplateError as exc:
        assert exc.field == "system_prompt" and str(exc)
    else:
        assert len(text) <= RENDER_LIMITS.max_output_chars
    assert time.monotonic() - started < RENDER_LIMITS.max_wall_seconds + 2.0
