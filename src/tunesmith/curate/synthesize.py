"""Self-instruct-style data synthesis (``tunesmith data synthesize``): new rows from seed rows, then filtered.

Each new row is asked for with ``k`` random seed rows shown as examples, written field by field
(``instruction: ...`` / ``output: ...``). With a local model or an endpoint's ``/v1/completions``, the field names
are written by us and the model only fills in each value (stopping at the next field), so even a small model
produces rows of the seed's shape; with ``--chat`` the whole example is asked for in one chat message and parsed.

Every generated row then goes through the data pipeline like a file row: parsed into the seed format's record
(rows that do not fit are rejected with the parser's reason), cleaned with length limits, labels checked against
the seeds' labels, and deduplicated against the seeds and each other. ``report.json`` counts every row:
generated = kept + rejected.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tunesmith.core.config import CleanConfig, DataConfig
from tunesmith.core.console import console
from tunesmith.core.errors import DataError
from tunesmith.core.fs import write_json, write_jsonl
from tunesmith.data import clean as clean_text
from tunesmith.data.dedup import find_duplicates, find_overlap
from tunesmith.data.formats import RowFormat, rows_to_records
from tunesmith.data.ledger import Ledger
from tunesmith.data.load import Reject, Row, read_rows
from tunesmith.data.prepare import clean_records, dedup_text, load_records
from tunesmith.data.records import Labeled, Record, stratum, texts

INSTRUCTION = (
    "Below are examples of a task. Write one new example that is different from all of them, in the same format."
)
SECTION = "### Example"
MAX_STOPS = 4  # OpenAI-compatible servers accept at most four stop strings


class Generator(Protocol):
    def complete(self, prompt: str, stop: list[str]) -> str: ...


# ---------------------------------------------------------------- seeds and prompts


@dataclass
class Seeds:
    path: Path
    fields: list[str]  # the flat field names every row is written with
    rows: list[dict[str, str]]  # flat rows
    fmt: RowFormat
    records: list[Record]
    nested: bool = False  # single-turn `messages` rows, flattened to system/user/assistant fields

    def to_row(self, flat: dict[str, str]) -> dict[str, Any]:
        """A flat generated row back in the seed file's shape."""
        if not self.nested:
            return dict(flat)
        return {"messages": [{"role": f, "content": flat[f]} for f in self.fields if f in flat]}


def load_seeds(path: str | Path, data: DataConfig | None = None) -> Seeds:
    """Seed rows and their format; rows must be flat (text fields) or single-turn ``messages`` conversations."""
    path = Path(path)
    data = data or DataConfig(train=str(path))
    loaded = load_records(str(path), data)
    if not loaded.records:
        raise DataError(f"{path}: no usable seed rows ({len(loaded.rejects)} rejected)")
    rows, _, _ = read_rows(path, None if data.reader == "auto" else data.reader)
    fmt = RowFormat(
        kind=loaded.format,
        prompt_template=data.prompt_template,
        completion_template=data.completion_template,
        label_column=data.label_column,
        label_names=dict(data.label_names),
        columns=dict(data.columns),
    )
    nested = loaded.format == "messages"
    flat_rows = []
    for row in rows:
        flat = _flatten(row, nested)
        if flat is not None:
            flat_rows.append(flat)
    if not flat_rows:
        raise DataError(
            f"{path}: seed rows must be flat text fields (e.g. instruction/output, text/label, prompt/completion) or "
            "single-turn messages (user, assistant); these rows are nested"
        )
    fields = list(dict.fromkeys(k for r in flat_rows for k in r))
    return Seeds(path, fields, flat_rows, fmt, loaded.records, nested)


def _flatten(row: Row, nested: bool) -> dict[str, str] | None:
    values = row.values
    if nested:
        messages = values.get("messages")
        if not isinstance(messages, list):
            return None
        flat = {}
        for m in messages:
            if not isinstance(m, dict) or m.get("role") in flat or not isinstance(m.get("content"), str):
                return None  # multi-turn or unusual: not a seed for field-by-field writing
            flat[m["role"]] = m["content"]
        return flat if "user" in flat and "assistant" in flat else None
    if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values.values()):
        return None
    return {k: str(v) for k, v in values.items()}


def render_example(row: dict[str, str], fields: list[str]) -> str:
    return "".join(f"{f}: {row[f]}\n" for f in fields if f in row)


def build_prompt(shots: list[dict[str, str]], fields: list[str]) -> str:
    """The instruction, the k examples, and the header of the example the model is to write."""
    parts = [INSTRUCTION, ""]
    for i, shot in enumerate(shots, 1):
        parts += [f"{SECTION} {i}", render_example(shot, fields)]
    parts.append(f"{SECTION} {len(shots) + 1}\n")
    return "\n".join(parts)


