"""Per-record preparation steps: text cleaning and the length / language filters (``data.clean``), and the PII
scan (``data.pii``); each counts what it changed and drops rows with a reason in the ledger.
"""

from __future__ import annotations

from collections import Counter

from tunesmith.core.config import CleanConfig, PiiConfig
from tunesmith.core.progress import track
from tunesmith.data import clean
from tunesmith.data.ledger import Ledger
from tunesmith.data.pii import redact
from tunesmith.data.record_text import excerpt
from tunesmith.data.records import Record, Text, map_text, texts
from tunesmith.data.rows import Reject
from tunesmith.data.tokens import TokenCounter


def clean_records(
    records: list[Record], cfg: CleanConfig, ledger: Ledger, tokens: TokenCounter | None = None
) -> list[Record]:
    """Apply each enabled cleaning step, counting the rows each one changed; drop rows it empties or filters out.

    The token-length limits need ``tokens`` (the model's tokenizer); without it they are not applied.
    """
    steps = []
    if cfg.strip_html:
        steps.append(("html", clean.strip_html))
    if cfg.unicode != "none":
        steps.append(("unicode", lambda t: clean.normalize_unicode(t, cfg.unicode)))
    if cfg.control_chars:
        steps.append(("control_chars", clean.strip_control))
    if cfg.whitespace:
        steps.append(("whitespace", clean.tidy_whitespace))
    raw_steps = list(steps)  # raw text (Text records) also loses repeated and boilerplate lines
    if cfg.boilerplate_min_docs:
        documents = (r.text for r in records if isinstance(r, Text))
        boilerplate = clean.common_lines(documents, cfg.boilerplate_min_docs)
        if boilerplate:
            raw_steps.insert(0, ("boilerplate_lines", lambda t: clean.drop_lines(t, boilerplate)))
    if cfg.repeated_lines:
        raw_steps.insert(0, ("repeated_lines", clean.drop_repeated_lines))
    detect = clean.LanguageDetector() if cfg.languages else None
    kept = []
    for record in track(records, "clean", unit="rows"):
        changed: set[str] = set()
        state = {"size": 0, "emptied": False}
        record_steps = raw_steps if isinstance(record, Text) else steps

        def _clean(text: str, changed: set[str] = changed, state: dict = state, steps: list = record_steps) -> str:
            was_blank = not text.strip()
            for name, step in steps:
                new = step(text)
                if new is not text and new != text:
                    changed.add(name)
                    text = new
            state["size"] += len(text)
            state["emptied"] |= not was_blank and not text.strip()
            return text

        record = map_text(record, _clean)
        ledger.changed.update(changed)
        size = state["size"]
        problem = None
        if state["emptied"]:
            problem = ("empty_after_cleaning", "a text field is empty after cleaning")
        elif size < cfg.min_chars:
            problem = ("too_short", f"{size} characters, below data.clean.min_chars={cfg.min_chars}")
        elif cfg.max_chars is not None and size > cfg.max_chars:
            problem = ("too_long", f"{size} characters, above data.clean.max_chars={cfg.max_chars}")
        elif detect and (found := detect("\n".join(texts(record)))) and found[0] not in cfg.languages:
            problem = (
                "wrong_language",
                f"detected language '{found[0]}' (probability {found[1]:.2f}); data.clean.languages is "
                f"{', '.join(cfg.languages)}",
            )
        if problem:
            ledger.reject(Reject(record.source, problem[1], excerpt(record), kind=problem[0]))
        else:
            kept.append(record)
    if tokens is not None and (cfg.min_tokens or cfg.max_tokens):
        kept = _token_limits(kept, cfg, tokens, ledger)
    return kept


def _token_limits(records: list[Record], cfg: CleanConfig, tokens: TokenCounter, ledger: Ledger) -> list[Record]:
    kept = []
    for record, n in zip(records, tokens.count(records), strict=True):
        if n < cfg.min_tokens:
            reason = ("too_few_tokens", f"{n} tokens, below data.clean.min_tokens={cfg.min_tokens}")
        elif cfg.max_tokens is not None and n > cfg.max_tokens:
            reason = ("too_many_tokens", f"{n} tokens, above data.clean.max_tokens={cfg.max_tokens}")
        else:
            kept.append(record)
            continue
        ledger.reject(Reject(record.source, reason[1], excerpt(record), kind=reason[0]))
    return kept


def scan_pii(records: list[Record], cfg: PiiConfig, ledger: Ledger) -> list[Record]:
    """Count PII per type; in redact mode replace each with its placeholder (``<EMAIL>``)."""
    if cfg.mode == "off":
        return records
    out = []
    for record in track(records, "PII", unit="rows"):
        found: Counter[str] = Counter()

        def _redact(text: str, found: Counter[str] = found) -> str:
            new, counts = redact(text, cfg.phone_region)
            found.update(counts)
            return new

        redacted = map_text(record, _redact)
        ledger.pii.update(found)
        if found:
            ledger.changed["rows_with_pii"] += 1
        out.append(redacted if cfg.mode == "redact" else record)
    if cfg.mode == "redact" and ledger.changed["rows_with_pii"]:
        ledger.changed["pii_redacted"] = ledger.changed["rows_with_pii"]
    return out
