"""Lore notes at a depth in the prompt: placed, clamped, never dropped, within budget."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.llm import ApproxTokenCounter
from bot.personas.lorebook import DepthNote
from bot.prompt import PromptBuilder, PromptTurn

TOKENS = ApproxTokenCounter()


def history(n: int) -> list[PromptTurn]:
    return [PromptTurn("user" if i % 2 == 0 else "assistant", f"m{i}", key=i) for i in range(n)]


def test_notes_go_their_depth_from_the_end_and_clamp_at_the_start() -> None:
    prompt = PromptBuilder(TOKENS).build(
        system="S",
        history=history(4),
        new_message=PromptTurn("user", "new"),
        budget_tokens=4000,
        notes=[DepthNote(0, "zero"), DepthNote(2, "two"), DepthNote(99, "deep")],
    )
    assert [m.content for m in prompt.messages] == [
        "S", "deep", "m0", "m1", "m2", "two", "m3", "new", "zero",
    ]  # fmt: skip
    assert [m.role for m in prompt.messages if m.content in ("deep", "two", "zero")] == [
        "system"
    ] * 3


@settings(max_examples=80, deadline=None)
@given(
    turns=st.integers(0, 30),
    depths=st.lists(st.integers(0, 40), max_size=4, unique=True),
    budget=st.integers(64, 600),
    new_len=st.integers(0, 3000),
)
def test_notes_are_never_dropped_and_the_prompt_stays_in_budget(
    turns: int, depths: list[int], budget: int, new_len: int
) -> None:
    notes = [DepthNote(d, f"note {d}") for d in depths]
    prompt = PromptBuilder(TOKENS).build(
        system="System text.",
        history=history(turns),
        new_message=PromptTurn("user", "x " * new_len),
        budget_tokens=budget,
        notes=notes,
    )
    contents = [m.content for m in prompt.messages]
    assert all(f"note {d}" in contents for d in depths)
    assert prompt.prompt_tokens <= budget
    assert prompt.prompt_tokens == TOKENS.count_messages(prompt.messages)