def fill_fields(generator: Generator, prompt: str, fields: list[str]) -> dict[str, str]:
    """Write each field name ourselves and let the model write its value (up to the next field or example)."""
    values: dict[str, str] = {}
    text = prompt
    for i, name in enumerate(fields):
        text += f"{name}:"
        following = [f"\n{f}:" for f in fields[i + 1 : i + 1 + MAX_STOPS - 1]]
        stops = [f"\n{SECTION}", *following]
        value = _cut(generator.complete(text, stops), [f"\n{SECTION}", *(f"\n{f}:" for f in fields)]).strip()
        values[name] = value
        text += f" {value}\n"
    return values


def parse_example(reply: str, fields: list[str]) -> dict[str, str] | None:
    """A chat reply's ``field: value`` lines (values may run over several lines); None if a field is missing."""
    body = reply.split(SECTION)[-1] if SECTION in reply else reply
    pattern = re.compile(r"^(" + "|".join(re.escape(f) for f in fields) + r")\s*:", re.MULTILINE)
    matches = list(pattern.finditer(body))
    values: dict[str, str] = {}
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following else len(body)
        values.setdefault(match.group(1), body[match.end() : end].strip())
    return values if all(f in values for f in fields) else None


def _cut(text: str, stops: list[str]) -> str:
    cut = min((i for s in stops if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


# ---------------------------------------------------------------- generators


class LocalGenerator:
    """transformers ``generate`` with sampling on a local model (alias, hub id or folder)."""

    def __init__(self, name: str, max_new_tokens: int, temperature: float, top_p: float, seed: int) -> None:
        import torch

        from tunesmith.core.config import ModelConfig
        from tunesmith.models.load import load_causal_lm, load_tokenizer
        from tunesmith.models.resolve import resolve_model

        config = ModelConfig(name=name)
        resolved = resolve_model(name)
        self.tokenizer = load_tokenizer(config, resolved)
        self.model = load_causal_lm(config, resolved).eval()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.context = getattr(self.model.config, "max_position_embeddings", None) or 2048
        torch.manual_seed(seed)

    def complete(self, prompt: str, stop: list[str]) -> str:
        import torch

        ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
        ids = ids[:, -(self.context - self.max_new_tokens) :].to(self.device)  # keep the end: the field to write
        sampling = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
        with torch.no_grad():
            output = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=self.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                **(sampling if self.temperature > 0 else {"do_sample": False}),
            )
        return _cut(self.tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True), stop)


class EndpointGenerator:
    """Any OpenAI-compatible server, through the ``openai`` client (``/v1/completions``, or chat with --chat)."""

    def __init__(
        self, url: str, model: str | None, api_key: str | None, max_new_tokens: int, temperature: float, top_p: float
    ) -> None:
        try:
            import openai
        except ImportError:
            raise DataError("--endpoint needs the openai client: pip install openai") from None
        self.client = openai.OpenAI(base_url=url, api_key=api_key or "not-needed", max_retries=1, timeout=600)
        self.model = model or self.client.models.list().data[0].id
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p

    def complete(self, prompt: str, stop: list[str]) -> str:
        response = self.client.completions.create(
            model=self.model,
            prompt=prompt,
            max_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=stop[:MAX_STOPS],
        )
        return _cut(response.choices[0].text, stop)

    def chat(self, prompt: str, max_tokens: int) -> str:
        message = (
            f"{prompt}\nReply with the new example only, one `field: value` per field, using the fields "
            "of the examples."
        )
        response = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": message}],
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
        )
        return response.choices[0].message.content or ""


# ---------------------------------------------------------------- filtering


@dataclass
class Filtered:
    kept: list[dict[str, Any]]
    rejects: list[Reject] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def report(self, generated: int) -> dict[str, Any]:
        rejected = sum(self.counts.values())
        return {
            "generated": generated,
            "kept": len(self.kept),
            "rejected": rejected,
            "rejected_by_reason": dict(sorted(self.counts.items())),
            "balanced": generated == len(self.kept) + rejected,
        }


