"""The persona pages in a real browser: Chromium driven by Playwright against the
running dashboard over a real app (SQLite), the scripted backend voicing the persona.

Edit a persona with a mistake and see the problem on its line, fix it, preview the
prompt, save, and see the bot use it; field hints; rollback; a viewer's read-only
editor; screenshots of the pages in docs/dashboard/.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.llm.base import ChatRequest
from bot.llm.mock import MockBackend
from bot.messages import Actor, Incoming, Scope
from tests.dashboard.conftest import SCREENSHOTS, DashUnderTest, PageAs, open_dash
from tests.test_engine import PERSONA

BAD = PERSONA.replace("temperature: 0.5", "temperature: hot")
GOOD = PERSONA.replace("You are Tess", "You are Tess the Brave")
LORE = (
    "lore:\n  entries:\n    - name: the lighthouse\n      keys: [lighthouse]\n"
    "      text: Tess grew up in a lighthouse on a windy cape.\n"
)


def _speaks_its_prompt(request: ChatRequest) -> str:
    lines = request.messages[0].content.splitlines()
    return next((line for line in lines if line.startswith("You are")), "?")


def _turn(text: str) -> Incoming:
    scope = Scope(platform="test", channel="dm-u1", user="u1", persona="tester")
    return Incoming(
        scope=scope, actor=Actor(platform="test", id="u1", display_name="Ann"), text=text
    )


@pytest.fixture
async def dash(tmp_path: Path) -> AsyncIterator[DashUnderTest]:
    url = f"sqlite:///{tmp_path}/dash.db"
    async with open_dash(tmp_path, url, backend=MockBackend(_speaks_its_prompt)) as running:
        yield running


async def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


async def _type_into_editor(page: Any, text: str) -> None:
    await page.fill("#yaml", text)  # fires `input`: the page checks, debounced


async def test_edit_with_a_mistake_fix_preview_save_and_the_bot_uses_it(
    dash: DashUnderTest, page_as: PageAs
) -> None:
    before = await dash.bot.engine.handle(_turn("hello"))
    assert [o.text for o in before] == ["You are Tess, talking with Ann on test."]
    page = await page_as(dash, "moderator", personas=["tester"])
    await page.click("nav >> text=Personas")
    await page.wait_for_selector('tr[data-persona="tester"]')
    await _shot(page, "personas.png")
    await page.click('tr[data-persona="tester"] >> text=tester')
    await page.wait_for_selector("#yaml")

    # A mistake: the problem appears while typing, at its line, in check's own words.
    await _type_into_editor(page, BAD)
    problem = page.locator("#problems button.problem")
    await problem.first.wait_for()
    text = await problem.first.text_content()
    assert text == (
        "personas/tester.yaml:10:16: sampling.temperature: Input should be a valid number, "
        "unable to parse string as a number (got 'hot')"
    )
    assert await page.get_attribute("#status", "class") == "error"
    marked = page.locator("#gutter span.bad")
    assert await marked.count() == 1 and await marked.first.get_attribute("data-line") == "10"
    await _shot(page, "persona-editor-problem.png")
    await problem.first.click()  # jumps to the line and column
    where = await page.evaluate(
        "() => { const t = document.getElementById('yaml');"
        " const b = t.value.slice(0, t.selectionStart).split('\\n');"
        " return [b.length, b[b.length - 1].length + 1]; }"
    )
    assert where == [10, 16]

    # Fixed (and a new line): no problems, and the diff against what is serving.
    await _type_into_editor(page, GOOD + LORE)
    await page.wait_for_selector("#status.ok")
    assert await page.locator("#problems li").count() == 0
    await page.wait_for_selector("#diff tr.added")
    added = await page.locator("#diff tr.added td.text").all_text_contents()
    assert (
        "  You are Tess the Brave, talking with {{ user.display_name }} on {{ platform }}." in added
    )

    # The prompt preview of the unsaved text: messages, lore fired and why, tokens.
    await page.fill("#preview-message", "tell me about the lighthouse")
    await page.click("#preview-button")
    system = page.locator('#preview .msg[data-role="system"] pre')
    await system.wait_for()
    assert "You are Tess the Brave" in (await system.text_content() or "")
    fired = page.locator('#preview li.fired[data-entry="the lighthouse"]')
    await fired.wait_for()
    assert "key 'lighthouse' in the new message" in (await fired.text_content() or "")
    assert "prompt tokens" in (await page.locator("#preview p.tokens").text_content() or "")
    await _shot(page, "persona-editor-preview.png")

    # Save: served at once, and the bot speaks from it.
    await page.click("#save")
    await page.wait_for_selector("#outcome.ok")
    assert "?saved=" in page.url
    served = dash.bot.personas.get("tester")
    assert "Tess the Brave" in served.source and "lighthouse" in served.source
    after = await dash.bot.engine.handle(_turn("hello again"))
    assert [o.text for o in after] == ["You are Tess the Brave, talking with Ann on test."]
    saves = await dash.audit(target="persona:tester")
    assert [(e.action, e.actor) for e in saves] == [("persona.save", saves[0].actor)]


async def test_field_hints_from_the_schema(dash: DashUnderTest, page_as: PageAs) -> None:
    page = await page_as(dash, "admin")
    await page.goto(dash.url + "/personas/tester")
    await page.wait_for_selector("#yaml")
    # The cursor at the start of `  max_tokens: 64`, inside `sampling:`.
    await page.evaluate(
        "() => { const t = document.getElementById('yaml');"
        " const at = t.value.indexOf('  max_tokens'); t.focus(); t.setSelectionRange(at, at); }"
    )
    await page.wait_for_function("() => document.querySelector('#yaml') !== null")
    await page.keyboard.press("Control+Space")
    await page.wait_for_selector('#hints button[data-field="temperature"]')
    fields = await page.locator("#hints button").all_text_contents()
    assert {"temperature", "top_p", "max_tokens", "extra"} <= set(fields)
    assert "system_prompt" not in fields
    # Tab indents; Escape, then Tab, leaves the editor.
    await page.evaluate(
        "() => { const t = document.getElementById('yaml'); t.focus(); t.setSelectionRange(0, 0); }"
    )
    await page.keyboard.press("Tab")
    assert (await page.input_value("#yaml")).startswith("  version: 1")
    await page.keyboard.press("Escape")
    await page.keyboard.press("Tab")
    assert await page.evaluate("() => document.activeElement.id") != "yaml"


async def test_rollback_from_the_versions_page(dash: DashUnderTest, page_as: PageAs) -> None:
    original = dash.bot.personas.get("tester").content_hash
    page = await page_as(dash, "admin")
    await page.goto(dash.url + "/personas/tester")
    await _type_into_editor(page, GOOD)
    await page.wait_for_selector("#status.ok")
    await page.click("#save")
    await page.wait_for_selector("#outcome.ok")
    assert dash.bot.personas.get("tester").content_hash == hashlib.sha256(GOOD.encode()).hexdigest()
    await page.goto(dash.url + "/personas/tester/versions")
    await page.wait_for_selector(f'tr[data-hash="{original}"]')
    await _shot(page, "persona-versions.png")
    page.on("dialog", lambda dialog: dialog.accept())  # "Serve this version again?"
    await page.click(f'tr[data-hash="{original}"] button[type="submit"]')
    await page.wait_for_selector("#outcome.ok")
    assert dash.bot.personas.get("tester").content_hash == original
    actions = [e.action for e in await dash.audit(target="persona:tester")]
    assert actions == ["persona.rollback", "persona.save"]


async def test_viewer_reads_but_cannot_save_and_chinese_on_a_phone(
    dash: DashUnderTest, page_as: PageAs
) -> None:
    page = await page_as(dash, "viewer", locale="zh-CN", viewport={"width": 390, "height": 844})
    await page.goto(dash.url + "/personas/tester")
    await page.wait_for_selector("#read-only")
    assert await page.locator("#save").count() == 0
    assert await page.locator("#yaml").get_attribute("readonly") is not None
    assert "人设" in (await page.locator("nav.menu").text_content() or "")
    # A viewer may still check and preview (nothing changes).
    await page.fill("#preview-message", "你好")
    await page.click("#preview-button")
    await page.locator('#preview .msg[data-role="user"]').wait_for()
    await _shot(page, "persona-editor-zh-phone.png")


async def test_import_a_card_by_upload(
    dash: DashUnderTest, page_as: PageAs, tmp_path: Path
) -> None:
    card = {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {
            "name": "Marina",
            "description": "{{char}} keeps the harbour's lighthouse.",
            "personality": "calm",
            "scenario": "",
            "first_mes": "Ahoy, {{user}}!",
            "mes_example": "",
            "creator_notes": "A keeper of lights.",
            "system_prompt": "",
            "post_history_instructions": "",
            "alternate_greetings": [],
            "tags": [],
            "creator": "",
            "character_version": "1",
            "extensions": {},
            "group_only_greetings": [],
        },
    }
    path = tmp_path / "Marina card.json"
    path.write_text(json.dumps(card), encoding="utf-8")
    page = await page_as(dash, "admin")
    await page.goto(dash.url + "/personas")
    await page.set_input_files('#import-form input[name="card"]', str(path))
    await page.click('#import-form button[type="submit"]')
    await page.wait_for_selector("#import-result h2.ok")
    await page.wait_for_selector('tr[data-persona="marina"]')
    assert dash.bot.personas.get("marina").persona.name == "Marina"
    await page.click("#import-result >> text=Open the editor")
    await page.wait_for_selector("#status.ok")
    assert "keeps the harbour's lighthouse" in await page.input_value("#yaml")
    entries = await dash.audit(target="persona:marina")
    assert [e.action for e in entries] == ["persona.import"]
