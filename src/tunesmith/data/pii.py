"""Find and redact personal data and secrets, replacing each with a typed placeholder such as ``<EMAIL>``.

Phone numbers use ``phonenumbers`` (Google's libphonenumber rules). The other detectors are regular
expressions with a checksum where one exists (Luhn for cards, ISO 7064 mod 97 for IBANs, ``ipaddress`` for
IPs): presidio would do the same job but needs spaCy models, which cannot be assumed offline.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable

import phonenumbers

PII_TYPES = ("SECRET", "EMAIL", "CREDIT_CARD", "IBAN", "IP", "PHONE")

_SECRET_PATTERNS = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),  # GitHub token
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,}\b"),
    re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}\b"),  # OpenAI / Anthropic keys
    re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),  # Hugging Face token
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),  # Slack token
    re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),  # Google API key
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b"),  # JWT
    re.compile(r"(?<=://)[^\s/:@]+:[^\s/@]+(?=@)"),  # user:password@ in a URL
    re.compile(r"(?i)(?<=\bbearer )[A-Za-z0-9._~+/-]{16,}=*"),  # Authorization: Bearer <token>
]
_QUERY_SECRET = re.compile(
    r"(?i)((?:^|[?&;\s])(?:api[_-]?key|access[_-]?token|auth[_-]?token|token|secret|client[_-]?secret|"
    r"password|passwd|pwd|sig|signature)=)([^&\s#\"']+)"
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")

Span = tuple[int, int, str]


def luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _ip_ok(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def _regex(pattern: re.Pattern[str], kind: str, check: Callable[[str], bool] | None = None) -> Callable:
    def find(text: str) -> list[Span]:
        return [(m.start(), m.end(), kind) for m in pattern.finditer(text) if check is None or check(m.group())]

    return find


def _secrets(text: str) -> list[Span]:
    spans = [(m.start(2), m.end(2), "SECRET") for m in _QUERY_SECRET.finditer(text)]
    for pattern in _SECRET_PATTERNS:
        spans += [(m.start(), m.end(), "SECRET") for m in pattern.finditer(text)]
    return spans


def _cards(text: str) -> list[Span]:
    spans = []
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            spans.append((m.start(), m.end(), "CREDIT_CARD"))
    return spans


def _phones(text: str, region: str) -> list[Span]:
    if sum(c.isdigit() for c in text) < 7:
        return []
    return [(m.start, m.end, "PHONE") for m in phonenumbers.PhoneNumberMatcher(text, region)]


def find_pii(text: str, region: str = "US") -> list[Span]:
    """Non-overlapping (start, end, type) spans, earlier detectors in PII_TYPES winning overlaps."""
    detectors: list[Callable[[str], list[Span]]] = [
        _secrets,
        _regex(_EMAIL, "EMAIL"),
        _cards,
        _regex(_IBAN, "IBAN", iban_ok),
        _regex(_IPV4, "IP", _ip_ok),
        _regex(_IPV6, "IP", lambda c: c.count(":") >= 2 and _ip_ok(c)),
        lambda t: _phones(t, region),
    ]
    taken: list[Span] = []
    for detect in detectors:
        for span in detect(text):
            if all(span[1] <= s or span[0] >= e for s, e, _ in taken):
                taken.append(span)
    return sorted(taken)


def redact(text: str, region: str = "US") -> tuple[str, Counter[str]]:
    """The text with each PII span replaced by ``<TYPE>``, and how many of each type were found."""
    spans = find_pii(text, region)
    counts: Counter[str] = Counter(kind for _, _, kind in spans)
    for start, end, kind in reversed(spans):
        text = text[:start] + f"<{kind}>" + text[end:]
    return text, counts
