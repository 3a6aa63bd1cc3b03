"""Importing cards in every format: every field lands where the persona uses it or in
the `card` section, the files load like any persona file, and the templates render."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from bot.personas import (
    PromptContext,
    check_paths,
    load_persona,
    render_greeting,
    render_system_prompt,
)
from bot.personas.cards.png import read_text_chunks
from bot.personas.cards.read import parse_card_bytes
from bot.personas.lorebook.schema import World
from tests.personas.cards import _make as make
from tests.personas.cards.conftest import Bot

CTX = PromptContext(
    user_display_name="Robin",
    user_id="u1",
    platform="console",
    now=datetime(2024, 5, 1, 7, 30, tzinfo=ZoneInfo("Europe/Berlin")),
    timezone="Europe/Berlin",
    is_direct=True,
)


def _import(bot: Bot, tmp_path: Path, name: str, body: bytes) -> Path:
    src = tmp_path / name
    src.write_bytes(body)
    out = tmp_path / "out"
    code, stdout, err = bot("personas", "import", src, "--out", out)
    assert (code, err) == (0, ""), err
    assert "persona" in stdout or "world" in stdout
    return out


def test_v3_json_maps_every_field(bot: Bot, tmp_path: Path) -> None:
    out = _import(bot, tmp_path, "sera.json", json.dumps(make.FULL_V3).encode())
    path = out / "seraphina.yaml"
    loaded = load_persona(path)
    assert check_paths([path]) == []
    p = loaded.persona
    data = make.FULL_V3["data"]
    assert (p.id, p.name) == ("seraphina", "Seraphina")
    assert p.groups.nicknames == ("Sera",)
    assert p.description == "A gentle guardian for calm chats."
    prompt = render_system_prompt(p, CTX)
    assert prompt.startswith(
        "Write Seraphina's next reply in a fictional chat between Seraphina and Robin. Stay gentle."
    )
    assert "Seraphina is a guardian of the forest who protects Robin." in prompt
    assert "Seraphina's personality: kind, protective, " in prompt
    assert prompt.split("protective, ")[1].split("\n")[0] in ("calm", "serene")
    assert "Scenario: Robin wakes up in Seraphina's glade on a Wednesday." in prompt
    assert render_greeting(p, CTX) == "*Seraphina smiles at Robin* It is 07:30 already."
    assert [[(t.role, t.content) for t in d] for d in p.examples] == [
        [("user", "Who are you?"), ("assistant", "I am Seraphina.")],
        [("user", "Hi"), ("assistant", "Hello, User!")],
    ]
    card = p.card
    assert card is not None
    for field in (
        "description",
        "personality",
        "scenario",
        "first_mes",
        "mes_example",
        "system_prompt",
        "post_history_instructions",
        "creator_notes",
        "creator",
        "character_version",
        "nickname",
    ):
        assert getattr(card, field) == data[field], field
    for field in ("alternate_greetings", "group_only_greetings", "tags"):
        assert list(getattr(card, field)) == data[field], field
    assert card.spec == "chara_card_v3"
    assert card.extensions == data["extensions"]
    # The lorebook: every entry becomes lore in the lorebook schema's terms; what it
    # says beyond them is kept in card.book.
    assert p.lore.scan_depth == 6 and p.lore.budget_tokens == 300
    glade, always, off, instructions = p.lore.entries
    assert (instructions.name, instructions.text, instructions.position, instructions.depth) == (
        "post-history instructions",
        "Keep Seraphina in character.",
        "at_depth",
        0,
    )
    assert instructions.constant and instructions.priority == 1000
    assert (glade.name, glade.keys, glade.text, glade.order) == (
        "glade",
        ("glade", "clearing"),
        "The glade is Seraphina's home.",
        10,
    )
    assert glade.secondary_keys == ("forest",) and glade.selective_logic == "and_all"
    assert glade.position == "after_char" and glade.sticky == 2
    assert always.constant and always.case_sensitive and always.text == "Seraphina never lies."
    assert always.order == 5 and always.position == "before_char"
    assert (off.enabled, off.keys, off.text) == (False, ("off",), "disabled")
    assert card.book["name"] == "The glade"
    assert card.book["other"] == {"extensions": {"custom": 1}}
    assert card.book["entries"]["glade"] == {"extensions": {"role": 1}}


def test_v2_json_and_png(bot: Bot, tmp_path: Path) -> None:
    v2 = copy.deepcopy(make.FULL_V3)
    v2["spec"], v2["spec_version"] = "chara_card_v2", "2.0"
    for key in ("nickname", "group_only_greetings"):
        del v2["data"][key]
    from_json = load_persona(
        _import(bot, tmp_path, "a.json", json.dumps(v2).encode()) / "seraphina.yaml"
    )
    (tmp_path / "out" / "seraphina.yaml").unlink()
    out = _import(bot, tmp_path, "a.png", make.png_card(v2, "chara"))
    from_png = load_persona(out / "seraphina.yaml")
    assert from_png.persona.system_prompt == from_json.persona.system_prompt
    assert from_png.persona.card is not None
    assert from_png.persona.card.spec == "chara_card_v2"
    # The avatar is the card's image without the card's text.
    avatar = out / "seraphina.files" / "avatar.png"
    assert from_png.persona.card.avatar == "seraphina.files/avatar.png"
    assert read_text_chunks(avatar.read_bytes()) == {}


def test_v1_json_top_level_fields(bot: Bot, tmp_path: Path) -> None:
    v1 = {
        "name": "Old One",
        "description": "<BOT> talks to <USER>.",
        "personality": "grumpy",
        "scenario": "",
        "first_mes": "Hello <USER>.",
        "mes_example": "",
    }
    out = _import(bot, tmp_path, "v1.json", json.dumps(v1).encode())
    p = load_persona(out / "old-one.yaml").persona
    assert "Old One talks to Robin." in render_system_prompt(p, CTX)
    assert render_greeting(p, CTX) == "Hello Robin."
    assert p.card is not None and p.card.spec == "chara_card_v1"


def test_png_prefers_ccv3_and_reads_compressed_chunks() -> None:
    both = make.png_with(
        {"chara": make.b64(make.v2(name="Two")), "ccv3": make.b64(make.v3(name="Three"))}
    )
    card = parse_card_bytes(both, "x.png")
    assert card.name == "Three"
    ztxt = make.png_chunks(
        make.chunk(
            b"zTXt",
            b"chara\x00\x00" + __import__("zlib").compress(make.b64(make.v2(name="Zed")).encode()),
        )
    )
    assert parse_card_bytes(ztxt, "z.png").name == "Zed"
    itxt = make.png_chunks(
        make.chunk(b"iTXt", b"ccv3\x00\x00\x00\x00\x00" + make.b64(make.v3(name="Eye")).encode())
    )
    assert parse_card_bytes(itxt, "i.png").name == "Eye"


def test_charx_with_assets(bot: Bot, tmp_path: Path) -> None:
    icon = make.png_with({})
    card = make.v3(
        name="Zip Zap",
        assets=[
            {
                "type": "icon",
                "uri": "embeded://assets/icon/images/main.png",
                "name": "main",
                "ext": "png",
            },
            {
                "type": "background",
                "uri": "embeded://assets/bg/x.webp",
                "name": "forest",
                "ext": "webp",
            },
            {
                "type": "emotion",
                "uri": "https://example.invalid/happy.png",
                "name": "happy",
                "ext": "png",
            },
        ],
    )
    body = make.charx(card, {"assets/icon/images/main.png": icon, "assets/bg/x.webp": b"RIFFwebp"})
    out = _import(bot, tmp_path, "zip.charx", body)
    p = load_persona(out / "zip-zap.yaml").persona
    assert p.card is not None
    assert (out / p.card.avatar).read_bytes() == icon  # type: ignore[operator]
    icon_asset, background, linked = p.card.assets
    assert (out / str(icon_asset.path)).read_bytes() == icon
    assert (out / str(background.path)).read_bytes() == b"RIFFwebp"
    assert background.path is not None and background.path.startswith("zip-zap.files/")
    assert linked.path is None and linked.uri == "https://example.invalid/happy.png"


def test_assets_are_never_persona_files(bot: Bot, tmp_path: Path) -> None:
    card = make.v3(
        name="Sly",
        assets=[{"type": "x", "uri": "embeded://a.yaml", "name": "../../p", "ext": "YAML"}],
    )
    out = _import(bot, tmp_path, "sly.charx", make.charx(card, {"a.yaml": b"id: evil"}))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "sly.files/000-x-p.bin",
        "sly.yaml",
    ]
    assert check_paths([out]) == []


def test_world_info_and_lorebook_v3_become_worlds(bot: Bot, tmp_path: Path) -> None:
    src_wi, src_lb = tmp_path / "town.json", tmp_path / "stars.json"
    src_wi.write_text(json.dumps(make.world_info()))
    src_lb.write_text(json.dumps(make.lorebook_v3()))
    code, _, err = bot("personas", "import", src_wi, src_lb, "--out", tmp_path / "o")
    assert (code, err) == (0, ""), err
    town = yaml.safe_load((tmp_path / "o" / "worlds" / "old-town.yaml").read_text())
    assert town["name"] == "Old Town"
    tavern, world = town["entries"]
    assert tavern == {
        "name": "The tavern",
        "keys": ["tavern", "inn"],
        "secondary_keys": ["ale"],
        "selective_logic": "not_any",
        "text": "The Prancing Pony is the town's tavern.",
        "position": "at_depth",
        "depth": 2,
        "sticky": 2,
        "cooldown": 1,
    }
    assert world == {
        "name": "World",
        "constant": True,
        "text": "Magic is rare.",
        "order": 50,
        "position": "before_char",
    }
    source = json.loads((tmp_path / "o" / "worlds" / "old-town.source.json").read_text())
    assert source == make.world_info()  # the book as written: nothing is lost
    stars = yaml.safe_load((tmp_path / "o" / "worlds" / "stars.yaml").read_text())
    assert stars["entries"] == [
        {"name": "/orion/i", "keys": ["/orion/"], "text": "Orion is a hunter.", "order": 1}
    ]
    World.model_validate(town)
    World.model_validate(stars)
    # The world directory is not read as persona files.
    assert check_paths([tmp_path / "o"]) == []


def test_several_files_same_name_get_distinct_ids(bot: Bot, tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(make.v2(name="Twin")))
    b.write_text(json.dumps(make.v3(name="Twin")))
    code, _, err = bot("personas", "import", a, b, "--out", tmp_path / "o")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "o").glob("*.yaml")) == ["twin-2.yaml", "twin.yaml"]
    assert check_paths([tmp_path / "o"]) == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "etc-passwd"),
        ("CON", "con"),
        (".hidden", "hidden"),
        ("汉字", None),
        ("Zoë the 🐱", "zoe-the"),
        ("a" * 100, "a" * 64),
    ],
)
def test_persona_id_is_safe(bot: Bot, tmp_path: Path, name: str, expected: str | None) -> None:
    out = _import(bot, tmp_path, "n.json", json.dumps(make.v2(name=name)).encode())
    (file,) = out.glob("*.yaml")
    assert file.parent == out
    persona = load_persona(file).persona
    assert persona.name == name
    assert persona.id == expected if expected else persona.id.startswith("card-")
