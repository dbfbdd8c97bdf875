"""`tunesmith data ...`: check a data file, preview what the model is trained on."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from tunesmith.core.config import DataConfig, DataFormat, load_config
from tunesmith.core.errors import ConfigError

data_app = typer.Typer(no_args_is_help=True, help="Check data files and preview training examples.")
out = Console(soft_wrap=True, highlight=False)


@data_app.command("check")
def check(
    file: str = typer.Argument(..., help="A data file, folder or hf:NAME."),
    fmt: str = typer.Option("auto", "--format", "-f", help="Row format (messages, labeled, ...) or reader (conll)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Count tokens with this model's tokenizer."),
    against: str | None = typer.Option(None, "--against", help="Also report rows that occur in this other file."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Read the file with this run config's data settings (columns, header, ...)."
    ),
    header: bool | None = typer.Option(
        None, "--header/--no-header", help="Whether the first row of a CSV/TSV/Excel file names the columns."
    ),
    columns: list[str] = typer.Option(
        [], "--column", help="Map a column: text=review, text=0 (by position), text=review.body (repeatable)."
    ),
    sheet: str | None = typer.Option(None, "--sheet", help="Excel: the sheet to read."),
    text_template: str | None = typer.Option(
        None, "--text-template", help="Input text from columns: '{title}. {text}'."
    ),
    tag_column: str | None = typer.Option(None, "--tag-column", help="CoNLL: the tag column's position (-1: last)."),
    tag_scheme: str | None = typer.Option(None, "--tag-scheme", help="IOB1, BIO or BIOES: check and convert tags."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Validate every row; print problems grouped by kind with line numbers. Exit 1 if any row has an error."""
    from tunesmith.data.check import check_file, context_length, format_text
    from tunesmith.data.load import READERS

    if fmt not in READERS and fmt not in typing.get_args(DataFormat):
        choices = ", ".join([*typing.get_args(DataFormat), *READERS])
        raise ConfigError(f"--format {fmt!r}: expected a row format or a reader, one of {choices}")
    settings = load_config(config).data.model_dump(exclude={"train", "validation", "test", "mix"}) if config else {}
    if fmt != "auto":
        settings["reader" if fmt in READERS else "format"] = fmt
    for item in columns:
        ours, sep, theirs = item.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise ConfigError(f"--column {item!r}: expected NAME=COLUMN, e.g. text=review or text=0")
        settings.setdefault("columns", {})[ours.strip()] = theirs.strip()
    given = {"header": header, "sheet": sheet, "text_template": text_template}
    given |= {"tag_column": tag_column, "tag_scheme": tag_scheme}
    settings |= {key: value for key, value in given.items() if value is not None}
    try:
        data = DataConfig(train=file, **settings)
    except ValidationError as exc:
        raise ConfigError(f"data check: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    tokenizer = max_tokens = None
    if model:
        from tunesmith.core.config import ModelConfig
        from tunesmith.models.load import load_tokenizer
        from tunesmith.models.resolve import resolve_model

        resolved = resolve_model(model)
        tokenizer = load_tokenizer(ModelConfig(name=model), resolved)
        from tunesmith.data.render import ensure_chat_template

        ensure_chat_template(tokenizer)
        max_tokens = context_length(resolved.location)
    result = check_file(file, data, tokenizer, max_tokens, against)
    if as_json:
        out.print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False), markup=False)
    else:
        out.print(escape(format_text(result)))
    raise typer.Exit(1 if result.errors else 0)


@data_app.command("preview")
def preview(
    config: Path = typer.Argument(..., help="Run configuration (YAML)."),
    n: int = typer.Option(3, "--n", help="How many training examples to show."),
    overrides: list[str] = typer.Option([], "--set", "-s", help="Override a config key (repeatable)."),
) -> None:
    """Print rendered training examples with the trained tokens marked ⟦like this⟧ (and highlighted)."""
    from tunesmith.data.prepare import prepare_data
    from tunesmith.data.render import encode_chat, ensure_chat_template
    from tunesmith.data.tokens import TokenCounter
    from tunesmith.models.load import load_tokenizer
    from tunesmith.models.resolve import resolve_model

    cfg = load_config(config, overrides)
    tokenizer = load_tokenizer(cfg.model, resolve_model(cfg.model.name))
    ensure_chat_template(tokenizer)
    limits = cfg.data.clean.min_tokens or cfg.data.clean.max_tokens  # they need the tokenizer
    tokens = TokenCounter(tokenizer, cfg.training.max_seq_len, dict(cfg.data.label_names)) if limits else None
    chats = prepare_data(cfg.data, cfg.task, cfg.training.seed, tokens=tokens).splits["train"][:n]
    for chat in chats:
        encoded = encode_chat(chat, tokenizer, cfg.task.train_on, cfg.training.max_seq_len)
        pieces = [
            f"[bold green]⟦{escape(text)}⟧[/]" if trained else f"[dim]{escape(text)}[/]"
            for text, trained in encoded.pieces(tokenizer)
        ]
        out.rule(f"{escape(chat.source)}: {len(encoded.input_ids)} tokens, {encoded.n_targets} trained")
        out.print("".join(pieces))
        if encoded.truncated:
            out.print(f"[yellow]truncated to training.max_seq_len={cfg.training.max_seq_len}[/]")


