"""Batch prediction over a JSONL / CSV / TSV file with a trained run; resumable, each row written exactly once.

Each output line is ``{"row": N, "input": {...the input row...}, "prediction": "..."}`` (``N`` is the row's line in
the input file), appended and flushed batch by batch. Rerunning the same command skips the rows already in the
output; a line torn by a kill is dropped and redone. A row that cannot become a prompt is written once with
``"prediction": null`` and an ``"error"``.

Classification runs write the predicted label with ``"confidence"`` and every label's ``"probabilities"``. Generative
runs answer greedily unless sampling is asked for (``temperature`` > 0); with a ``seed`` each batch is seeded by its
first row, so a rerun (or a resumed run, whose batches start where the interrupted one stopped) samples the same.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tunesmith.core.console import console
from tunesmith.core.errors import DataError, TunesmithError
from tunesmith.data.formats import canonical
from tunesmith.data.load import Row, read_rows
from tunesmith.data.records import ROLES, Chat, Labeled, Message, Pair
from tunesmith.pipeline.task_evaluation import task_evaluation
from tunesmith.pipeline.trained import TrainedRun


@dataclass
class PredictSummary:
    rows: int  # usable rows in the input
    skipped: int  # already in the output
    written: int  # newly predicted (or written with an error)
    errors: int
    rejected: int  # lines of the input that are not rows at all (malformed JSON, wrong field count)


@dataclass
class Sampling:
    """Decoding of generative runs: greedy when ``temperature`` is 0."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def options(self) -> dict[str, Any] | None:
        if self.temperature <= 0:
            return None
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0}


def predict_file(
    run: TrainedRun,
    input_path: Path,
    output_path: Path,
    batch_size: int,
    max_new_tokens: int,
    sampling: Sampling | None = None,
    load: Callable[[], tuple[Any, Any]] | None = None,
) -> PredictSummary:
    """Predict every row not yet in ``output_path``; ``load`` gives the model and tokenizer to use (e.g. the
    onnxruntime backend, ship/onnx_runtime.py) instead of the run's tuned PyTorch model."""
    import torch

    if output_path.suffix.lower() != ".jsonl":
        raise TunesmithError(f"--output {output_path}: predictions are written as JSON lines; use a .jsonl file")
    sampling = sampling or Sampling()
    recipe = run.recipe
    classifies = recipe.predict_texts is not None
    transforms = recipe.predicts_targets  # source text -> generated target, by the recipe
    if classifies and sampling.temperature > 0:
        raise TunesmithError("--temperature: a classification run picks the most probable label; it does not sample")
    if transforms and sampling.temperature > 0:
        raise TunesmithError("--temperature: seq2seq runs decode as configured (task.seq2seq.num_beams); no sampling")
    chats = recipe.chat_replies is not None  # answers chat prompts, like sft (preference and RL policies too)
    if not (classifies or transforms or chats):
        raise TunesmithError(
            f"tunesmith predict answers rows with chat, classification and seq2seq runs; this is a "
            f"'{run.config.task.name}' run.\n  fix: use `tunesmith eval RUN --data FILE` to score it on a file"
        )
    rows, rejects, columns = read_rows(input_path)
    builder: PromptBuilder | TextBuilder | SourceBuilder
    if classifies:
        builder = TextBuilder(run, input_path, columns)
    elif transforms:
        builder = SourceBuilder(run, input_path, columns)
    else:
        builder = PromptBuilder(run, input_path, columns)
    done = _done_rows(output_path, {row.line: row.values for row in rows})
    todo = [row for row in rows if row.line not in done]
    summary = PredictSummary(len(rows), len(rows) - len(todo), 0, 0, len(rejects))
    if rejects:
        console.print(f"[yellow]{len(rejects)} input lines are not usable rows (first: {rejects[0].reason})[/]")
    if not todo:
        console.print(f"all {len(rows)} rows are already in {output_path}; nothing to do")
        return summary
    if load is not None:
        model, tokenizer = load()
    else:
        model, tokenizer = run.load_tuned()
        model.to("cuda" if torch.cuda.is_available() else "cpu")
    with output_path.open("a", encoding="utf-8") as out, _Progress(len(rows), summary.skipped) as progress:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            prompts = [builder.chat(row) for row in batch]
            good = [p for p in prompts if not isinstance(p, str)]
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed + batch[0].line)
            if classifies or transforms:
                predict = task_evaluation(run).predict_records
                replies = iter(predict(model, tokenizer, good, run.config, "batch") if good else [])
            else:
                assert recipe.chat_replies is not None
                options = sampling.options()
                replies = iter(
                    recipe.chat_replies(model, tokenizer, good, max_new_tokens, batch_size, "batch", sampling=options)
                    if good
                    else []
                )
            lines = []
            for row, prompt in zip(batch, prompts, strict=True):
                record: dict[str, Any] = {"row": row.line, "input": row.values}
                if not isinstance(prompt, str):
                    reply = next(replies)
                    record |= reply if isinstance(reply, dict) else {"prediction": reply}
                else:
                    record |= {"prediction": None, "error": prompt}
                    summary.errors += 1
                lines.append(json.dumps(record, ensure_ascii=False) + "\n")
            out.write("".join(lines))
            out.flush()
            os.fsync(out.fileno())
            summary.written += len(batch)
            progress.advance(len(batch))
    return summary


