"""The scrubber: a table of personal data in several languages, and of look-alikes
(times, dates, prices, versions) that must come through untouched."""

from __future__ import annotations

import pytest

from bot.export.scrub import SCRUBBER_VERSION, Scrubber, luhn_ok

SCRUBBER = Scrubber(["Gretchen Müller", "Gretchen", "王小明", "Søren"])

REPLACED = [
    # e-mail, in several scripts
    ("write to anna.schmidt+news@example.de!", "write to <EMAIL>!"),
    ("我的邮箱是 wang.xiaoming@qq.com 谢谢", "我的邮箱是 <EMAIL> 谢谢"),
    ("почта: ivan@пример.рф", "почта: <EMAIL>"),
    # phones: international, German local, North American, Chinese mobiles
    ("ruf an: +49 30 1234567", "ruf an: <PHONE>"),
    ("Handy 0151 23456789, Büro (030) 123 456 78", "Handy <PHONE>, Büro <PHONE>"),
    ("Tel. 089/1234567 oder 030-12345678.", "Tel. <PHONE> oder <PHONE>."),
    ("call (555) 123-4567 or 555-123-4567", "call <PHONE> or <PHONE>"),
    ("+1 (555) 123-4567", "<PHONE>"),
    ("我的手机号是13800138000，或者138 0013 8000", "我的手机号是<PHONE>，或者<PHONE>"),
    ("+86 138 0013 8000", "<PHONE>"),
    ("+44 20 7946 0958", "<PHONE>"),
    # cards (Luhn), IBAN (mod 97), Chinese resident id
    ("card 4111 1111 1111 1111 exp 12/27", "card <CARD> exp 12/27"),
    ("Karte 5500-0000-0000-0004", "Karte <CARD>"),
    ("IBAN DE89 3704 0044 0532 0130 00 bitte", "IBAN <IBAN> bitte"),
    ("身份证号 11010519491231002X", "身份证号 <ID_NUMBER>"),
    # URLs with secrets keep their shape, lose the secret
    (
        "https://user:hunter2@example.com/x?token=abc&page=2",
        "https://<SECRET>@example.com/x?token=<SECRET>&page=2",
    ),
    (
        "see https://api.example.com/v1?api_key=XYZ123.",
        "see https://api.example.com/v1?api_key=<SECRET>.",
    ),
    (
        "https://s3.example.com/f?X-Amz-Signature=ab12&x=1",
        "https://s3.example.com/f?X-Amz-Signature=<SECRET>&x=1",
    ),
    # tokens
    ("bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1 ok", "bot <SECRET> ok"),
    ("key sk-proj-abcdefghijklmnop1234", "key <SECRET>"),
    # handles and platform mentions
    (
        "hey @bob_the_builder, ping <@123456789> in <#98765432>",
        "hey <HANDLE>, ping <HANDLE> in <HANDLE>",
    ),
    # deny-listed names: whole words, any case; CJK anywhere
    ("gretchen müller said hi to Gretchenfrage", "<NAME> said hi to Gretchenfrage"),
    ("我叫王小明。", "我叫<NAME>。"),
    ("Hej Søren!", "Hej <NAME>!"),
]

UNTOUCHED = [
    "meeting at 12:30 on 01.05.2024",
    "Termin am 24.12.2024 um 14:30 Uhr",
    "2024-05-01T08:00:00Z",
    "costs €1,299.99 or $12.50, 3 Äpfel für 2,50 €",
    "Preis: 1.299,00 €",
    "version 3.14.2, pi is 3.14159265358",
    "in 2023 and 2024 we had 1500 users",
    "order 1234567 and room 101",
    "1 2 3 4 5 6 7 8 9 10",
    "ISBN 978-3-16-148410-0",
    "4111 1111 1111 1112 is not a valid card",
    "score 3-2, 10/10 would play again",
    "https://example.com/docs?page=2&lang=de",
    "今天是2024年5月1日，下午3点",
    "email me? no @ here, just an @ sign",
    "Gretchenfrage is a German word",
    "",
]


@pytest.mark.parametrize(("text", "expected"), REPLACED)
def test_personal_data_is_replaced(text: str, expected: str) -> None:
    assert SCRUBBER.scrub(text) == expected


@pytest.mark.parametrize("text", UNTOUCHED)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert SCRUBBER.scrub(text) == text


def test_scrubbing_is_idempotent() -> None:
    for text, _ in REPLACED:
        once = SCRUBBER.scrub(text)
        assert SCRUBBER.scrub(once) == once


def test_luhn() -> None:
    assert luhn_ok("4111111111111111")
    assert not luhn_ok("4111111111111112")


def test_version_is_recorded_on_the_scrubber() -> None:
    assert Scrubber().version == SCRUBBER_VERSION
    assert SCRUBBER_VERSION


def test_no_deny_list_means_no_name_pass() -> None:
    assert Scrubber().scrub("Gretchen") == "Gretchen"
