"""A prepared split as the engine's examples, with the token statistics and drops written beside it."""

from __future__ import annotations

import statistics
from typing import Any

from tunesmith.core.console import console
from tunesmith.core.errors import TunesmithError
from tunesmith.core.fs import read_jsonl, write_json, write_jsonl
from tunesmith.data.records import record_from_dict
from tunesmith.pipeline.trained import TrainedRun
from tunesmith.recipes.contract import EngineTraining


def encode_split(run: TrainedRun, split: str, tokenizer: Any) -> list[Any]:
    """Tokenize a prepared split; rows left with no target tokens are dropped, counted and kept with a reason."""
    cfg = run.config
    training = run.recipe.training
    assert isinstance(training, EngineTraining)  # own-loop recipes encode their own prompts
    examples, dropped, lengths, truncated = [], [], [], 0
    for row in read_jsonl(run.dir.split(split)):
        record = record_from_dict(row)
        encoded = training.encode_row(record, tokenizer, cfg)
        truncated += encoded.truncated
        lengths.append(len(encoded.input_ids))
        if encoded.n_targets == 0:
            dropped.append(
                {
                    "source": record.source,
                    "reason": "no target tokens left after truncation to "
                    f"training.max_seq_len={cfg.training.max_seq_len}",
                }
            )
            continue
        examples.append(encoded)
    write_json(
        run.dir.data / f"{split}_tokens.json",
        {
            "examples": len(examples),
            "dropped": len(dropped),
            "truncated": truncated,
            "tokens": {
                "min": min(lengths),
                "median": statistics.median(lengths),
                "max": max(lengths),
                "total": sum(lengths),
            },
        },
    )
    write_jsonl(run.dir.data / f"{split}_dropped.jsonl", dropped)
    if truncated or dropped:
        console.print(
            f"[yellow]{split}: {truncated} examples truncated to {cfg.training.max_seq_len} tokens, "
            f"{len(dropped)} dropped (see {run.dir.data / f'{split}_dropped.jsonl'})[/]"
        )
    if not examples:
        raise TunesmithError(f"{split}: no examples with target tokens; raise training.max_seq_len")
    return examples
