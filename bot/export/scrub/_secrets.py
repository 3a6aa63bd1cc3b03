"""Secrets: credentials inside URLs, API keys and tokens by their published shapes,
private keys, and passwords that people type into a chat ("my password is …").

A URL keeps its shape: only its userinfo, secret-named parameters (query, path
parameters, fragment: `#access_token=…`, `;jsessionid=…`) and random-looking path
segments (reset links, magic links, webhook keys) become `<SECRET>`.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from bot.export.scrub._spans import Span, needles, words

__all__ = ["TRIGGERS", "find_keys", "find_secret_phrases", "find_url_secrets"]

SECRET = "<SECRET>"  # noqa: S105 (a placeholder, not a password)

_URL = re.compile(r"""(?<![\w.+-])(?:https?|ftp|wss?)://[^\s<>"'\]\[)(]+""", re.IGNORECASE)
_SECRET_PARAM = re.compile(
    r"(?i)^(?:.*(?:token|secret|passw|pwd|api[_-]?key|apikey|auth|session|sessid|signature|"
    r"credential|private|otp)[\w-]*|key|code|pass|sig|sid|access_key|x-amz-[\w-]+|state|nonce)$"
)
_PARAM = re.compile(r"[?&;#](?P<name>[^=&;#/?]{1,64})=(?P<value>[^&;#?]*)")
_SEGMENT = re.compile(r"/(?P<seg>[A-Za-z0-9_-]{20,})")
# A path segment right after one of these is a one-time secret however short.
_SECRET_PATH = re.compile(
    r"(?i)/(?:reset|reset-password|password-reset|invite|invitation|verify|confirm|"
    r"activate|magic|login|unsubscribe|s|share|token)/(?P<seg>[A-Za-z0-9_-]{8,})"
)

_KEYS = re.compile(
    r"(?<![A-Za-z0-9_-])(?:"
    r"(?:sk|pk|rk)-(?:live-|test-|proj-|ant-)?[A-Za-z0-9_-]{16,}"  # OpenAI-style
    r"|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{22,}"  # GitHub
    r"|xox[abprse]-[A-Za-z0-9-]{10,}"  # Slack
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API key
    r"|ya29\.[0-9A-Za-z_-]{20,}"  # Google OAuth access token
    r"|(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA)[A-Z0-9]{16}"  # AWS
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"  # JWT: {"…}.{"…}.sig
    r"|\d{8,10}:[A-Za-z0-9_-]{35}"  # Telegram bot token
    r"|[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,38}"  # Discord bot token
    r")(?![A-Za-z0-9_-])"
)
# Key material without a prefix: AWS secret access keys are 40 characters of base64,
# other generated tokens 32 or more. Only mixed-case-and-digit, high-entropy runs
# count, so words, hex digests and slugs ("my-long-article-title-2024") stay.
_OPAQUE = re.compile(r"(?<![A-Za-z0-9/+=_-])[A-Za-z0-9/+_-]{32,512}={0,2}(?![A-Za-z0-9/+=_-])")
_BEARER = re.compile(r"(?i)\b(?:bearer|basic|token)\s+(?P<v>[A-Za-z0-9._~+/-]{16,}=*)")
_ASSIGNED = re.compile(
    r"(?i)(?<![A-Za-z0-9])(?:[\w-]{0,20}(?:api[_-]?key|secret|token|passw(?:or)?d|pwd|"
    r"access[_-]?key|client[_-]?secret|auth))[\"']?\s{0,3}[:=]\s{0,3}[\"']?(?P<v>[^\s\"',;&#]{4,256})"
)
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY( BLOCK)?-----")
_PEM_END = "-----END "

# "my password is hunter2", "Passwort: hunter2", "mi contraseña es hunter2",
# "mot de passe : hunter2", "密码是hunter2", "パスワードはhunter2です", "비밀번호는 hunter2".
_PHRASE = re.compile(
    r"(?i)(?:"
    r"\b(?:password|passwd|passcode|pass\s?word|pin(?:\s?code)?|pw|kennwort|passwort|"
    r"zugangscode|contraseña|contrasena|clave|mot\s+de\s+passe|parola\s+d'ordine)"
    r"(?:\s+(?:for|to|on|of|für|fürs|zum|zur|von|de|del|para|pour|du)\s+[\w.@-]{1,30})?"
    r"\s{0,3}(?:(?:is|was|are|ist|lautet|war|es|era|est|è)\b|=|:)\s{0,3}"
    r"|(?:密码|密碼|口令)(?:是|为|為|：|:|\s){1,3}|パスワード(?:は|：|:|\s){1,3}"
    r"|비밀번호(?:는|은|:|\s){1,3}"
    r")[\"'“„«]?(?P<v>[^\s\"'“”„«»\u3000-\u30ff\u3400-\u9fff\uac00-\ud7af\uff00-\uffef]{1,64})"
)
# What follows "the password is" that is not a password.
_NOT_PASSWORD = words(
    "wrong incorrect invalid expired correct right too not the a an my your his her our "
    "their same different required case changed reset weak strong empty missing long short "
    "still now also on in at ok fine safe secure secret known forgotten written here there "
    "falsch ungültig abgelaufen richtig nicht zu das der die ein eine mein dein sein noch "
    "incorrecta inválida caducada correcta no muy la el mi tu su un una "
    "faux incorrect invalide expiré correct pas trop le"
)


