"""The scrubber's table of tricky cases: (kind, text, expected) in several languages,
and ordinary text that must come through untouched. Used by the scrubber's unit
tests and by a real `bot export` over a SQLite ledger holding every case."""

from __future__ import annotations

import re

PLACEHOLDER = re.compile(r"<(?:EMAIL|HANDLE|PHONE|CARD|IBAN|ID_NUMBER|IP|ADDRESS|SECRET|NAME)>")


def removed(text: str, expected: str) -> list[str]:
    """The parts of `text` that its scrubbed form `expected` replaced by placeholders
    (those of four characters or more: what must never be seen again)."""
    pieces = PLACEHOLDER.split(expected)
    pattern = "(.+?)".join(re.escape(piece) for piece in pieces)
    match = re.fullmatch(pattern, text, re.DOTALL)
    assert match is not None, (text, expected)
    return [group for group in match.groups() if len(group.strip()) >= 4]


DENY_NAMES = ["Gretchen Müller", "Gretchen", "王小明", "Søren"]

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwia"
    "WF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I"
    "\n2yPB4bXqK8sKjH2\n-----END RSA PRIVATE KEY-----"
)

REPLACED: list[tuple[str, str, str]] = [
    # e-mail, in several scripts, run into CJK sentences, full-width
    ("email", "write to anna.schmidt+news@example.de!", "write to <EMAIL>!"),
    ("email", "Schreib mir: max.mustermann@web.de.", "Schreib mir: <EMAIL>."),
    ("email", "Escríbeme a maría.garcía@correo.es", "Escríbeme a <EMAIL>"),
    ("email", "我的邮箱是 wang.xiaoming@qq.com 谢谢", "我的邮箱是 <EMAIL> 谢谢"),
    ("email", "邮箱是wang.xiaoming@qq.com谢谢", "邮箱是<EMAIL>谢谢"),
    ("email", "メールはtaro.yamada@example.co.jpです", "メールは<EMAIL>です"),
    ("email", "メール：taro＠example．co．jp", "メール：<EMAIL>"),
    ("email", "почта: ivan@пример.рф", "почта: <EMAIL>"),
    ("email", "mailto:jane.doe@example.org", "mailto:<EMAIL>"),
    # e-mail, spelled out to dodge spam bots
    ("email", "mail john at gmail dot com please", "mail <EMAIL> please"),
    ("email", "JOHN AT GMAIL DOT COM", "<EMAIL>"),
    ("email", "john [at] gmail [dot] com", "<EMAIL>"),
    ("email", "john(at)gmail(dot)com", "<EMAIL>"),
    ("email", "john at gmail.com", "<EMAIL>"),
    ("email", "john @ gmail . com", "<EMAIL>"),
    ("email", "jo.doe {at} example {dot} co {dot} uk", "<EMAIL>"),
    ("email", "Schreib an hans(ät)web.de", "Schreib an <EMAIL>"),
    ("email", "sarah dot jones at gmail dot com", "<EMAIL>"),
    ("email", "reach me: j.smith(at)uni-heidelberg(dot)de", "reach me: <EMAIL>"),
    ("email", "hans.meier at gmx punkt de", "<EMAIL>"),
    ("email", "escríbeme a juan arroba gmail punto com", "escríbeme a <EMAIL>"),
    ("email", "écris à jean arobase orange point fr", "écris à <EMAIL>"),
    ("email", "联系我 wang at qq dot com", "联系我 <EMAIL>"),
    ("email", "邮箱 wang#163.com", "邮箱 <EMAIL>"),
    ("email", "メールは taro アットマーク example ドット jp", "メールは <EMAIL>"),
    ("email", "taro★example.co.jp まで", "<EMAIL> まで"),
    # handles and platform mentions
    (
        "handle",
        "hey @bob_the_builder, ping <@123456789> in <#98765432>",
        "hey <HANDLE>, ping <HANDLE> in <HANDLE>",
    ),
    ("handle", "联系我@xiaoming_wang", "联系我<HANDLE>"),
    # phones: international in every region, national for the common ones
    ("phone", "ruf an: +49 30 1234567", "ruf an: <PHONE>"),
    ("phone", "+49 (0)30 1234567", "<PHONE>"),
    ("phone", "0049 30 1234567", "<PHONE>"),
    ("phone", "Handy 0151 23456789, Büro (030) 123 456 78", "Handy <PHONE>, Büro <PHONE>"),
    ("phone", "Tel. 089/1234567 oder 030-12345678.", "Tel. <PHONE> oder <PHONE>."),
    ("phone", "call (555) 123-4567 or 555-123-4567", "call <PHONE> or <PHONE>"),
    ("phone", "+1 (555) 123-4567", "<PHONE>"),
    ("phone", "call 555.123.4567 now", "call <PHONE> now"),
    ("phone", "my cell is 212.555.0123.", "my cell is <PHONE>."),
    ("phone", "text me at 2125550123", "text me at <PHONE>"),
    ("phone", "+44 20 7946 0958", "<PHONE>"),
    ("phone", "ring me on 07911 123456", "ring me on <PHONE>"),
    ("phone", "Llámame al 612 34 56 78", "Llámame al <PHONE>"),
    ("phone", "+34 612 345 678", "<PHONE>"),
    ("phone", "appelle-moi au 06 12 34 56 78", "appelle-moi au <PHONE>"),
    ("phone", "bureau 01.23.45.67.89", "bureau <PHONE>"),
    ("phone", "我的手机号是13800138000，或者138 0013 8000", "我的手机号是<PHONE>，或者<PHONE>"),
    ("phone", "+86 138 0013 8000", "<PHONE>"),
    ("phone", "座机 010-62345678", "座机 <PHONE>"),
    ("phone", "電話は090-1234-5678です", "電話は<PHONE>です"),
    ("phone", "電話：０９０－１２３４－５６７８", "電話：<PHONE>"),
    ("phone", "会社は03-1234-5678", "会社は<PHONE>"),
    ("phone", "전화 010-1234-5678", "전화 <PHONE>"),
    ("phone", "+91 98765 43210", "<PHONE>"),
    ("phone", "call 1-800-555-0199", "call <PHONE>"),
    ("phone", "Festnetz: 040 / 123 456 78", "Festnetz: <PHONE>"),
    ("phone", "Mon numéro : 06.12.34.56.78", "Mon numéro : <PHONE>"),
    ("phone", "Nummern: 030 1234567 0151 23456789", "Nummern: <PHONE> <PHONE>"),
    ("phone", "room 12 0151 23456789", "room 12 <PHONE>"),
    ("phone", "+55 11 91234-5678", "<PHONE>"),
    ("phone", "am 12.05.2024 unter 0151 23456789", "am 12.05.2024 unter <PHONE>"),
    # cards (Luhn)
    ("card", "card 4111 1111 1111 1111 exp 12/27", "card <CARD> exp 12/27"),
    ("card", "Karte 5500-0000-0000-0004", "Karte <CARD>"),
    ("card", "Amex 3782 822463 10005", "Amex <CARD>"),
    ("card", "信用卡号4111111111111111", "信用卡号<CARD>"),
    ("card", "カード番号：４１１１１１１１１１１１１１１１", "カード番号：<CARD>"),
    # IBAN (format and mod 97), any case
    ("iban", "IBAN DE89 3704 0044 0532 0130 00 bitte", "IBAN <IBAN> bitte"),
    ("iban", "iban de89370400440532013000", "iban <IBAN>"),
    ("iban", "IBAN: ES91 2100 0418 4502 0005 1332", "IBAN: <IBAN>"),
    ("iban", "GB82 WEST 1234 5698 7654 32", "<IBAN>"),
    ("iban", "我的账户CH9300762011623852957", "我的账户<IBAN>"),
    # IP addresses
    ("ip", "server at 192.168.1.10:8080", "server at <IP>:8080"),
    ("ip", "ping 8.8.8.8.", "ping <IP>."),
    ("ip", "IPv6 2001:db8:85a3::8a2e:370:7334 ok", "IPv6 <IP> ok"),
    ("ip", "address is 2001:db8::1.", "address is <IP>."),
    ("ip", "mapped ::ffff:192.0.2.128", "mapped <IP>"),
    ("ip", "我的IP是10.0.0.23", "我的IP是<IP>"),
    ("ip", "meine IP: fe80::1ff:fe23:4567:890a", "meine IP: <IP>"),
    # street addresses
    (
        "address",
        "I live at 1600 Pennsylvania Avenue NW, Washington, DC 20500.",
        "I live at <ADDRESS>.",
    ),
    ("address", "send it to 742 Evergreen Terrace", "send it to <ADDRESS>"),
    ("address", "221B Baker Street, London NW1 6XE", "<ADDRESS>"),
    ("address", "350 5th Ave, Apt 4B", "<ADDRESS>"),
    ("address", "Ich wohne in der Hauptstraße 5, 10115 Berlin.", "Ich wohne in der <ADDRESS>."),
    ("address", "Lange Str. 12a", "<ADDRESS>"),
    ("address", "Karl-Marx-Allee 34", "<ADDRESS>"),
    ("address", "Bahnhofstrasse 3, 8001 Zürich", "<ADDRESS>"),
    ("address", "Vivo en Calle Mayor 5, 28013 Madrid", "Vivo en <ADDRESS>"),
    ("address", "C/ Alcalá 23", "<ADDRESS>"),
    ("address", "Avenida de la Paz nº 7", "<ADDRESS>"),
    ("address", "J'habite 12 rue de la Paix, 75002 Paris", "J'habite <ADDRESS>"),
    ("address", "我住在北京市朝阳区建国路88号。", "我住在<ADDRESS>。"),
    ("address", "地址：上海市浦东新区世纪大道100号3号楼", "地址：<ADDRESS>"),
    ("address", "住所は東京都千代田区千代田1-1です", "住所は<ADDRESS>です"),
    ("address", "大阪市北区梅田3丁目1番1号", "<ADDRESS>"),
    ("address", "京都府京都市東山区清水1丁目294", "<ADDRESS>"),
    ("address", "广州市天河区天河路385号", "<ADDRESS>"),
    ("address", "I live at 123 Main St, Springfield, IL 62704", "I live at <ADDRESS>"),
    ("address", "〒100-0001", "<ADDRESS>"),
    # URLs keep their shape, lose the secret
    (
        "url",
        "https://user:hunter2@example.com/x?token=abc&page=2",
        "https://<SECRET>@example.com/x?token=<SECRET>&page=2",
    ),
    (
        "url",
        "see https://api.example.com/v1?api_key=XYZ123.",
        "see https://api.example.com/v1?api_key=<SECRET>.",
    ),
    (
        "url",
        "https://s3.example.com/f?X-Amz-Signature=ab12&x=1",
        "https://s3.example.com/f?X-Amz-Signature=<SECRET>&x=1",
    ),
    (
        "url",
        "https://shop.example.com/cart;jsessionid=A1B2C3D4E5F6?item=3",
        "https://shop.example.com/cart;jsessionid=<SECRET>?item=3",
    ),
    (
        "url",
        "https://example.com/index.php?PHPSESSID=9a8b7c6d5e&lang=de",
        "https://example.com/index.php?PHPSESSID=<SECRET>&lang=de",
    ),
    ("url", "https://app.example.com/?sid=abc123def", "https://app.example.com/?sid=<SECRET>"),
    (
        "url",
        "https://example.com/cb#access_token=ya29a0AfH6SMB&expires_in=3599",
        "https://example.com/cb#access_token=<SECRET>&expires_in=3599",
    ),
    (
        "url",
        "reset: https://example.com/reset/8f14e45fceea167a5a36dedd4bea2543",
        "reset: https://example.com/reset/<SECRET>",
    ),
    (
        "url",
        "https://hooks.slack.com/services/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",
        "https://hooks.slack.com/services/T0A1B2C3D/B0A1B2C3D/<SECRET>",
    ),
    # keys and tokens
    ("key", "bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1 ok", "bot <SECRET> ok"),
    ("key", "key sk-proj-abcdefghijklmnop1234", "key <SECRET>"),
    ("key", "aws key AKIAIOSFODNN7EXAMPLE", "aws key <SECRET>"),
    (
        "key",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_access_key = <SECRET>",
    ),
    ("key", "secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "secret <SECRET>"),
    ("key", "maps AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "maps <SECRET>"),
    ("key", f"Authorization: Bearer {JWT}", "Authorization: Bearer <SECRET>"),
    ("key", f"我的令牌是{JWT}", "我的令牌是<SECRET>"),
    ("key", "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "<SECRET>"),
    ("key", "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe <SECRET>"),
    ("key", "slack xoxb-123456789012-abcdefghijkl", "slack <SECRET>"),
    ("key", f"here:\n{PEM}\nthanks", "here:\n<SECRET>\nthanks"),
    # passwords people type
    ("password", "my password is hunter2", "my password is <SECRET>"),
    ("password", "My password for gmail is Tr0ub4dor&3!", "My password for gmail is <SECRET>!"),
    ("password", "wifi password: CoffeeShop2024", "wifi password: <SECRET>"),
    ("password", "PIN is 4821", "PIN is <SECRET>"),
    ("password", "Mein Passwort ist Sommer2024!", "Mein Passwort ist <SECRET>!"),
    ("password", "Passwort: geheim123", "Passwort: <SECRET>"),
    ("password", "mi contraseña es gato123", "mi contraseña es <SECRET>"),
    ("password", "le mot de passe est soleil42", "le mot de passe est <SECRET>"),
    ("password", "我的密码是abc12345，别告诉别人", "我的密码是<SECRET>，别告诉别人"),
    ("password", "パスワードはhunter2です", "パスワードは<SECRET>です"),
    ("password", "비밀번호는 qwerty123", "비밀번호는 <SECRET>"),
    # national ids (checksums) and labelled ids (passports)
    ("id", "my SSN is 536-22-1234", "my SSN is <ID_NUMBER>"),
    ("id", "SSN 536221234", "SSN <ID_NUMBER>"),
    ("id", "NI number AB 12 34 56 C", "NI number <ID_NUMBER>"),
    ("id", "nino ab123456c", "nino <ID_NUMBER>"),
    ("id", "passport number is 912803456", "passport number is <ID_NUMBER>"),
    ("id", "Reisepassnummer C01X00T47", "Reisepassnummer <ID_NUMBER>"),
    ("id", "Reisepass-Nr.: C4J7YR3LH", "Reisepass-Nr.: <ID_NUMBER>"),
    ("id", "pasaporte número XDD123456", "pasaporte número <ID_NUMBER>"),
    ("id", "número de pasaporte: PAA123456", "número de pasaporte: <ID_NUMBER>"),
    ("id", "我的护照号码是E12345678", "我的护照号码是<ID_NUMBER>"),
    ("id", "パスポート番号はTK1234567です", "パスポート番号は<ID_NUMBER>です"),
    ("id", "マイナンバー 1234 5678 9012", "マイナンバー <ID_NUMBER>"),
    ("id", "身份证号 11010519491231002X", "身份证号 <ID_NUMBER>"),
    ("id", "주민등록번호 900101-1234568", "주민등록번호 <ID_NUMBER>"),
    ("id", "Aadhaar 2345 6789 0124", "Aadhaar <ID_NUMBER>"),
    ("id", "CPF 111.444.777-35", "CPF <ID_NUMBER>"),
    ("id", "mi DNI es 12345678Z", "mi DNI es <ID_NUMBER>"),
    ("id", "NIE X1234567L", "NIE <ID_NUMBER>"),
    ("id", "codice fiscale RSSMRA85T10A562S", "codice fiscale <ID_NUMBER>"),
    # deny-listed names: whole words, any case; CJK anywhere
    ("name", "gretchen müller said hi to Gretchenfrage", "<NAME> said hi to Gretchenfrage"),
    ("name", "我叫王小明。", "我叫<NAME>。"),
    ("name", "Hej Søren!", "Hej <NAME>!"),
]

UNTOUCHED: list[str] = [
    # times, dates, durations
    "meeting at 12:30 on 01.05.2024",
    "Termin am 24.12.2024 um 14:30 Uhr",
    "Termin 10-12 Uhr, 14-16 Uhr",
    "2024-05-01T08:00:00Z",
    "2024-05-01 08:00:00",
    "2024/05/01 08:00",
    "12.05.2024 14:30",
    "the years 1999-2004 and 2023 - 2024",
    "12:30:45",
    "今天是2024年5月1日，下午3点",
    "会议在下午3点，地点在3楼",
    "3月5号见",
    "我知道5号有会",
    "明日は10時に駅で会いましょう",
    "2024年5月1日に会いましょう",
    "Nos vemos a las 18:00 en la plaza",
    "Treffen wir uns um 14:30 am Bahnhof?",
    # prices, quantities, measurements
    "costs €1,299.99 or $12.50, 3 Äpfel für 2,50 €",
    "Preis: 1.299,00 €",
    "価格は1,980円です",
    "价格是128.50元",
    "speed 1,000,000 km and 36.6°C",
    "coordinates 52.5200, 13.4050",
    "1920x1080 at 16:9",
    "in 2023 and 2024 we had 1500 users",
    "1 2 3 4 5 6 7 8 9 10",
    "+1 vote, +100 karma",
    # versions and product codes
    "version 3.14.2, pi is 3.14159265358",
    "1.2.3",
    "v1.2.3.4 and version 1.2.3.4",
    "Python 3.11.7 and numpy 1.26.4",
    "iPhone 15 Pro Max 256GB",
    "Windows 10 version 22H2",
    "order 1234567 and room 101",
    "Order #A1234-5678, SKU 12-3456-78",
    "ISBN 978-3-16-148410-0",
    "4111 1111 1111 1112 is not a valid card",
    "COVID-19, MP3, A4 paper, CO2",
    "HTTP/1.1 200 OK",
    "std::vector<int> and Foo::Bar",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b",
    "score 3-2, 10/10 would play again",
    "第3章第5节",
    # ordinary sentences with "at", "dot", streets and passwords
    "email me? no @ here, just an @ sign",
    "look at example.com for details",
    "we met at the park at noon",
    "I'm at home. Dot com bubble burst in 2000",
    "Put a dot at the end",
    "Spring 2024 collection",
    "Firewall 2 rules",
    "I live on Main Street",
    "Die Straße ist lang",
    "Tel Aviv is nice",
    "my password is wrong",
    "the password is too short",
    "Das Passwort ist falsch",
    "passport expires in 2030",
    "AB testing for 12 weeks",
    # URLs without secrets
    "https://example.com/docs?page=2&lang=de",
    "https://example.com/blog/how-to-train-your-dragon-2024",
    "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
    "https://github.com/astral-sh/ruff/releases/tag/v0.6.9",
    # the deny list is whole words
    "Gretchenfrage is a German word",
    # a sample of ordinary chat, in several languages, with numbers in it
    "I'll be there at 7:45 tomorrow, room 204.",
    "We sold 12,345 units in Q3 2024, up 15.5% from 10,702.",
    "Flight LH 1234 departs at 06:15 from gate B22.",
    "Kernel 6.8.0-45-generic on Ubuntu 24.04.1 LTS",
    "Windows 11 build 22631.4460",
    "Use port 8080 and 127.0.0.1 for local testing, or ::1",
    "I walked 10000 steps on Main Street today",
    "Tickets cost 45 € each, row 12, seats 7-9.",
    "Lottery numbers: 4 8 15 16 23 42",
    "Population of Berlin: 3,769,495 (2019)",
    "Error code 0x80070005 when updating",
    "Set the timer to 00:30:00, ETA 10-15 minutes",
    "The password field must be at least 8 characters.",
    "He is at google now, working on search.",
    "Bitte bis 15.12. überweisen, Rechnung Nr. 2024-0815.",
    "Mein Zug fährt um 17:42 von Gleis 7.",
    "Die Temperatur lag bei 23,5 Grad, Luftfeuchtigkeit 65 %.",
    "Compré 2 kilos de manzanas por 3,50 euros.",
    "El partido terminó 2-1 en el minuto 90.",
    "我明天下午3点到，住在3楼305房间。",
    "这个手机壳卖39.9元，包邮。",
    "第二季度营收增长了12.5%，达到1,234万元。",
    "この本は1,500円でした。",
    "電車は8時12分に出発します。",
    "新宿駅の3番出口で待ってます。",
    "Je t'appelle à 18h30, d'accord ?",
    # pseudonyms the export itself writes
    "User-3f9a2c (u_3f9a2c1b0d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a) on telegram",
    "",
]