class PromptBuilder:
    """Turns an input row into the prompt the run was trained on (same format, template, labels, system prompt).

    Unlike the training data, a row to predict needs no target: a ``messages`` row may end with a user turn, and
    a prompt/completion or template row needs only the prompt's fields.
    """

    def __init__(self, run: TrainedRun, path: Path, columns: list[str]) -> None:
        data = run.config.data
        self.template, self.system = data.prompt_template, run.config.task.system_prompt
        self.label_column, self.label_names = data.label_column, {str(k): v for k, v in data.label_names.items()}
        if data.format != "auto":
            self.kind = data.format
        elif self.template:
            self.kind = "template"
        elif "messages" in columns:
            self.kind = "messages"
        elif "prompt" in columns:
            self.kind = "prompt_completion"
        else:
            raise DataError(
                f"{path}: cannot tell how to prompt from its columns ({', '.join(columns)}); this run expects "
                "a 'messages' column or a 'prompt' column"
            )

    def chat(self, row: Row) -> Chat | str:
        """A Chat whose prompt is the row's question (its final assistant turn is empty), or the reason it fails."""
        try:
            messages = self._messages(row.values)
        except (KeyError, ValueError, TypeError) as exc:
            return f"cannot build a prompt from this row: {exc}"
        if self.system and messages[0].role != "system":
            messages.insert(0, Message("system", self.system))
        return Chat(messages=[*messages, Message("assistant", "")], source=f"row {row.line}")

    def _messages(self, values: dict[str, Any]) -> list[Message]:
        if self.kind == "messages":
            raw = values["messages"]
            if not isinstance(raw, list) or not raw:
                raise ValueError("'messages' must be a non-empty list")
            messages = [Message(m["role"], m["content"]) for m in raw]
            if any(m.role not in ROLES or not isinstance(m.content, str) for m in messages):
                raise ValueError(f"each message needs a role ({', '.join(ROLES)}) and text content")
            if messages[-1].role == "assistant":  # the reference answer: predict it, do not show it
                messages = messages[:-1]
            if not messages:
                raise ValueError("no prompt before the assistant reply")
            return messages
        if self.kind == "prompt_completion":
            prompt = values["prompt"]
        else:
            fields = {
                k: self.label_names.get(str(v).strip(), v) if k == self.label_column else v for k, v in values.items()
            }
            prompt = (self.template or "").format(**fields)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("empty prompt")
        return [Message("user", prompt)]


class TextBuilder:
    """Turns an input row into the text (and optional second text) a classification run reads."""

    def __init__(self, run: TrainedRun, path: Path, columns: list[str]) -> None:
        self.columns = dict(run.config.data.columns)
        if "text" not in canonical(dict.fromkeys(columns), self.columns):
            raise DataError(
                f"{path}: no text column to classify (columns: {', '.join(columns)}); this run reads 'text' "
                "(or 'sentence', or the column data.columns maps to text)"
            )

    def chat(self, row: Row) -> Labeled | str:
        """The row as an unlabelled record, or the reason it cannot be classified."""
        values = canonical(row.values, self.columns)
        text, pair = values.get("text"), values.get("text_pair")
        if not isinstance(text, str) or not text.strip():
            return "cannot classify this row: its text is missing or empty"
        if pair is not None and not isinstance(pair, str):
            return "cannot classify this row: text_pair is not text"
        return Labeled(text, "", pair, source=f"row {row.line}")


class SourceBuilder:
    """Turns an input row into the source text a seq2seq run transforms (``source``, ``text``, ``input``...)."""

    KEYS = ("source", "text", "input", "prompt")

    def __init__(self, run: TrainedRun, path: Path, columns: list[str]) -> None:
        self.columns = dict(run.config.data.columns)
        names = canonical(dict.fromkeys(columns), self.columns)
        self.key = next((key for key in self.KEYS if key in names), None)
        if self.key is None:
            raise DataError(
                f"{path}: no source column (columns: {', '.join(columns)}); a seq2seq run reads one of "
                f"{', '.join(self.KEYS)} (or the column data.columns maps to source)"
            )

    def chat(self, row: Row) -> Pair | str:
        """The row as a source -> (unknown) target pair, or the reason it cannot be used."""
        text = canonical(row.values, self.columns).get(self.key)
        if isinstance(text, list):  # SciTLDR-style sentence lists
            text = " ".join(str(t) for t in text)
        if not isinstance(text, str) or not text.strip():
            return f"cannot transform this row: its {self.key} is missing or empty"
        return Pair(text, "", source=f"row {row.line}")


def _done_rows(path: Path, inputs: dict[int, dict[str, Any]]) -> set[int]:
    """Rows already in the output; a torn last line (from a kill) is cut off so it is redone."""
    if not path.is_file():
        return set()
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with path.open("r+b") as handle:
            handle.truncate(len(complete))
    done: set[int] = set()
    for number, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
        try:
            record = json.loads(line)
            row = int(record["row"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise TunesmithError(
                f"{path}:{number}: not a prediction line written by tunesmith; use a new --output file"
            ) from None
        if inputs.get(row) != record.get("input"):
            raise TunesmithError(
                f"{path}:{number}: row {row} differs from that row of the input; this output was written for "
                "another input file.\n  fix: use a new --output file"
            )
        done.add(row)
    return done


class _Progress:
    """A progress bar over rows on a terminal; a line every tenth of the work otherwise (logs, CI)."""

    def __init__(self, total: int, completed: int) -> None:
        self.total, self.completed, self.every = total, completed, max(1, total // 10)
        self.bar: Progress | None = None
        if console.is_terminal:
            self.bar = Progress(
                TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
            )
            self.task = self.bar.add_task("predict", total=total, completed=completed)

    def __enter__(self) -> _Progress:
        if self.bar:
            self.bar.start()
        return self

    def advance(self, n: int) -> None:
        before, self.completed = self.completed, self.completed + n
        if self.bar:
            self.bar.update(self.task, completed=self.completed)
        elif before // self.every != self.completed // self.every or self.completed == self.total:
            console.print(f"predict: {self.completed}/{self.total} rows", highlight=False)

    def __exit__(self, *exc: object) -> None:
        if self.bar:
            self.bar.stop()
