"""E-mail addresses (written plainly or spelled out to dodge spam bots) and @handles."""

from __future__ import annotations

import re

from bot.export.scrub._spans import Span, needles, words

__all__ = ["TRIGGERS", "find_at_signs", "find_spelled_emails", "plain_at"]

# Every pattern starts only where its first part starts (a look-behind for the
# character class it repeats), so a long run of word characters is read once, not
# once per position: matching stays linear in the text.
_EMAIL = re.compile(
    r"(?<![\w.+-])(?P<local>[\w.+-]+)@(?P<domain>[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,})(?![\w-])"
)
# Chinese and Japanese run addresses into the sentence: "邮箱是wang@qq.com谢谢".
_ASCII_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,63}")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]")

_MENTION = re.compile(r"<[@#][!&]?\d{5,}>")
# ASCII look-behind: "联系我@xiaoming" is a handle even though 我 is a word character.
_HANDLE = re.compile(r"(?<![A-Za-z0-9_@/.>])@[A-Za-z0-9_](?:[A-Za-z0-9_.]{0,30}[A-Za-z0-9_])?")

# "john at gmail dot com", "john[at]gmail[dot]com", "juan arroba gmail punto com",
# "hans(ät)web.de", "taro★example.co.jp", "wang#163.com". The top-level domain
# must be a known one, so "look at this.then" is left alone.
_TLDS = (
    "com|net|org|edu|gov|info|biz|io|co|me|app|dev|mail|email|online|xyz|site|"
    "de|at|ch|li|uk|fr|es|it|nl|be|lu|pl|cz|sk|hu|ro|bg|gr|pt|se|no|dk|fi|is|ie|ee|lv|lt|"
    "ru|ua|by|kz|tr|il|ir|ae|sa|eg|za|ng|ke|cn|hk|tw|mo|jp|kr|in|pk|bd|sg|my|th|vn|id|ph|"
    "au|nz|ca|us|mx|br|ar|cl|co|pe|ve|uy|eu"
)
_AT_STRONG = (
    r"\s{0,3}[\[({<]\s{0,2}(?:at|@|ät|arroba|arobase)\s{0,2}[\])}>]\s{0,3}"
    r"|\s{1,3}@\s{0,3}|@\s{1,3}"  # "john @ gmail . com"; a plain @ is _EMAIL's
)
_AT_WEAK = r"\s{1,3}(?:at|ät|arroba|arobase)\s{1,3}|\s{0,3}(?:アットマーク|艾特)\s{0,3}"
_AT_SIGNLIKE = r"[#★☆]"
_DOT_SPELLED = (
    r"\s{0,3}[\[({<]\s{0,2}(?:dot|punkt|punto|point|\.|点|點|ドット)\s{0,2}[\])}>]\s{0,3}"
    r"|\s{1,3}(?:dot|punkt|punto|point)\s{1,3}|\s{0,3}(?:点|點|ドット)\s{0,3}"
)
_DOT = rf"(?:{_DOT_SPELLED}|\s{{0,2}}\.\s{{0,2}})"
_SPELLED = re.compile(
    rf"(?<![A-Za-z0-9._+-])(?P<local>[A-Za-z0-9][A-Za-z0-9._+-]{{0,63}}"
    # "sarah dot jones at gmail dot com": the local part spelled out too
    r"(?:\s{1,3}(?:dot|punkt|punto|point)\s{1,3}[A-Za-z0-9][A-Za-z0-9._+-]{0,63}){0,3})"
    rf"(?:(?P<strong>{_AT_STRONG})|(?P<weak>{_AT_WEAK})|(?P<sign>{_AT_SIGNLIKE}))"
    rf"(?P<domain>[A-Za-z0-9-]{{1,63}}(?:{_DOT}[A-Za-z0-9-]{{1,63}}){{0,3}})"
    rf"(?P<dot>{_DOT})(?:{_TLDS})(?![A-Za-z0-9-])",
    re.IGNORECASE,
)
_SPELLED_DOT = re.compile(_DOT_SPELLED, re.IGNORECASE)
# With a plain " at ", only a mail provider's domain or a spelled-out dot says that
# it is an address: "look at example.com" is a sentence, "anna at gmail.com" is not.
_PROVIDERS = words(
    "gmail googlemail yahoo hotmail outlook live msn icloud me mac aol gmx web t-online "
    "freenet posteo mailbox proton protonmail tutanota yandex mail qq 163 126 sina sohu "
    "foxmail aliyun naver daum hanmail docomo ezweb softbank libero orange free laposte "
    "wanadoo telefonica movistar terra uol bol zoho fastmail hey"
)
_NOT_LOCAL = words(
    "i me you we us they them he him she her it one look looking looked arrive arrived "
    "stay be been am is are was were meet met see saw work works live lives "
    "shop buy bought sell order ordered"
)
_SIGN_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


