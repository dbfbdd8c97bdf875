"""`tunesmith data ...`: check a data file, preview what the model is trained on."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from tunesmith.config import DataConfig, DataFormat, load_config
from tunesmith.errors import ConfigError

data_app = typer.Typer(no_args_is_help=True, help="Check data files and preview training examples.")
out = Console(soft_wrap=True, highlight=False)


@data_app.command("check")
def check(
    file: str = typer.Argument(..., help="A data file, folder or hf:NAME."),
    fmt: str = typer.Option("auto", "--format", "-f", help="Row format (messages, labeled, ...) or reader (conll)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Count tokens with this model's tokenizer."),
    against: str | None = typer.Option(None, "--against", help="Also report rows that occur in this other file."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Validate every row; print problems grouped by kind with line numbers. Exit 1 if any row has an error."""
    from tunesmith.data.check import check_file, context_length, format_text
    from tunesmith.data.load import READERS

    if fmt not in READERS and fmt not in typing.get_args(DataFormat):
        choices = ", ".join([*typing.get_args(DataFormat), *READERS])
        raise ConfigError(f"--format {fmt!r}: expected a row format or a reader, one of {choices}")
    data = DataConfig(train=file, **({"reader": fmt} if fmt in READERS else {"format": fmt}))
    tokenizer = max_tokens = None
    if model:
        from tunesmith.config import ModelConfig
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
    from tunesmith.data.render import IGNORE_INDEX, encode_chat, ensure_chat_template
    from tunesmith.models.load import load_tokenizer
    from tunesmith.models.resolve import resolve_model

    cfg = load_config(config, overrides)
    chats = prepare_data(cfg.data, cfg.task, cfg.training.seed).splits["train"][:n]
    tokenizer = load_tokenizer(cfg.model, resolve_model(cfg.model.name))
    ensure_chat_template(tokenizer)
    for chat in chats:
        encoded = encode_chat(chat, tokenizer, cfg.task.train_on, cfg.training.max_seq_len)
        pieces, current, trained = [], [], False
        for token, label in [*zip(encoded.input_ids, encoded.labels, strict=True), (None, None)]:
            is_trained = label is not None and label != IGNORE_INDEX
            if token is None or is_trained != trained:
                if current:
                    text = escape(tokenizer.decode(current))
                    pieces.append(f"[bold green]⟦{text}⟧[/]" if trained else f"[dim]{text}[/]")
                current, trained = [], is_trained
            if token is not None:
                current.append(token)
        out.rule(f"{escape(chat.source)}: {len(encoded.input_ids)} tokens, {encoded.n_targets} trained")
        out.print("".join(pieces))
        if encoded.truncated:
            out.print(f"[yellow]truncated to training.max_seq_len={cfg.training.max_seq_len}[/]")
