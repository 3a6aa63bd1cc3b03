"""import → export ccv3 → import gives the same persona; the exported PNG is a PNG
that Pillow opens, with `ccv3` (V3) and `chara` (V2) base64 JSON chunks."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bot.personas import load_persona
from tests.personas.cards import _make as make
from tests.personas.cards.conftest import Bot
from tests.personas.conftest import SHIPPED_DIR


def _card_png(card: dict) -> bytes:  # type: ignore[type-arg]
    return make.png_card(card, "ccv3")


def _roundtrip(
    bot: Bot, tmp_path: Path, src_name: str, body: bytes, suffix: str
) -> tuple[Path, Path, Path]:
    src = tmp_path / src_name
    src.write_bytes(body)
    first, second = tmp_path / "first", tmp_path / "second"
    assert bot("personas", "import", src, "--out", first)[0] == 0
    (persona_file,) = first.glob("*.yaml")
    pid = load_persona(persona_file).persona.id
    card = tmp_path / f"card{suffix}"
    code, _out, err = bot(
        "personas", "export", pid, "--format", "ccv3", "--out", card, "--personas", first
    )
    assert (code, err) == (0, ""), err
    assert bot("personas", "import", card, "--out", second)[0] == 0
    return first / persona_file.name, second / persona_file.name, card


def test_png_roundtrip_same_persona(bot: Bot, tmp_path: Path) -> None:
    a, b, card = _roundtrip(bot, tmp_path, "in.png", _card_png(make.FULL_V3), ".png")
    assert load_persona(a).persona == load_persona(b).persona
    assert a.read_text() == b.read_text()
    with Image.open(card) as image:
        image.load()
        assert image.format == "PNG" and image.size == (8, 8)
        texts = dict(image.text)  # type: ignore[attr-defined]
    v3 = json.loads(base64.b64decode(texts["ccv3"]))
    v2 = json.loads(base64.b64decode(texts["chara"]))
    assert v3["spec"] == "chara_card_v3" and v3["spec_version"] == "3.0"
    assert v2["spec"] == "chara_card_v2" and v2["spec_version"] == "2.0"
    data = make.FULL_V3["data"]
    for key in (
        "name",
        "description",
        "personality",
        "scenario",
        "first_mes",
        "mes_example",
        "system_prompt",
        "post_history_instructions",
        "creator_notes",
        "tags",
        "alternate_greetings",
        "group_only_greetings",
        "nickname",
        "creator",
        "character_version",
    ):
        assert v3["data"][key] == data[key], key
    assert v2["name"] == v2["data"]["name"] == "Seraphina"  # V1 readers see the top level
    assert "nickname" not in v2["data"] and "group_only_greetings" not in v2["data"]
    assert v3["data"]["extensions"]["talkativeness"] == "0.5"
    assert v3["data"]["extensions"]["personabot"]["id"] == "seraphina"
    book = v3["data"]["character_book"]
    assert [e["content"] for e in book["entries"]] == [
        "The glade is Seraphina's home.",
        "Seraphina never lies.",
        "disabled",
    ]
    assert book["entries"][0]["secondary_keys"] == ["forest"]
    assert book["extensions"] == {"custom": 1} and book["scan_depth"] == 6
    # The avatar travels: the same image, new card text.
    assert (tmp_path / "first" / "seraphina.files" / "avatar.png").read_bytes() == (
        tmp_path / "second" / "seraphina.files" / "avatar.png"
    ).read_bytes()


def test_json_roundtrip_same_persona(bot: Bot, tmp_path: Path) -> None:
    a, b, card = _roundtrip(bot, tmp_path, "in.json", json.dumps(make.FULL_V3).encode(), ".json")
    assert load_persona(a).persona == load_persona(b).persona
    assert json.loads(card.read_text())["spec"] == "chara_card_v3"


def test_edits_travel(bot: Bot, tmp_path: Path) -> None:
    """What a moderator changes in the persona file is what the card says."""
    src = tmp_path / "in.png"
    src.write_bytes(_card_png(make.FULL_V3))
    code, _, err = bot("personas", "import", src, "--out", tmp_path / "p")
    assert code == 0, err
    path = tmp_path / "p" / "seraphina.yaml"
    text = path.read_text()
    text = text.replace(
        "greeting: '*{{ persona.name }} smiles", "greeting: '*{{ persona.name }} waves"
    )
    text = text.replace("Stay gentle.", "Stay very gentle.")
    text = text.replace("Keep Seraphina in character.", "Keep Seraphina kind.")
    path.write_text(text)
    edited = load_persona(path).persona
    card = tmp_path / "c.png"
    code, _, err = bot(
        "personas", "export", "seraphina", "--out", card, "--personas", tmp_path / "p"
    )
    assert code == 0, err
    code, _, err = bot("personas", "import", card, "--out", tmp_path / "q")
    assert code == 0, err
    again = load_persona(tmp_path / "q" / "seraphina.yaml").persona
    assert again.greeting == edited.greeting and "waves" in (again.greeting or "")
    assert again.system_prompt == edited.system_prompt
    assert again.lore == edited.lore
    assert "Keep Seraphina kind." in [e.text for e in again.lore.entries]


@pytest.mark.parametrize("pid", ["samantha", "biscuit", "xiaoyu"])
def test_shipped_personas_export_and_import(bot: Bot, tmp_path: Path, pid: str) -> None:
    """A persona written by hand exports; its Jinja logic travels as text (a card is
    data), and the card imports as a valid persona with the same name and lore."""
    card = tmp_path / "c.png"
    code, _, err = bot("personas", "export", pid, "--out", card, "--personas", SHIPPED_DIR)
    assert code == 0, err
    assert bot("personas", "import", card, "--out", tmp_path / "o")[0] == 0
    original = load_persona(SHIPPED_DIR / f"{pid}.yaml").persona
    again = load_persona(tmp_path / "o" / f"{pid}.yaml").persona
    assert (again.id, again.name, again.language) == (original.id, original.name, original.language)
    assert [e.text for e in again.lore.entries] == [e.text for e in original.lore.entries]
    assert again.examples == original.examples


def test_export_usage_errors(bot: Bot, tmp_path: Path) -> None:
    cases = [
        (["nobody", "--out", tmp_path / "c.png", "--personas", SHIPPED_DIR], "no persona 'nobody'"),
        (["samantha", "--format", "ccv2", "--out", tmp_path / "c.png"], "--format 'ccv2'"),
        (["samantha", "--out", tmp_path / "c.gif", "--personas", SHIPPED_DIR], "a .png or .json"),
    ]
    for args, expected in cases:
        code, _, err = bot("personas", "export", *args)
        assert code == 2 and expected in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())


def test_console_script(tmp_path: Path) -> None:
    """The installed `bot` command: ok is exit 0, a bad card exit 2 with one line."""
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(_card_png(make.FULL_V3))
    bad.write_bytes(_card_png(make.FULL_V3)[:-30])
    exe = Path(sys.executable).parent / "bot"
    ok = subprocess.run(
        [exe, "personas", "import", good, "--out", tmp_path / "o"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0 and "seraphina" in ok.stdout, ok.stderr
    no = subprocess.run(
        [exe, "personas", "import", bad, "--out", tmp_path / "p"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert no.returncode == 2 and no.stderr.startswith(f"card error: {bad}: png: "), no.stderr
    assert "Traceback" not in no.stderr and no.stderr.count("\n") == 1
    check = subprocess.run(
        [exe, "personas", "check", tmp_path / "o"], capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stdout
