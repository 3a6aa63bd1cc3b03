"""A persona as a CHARX: a zip with `card.json` (the V3 card) at its top and the
avatar and assets under `assets/`, as the CHARX format lays them out:

    card.json
    assets/icon/images/main.png          the avatar (a plain square when none)
    assets/TYPE/CATEGORY/NNN-NAME.EXT    each asset file beside the persona

Assets the persona file only links to (`uri` http(s), data:) stay links. The
member names are made here, never taken from the persona file; asset files are
read only from inside the persona's folder (a path that leaves it, a link out of
it, a missing file or one over the reader's bounds is a `CardError` that names
the asset), so that export never reads a file it should not, and what it writes
is within the bounds `bot personas import` reads a CHARX under. The archive is
the same bytes for the same persona (fixed member times).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from typing import Any

from bot.personas.cards.charx import MAX_MEMBER_BYTES, MAX_MEMBERS, MAX_TOTAL_BYTES
from bot.personas.cards.errors import CardError
from bot.personas.loader import LoadedPersona

__all__ = ["charx_bytes"]

_SAFE = re.compile(r"[^a-z0-9_-]+")
_EXT = re.compile(r"^[a-z0-9]{1,10}$")
_LINKS = ("http://", "https://", "data:")
_CATEGORY = {
    **dict.fromkeys(("png", "jpg", "jpeg", "webp", "gif", "avif", "bmp"), "images"),
    **dict.fromkeys(("mp3", "wav", "ogg", "flac", "m4a"), "audio"),
    **dict.fromkeys(("mp4", "webm", "mkv", "mov"), "video"),
}
#: 1980-01-01, the first time a zip can say: the same persona gives the same bytes.
_TIME = (1980, 1, 1, 0, 0, 0)


def _safe(text: str, fallback: str) -> str:
    return _SAFE.sub("-", text.lower()).strip("-")[:40] or fallback


def _read_asset(loaded: LoadedPersona, rel: str, field: str, budget: int) -> bytes:
    base = loaded.path.parent.resolve()
    path = (base / rel).resolve()
    source = str(loaded.path)
    if not path.is_relative_to(base):
        raise CardError(source, field, f"{rel[:200]!r} is outside the persona's folder: not read")
    if not path.is_file():
        raise CardError(source, field, f"{rel[:200]!r}: no such file")
    limit = min(MAX_MEMBER_BYTES, budget)
    with path.open("rb") as fh:
        body = fh.read(limit + 1)
    if len(body) > limit:
        raise CardError(source, field, f"{rel[:200]!r} is over {limit} bytes (a CHARX bound)")
    return body


def charx_bytes(loaded: LoadedPersona, v3: dict[str, Any]) -> bytes:
    """The CHARX archive of `loaded`, whose V3 card (`card_v3`) is `v3`."""
    from bot.personas.cards.export import _avatar  # the PNG export's avatar rules

    info = loaded.persona.card
    icon = _avatar(loaded)
    members: dict[str, bytes] = {"assets/icon/images/main.png": icon}
    main = {"type": "icon", "uri": "embeded://assets/icon/images/main.png", "name": "main"}
    assets: list[dict[str, Any]] = [{**main, "ext": "png"}]
    budget = MAX_TOTAL_BYTES - len(icon)
    for i, asset in enumerate(info.assets if info is not None else ()):
        uri = asset.uri or ""
        if (asset.type, asset.name) == ("icon", "main") or (
            info is not None and asset.path and asset.path == info.avatar
        ):
            continue  # the avatar: main.png above (an import lists it as an asset too)
        if asset.path:
            field = f"card.assets.{i}.path"
            body = _read_asset(loaded, asset.path, field, budget)
            budget -= len(body)
            ext = asset.ext.lower() if _EXT.match(asset.ext.lower()) else "bin"
            kind = _safe(asset.type, "other")
            name = f"assets/{kind}/{_CATEGORY.get(ext, 'other')}/{i:03d}-"
            name += f"{_safe(asset.name, 'asset')}.{ext}"
            members[name] = body
            entry = {"type": asset.type, "uri": f"embeded://{name}", "name": asset.name}
            assets.append({**entry, "ext": ext})
        elif uri.startswith(_LINKS):
            assets.append({"type": asset.type, "uri": uri, "name": asset.name, "ext": asset.ext})
    if len(members) + 1 > MAX_MEMBERS:
        raise CardError(
            str(loaded.path), "card.assets", f"{len(members) + 1} members (at most {MAX_MEMBERS})"
        )
    card = {**v3, "data": {**v3["data"], "assets": assets}}
    card_json = (json.dumps(card, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    if len(card_json) > MAX_MEMBER_BYTES or len(card_json) > budget:
        raise CardError(str(loaded.path), "card", "card.json is over a CHARX bound")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, body in {"card.json": card_json, **members}.items():
            member = zipfile.ZipInfo(name, date_time=_TIME)
            member.external_attr = 0o100644 << 16  # a plain file, rw-r--r--
            # Images are compressed already: stored; the JSON is deflated.
            member.compress_type = (
                zipfile.ZIP_DEFLATED if name == "card.json" else zipfile.ZIP_STORED
            )
            archive.writestr(member, body)
    return out.getvalue()