# Each pattern runs only on text that has what it needs (lower-cased): most chat
# lines have none of these.
_ASSIGN_WORDS = ("key", "secret", "token", "passw", "pwd", "auth")
_BEARER_WORDS = ("bearer", "basic", "token")
_PHRASE_WORDS = (
    "pass", "pin", "pw", "kennwort", "zugangscode", "contrase", "clave", "parola",
    "密码", "密碼", "口令", "パスワード", "비밀번호",
)  # fmt: skip
TRIGGERS = _ASSIGN_WORDS + _BEARER_WORDS + _PHRASE_WORDS
_GATED = (
    (_BEARER, needles(*_BEARER_WORDS), "."),
    (_ASSIGNED, needles(*_ASSIGN_WORDS), "."),
    (_PHRASE, needles(*_PHRASE_WORDS), ".,"),
)


def _entropy(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _opaque(token: str) -> bool:
    core = token.rstrip("=")
    if sum(c in "-_" for c in core) > 2 or sum(c == "/" for c in core) > 3:
        return False  # a slug or a path, not a key
    if not (any(c.isupper() for c in core) and any(c.islower() for c in core)):
        return False  # a word, a hex digest
    if len(core) >= 40 and ("/" in core or "+" in core):
        return _entropy(core) >= 4.2  # base64 key material (AWS secret keys)
    return sum(c.isdigit() for c in core) >= 2 and _entropy(core) >= 4.0


def _url_spans(url: str, offset: int, out: list[Span]) -> None:
    scheme_end = url.find("://") + 3
    host_end = len(url)
    for sep in "/?#":
        at = url.find(sep, scheme_end)
        if at != -1:
            host_end = min(host_end, at)
    userinfo = url.rfind("@", scheme_end, host_end)
    if userinfo != -1:
        out.append((offset + scheme_end, offset + userinfo, SECRET))
    rest = url[host_end:]
    base = offset + host_end
    for match in _PARAM.finditer(rest):
        if match.group("value") and _SECRET_PARAM.match(match.group("name")):
            out.append((base + match.start("value"), base + match.end("value"), SECRET))
    path = rest.split("?", 1)[0]
    for match in _SECRET_PATH.finditer(path):
        out.append((base + match.start("seg"), base + match.end("seg"), SECRET))
    fragment = rest.find("#")
    query = rest.find("?")
    for match in _SEGMENT.finditer(rest):
        seg = match.group("seg")
        if query != -1 and query < match.start() and (fragment == -1 or match.start() < fragment):
            continue  # inside the query: parameters are judged by name above
        mixed = any(c.isdigit() for c in seg) and any(c.isalpha() for c in seg)
        if mixed and _entropy(seg) >= 3.6 and sum(c == "-" for c in seg) <= 4:
            out.append((base + match.start("seg"), base + match.end("seg"), SECRET))


def _pem_spans(probe: str, out: list[Span]) -> None:
    # One search for each END, however many BEGINs precede it: linear in the text.
    close = -2
    for match in _PEM_BEGIN.finditer(probe):
        if close != -1 and close < match.end():
            close = probe.find(_PEM_END, match.end())
        if close == -1:  # no end: the rest of the text is the key
            out.append((match.start(), len(probe), SECRET))
            return
        tail = probe.find("-----", close + len(_PEM_END))
        end = len(probe) if tail == -1 else tail + 5
        out.append((match.start(), end, SECRET))


def find_url_secrets(probe: str, out: list[Span]) -> None:
    """Report userinfo, secret parameters and token path segments of URLs."""
    for match in _URL.finditer(probe):
        url = match.group().rstrip(".,;:!?")
        _url_spans(url, match.start(), out)


def find_keys(probe: str, out: list[Span]) -> None:
    """Report keys and tokens by shape (they all have digits; the caller checks)."""
    out.extend((m.start(), m.end(), SECRET) for m in _KEYS.finditer(probe))
    for match in _OPAQUE.finditer(probe):
        if _opaque(match.group()):
            out.append((match.start(), match.end(), SECRET))
    if "PRIVATE KEY" in probe:
        _pem_spans(probe, out)


def find_secret_phrases(probe: str, low: str, out: list[Span]) -> None:
    """Report `key = value` secrets, bearer tokens and passwords in sentences."""
    for pattern, needed, punctuation in _GATED:
        if needed.search(low) is None:
            continue
        for match in pattern.finditer(probe):
            value = match.group("v").rstrip(punctuation + ";:!?)]}")
            if value and value.lower() not in _NOT_PASSWORD:
                out.append((match.start("v"), match.start("v") + len(value), SECRET))
