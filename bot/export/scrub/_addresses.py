"""Street addresses: a house number next to a street word, the way each country writes it.

    US, UK   1600 Pennsylvania Avenue NW, Washington, DC 20500 · 221B Baker Street
    DE, AT, CH   Hauptstraße 5, 10115 Berlin · Lange Str. 12a · Bahnhofstrasse 3, 8001 Zürich
    ES       Calle Mayor 5, 28013 Madrid · C/ Alcalá 23 · Avenida de la Paz nº 7
    FR       12 rue de la Paix, 75002 Paris · 5 bis avenue Victor Hugo
    CN, TW   北京市朝阳区建国路88号 · 上海市浦东新区世纪大道100号3号楼
    JP       東京都千代田区千代田1-1 · 大阪市北区梅田3丁目1番1号 · 〒100-0001

No library finds addresses in free text offline (libpostal parses an address it is
given, and needs a 2 GB model), so these are patterns; each needs the street word
*and* the number, so "I live on Main Street" and "Straße" alone stay. CJK addresses
are found from their end (road + number + 号, or 丁目/番地 numbers) and grown back
over the place names before them, which keeps the search linear.
"""

from __future__ import annotations

import re

from bot.export.scrub._spans import Span, needles

__all__ = ["find_addresses"]

ADDRESS = "<ADDRESS>"

_US_STREET = (
    r"(?:Street|Avenue|Road|Boulevard|Lane|Drive|Court|Way|Place|Terrace|Parkway|Highway|"
    r"Circle|Square|Trail|Crescent|Close|Gardens|Row|Mews)\b"
    r"|(?:St|Ave|Rd|Blvd|Ln|Dr|Ct|Pl|Pkwy|Hwy|Sq)\b\.?"  # the dot of an abbreviation only
)
_US = re.compile(
    rf"(?<![\w,.-])\d{{1,6}}[A-Za-z]?(?:-\d{{1,4}})?\s+(?:[NSEW]\.?\s+)?"
    rf"(?:[A-Z0-9][A-Za-z0-9'.-]*\s+){{1,4}}(?:{_US_STREET})"
    r"(?:\s+(?:NW|NE|SW|SE|N|S|E|W)\b)?"
    r"(?:,?\s{1,2}(?:Apt|Apartment|Suite|Ste|Unit|Flat|#)\.?\s{0,2}[A-Za-z0-9-]{1,6})?"
    # ", Springfield, IL 62704" / ", London NW1 6XE"
    r"(?:,\s{1,2}[A-Z][A-Za-z.]{1,20}(?:\s[A-Z][A-Za-z.]{1,20}){0,2}"
    r"(?:,?\s{1,2}[A-Z]{2}\s{1,2}\d{5}(?:-\d{4})?|\s{1,2}[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}))?"
)
# Not "ring", "berg", "hof", "wall": "Spring 2024", "Firewall 2" are not streets.
_DE_SUFFIX = (
    r"[Ss]tra(?:ß|ss)e|[Ss]tr\.|[Ww]eg|[Pp]latz|[Aa]llee|[Gg]asse|[Dd]amm|[Uu]fer|"
    r"[Cc]haussee|[Ss]teig|[Pp]fad"
)
_DE = re.compile(
    rf"(?<![\w-])(?:[A-ZÄÖÜ][a-zäöüß]*(?:[- ](?:[A-ZÄÖÜ][a-zäöüß]*|der|die|am|im|an|auf)){{0,3}}"
    rf"[- ]?(?:{_DE_SUFFIX})|(?:Straße|Strasse|Str\.|Weg|Platz|Allee|Gasse|Ring|Damm)\s+"
    rf"(?:der|des|am|im|zum|zur)?\s?[A-ZÄÖÜ][a-zäöüß-]+)"
    r"\s{1,2}\d{1,4}\s?[a-zA-Z]?(?:\s?[-/]\s?\d{1,4}[a-z]?)?(?![\w-])"
    r"(?:,?\s{1,2}(?:D-|A-|CH-)?\d{4,5}\s{1,2}[A-ZÄÖÜ][\wäöüß-]+"
    r"(?:\s(?:am|an der|im)\s[A-ZÄÖÜ]\w+)?)?"
)
_ES = re.compile(
    r"(?<![\w])(?i:calle|c/|avenida|avda\.?|av\.|plaza|pza\.?|paseo|camino|carretera|"
    r"ronda|travesía|pasaje|carrer|rúa)\s{0,2}(?:(?:de|del|la|las|los|el)\s+){0,2}"
    r"[A-ZÁÉÍÓÚÑ][\wáéíóúñü.'-]*(?:\s+(?:de|del|la|las|los|y)?\s?[A-ZÁÉÍÓÚÑ][\wáéíóúñü.'-]*){0,3}"
    r",?\s{0,2}(?:n[º°o]\.?\s{0,2}|número\s+)?\d{1,4}(?![\w])(?:\s?[A-Za-z])?(?:,?\s+\d{1,2}[º°ª]\s?[A-Za-z]?)?"
    r"(?:,?\s{1,2}\d{5}\s{1,2}[A-ZÁÉÍÓÚÑ][\wáéíóúñ-]+)?"
)
_FR = re.compile(
    r"(?<![\w])\d{1,4}(?:\s?(?:bis|ter))?,?\s{1,2}(?i:rue|avenue|av\.|boulevard|bd|place|"
    r"allée|impasse|chemin|quai|cours|route)\s{1,2}(?:(?:de|du|des|la|le|l'|d')\s?){0,2}"
    r"[A-ZÀ-Ý][\w'’-]*(?:\s+(?:de|du|des|la|le)?\s?[A-ZÀ-Ý][\w'’-]*){0,3}"
    r"(?:,?\s{1,2}\d{5}\s{1,2}[A-ZÀ-Ý][\w-]+)?"
)