def filter_rows(
    generated: list[dict[str, str] | None], seeds: Seeds, clean: CleanConfig, near: bool = True, threshold: float = 0.8
) -> Filtered:
    """Run generated rows (None = the reply could not be parsed) through validation, cleaning, labels and dedup."""
    result = Filtered([])

    def reject(where: str, reason: str, excerpt: str, kind: str) -> None:
        result.rejects.append(Reject(where, reason, excerpt[:120], kind=kind))
        result.counts[kind] += 1

    rows, originals = [], {}
    for i, flat in enumerate(generated, 1):
        if flat is None:
            reject(
                f"generated:{i}", f"the reply does not have every field ({', '.join(seeds.fields)})", "", "unparseable"
            )
            continue
        missing = [f for f in seeds.fields if not flat.get(f, "").strip()]
        if missing:
            reject(
                f"generated:{i}",
                f"empty field(s): {', '.join(missing)}",
                render_example(flat, seeds.fields),
                "empty_field",
            )
            continue
        flat = {k: _clean_value(v, clean) for k, v in flat.items()}
        rows.append(Row(line=i, values=seeds.to_row(flat)))
        originals[f"generated:{i}"] = seeds.to_row(flat)
    records, bad = rows_to_records("generated", rows, seeds.fmt)
    for r in bad:
        reject(r.source, r.reason, r.excerpt, r.kind)
    ledger = Ledger()
    cleaned = clean_records(records, clean, ledger)
    for r in ledger.rejects:
        reject(r.source, r.reason, r.excerpt, r.kind)
    labels = {s for r in seeds.records if (s := stratum(r)) is not None}
    valid = []
    for record in cleaned:
        label = record.label if isinstance(record, Labeled) else stratum(record)
        if labels and label not in labels:
            reject(
                record.source,
                f"label {label!r} is not one of the seeds' labels {sorted(labels)}",
                _excerpt(record),
                "unknown_label",
            )
        else:
            valid.append(record)
    seed_texts = [dedup_text(r) for r in seeds.records]
    leaks = {m.index: m for m in find_overlap([dedup_text(r) for r in valid], seed_texts, near, threshold)}
    fresh = []
    for i, record in enumerate(valid):
        if i in leaks:
            m = leaks[i]
            how = "copy" if m.kind == "exact" else f"near copy (similarity {m.similarity:.2f})"
            reject(record.source, f"{how} of seed {seeds.records[m.of].source}", _excerpt(record), "duplicate_of_seed")
        else:
            fresh.append(record)
    repeats = {m.index: m for m in find_duplicates([dedup_text(r) for r in fresh], near, threshold)}
    for i, record in enumerate(fresh):
        if i in repeats:
            m = repeats[i]
            reject(record.source, f"duplicate of {fresh[m.of].source}", _excerpt(record), "duplicate")
        else:
            result.kept.append(originals[record.source])
    return result


def _clean_value(text: str, cfg: CleanConfig) -> str:
    """The pipeline's cleaning steps on one generated value, so the kept rows are written cleaned."""
    if cfg.strip_html:
        text = clean_text.strip_html(text)
    if cfg.unicode != "none":
        text = clean_text.normalize_unicode(text, cfg.unicode)
    if cfg.control_chars:
        text = clean_text.strip_control(text)
    return clean_text.tidy_whitespace(text) if cfg.whitespace else text


def _excerpt(record: Record) -> str:
    return " | ".join(texts(record))


# ---------------------------------------------------------------- the command


def synthesize(
    seed_path: str | Path,
    n: int,
    out_path: str | Path,
    generator: Any,
    k: int = 3,
    seed: int = 0,
    chat: bool = False,
    chat_max_tokens: int = 512,
    clean: CleanConfig | None = None,
    data: DataConfig | None = None,
    source: str = "",
) -> dict[str, Any]:
    """Generate ``n`` rows from the seed file, filter them, write the kept rows, rejects and report next to them."""
    seeds = load_seeds(seed_path, data)
    rng = random.Random(seed)
    generated: list[dict[str, str] | None] = []
    console.print(f"[bold]synthesize[/]: {n} rows from {len(seeds.rows)} seeds ({seeds.fmt.kind}), {k} examples each")
    for i in range(n):
        prompt = build_prompt(rng.sample(seeds.rows, min(k, len(seeds.rows))), seeds.fields)
        if chat:
            generated.append(parse_example(generator.chat(prompt, chat_max_tokens), seeds.fields))
        else:
            generated.append(fill_fields(generator, prompt, seeds.fields))
        if (i + 1) % 10 == 0:
            console.print(f"  {i + 1}/{n} generated")
    filtered = filter_rows(generated, seeds, clean or CleanConfig(min_chars=1))
    out_path = Path(out_path)
    write_jsonl(out_path, filtered.kept)
    rejects_path = out_path.with_name(out_path.stem + ".rejects.jsonl")
    write_jsonl(rejects_path, (r.to_dict() for r in filtered.rejects))
    report = {
        "seed_file": str(seeds.path),
        "seed_rows": len(seeds.rows),
        "format": seeds.fmt.kind,
        "fields": seeds.fields,
        "generator": source,
        "requested": n,
        **filtered.report(len(generated)),
        "output": str(out_path),
        "rejects": str(rejects_path),
    }
    write_json(out_path.with_name(out_path.stem + ".report.json"), report)
    return report
