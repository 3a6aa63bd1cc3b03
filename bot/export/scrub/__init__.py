"""Scrubbing personal data out of text before it becomes training data.

`Scrubber.scrub(text)` replaces, in this order of precedence:

    URLs with secrets    userinfo and secret-named query values -> <SECRET> (the URL stays)
    API tokens           Telegram bot tokens, sk-/ghp_/xox… keys  -> <SECRET>
    e-mail addresses     any script in the local part and domain  -> <EMAIL>
    mentions, @handles   Discord <@123>, <#123>, @name            -> <HANDLE>
    IBANs                mod-97 checked (DE89 3704 0044 …)        -> <IBAN>
    national ids         Chinese resident id (18 digits)          -> <ID_NUMBER>
    card numbers         13-19 digits, Luhn checked               -> <CARD>
    phone numbers        +international, 0-prefixed local (German style),
                         North American, Chinese mobiles          -> <PHONE>
    deny-listed names    whole words; CJK names anywhere          -> <NAME>

Times, dates, prices, versions and ordinary counts are left alone: a number is
replaced only when its shape (and checksum, where one exists) says what it is.
Bump `SCRUBBER_VERSION` whenever the output for some input changes: manifests
record it, so a dataset can be re-scrubbed when the rules improve.

Speed matters (every message of every export goes through here): most chat lines
contain no digit, '@' or '://', and those skip the regular expressions entirely.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

__all__ = ["SCRUBBER_VERSION", "Scrubber", "luhn_ok"]

SCRUBBER_VERSION = "2026.11.1"

_SECRET_PARAM = re.compile(
    r"(?i)^(?:.*(?:token|secret|passw|pwd|api[_-]?key|apikey|auth|session|signature|sig|"
    r"credential|private)[\w-]*|key|code|pass|access_key|x-amz-[\w-]+)$"
)

# Split by the character that must be present, so each text runs only the patterns
# it can match (checked with cheap `in` tests first).
_URL = re.compile(r"""\b(?:https?|ftp|wss?)://[^\s<>"'\]\[)(]+""")
_AT = re.compile(
    r"""
    (?P<email>[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,})
  | (?P<mention><[@#][!&]?\d{5,}>)
  | (?P<handle>(?<![\w@/.>])@[A-Za-z0-9_](?:[A-Za-z0-9_.]{0,30}[A-Za-z0-9_])?)
    """,
    re.VERBOSE,
)
_KEY = re.compile(
    r"\b(?:(?:sk|pk|rk)-(?:live-|test-|proj-)?[A-Za-z0-9_-]{16,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}|xox[abprs]-[A-Za-z0-9-]{10,})"
)
_DIGIT_TEXT = re.compile(
    r"(?P<token>\b\d{8,10}:[A-Za-z0-9_-]{35}\b)"
    r"|(?P<iban>\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b)"
)

# A run of digits with the separators people put in phone and card numbers. Dots are
# left out on purpose: "01.05.2024" and "3.14" are dates and numbers, not phones.
# The look-arounds are ASCII on purpose: Chinese text runs digits into letters with no
# space ("手机号是13800138000，"), and those letters must not hide the number.
_NUMBER_CANDIDATE = re.compile(
    r"(?<![0-9A-Za-z_.,])(?:\+|\(0?)?\d[\d \-/()]{5,24}\d[Xx]?(?![0-9A-Za-z_]|[.,]\d)"
)
_CN_ID = re.compile(
    r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
)
_CARD_SHAPE = re.compile(r"\d{13,19}|\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,3})?")
_PHONES = (
    re.compile(r"\+\d{1,3}(?:[ \-]?\(0?\d{1,4}\))?(?:[ \-/]?\d{1,5}){1,6}"),  # +49 30 1234567
    re.compile(r"(?:\(0\d{1,5}\)|0\d{1,5})(?:[ \-/]?\d{2,8}){1,4}"),  # 0151 23456789, (030) 12…
    re.compile(r"(?:\([2-9]\d{2}\)|[2-9]\d{2})[ \-]\d{3}[ \-]\d{4}"),  # (555) 123-4567
    re.compile(r"1[3-9]\d(?:[ \-]?\d{4}){2}"),  # Chinese mobile: 138 0013 8000
)
_DIGIT = re.compile(r"\d")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