@data_app.command("synthesize")
def synthesize(
    seed_file: Path = typer.Option(..., "--seed", help="Seed rows (JSONL/CSV/...): flat fields or single-turn chats."),
    n: int = typer.Option(..., "--n", min=1, help="How many new rows to generate (before filtering)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Local model: alias, hub id or folder."),
    endpoint: str | None = typer.Option(
        None, "--endpoint", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1"
    ),
    endpoint_model: str | None = typer.Option(None, "--endpoint-model", help="Model id there (default: its first)."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="OPENAI_API_KEY", help="Key for the endpoint."),
    chat_api: bool = typer.Option(False, "--chat", help="Ask the endpoint's chat API for whole rows (parsed)."),
    output: Path | None = typer.Option(None, "--out", "-o", help="Kept rows (JSONL); default SEED.synth.jsonl."),
    k: int = typer.Option(3, "--k", min=1, help="Seed examples shown per request."),
    temperature: float = typer.Option(0.9, "--temperature", min=0.0),
    top_p: float = typer.Option(0.95, "--top-p", min=0.0, max=1.0),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1, help="Per field (per row with --chat: x4)."),
    min_chars: int = typer.Option(1, "--min-chars", min=0, help="Drop rows whose text is shorter."),
    max_chars: int | None = typer.Option(None, "--max-chars", min=1, help="Drop rows whose text is longer."),
    seed: int = typer.Option(0, "--seed-rng", help="Seed of the example choice and sampling."),
) -> None:
    """Generate new rows from seed rows (self-instruct style) with a local model or an endpoint, then filter them
    (format validation, length, labels, dedup against the seeds and each other); writes kept rows, rejects, report."""
    from tunesmith.core.config import CleanConfig
    from tunesmith.curate.synthesize import EndpointGenerator, LocalGenerator
    from tunesmith.curate.synthesize import synthesize as run_synthesis

    if (model is None) == (endpoint is None):
        raise ConfigError("data synthesize: give exactly one of --model (local) or --endpoint (OpenAI-compatible URL)")
    if chat_api and endpoint is None:
        raise ConfigError("data synthesize: --chat applies to --endpoint only")
    if max_chars is not None and max_chars <= min_chars:
        raise ConfigError("data synthesize: --max-chars must be greater than --min-chars")
    if endpoint is not None:
        generator = EndpointGenerator(endpoint, endpoint_model, api_key, max_new_tokens, temperature, top_p)
        source = f"endpoint {endpoint} ({generator.model})"
    else:
        generator = LocalGenerator(str(model), max_new_tokens, temperature, top_p, seed)
        source = f"model {model}"
    out_path = output or seed_file.with_name(seed_file.stem + ".synth.jsonl")
    report = run_synthesis(
        seed_file,
        n,
        out_path,
        generator,
        k=k,
        seed=seed,
        chat=chat_api,
        chat_max_tokens=max_new_tokens * 4,
        clean=CleanConfig(min_chars=min_chars, max_chars=max_chars),
        source=source,
    )
    reasons = ", ".join(f"{k} {v}" for k, v in report["rejected_by_reason"].items()) or "none"
    out.print(
        f"generated {report['generated']}: kept {report['kept']}, rejected {report['rejected']} ({reasons})\n"
        f"kept rows: {report['output']}\nrejects: {report['rejects']}"
    )


