"""Numbers that identify someone: phones, payment cards, national ids, IP addresses.

A run of digits and the separators people write in numbers is a *candidate*; it is
replaced only when a validator says what it is: Luhn for cards, python-stdnum's
checksums and date checks for national ids, Google's libphonenumber metadata (the
`phonenumbers` package) for phones, `ipaddress` for IP addresses. So times, dates,
prices, versions, scores and order numbers come through: their shapes are
recognised and skipped, and what remains must pass a check it would fail.

Phones: any number written with a country code (`+49 …`, `0049 …`) is checked
against the metadata of its country, every region libphonenumber knows. A number
without one is tried against `NATIONAL_REGIONS` in order, with extra care for bare
digit runs (ten digits or more, or a leading trunk `0`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

import phonenumbers
from stdnum import isbn
from stdnum.br import cpf
from stdnum.cn import ric
from stdnum.in_ import aadhaar
from stdnum.kr import rrn
from stdnum.us import ssn

from bot.export.scrub._spans import Span

__all__ = ["NATIONAL_REGIONS", "PhoneRules", "find_ips", "luhn_ok"]

NATIONAL_REGIONS: tuple[str, ...] = (
    "US", "DE", "GB", "CN", "JP", "ES", "FR", "IT", "AT", "CH", "NL", "BE", "PL", "PT",
    "SE", "RU", "UA", "TR", "KR", "TW", "HK", "SG", "IN", "AU", "CA", "MX", "BR", "AR",
)  # fmt: skip

# Separators inside a number: space, dash, slash, dot, brackets. The look-arounds are
# ASCII: Chinese runs digits into letters ("手机号是13800138000，"). Not after "x-":
# the tail of a UUID or a product code is not a number of its own.
_CANDIDATE = re.compile(
    r"(?<![0-9A-Za-z_.,+])(?<![0-9A-Za-z]-)(?:\+|\(0?)?\d[\d \-/().]{5,46}\d[Xx]?"
    r"(?![0-9A-Za-z_]|[.,]\d)"
)
_GROUP = re.compile(r"[^ ]+")
_MAX_GROUPS = 5  # "+49 (0)30 123 456 78"
_RUN = re.compile(r"\d[\d \-/().]{5}")  # what a candidate needs, led by a digit: fast
_IPV4 = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}")
_DATE = re.compile(  # not "01.23.45.67.89": a date has three parts
    r"\d{1,2}([./-])\d{1,2}\1\d{2,4}(?!\1\d)|\d{4}([./-])\d{1,2}\2\d{1,2}(?!\2\d)"
    r"|\d{4}-\d{2}-\d{2}[ T]\d{2}|\d{1,2}\.\d{1,2}\.\d{4} \d{1,2}"
)
_YEARS = re.compile(r"(?:19|20)\d\d\s?[-/]\s?(?:19|20)\d\d")
_YEAR_FIRST = re.compile(r"(?:19|20)\d\d[-/]")
_DOTTED = re.compile(r"\d{2,4}(?:\.\d{2,4}){2,5}")
_NANP = re.compile(r"(?:\+?1[ .-]?)?(?:\(\d{3}\)\s?|\d{3}[ .-])\d{3}[ .-]\d{4}")
_CARD_SHAPE = re.compile(
    r"\d{13,19}|\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,3})?|\d{4}[ -]\d{6}[ -]\d{5}"
)
_SSN_SHAPE = re.compile(r"\d{3}([ -])\d{2}\1\d{4}")
_RRN_SHAPE = re.compile(r"\d{6}-\d{7}")
_AADHAAR_SHAPE = re.compile(r"\d{4} \d{4} \d{4}")
_CPF_SHAPE = re.compile(r"\d{3}\.\d{3}\.\d{3}-\d{2}")
_SEPARATOR = re.compile(r"[ \-/().]+")
_VERSION = re.compile(r"(?i)(?:\b(?:version|ver|v|release|build)\.?|版本|バージョン)\s?$")


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


def _ip_ok(text: str) -> bool:
    """A valid address that could point at someone (not 127.0.0.1, ::1, 0.0.0.0)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return not (address.is_loopback or address.is_unspecified)


