"""Identifiers with letters in them, and numbers that a label says are identifiers.

IBANs (any case, checked by python-stdnum: the country's format and mod 97), UK
National Insurance numbers (the prefixes HMRC issues), Spanish DNI/NIE and Italian
codice fiscale (their check letters) are recognised by shape and checksum. Passport
numbers have no checksum anyone can verify and no common shape, so they, and any
number labelled as an id ("passport no. C01X00T47", "SSN 536221234", "护照号码
E12345678", "マイナンバー 1234 5678 9012"), are found by the label before them.
"""

from __future__ import annotations

import re

from stdnum import iban
from stdnum.es import dni, nie
from stdnum.it import codicefiscale

from bot.export.scrub._spans import Span, needles

__all__ = ["find_ids", "find_labelled_ids"]

ID = "<ID_NUMBER>"

_IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]{4}){2,7}(?:[ -]?[A-Za-z0-9]{1,3})?"
    r"(?![A-Za-z0-9])"
)
_NINO = re.compile(
    r"(?i)(?<![A-Za-z0-9])(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r"[ -]?\d{2}[ -]?\d{2}[ -]?\d{2}[ -]?[A-D](?![A-Za-z0-9])"
)
_DNI = re.compile(r"(?<![A-Za-z0-9])(?:[XYZxyz][ -]?)?\d{7,8}[ -]?[A-Za-z](?![A-Za-z0-9])")
_CODICE = re.compile(r"(?i)(?<![A-Za-z0-9])[A-Z]{6}\d{2}[A-Z]\d{2}[A-Z]\d{3}[A-Z](?![A-Za-z0-9])")

_LABEL = re.compile(
    r"(?i)(?:"
    r"\b(?:passports?|passport\s+(?:number|no|num|#)|reisepass(?:nummer)?|passnummer|"
    r"pass-?nr|personalausweis(?:nummer)?|ausweis(?:nummer|-?nr)?|pasaporte|passeport|"
    r"passaporto|pasaport|ssn|social\s+security(?:\s+number)?|national\s+insurance(?:\s+number)?|"
    r"ni\s+number|nino|tax\s+id|steuer-?id|steuernummer|dni|nif|id\s+(?:card\s+)?number|"
    r"driver'?s\s+licen[cs]e(?:\s+number)?|führerschein(?:nummer)?|licencia\s+de\s+conducir|"
    r"número\s+de\s+(?:pasaporte|identidad|documento)|documento\s+de\s+identidad)\b"
    r"|护照|護照|身份证|身份證|旅券|パスポート|マイナンバー|个人编号|住民票|여권|주민등록번호"
    r")"
    # What people write between the label and the number: "number is", "Nr.:", "号码是".
    r"(?:[\s-]{0,3}(?:number|no\.?|nr\.?|num\.?|nummer|número|numéro|n[°º]\.?|#"
    r"|号码|號碼|号|番号|번호))?"
    r"(?:\s{0,3}(?:is|was|ist|lautet|es|est|è|是|为|為|は|는|은|이))?"
    r"[\s:：#=\-]{0,4}"
    # One run, then groups that carry a digit ("1234 5678 9012"), so no word is taken.
    r"(?P<v>[A-Za-z]{0,3}\d[A-Za-z0-9]{2,14}(?:[ -](?=[A-Za-z]{0,5}\d)[A-Za-z0-9]{2,6}){0,3})"
    r"(?![A-Za-z0-9])"
)


_LABEL_WORDS = (
    "pass", "pasaport", "ausweis", "ssn", "social security", "insurance", "ni number", "nino",
    "tax id", "steuer", "dni", "nif", "id card", "id number", "licen", "führerschein", "número de",
    "documento", "护照", "護照", "身份证", "身份證", "旅券", "パスポート", "マイナンバー",
    "个人编号", "住民票", "여권", "주민등록번호",
)  # fmt: skip
_NEEDED = needles(*_LABEL_WORDS)
# Every shape above has two letters right before two digits (IBAN, codice fiscale),
# six digits in pairs (NINO) or seven in a row (DNI, NIE). Led by the digit, which
# the search skips to quickly: digits are rare in text, letters are not.
_SHAPES = re.compile(r"\d(?:(?<=[A-Za-z]{2}\d)\d|\d[ -]?\d\d[ -]?\d\d)")


def find_ids(probe: str, out: list[Span]) -> None:
    """Report IBANs, UK NINOs, Spanish and Italian ids (text with digits)."""
    if _SHAPES.search(probe) is None:
        return
    for match in _IBAN.finditer(probe):
        if iban.is_valid(match.group().replace("-", "").upper()):
            out.append((match.start(), match.end(), "<IBAN>"))
    out.extend((m.start(), m.end(), ID) for m in _NINO.finditer(probe))
    for match in _DNI.finditer(probe):
        value = match.group().replace(" ", "").replace("-", "").upper()
        if nie.is_valid(value) if value[0] in "XYZ" else dni.is_valid(value):
            out.append((match.start(), match.end(), ID))
    for match in _CODICE.finditer(probe):
        if codicefiscale.is_valid(match.group().upper()):
            out.append((match.start(), match.end(), ID))


def find_labelled_ids(probe: str, low: str, out: list[Span]) -> None:
    """Report numbers that a label says are ids ("passport no. …", "护照号码…")."""
    if _NEEDED.search(low) is None:
        return
    for match in _LABEL.finditer(probe):
        value = match.group("v")
        if sum(c.isdigit() for c in value) >= 3 and len(value) >= 6:
            out.append((match.start("v"), match.end("v"), ID))