@data_app.command("annotate")
def annotate(
    file: Path = typer.Argument(..., help="A data file with a text column (JSONL, JSON, CSV, TSV, ...)."),
    labels: str | None = typer.Option(
        None, "--labels", "-l", help="The label set: positive,negative or 0=negative,1=positive (file value=word)."
    ),
    out_file: Path = typer.Option(
        ..., "--out", "-o", help="Where to write the labelled rows (.jsonl/.json/.csv/.tsv)."
    ),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="A generative model, or a trained run directory."),
    shots: int = typer.Option(0, "--shots", "-k", min=0, help="Show K rows a person labelled as examples (few-shot)."),
    text_column: str | None = typer.Option(None, "--text-column", help="Column holding the text (default: text)."),
    label_column: str = typer.Option("label", "--label-column", help="Column holding the label."),
    calibrate: bool = typer.Option(True, help="Divide out the model's prior over the labels (content-free inputs)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Pre-label rows without a person's label: each label word's likelihood -> label, confidence, label_source."""
    from tunesmith.curate.annotate import annotate_file
    from tunesmith.data.labelfile import LabelSet
    from tunesmith.pipeline.annotators import load_scorer, run_label_set

    label_set = LabelSet.parse(labels) if labels else run_label_set(model)
    scorer = lambda: load_scorer(model, calibrate=calibrate)  # noqa: E731 (loaded only if a row needs a label)
    result = annotate_file(file, label_set, out_file, scorer, shots, text_column, label_column)
    if as_json:
        out.print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False), markup=False)
        return
    counts = ", ".join(f"{k}: {v}" for k, v in result.counts.items()) or "none"
    out.print(
        f"labelled {result.labelled} rows with {escape(model)}"
        + (f" ({result.shots}-shot)" if result.shots else "")
        + f" ({counts}); kept {result.kept_human} labels set by a person; wrote {escape(str(result.out))}"
    )
    if result.outside_label_set:
        out.print(
            f"[yellow]{len(result.outside_label_set)} labels set by a person are outside the label set[/] "
            f"({', '.join(label_set.values)}); kept as they are:"
        )
        for line in result.outside_label_set[:20]:
            out.print(f"  {escape(line)}")
    if result.rejects:
        out.print(f"[yellow]{len(result.rejects)} rows could not be read[/] and are not in the output:")
        for reject in result.rejects[:20]:
            out.print(f"  {escape(reject.source)}: {escape(reject.reason)}")


@data_app.command("audit")
def audit(
    file: Path = typer.Argument(..., help="A labelled data file (JSONL, JSON, CSV, TSV, ...)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full audit as JSON."),
    save: Path | None = typer.Option(None, "--save", help="Also write the audit as JSON here (the studio reads it)."),
    text_column: str | None = typer.Option(None, "--text-column", help="Column holding the text (default: text)."),
    label_column: str = typer.Option("label", "--label-column", help="Column holding the label."),
    model: str = typer.Option(
        "minilm-l6", "--model", "-m", help="Encoder (embeddings; fine-tuned by --scorer finetune)."
    ),
    scorer: str = typer.Option(
        "embeddings",
        "--scorer",
        help="Label errors from: embeddings (frozen, + logistic regression; seconds) or finetune (a head "
        "fine-tuned per fold; minutes). See docs/annotate.md.",
    ),
    run: list[Path] | None = typer.Option(
        None,
        "--run",
        help="Score label errors with this trained run instead: a classify run, or an sft run answering with label "
        "words (the quickstart). Held out only for rows it did not train on; the report says which. Repeat it to "
        "use several runs together.",
    ),
    stack: bool | None = typer.Option(
        None,
        "--stack/--no-stack",
        help="Refit the scorer's probabilities on this file's own labels, k-fold, with the sentence embeddings "
        "(default with --run: a run trained elsewhere brings its own class balance and bias; docs/annotate.md). "
        "With --no-stack, several runs' probabilities are averaged.",
    ),
    folds: int = typer.Option(5, "--folds", min=2, help="Folds for out-of-fold probabilities."),
    clusters: int | None = typer.Option(
        None, "--clusters", min=2, help="Number of k-means clusters (default ~sqrt(n/2))."
    ),
    top: int = typer.Option(15, "--top", min=1, help="Rows shown per section in the text output."),
) -> None:
    """Likely label errors (confident learning), clusters, outliers and duplicates: what needs a person's look."""
    from tunesmith.core.fs import write_json
    from tunesmith.curate.audit import audit_file, format_text
    from tunesmith.curate.audit_scorers import SCORERS

    if scorer not in SCORERS:
        raise ConfigError(f"--scorer {scorer!r}: expected one of {', '.join(SCORERS)}")
    chosen: typing.Any = scorer
    if run:
        from tunesmith.pipeline.audit_run import run_scorer

        chosen = [run_scorer(path) for path in run]
    stacked = bool(run) if stack is None else stack
    report = audit_file(file, text_column, label_column, model, folds, clusters, scorer=chosen, stack=stacked)
    if save:
        write_json(save, report)
    if as_json:
        out.print(json.dumps(report, indent=2, ensure_ascii=False), markup=False)
    else:
        out.print(escape(format_text(report, top)))


@data_app.command("feedback")
def feedback(
    log: Path = typer.Argument(..., help="A chat log (JSONL, one conversation per line) with rated replies."),
    out_file: Path = typer.Option(..., "--out", "-o", help="Where to write the prompt/completion/label rows."),
) -> None:
    """Turn a chat log with per-reply ratings (up/down) into KTO training rows (see docs/preference.md)."""
    from tunesmith.data.feedback_log import write_feedback

    summary = write_feedback(log, out_file)
    out.print(
        f"{summary.rows} rated replies from {summary.conversations} conversations "
        f"({summary.desirable} up, {summary.rows - summary.desirable} down; {summary.unrated} unrated skipped) "
        f"-> {escape(str(out_file))}"
    )