def _after_version_word(probe: str, start: int) -> bool:
    return _VERSION.search(probe, max(0, start - 12), start) is not None


def _national_id(candidate: str, digits: str) -> str | None:
    if len(digits) == 18 or (len(digits) == 17 and candidate[-1] in "Xx"):
        return "<ID_NUMBER>" if ric.is_valid(candidate) else None
    if _SSN_SHAPE.fullmatch(candidate) and ssn.is_valid(digits):
        return "<ID_NUMBER>"
    if _RRN_SHAPE.fullmatch(candidate) and rrn.is_valid(candidate):
        return "<ID_NUMBER>"
    if _AADHAAR_SHAPE.fullmatch(candidate) and aadhaar.is_valid(candidate):
        return "<ID_NUMBER>"
    if _CPF_SHAPE.fullmatch(candidate) and cpf.is_valid(candidate):
        return "<ID_NUMBER>"
    return None


def _trunk_prefix(region: str) -> str | None:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    return None if metadata is None else metadata.national_prefix


# A phone costs libphonenumber parses, one per region tried. A text gets a budget of
# them that grows with its length; a text that spends it (a megabyte of "4111 4111 …")
# has the rest of its phone-shaped numbers replaced unchecked: bounded time, and
# nothing let through for want of it.
_PARSES_FREE = 200
_CHARS_PER_PARSE = 100


class _Budget:
    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left

    def spend(self, cost: int) -> bool:
        self.left -= cost
        return self.left >= 0


