"""`bot personas export ID --format charx`: a zip that zipfile and our importer open,
with card.json at the top, the avatar as the main icon and the asset files; the
same persona after import → export → import; files outside the persona's folder
never read."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import yaml

from bot.personas import load_persona
from tests.personas.cards import _make as make
from tests.personas.cards.conftest import Bot
from tests.personas.conftest import SHIPPED_DIR

ICON = make.png_with({})
ASSETS = [
    {"type": "icon", "uri": "embeded://assets/icon/images/main.png", "name": "main", "ext": "png"},
    {"type": "background", "uri": "embeded://assets/bg/x.webp", "name": "forest", "ext": "webp"},
    {"type": "emotion", "uri": "https://example.invalid/happy.png", "name": "happy", "ext": "png"},
]


def _charx_in(tmp_path: Path) -> Path:
    card = make.v3(name="Zip Zap", first_mes="Hi {{user}}", assets=ASSETS)
    body = make.charx(card, {"assets/icon/images/main.png": ICON, "assets/bg/x.webp": b"RIFFwebp"})
    src = tmp_path / "in.charx"
    src.write_bytes(body)
    return src


def _export(bot: Bot, folder: Path, out: Path, pid: str = "zip-zap") -> tuple[int, str]:
    code, _, err = bot(
        "personas", "export", pid, "--format", "charx", "--out", out, "--personas", folder
    )
    return code, err


def test_charx_roundtrip_keeps_the_persona_and_its_files(bot: Bot, tmp_path: Path) -> None:
    first, second, third = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert bot("personas", "import", _charx_in(tmp_path), "--out", first)[0] == 0
    card = tmp_path / "out.charx"
    assert _export(bot, first, card) == (0, "")
    with zipfile.ZipFile(card) as archive:
        names = archive.namelist()
        data = json.loads(archive.read("card.json"))
        assert archive.read("assets/icon/images/main.png") == ICON
        assert archive.testzip() is None
    assert names[0] == "card.json" and data["spec"] == "chara_card_v3"
    uris = [a["uri"] for a in data["data"]["assets"]]
    assert uris[0] == "embeded://assets/icon/images/main.png"
    assert "https://example.invalid/happy.png" in uris
    background = next(a for a in data["data"]["assets"] if a["type"] == "background")
    assert background["uri"].startswith("embeded://assets/background/images/")
    assert all(n == "card.json" or n.startswith("assets/") for n in names)

    assert bot("personas", "import", card, "--out", second)[0] == 0
    a = load_persona(first / "zip-zap.yaml").persona
    b = load_persona(second / "zip-zap.yaml").persona
    assert a.model_dump(exclude={"card"}) == b.model_dump(exclude={"card"})
    assert a.card is not None and b.card is not None
    assert [(x.type, x.name) for x in a.card.assets] == [(x.type, x.name) for x in b.card.assets]
    for x, y in zip(a.card.assets, b.card.assets, strict=True):
        if x.path is not None:
            assert (first / x.path).read_bytes() == (second / str(y.path)).read_bytes()
    # A second round is the same persona file, byte for byte, and the same archive.
    again = tmp_path / "again.charx"
    assert _export(bot, second, again) == (0, "")
    assert bot("personas", "import", again, "--out", third)[0] == 0
    assert (second / "zip-zap.yaml").read_text() == (third / "zip-zap.yaml").read_text()
    assert _export(bot, third, tmp_path / "third.charx") == (0, "")
    assert (tmp_path / "third.charx").read_bytes() == again.read_bytes()


def test_a_persona_without_assets_gets_a_plain_icon(bot: Bot, tmp_path: Path) -> None:
    out = tmp_path / "s.charx"
    assert _export(bot, SHIPPED_DIR, out, "samantha") == (0, "")
    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == ["assets/icon/images/main.png", "card.json"]
        icon = archive.read("assets/icon/images/main.png")
    assert icon.startswith(b"\x89PNG\r\n\x1a\n")
    assert bot("personas", "import", out, "--out", tmp_path / "o")[0] == 0


def test_asset_paths_outside_the_folder_are_never_read(bot: Bot, tmp_path: Path) -> None:
    folder = tmp_path / "p"
    assert bot("personas", "import", _charx_in(tmp_path), "--out", folder)[0] == 0
    secret = tmp_path / "secret.txt"
    secret.write_text("do not export me")
    persona = folder / "zip-zap.yaml"
    data = yaml.safe_load(persona.read_text())
    assert data["card"]["assets"][1]["type"] == "background"

    def point(path: str) -> None:
        data["card"]["assets"][1]["path"] = path
        persona.write_text(yaml.safe_dump(data, allow_unicode=True))

    point("../secret.txt")
    out = tmp_path / "x.charx"
    code, err = _export(bot, folder, out)
    assert code == 2 and "card.assets.1.path" in err and "outside" in err, err
    assert not out.exists() and "do not export me" not in err
    # A link inside the folder that points out of it is the same.
    (folder / "zip-zap.files" / "link.webp").symlink_to(secret)
    point("zip-zap.files/link.webp")
    code, err = _export(bot, folder, out)
    assert code == 2 and "outside" in err and not out.exists()
    # A missing file is named too.
    point("zip-zap.files/gone.webp")
    code, err = _export(bot, folder, out)
    assert code == 2 and "no such file" in err and not out.exists()


def test_charx_usage_errors(bot: Bot, tmp_path: Path) -> None:
    cases = [
        (["samantha", "--format", "charx", "--out", tmp_path / "c.png"], "a .charx file"),
        (["samantha", "--out", tmp_path / "c.charx", "--personas", SHIPPED_DIR], ".png or .json"),
        (["samantha", "--format", "zip", "--out", tmp_path / "c.charx"], "'ccv3' or 'charx'"),
    ]
    for args, expected in cases:
        code, _, err = bot("personas", "export", *args)
        assert code == 2 and expected in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())
