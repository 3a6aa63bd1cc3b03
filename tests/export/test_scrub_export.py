"""The scrubber's whole table through a real `bot export` (a subprocess, a migrated
SQLite ledger): no piece of personal data reaches any exported text, on either side
of the conversation or in the persona's rendered system prompt, and ordinary text
comes through exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from tests.export.conftest import KEY
from tests.export.helpers import chats, run_export
from tests.export.ledger import PERSONA_YAML, Ledger
from tests.export.pii_cases import DENY_NAMES, REPLACED, UNTOUCHED, removed

REPO = Path(__file__).resolve().parents[2]


def contents(out: Path) -> list[str]:
    """Every text of every record in every data file (not ids, not the manifest)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("content", "value"):
                    found.append(item)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for path in out.rglob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            walk(json.loads(line))
    return found


def _bot_export(url: str, out: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT_")}
    env["PYTHONPATH"] = str(REPO)
    env["BOT_EXPORT__HMAC_KEY"] = KEY
    env["BOT_EXPORT__DENY_NAMES"] = json.dumps(DENY_NAMES)
    env["BOT_EXPORT__VALIDATION_FRACTION"] = "0.0"
    where = ["--db", url.removeprefix("sqlite:///")] if url.startswith("sqlite:///") else []
    if not where:  # a server database: from the environment, as a deployment gives it
        env["BOT_DATABASE__URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "export", *where, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def test_bot_export_lets_no_personal_data_through(ledger: Ledger, tmp_path: Path) -> None:
    person = ledger.user("Zed")
    asks = ledger.conversation("dm-asks")
    tells = ledger.conversation("dm-tells")
    cases = [(text, expected) for _, text, expected in REPLACED]
    cases += [(text, text) for text in UNTOUCHED if text.strip()]
    for i, (text, _) in enumerate(cases):
        ledger.exchange(asks, person, text, f"noted {i}")  # people's side
        ledger.exchange(tells, person, f"tell me number {i}", text)  # the persona's side
    out = tmp_path / "dataset"

    done = _bot_export(ledger.url, out, tmp_path)

    assert done.returncode == 0, done.stderr
    exported = contents(out)
    said = {m["content"] for record in chats(out) for m in record if m["role"] != "system"}
    for text, expected in cases:
        assert expected.strip() in said, (text, expected)
    needles = [part for text, expected in cases for part in removed(text, expected)]
    assert len(needles) > 100
    leaks = [(n, c) for n in needles for c in exported if n in c]
    assert leaks == []


PII_PERSONA = PERSONA_YAML.replace(
    "  You are {{ persona.name }}, a friendly companion.\n",
    "  You are {{ persona.name }}, a friendly companion.\n"
    "  Made by Gretchen Müller (gretchen.mueller@example.de, +49 30 1234567).\n"
    "  Donations: IBAN DE89 3704 0044 0532 0130 00, or at 742 Evergreen Terrace.\n"
    "  Admin login for the wiki: password is Hunter2Hunter2.\n",
)


def test_the_rendered_system_prompt_is_scrubbed_too(
    ledger: Ledger, settings: Settings, tmp_path: Path
) -> None:
    version = ledger.persona_version(PII_PERSONA)
    person = ledger.user("Zed")
    conv = ledger.conversation("dm-persona")
    asked = ledger.said(conv, person, "who made you?")
    ledger.replied(conv, person, asked, "Someone nice.", persona_hash=version)

    run_export(settings, tmp_path / "out")

    [[system, _, _]] = chats(tmp_path / "out")
    prompt = system["content"]
    assert "Made by <NAME> Müller (<EMAIL>, <PHONE>)." in prompt  # deny list: "Gretchen"
    assert "Donations: IBAN <IBAN>, or at <ADDRESS>." in prompt
    assert "password is <SECRET>." in prompt
    for secret in ("example.de", "1234567", "DE89", "Evergreen", "Hunter2"):
        assert secret not in prompt
    # The rest of the prompt is the engine's, untouched: the time, the pseudonym.
    assert "It is 09:01 on Monday, 2026-11-02 (UTC)." in prompt
    assert "You are talking to User-" in prompt


@pytest.mark.parametrize("name", ["gretchen", "GRETCHEN", "Gretchen"])
def test_the_deny_list_still_applies_in_exports(
    ledger: Ledger, settings: Settings, tmp_path: Path, name: str
) -> None:
    person = ledger.user("Zed")
    conv = ledger.conversation("dm-deny")
    ledger.exchange(conv, person, f"say hi to {name}, and to Gretchenfrage", "Hi!")
    run_export(settings, tmp_path / "out")
    [[_, user, _]] = chats(tmp_path / "out")
    assert user["content"] == "say hi to <NAME>, and to Gretchenfrage"