class PhoneRules:
    """Classifies number candidates; `regions` are tried for numbers without a country code.

    What it finds never changes. The order it tries regions in does: the region that
    last recognised a number goes first (an export's chats come from few countries,
    and each try costs a libphonenumber parse). Reordering is one attribute
    assignment, so sharing an instance between threads is safe.
    """

    def __init__(self, regions: Sequence[str] = NATIONAL_REGIONS) -> None:
        self._regions = tuple(regions)
        # A number written with a leading 0 is national only where 0 is the trunk
        # prefix or part of the number (not in the US, where it is 1, or Russia, 8).
        self._zero_regions = tuple(r for r in self._regions if _trunk_prefix(r) in (None, "0"))

    def find(self, probe: str, out: list[Span]) -> None:
        """Report phones, cards, national ids and IPv4 addresses among the digit runs."""
        if _RUN.search(probe) is None:
            return
        budget = _Budget(_PARSES_FREE + len(probe) // _CHARS_PER_PARSE)
        for match in _CANDIDATE.finditer(probe):
            value = match.group()
            core = value.rstrip(" -/(.")  # a trailing separator is not part of it
            if core.startswith("(") and ")" not in core:
                core = core[1:]
            start = match.start() + (len(value.rstrip(" -/(.")) - len(core))
            date = _DATE.match(core)
            if date is not None:
                # "am 12.05.2024 0151 2345678": a date, then maybe a number after it.
                rest = core[date.end() :].lstrip(" -/")
                if len(rest) < 7:
                    continue
                start, core = start + len(core) - len(rest), rest
            label = self._classify(core, probe, start, budget)
            if label is not None:
                out.append((start, start + len(core), label))
            elif " " in core:
                self._trimmed(core, probe, start, budget, out)

    def _trimmed(self, core: str, probe: str, start: int, budget: _Budget, out: list[Span]) -> None:
        # "030 1234567 0151 23456789", "room 12 0151 23456789": phones inside a run of
        # groups. The run is cut before each group that starts the way a phone does
        # (+, a trunk 0; not right after a country code), and each piece is tried
        # whole, then without groups at its end. Only pieces that start that way are
        # tried: any 8 digits are a phone somewhere ("4111 1111 1111 1112" is not).
        groups = [m.span() for m in _GROUP.finditer(core)]
        starts = [
            k
            for k, (b, _) in enumerate(groups)
            if core[b] in "+0(" and not (k and core[groups[k - 1][0]] == "+")
        ]
        for n, k in enumerate(starts):
            stop = starts[n + 1] if n + 1 < len(starts) else len(groups)
            begin = groups[k][0]
            for j in range(min(stop, k + _MAX_GROUPS), k, -1):
                end = groups[j - 1][1]
                part = core[begin:end]
                if sum(c.isdigit() for c in part) < 7:
                    break
                label = self._classify(part, probe, start + begin, budget)
                if label is not None:
                    out.append((start + begin, start + end, label))
                    break

    def _classify(self, candidate: str, probe: str, start: int, budget: _Budget) -> str | None:
        if _IPV4.fullmatch(candidate):
            if _ip_ok(candidate) and not _after_version_word(probe, start):
                return "<IP>"
            return None
        if _DATE.match(candidate) or _YEARS.fullmatch(candidate):
            return None
        digits = "".join(c for c in candidate if c.isdigit())
        label = _national_id(candidate, digits)
        if label is not None:
            return label
        if 13 <= len(digits) <= 19 and _CARD_SHAPE.fullmatch(candidate) and luhn_ok(digits):
            return "<CARD>"
        if len(digits) in (10, 13) and isbn.is_valid(candidate):
            return None  # a book
        if self._phone(candidate, digits, budget):
            return "<PHONE>"
        return None

    def _phone(self, candidate: str, digits: str, budget: _Budget) -> bool:
        if not 7 <= len(digits) <= 15:
            return False
        if "." in candidate and not (_DOTTED.fullmatch(candidate) or _NANP.fullmatch(candidate)):
            return False  # 3.14159, 1.299.000: numbers, not phones
        if candidate.startswith("+") or candidate.startswith("00"):
            text = "+" + candidate[2:] if candidate.startswith("00") else candidate
            if not budget.spend(1):
                return True  # out of parses: see _PARSES_FREE
            try:
                number = phonenumbers.parse(text, None)
            except phonenumbers.NumberParseException:
                return False
            return phonenumbers.is_valid_number(number) or (
                len(digits) >= 8 and phonenumbers.is_possible_number(number)
            )
        if _NANP.fullmatch(candidate):
            return True  # (555) 123-4567: the shape says it, even for fictional numbers
        separated = _SEPARATOR.search(candidate) is not None
        groups = [g for g in _SEPARATOR.split(candidate) if g]
        if candidate[0] in "0(":
            if len(digits) < 9:
                return False  # short 0-prefixed runs are more often codes than phones
        elif not separated and len(digits) < 10:
            return False  # "order 12345678"
        elif separated and (len(digits) < 8 or max(len(g) for g in groups) <= 2):
            return False  # "10-12 14-16", "1 2 3 4 5 6 7 8"
        elif separated and len(digits) < 10 and len(groups[0]) < 3:
            return False  # "SKU 12-3456-78": short numbers start with an area code
        elif len(digits) < 10 and _YEAR_FIRST.match(candidate):
            return False  # "Rechnung Nr. 2024-0815": a year, then a serial
        return self._valid_somewhere(candidate, budget)

    def _valid_somewhere(self, candidate: str, budget: _Budget) -> bool:
        zero = candidate.lstrip("(")[:1] == "0"
        regions = self._zero_regions if zero else self._regions
        for index, region in enumerate(regions):
            if not budget.spend(1):
                return True  # out of parses: a number shaped like a phone goes
            try:
                number = phonenumbers.parse(candidate, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                if index:
                    moved = (region, *regions[:index], *regions[index + 1 :])
                    if zero:
                        self._zero_regions = moved
                    else:
                        self._regions = moved
                return True
        return False


# IPv6 has its own shape (hex groups and colons); IPv4 is a number candidate above.
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:.])(?:[0-9A-Fa-f]{1,4}|:)?(?::[0-9A-Fa-f]{0,4}){2,7}"
                   r"(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?![0-9A-Fa-f:]|\.\d)")  # fmt: skip


def find_ips(probe: str, out: list[Span]) -> None:
    """Report IPv6 addresses (IPv4 ones come with the numbers)."""
    if probe.count(":") < 2:
        return
    for match in _IPV6.finditer(probe):
        text = match.group()
        hexdigits = sum(c in "0123456789abcdefABCDEF" for c in text)
        if hexdigits >= 5 and any(c.isdigit() for c in text) and _ip_ok(text):
            out.append((match.start(), match.end(), "<IP>"))
