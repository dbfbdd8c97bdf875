"""Text-level steps: PII detectors with their checksums, and the cleaning functions."""

from __future__ import annotations

import pytest

from tunesmith.data.clean import strip_control, strip_html, tidy_whitespace
from tunesmith.data.pii import iban_ok, luhn_ok, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key AKIAIOSFODNN7EXAMPLE here", "key <SECRET> here"),
        ("token ghp_" + "a" * 36, "token <SECRET>"),
        ("OPENAI_API_KEY=sk-proj-" + "x" * 30, "OPENAI_API_KEY=<SECRET>"),
        ("Authorization: Bearer abcdefghijklmnop1234", "Authorization: Bearer <SECRET>"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "<SECRET>"),
        ("jwt eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2QT4", "jwt <SECRET>"),
        ("GET /x?password=hunter2&page=2", "GET /x?password=<SECRET>&page=2"),
        ("ping 2001:db8::8a2e:370:7334 now", "ping <IP> now"),
        ("call +44 20 7946 0958", "call <PHONE>"),
        ("DE89 3704 0044 0532 0130 00 is mine", "<IBAN> is mine"),
    ],
)
def test_detectors(text: str, expected: str) -> None:
    assert redact(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    [
        "the meeting is at 12:30:15 on 2024-05-01",
        "version 3.14 of the code, 42 items, page 1234567",
        "DE89 3704 0044 0532 0130 01",  # IBAN checksum fails
        "4111 1111 1111 1112",  # Luhn fails
        "999.1.1.1 is not an address",
    ],
)
def test_no_false_alarms(text: str) -> None:
    assert redact(text) == (text, {})


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")


def test_cleaning_functions() -> None:
    assert strip_control("a\x00b\x1bc\td\ne\x7f") == "abc\td\ne"
    assert tidy_whitespace("  x  \r\n\r\n\r\n\r\n    indented  \n") == "x\n\n    indented"
    html = "<p>Hello&nbsp;<b>world</b></p><script>alert(1)</script><br>bye &amp; thanks"
    assert strip_html(html) == "\nHello\xa0world\nbye & thanks"
    assert strip_html("3 < 4 and x&y") == "3 < 4 and x&y"