# CJK: the end of an address, found first.
_CN_END = re.compile(
    # Not 道 or 里 alone: "我知道5号" is "I know, on the 5th".
    r"(?:路|街|大道|巷|弄|胡同)[0-9〇一二三四五六七八九十百]{1,6}[号號]"
    r"(?:[0-9一二三四五六七八九十]{1,4}(?:号楼|號樓|楼|樓|栋|棟|幢|单元|單元|室|层|層|号|號)){0,4}"
)
_JP_END = re.compile(
    r"\d{1,4}丁目(?:\d{1,4}(?:番地?|[-−ー])?(?:\d{1,4}号?)?)?|\d{1,4}番地?(?:\d{1,4}号)?"
    r"|(?<=[\u3400-\u9fff\u30a0-\u30ff])\d{1,4}[-−ー]\d{1,4}(?:[-−ー]\d{1,4})?"
)
_JP_POSTAL = re.compile(r"〒\s?\d{3}[-−ー]?\d{4}")
_CJK_PLACE = re.compile(r"[\u3400-\u9fff\u30a0-\u30ff]")  # kanji and katakana
_PLACE_WORDS = frozenset("省市区區县縣镇鎮乡鄉村都道府県郡町")
# Where a place name cannot go on backwards: particles and verbs around an address.
_STOP = frozenset("在住是到于於从從为為のはにでをがへと")
_BACK = 20


def _grow_back(probe: str, start: int) -> int:
    """The start of the place names that run into position `start`."""
    limit = max(0, start - _BACK)
    pos = start
    while pos > limit:
        char = probe[pos - 1]
        if char in _STOP or not _CJK_PLACE.match(char):
            break
        pos -= 1
    return pos


# The street words each pattern needs (lower-cased), tested before it runs.
_STREET_WORDS = (
    (_US, (" st", "street", "ave", " rd", "road", "blvd", "boulevard", "lane", " ln", " dr",
           "drive", " ct", "court", " way", " pl", "place", "terrace", "pkwy", "parkway",
           "hwy", "highway", "circle", "square", " sq", "trail", "crescent", "close",
           "gardens", " row", "mews")),
    (_DE, ("stra", "str.", "weg", "platz", "allee", "gasse", "damm", "ufer", "chaussee",
           "steig", "pfad")),
    (_ES, ("calle", "c/", "avenida", "avda", "av.", "plaza", "pza", "paseo", "camino",
           "carretera", "ronda", "travesía", "pasaje", "carrer", "rúa")),
    (_FR, ("rue", "avenue", "av.", "boulevard", "bd", "place", "allée", "impasse", "chemin",
           "quai", "cours", "route")),
)  # fmt: skip
_NEEDS = tuple((pattern, needles(*found)) for pattern, found in _STREET_WORDS)
_ANY_STREET = needles(*(word for _, found in _STREET_WORDS for word in found))


# The number next to a word that every Latin address has: "5 Main", "12 rue",
# "Hauptstraße 5", "Mayor 5,". Not a time or a decimal: "at 12:30." has none.
_NUMBER_WORD = re.compile(  # led by the digit, which the search skips to quickly
    r"\d(?:(?<![\d:.,]\d)\d{0,5}[A-Za-z]?\s{1,2}[^\W\d]"
    r"|(?:(?<=[^\W\d]\s\d)|(?<=[^\W\d.]\s\s\d)|(?<=[./]\s\d))\d{0,3}[a-zA-Z]?(?![\d:]|[.,]\d))"
)


def find_addresses(probe: str, low: str, out: list[Span]) -> None:
    """Report street addresses (see the module docstring; text with digits)."""
    latin = _NUMBER_WORD.search(probe) is not None and _ANY_STREET.search(low) is not None
    for pattern, needed in _NEEDS if latin else ():
        if needed.search(low) is not None:
            out.extend((m.start(), m.end(), ADDRESS) for m in pattern.finditer(probe))
    if "号" in probe or "號" in probe:
        for match in _CN_END.finditer(probe):
            start = _grow_back(probe, match.start())
            if match.start() - start >= 2:
                out.append((start, match.end(), ADDRESS))
    if "〒" in probe:
        out.extend((m.start(), m.end(), ADDRESS) for m in _JP_POSTAL.finditer(probe))
    if probe.isascii():
        return
    for match in _JP_END.finditer(probe):
        start = _grow_back(probe, match.start())
        if any(c in _PLACE_WORDS for c in probe[start : match.start()]):
            out.append((start, match.end(), ADDRESS))