def luhn_ok(digits: str) -> bool:
    """True when `digits` passes the Luhn checksum of payment card numbers."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _iban_ok(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


def _scrub_url(url: str) -> str:
    trail = ""
    while url and url[-1] in ".,;:!?":  # sentence punctuation, not part of the URL
        trail = url[-1] + trail
        url = url[:-1]
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<URL>" + trail
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "<SECRET>@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(value and _SECRET_PARAM.match(name) for name, value in pairs):
            query = "&".join(
                f"{quote(name)}=<SECRET>"
                if value and _SECRET_PARAM.match(name)
                else f"{quote(name)}={value}"
                for name, value in pairs
            )
    if netloc == parts.netloc and query == parts.query:
        return url + trail
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)) + trail


def _replace_url(match: re.Match[str]) -> str:
    return _scrub_url(match.group())


def _replace_at(match: re.Match[str]) -> str:
    return "<EMAIL>" if match.lastgroup == "email" else "<HANDLE>"


def _replace_digit_text(match: re.Match[str]) -> str:
    if match.lastgroup == "token":
        return "<SECRET>"
    value = match.group()
    return "<IBAN>" if _iban_ok(value) else value


def _classify_number(candidate: str) -> str | None:
    stripped = candidate.strip("()")
    digits = "".join(c for c in candidate if c.isdigit())
    if _CN_ID.fullmatch(stripped):
        return "<ID_NUMBER>"
    if 13 <= len(digits) <= 19 and _CARD_SHAPE.fullmatch(candidate) and luhn_ok(digits):
        return "<CARD>"
    if 8 <= len(digits) <= 15:
        for pattern in _PHONES:
            if pattern.fullmatch(candidate):
                # Local numbers have at least 9 digits; shorter 0-prefixed runs are more
                # often order numbers or codes than phones.
                if candidate[0] in "0(" and len(digits) < 9:
                    return None
                return "<PHONE>"
    return None


class Scrubber:
    """Replaces personal data in text with typed placeholders (`<EMAIL>`, `<PHONE>`, ...).

    Immutable after construction; safe to share. `deny_names` are matched
    case-insensitively as whole words, or anywhere for names in CJK scripts (which
    are written without spaces).
    """

    version = SCRUBBER_VERSION

    def __init__(self, deny_names: Iterable[str] = ()) -> None:
        words: list[str] = []
        anywhere: list[str] = []
        for name in {unicodedata.normalize("NFC", n.strip()) for n in deny_names}:
            if not name:
                continue
            (anywhere if _CJK.search(name) else words).append(re.escape(name))
        # Longest first, so "Anna Maria" wins over "Anna".
        words.sort(key=len, reverse=True)
        anywhere.sort(key=len, reverse=True)
        alternatives = []
        if words:
            alternatives.append(r"(?<!\w)(?:" + "|".join(words) + r")(?!\w)")
        if anywhere:
            alternatives.append("(?:" + "|".join(anywhere) + ")")
        self._names = re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None

    def scrub(self, text: str) -> str:
        """`text` with every recognised piece of personal data replaced."""
        if "://" in text:
            text = _URL.sub(_replace_url, text)
        if "-" in text or "_" in text:
            text = _KEY.sub("<SECRET>", text)
        if "@" in text or "<#" in text:
            text = _AT.sub(_replace_at, text)
        if _DIGIT.search(text) is not None:
            text = _DIGIT_TEXT.sub(_replace_digit_text, text)
            text = _NUMBER_CANDIDATE.sub(self._replace_number, text)
        if self._names is not None:
            text = self._names.sub("<NAME>", text)
        return text

    @staticmethod
    def _replace_number(match: re.Match[str]) -> str:
        value = match.group()
        # The candidate may carry a trailing separator or bracket the shapes do not.
        core = value.rstrip(" -/(")
        placeholder = _classify_number(core)
        if placeholder is not None:
            return placeholder + value[len(core) :]
        return value
