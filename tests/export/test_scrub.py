"""The scrubber: the table of personal data in several languages, and of look-alikes
(times, dates, prices, versions, product codes, ordinary sentences with "at" and
"dot") that must come through untouched. The cases live in `pii_cases.py`, which a
real export test runs through `bot export` too."""

from __future__ import annotations

import pytest

from bot.export.scrub import SCRUBBER_VERSION, Scrubber, luhn_ok
from tests.export.pii_cases import DENY_NAMES, REPLACED, UNTOUCHED

SCRUBBER = Scrubber(DENY_NAMES)

KINDS = {kind for kind, _, _ in REPLACED}


@pytest.mark.parametrize(("kind", "text", "expected"), REPLACED)
def test_personal_data_is_replaced(kind: str, text: str, expected: str) -> None:
    assert SCRUBBER.scrub(text) == expected


@pytest.mark.parametrize("text", UNTOUCHED)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert SCRUBBER.scrub(text) == text


def test_the_table_covers_every_kind_in_several_languages() -> None:
    assert {
        "email", "handle", "phone", "card", "iban", "ip", "address", "url", "key",
        "password", "id", "name",
    } <= KINDS  # fmt: skip
    # Each kind has cases written in CJK scripts as well as in Latin ones.
    cjk = {kind for kind, text, _ in REPLACED if any("\u3040" <= c <= "\u9fff" for c in text)}
    assert cjk >= {"email", "phone", "card", "iban", "ip", "address", "key", "password", "id"}


def test_scrubbing_is_idempotent() -> None:
    for _, text, _ in REPLACED:
        once = SCRUBBER.scrub(text)
        assert SCRUBBER.scrub(once) == once


def test_text_around_what_is_replaced_is_kept_exactly() -> None:
    # Full-width digits are read as digits but written back as they were.
    assert SCRUBBER.scrub("１２時に 0151 23456789 へ") == "１２時に <PHONE> へ"
    assert SCRUBBER.scrub("  spaced\tout  ") == "  spaced\tout  "


def test_phone_regions_decide_national_numbers() -> None:
    # A Spanish mobile written without +34 is a phone only where Spain is a region.
    assert Scrubber(phone_regions=["ES"]).scrub("al 612 34 56 78") == "al <PHONE>"
    assert Scrubber(phone_regions=["US"]).scrub("al 612 34 56 78") == "al 612 34 56 78"
    # With a country code, every region is known.
    assert Scrubber(phone_regions=[]).scrub("+34 612 345 678") == "<PHONE>"


def test_luhn() -> None:
    assert luhn_ok("4111111111111111")
    assert not luhn_ok("4111111111111112")


def test_version_is_recorded_on_the_scrubber() -> None:
    assert Scrubber().version == SCRUBBER_VERSION
    assert SCRUBBER_VERSION


def test_no_deny_list_means_no_name_pass() -> None:
    assert Scrubber().scrub("Gretchen") == "Gretchen"