# What a spelled-out address needs somewhere in the text (lower-cased): a written-out
# or bracketed '@', or a spelled-out dot; or a plain " at " and a mail provider.
_SPELLED_AT = ("@", "(at", "[at", "{at", "<at", "(ät", "[ät", "#", "★", "☆", "アットマーク", "艾特")
_DOT_WORDS = ("dot", "punkt", "punto", "point", "点", "點", "ドット", "arroba", "arobase")
TRIGGERS = (*_SPELLED_AT, *_DOT_WORDS)
_NEEDED = needles(*_SPELLED_AT, *_DOT_WORDS)


def _email_span(probe: str, match: re.Match[str]) -> Span | None:
    start, end = match.span()
    if start and probe[start - 1] == ":" and "://" in probe[max(0, start - 80) : start]:
        return None  # "https://user:pw@host": the URL's userinfo, a <SECRET>
    local = match.group("local")
    if _CJK.search(local):
        # Keep what follows the last CJK character: the address is the ASCII tail.
        last = max(m.end() for m in _CJK.finditer(local))
        if last == len(local):
            return None
        start += last
    domain = match.group("domain")
    if _CJK.search(domain):
        head = _ASCII_DOMAIN.match(domain)
        if head is None:
            return None if _CJK.match(domain) else (start, end, "<EMAIL>")
        end = match.start("domain") + head.end()
    return (start, end, "<EMAIL>")


def _spelled_ok(match: re.Match[str]) -> bool:
    if match.group("strong") is not None:
        return True
    domain = match.group("domain")
    if match.group("sign") is not None:
        # '#' and '★' stand for '@' only before a plainly written domain.
        return (
            match.group("dot").strip() == "." and _SIGN_DOMAIN.fullmatch(domain + ".x") is not None
        )
    if match.group("local").lower() in _NOT_LOCAL:
        return False
    spelled = _SPELLED_DOT.fullmatch(match.group("dot")) is not None or (
        _SPELLED_DOT.search(domain) is not None
    )
    first = re.split(r"[^A-Za-z0-9-]", domain, maxsplit=1)[0].lower()
    return spelled or first in _PROVIDERS


def plain_at(low: str) -> bool:
    """Whether `low` may hold "name at provider.tld": " at ", then a provider, then a dot."""
    if "." not in low or (" at " not in low and " ät " not in low):
        return False
    for word in (" at ", " ät "):
        pos = low.find(word)
        while pos != -1:
            start = pos + len(word)
            end = start
            while end < len(low) and (low[end].isalnum() or low[end] == "-"):
                end += 1
            if low[start:end] in _PROVIDERS and low.startswith(".", end):
                return True
            pos = low.find(word, end)
    return False


def find_at_signs(probe: str, out: list[Span]) -> None:
    """Report e-mail addresses, @handles and platform mentions (text with '@' or '<#')."""
    for match in _EMAIL.finditer(probe):
        span = _email_span(probe, match)
        if span is not None:
            out.append(span)
    out.extend((m.start(), m.end(), "<HANDLE>") for m in _HANDLE.finditer(probe))
    out.extend((m.start(), m.end(), "<HANDLE>") for m in _MENTION.finditer(probe))


def find_spelled_emails(probe: str, low: str, out: list[Span]) -> None:
    """Report addresses spelled out to dodge spam bots ("john at gmail dot com")."""
    if _NEEDED.search(low) is None and not plain_at(low):
        return
    for match in _SPELLED.finditer(probe):
        if _spelled_ok(match):
            out.append((match.start(), match.end(), "<EMAIL>"))
