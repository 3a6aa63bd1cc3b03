"""Scrubbing personal data out of text before it becomes training data.

`Scrubber.scrub(text)` replaces what it finds with typed placeholders:

    <SECRET>      credentials in URLs (userinfo; secret-named query, path and fragment
                  parameters: ?token=, ;jsessionid=, #access_token=; reset-link paths),
                  API keys and tokens by their published shapes (AWS, Google, GitHub,
                  Slack, Stripe, OpenAI, GitLab, JWTs, Telegram and Discord bot
                  tokens), random-looking 32+ character keys (AWS secret keys),
                  private key blocks, `api_key = …`, and passwords in a sentence
                  ("my password is …", "Passwort: …", "密码是…", "パスワードは…")
    <EMAIL>       e-mail addresses in any script, and spelled out: "john at gmail dot
                  com", "john[at]gmail[dot]com", "juan arroba gmail punto com"
    <HANDLE>      @handles, Discord mentions
    <IBAN>        IBANs in any case, checked by python-stdnum (country format, mod 97)
    <ID_NUMBER>   US SSNs, UK NI numbers, Chinese resident ids, Korean RRNs, Aadhaar,
                  Brazilian CPF, Spanish DNI/NIE, Italian codice fiscale (all
                  checksum-checked), and numbers labelled as passport or id numbers
    <CARD>        payment cards: 13-19 digits passing Luhn
    <PHONE>       phones in every region when written with a country code, and
                  nationally written ones for `NATIONAL_REGIONS`, validated with
                  libphonenumber's metadata (the `phonenumbers` package)
    <IP>          IPv4 and IPv6 addresses
    <ADDRESS>     street addresses (US/UK, DE/AT/CH, ES, FR, CN/TW, JP)
    <NAME>        names in `export.deny_names`: whole words, any case; CJK anywhere

Times, dates, prices, versions, scores and ordinary counts are left alone: a number
is replaced only when its shape and a validator say what it is. docs/export.md has
the table of what is caught and what is not; tests/export/test_scrub*.py the cases.

Bounded: every pattern is linear in the text (anchored by look-behinds, bounded
repeats, CJK addresses found from their end), tested on a megabyte of hostile input.
Fast: text without a digit skips every number pattern, and most chat lines have
none. Bump `SCRUBBER_VERSION` whenever the output for some input changes: manifests
record it, so a dataset can be re-scrubbed when the rules improve.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from bot.export.scrub import _contact, _ids, _secrets
from bot.export.scrub._addresses import find_addresses
from bot.export.scrub._names import DenyList
from bot.export.scrub._numbers import NATIONAL_REGIONS, PhoneRules, find_ips, luhn_ok
from bot.export.scrub._spans import Span, apply, needles, probe

__all__ = ["NATIONAL_REGIONS", "SCRUBBER_VERSION", "Scrubber", "luhn_ok"]

SCRUBBER_VERSION = "2026.12.1"

_DIGIT = re.compile(r"\d")
# Every key and token is a run of 16 or more characters without a space, with a digit
# in it: eight of them on one side of some digit. (Led by the digit: a fast search.)
_TOKEN = re.compile(r"\d(?:(?<=\S{8}\d)|(?=\S{8}))")
# The words that the detectors led by a keyword need; one scan says whether to run them.
# (Labelled ids need digits too: they are looked for with the numbers.)
_KEYWORDS = needles(*_secrets.TRIGGERS, *_contact.TRIGGERS)


class Scrubber:
    """Replaces personal data in text with typed placeholders (`<EMAIL>`, `<PHONE>`, ...).

    What it finds is fixed at construction (only the order it tries phone regions
    in adapts, for speed); safe to share between threads. `deny_names` are
    matched case-insensitively as whole words, or anywhere for names in CJK scripts
    (which are written without spaces). `phone_regions` are the regions whose
    national formats (numbers written without a country code) are recognised.
    """

    version = SCRUBBER_VERSION

    def __init__(
        self, deny_names: Iterable[str] = (), phone_regions: Sequence[str] = NATIONAL_REGIONS
    ) -> None:
        self._numbers = PhoneRules(phone_regions)
        self._names = DenyList(deny_names)

    def scrub(self, text: str) -> str:
        """`text` with every recognised piece of personal data replaced."""
        if not text:
            return text
        look = probe(text)
        low = look.lower()
        spans: list[Span] = []
        if "://" in look:
            _secrets.find_url_secrets(look, spans)
        if "@" in look or "<#" in look:
            _contact.find_at_signs(look, spans)
        if _KEYWORDS.search(low) is not None:
            _secrets.find_secret_phrases(look, low, spans)
            _contact.find_spelled_emails(look, low, spans)
        elif _contact.plain_at(low):
            _contact.find_spelled_emails(look, low, spans)
        if _DIGIT.search(look) is not None:
            if _TOKEN.search(look) is not None:
                _secrets.find_keys(look, spans)
            _ids.find_ids(look, spans)
            _ids.find_labelled_ids(look, low, spans)
            self._numbers.find(look, spans)
            find_ips(look, spans)
            find_addresses(look, low, spans)
        self._names.find(look, low, spans)
        return apply(text, spans)
