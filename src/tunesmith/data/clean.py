"""Text cleaning, one switchable step at a time: Unicode normalisation, control characters, whitespace, HTML,
repeated lines and boilerplate lines of raw text, and offline language identification."""

from __future__ import annotations

import html
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from html.parser import HTMLParser

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0/C1 controls except \t \n \r
_TRAILING = re.compile(r"[ \t]+\n")
_BLANK_RUNS = re.compile(r"\n{3,}")


def normalize_unicode(text: str, form: str) -> str:
    if text.isascii() or unicodedata.is_normalized(form, text):  # the common case, checked without copying
        return text
    return unicodedata.normalize(form, text)


def strip_control(text: str) -> str:
    return _CONTROL.sub("", text)


def tidy_whitespace(text: str) -> str:
    """CRLF to LF, no trailing spaces on lines, at most one blank line in a row, no leading/trailing blanks.

    Spaces inside a line are kept: they can be meaningful (code indentation, tables).
    """
    if "\r" not in text and "\n\n\n" not in text and " \n" not in text and "\t\n" not in text:
        return text.strip()
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _TRAILING.sub("\n", text)
    return _BLANK_RUNS.sub("\n\n", text).strip()


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._skip += tag in ("script", "style")
        if tag in ("br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def strip_html(text: str) -> str:
    """Visible text of an HTML fragment (the standard library's parser; scripts and styles dropped)."""
    if "<" not in text and "&" not in text:
        return text
    parser = _TextOnly()
    parser.feed(text)
    parser.close()
    return html.unescape("".join(parser.parts))


def drop_repeated_lines(text: str) -> str:
    """Remove every later copy of a non-blank line inside one text (lines compared without outer spaces)."""
    seen: set[str] = set()
    kept = []
    for line in text.split("\n"):
        key = line.strip()
        if key and key in seen:
            continue
        seen.add(key)
        kept.append(line)
    return "\n".join(kept) if len(kept) < text.count("\n") + 1 else text


def common_lines(documents: Iterable[str], min_docs: int) -> set[str]:
    """Non-blank lines (without outer spaces) found in at least ``min_docs`` documents: headers, footers, menus."""
    counts: Counter[str] = Counter()
    for document in documents:
        counts.update({key for line in document.split("\n") if (key := line.strip())})
    return {line for line, n in counts.items() if n >= min_docs}


def drop_lines(text: str, lines: set[str]) -> str:
    """The text without the lines in ``lines`` (compared without outer spaces)."""
    kept = [line for line in text.split("\n") if line.strip() not in lines]
    return "\n".join(kept) if len(kept) < text.count("\n") + 1 else text


class LanguageDetector:
    """Offline language identification with py3langid (langid.py's model: 97 languages, ~5 MB, ~50 µs a row).

    Texts shorter than ``min_chars`` are not judged: a few words are too little to tell a language by.
    """

    def __init__(self, min_chars: int = 20) -> None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self.identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self.min_chars = min_chars

    def __call__(self, text: str) -> tuple[str, float] | None:
        """(ISO 639-1 code, probability), or None for a text too short to judge."""
        if len(text.strip()) < self.min_chars:
            return None
        language, probability = self.identifier.classify(text)
        return language, float(probability)
