"""Evaluation of preference- and RL-tuned policies: reward accuracy and margins on held-out pairs (or judged
replies), KL of the tuned policy from the reference on its own samples, and the win rate of its greedy replies
against the base model's, judged by a reward model (``eval.reward_model``) or the task's reward.

Writes ``eval/metrics.json`` as ``{"base": {...}, "tuned": {...}}`` and ``eval/predictions.jsonl``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from tunesmith.core.console import console
from tunesmith.core.errors import TunesmithError
from tunesmith.core.fs import atomic_dir, read_jsonl, write_json, write_jsonl
from tunesmith.data.records import Chat, Feedback, Message, Preference, record_from_dict
from tunesmith.metrics.gate import gate_report
from tunesmith.recipes.common import rl as rl_common
from tunesmith.recipes.common.reward_fns import eval_scorer

KL_ROWS = 32  # prompts sampled for the KL estimate


class Models:
    """The tuned policy and its reference (the base model): adapters disabled, or a separately loaded base."""

    def __init__(self, run: Any) -> None:
        from peft import PeftModel

        from tunesmith.models.adapt import needs_base

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = run.tuned_tokenizer()
        base = run.load_base()
        self.tuned = run.tuned_from_base(base if needs_base(run.config.method) else None).to(self.device).eval()
        self.copy = None if isinstance(self.tuned, PeftModel) else base.to(self.device).eval()

    @contextlib.contextmanager
    def reference(self) -> Iterator[Any]:
        with rl_common.reference(self.tuned, self.copy) as model:
            yield model


def _records(run: Any, split: str, chats: list[Any] | None) -> list[Any]:
    if chats is not None:
        return chats
    path = run.dir.split(split)
    if not path.is_file():
        raise TunesmithError(f"{run.dir.root}: no prepared '{split}' split ({path} does not exist)")
    return [record_from_dict(row) for row in read_jsonl(path)]


@torch.no_grad()
def _pair_logps(model: Any, records: Sequence[Any], tokenizer: Any, cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs and token counts: rows (chosen, rejected) per pair, or one per judged reply."""
    from tunesmith.recipes.common.pairs import collate, encode, logps

    examples = [encode(r, tokenizer, cfg.training.max_seq_len) for r in records]
    totals, counts = [], []
    device = next(model.parameters()).device
    for start in range(0, len(examples), cfg.eval.batch_size):
        chunk = examples[start : start + cfg.eval.batch_size]
        batch = {k: v.to(device) for k, v in collate(chunk, tokenizer.pad_token_id).items() if not k.startswith("kl_")}
        total, count, _ = logps(model, batch)
        if "desirable" in batch:
            totals.append(total.view(-1, 1))
            counts.append(count.view(-1, 1))
        else:
            totals.append(torch.stack(total.chunk(2), 1))
            counts.append(torch.stack(count.chunk(2), 1))
    return torch.cat(totals).cpu(), torch.cat(counts).cpu()


def preference_metrics(run: Any, models: Models, records: Sequence[Any]) -> tuple[dict, dict, list[dict]]:
    """(base metrics, tuned metrics, per-row predictions) on preference pairs or judged replies."""
    cfg = run.config
    task, beta = cfg.task.name, cfg.task.preference.beta_for(cfg.task.name)
    policy, counts = _pair_logps(models.tuned, records, models.tokenizer, cfg)
    with models.reference() as ref_model:
        ref, _ = _pair_logps(ref_model, records, models.tokenizer, cfg)
    average, ref_average = policy / counts.clamp(min=1), ref / counts.clamp(min=1)
    # Reference-free tasks (orpo, simpo) reward the length-averaged log-probability; the others the log-ratio.
    rewards = beta * (average if task in ("orpo", "simpo") else policy - ref)
    rows = []
    if isinstance(records[0], Feedback):
        labels = torch.tensor([r.label for r in records])
        tuned = {
            "reward_accuracy": float(((rewards[:, 0] > 0) == labels).float().mean()),
            "desirable_reward": float(rewards[labels, 0].mean()) if labels.any() else 0.0,
            "undesirable_reward": float(rewards[~labels, 0].mean()) if (~labels).any() else 0.0,
        }
        for record, r in zip(records, rewards[:, 0].tolist(), strict=True):
            rows.append({"source": record.source, "label": record.label, "tuned": {"reward": r}})
        return {}, tuned, rows
    margin = rewards[:, 0] - rewards[:, 1]
    tuned = {
        "reward_accuracy": float((margin > 0).float().mean()),
        "reward_margin": float(margin.mean()),
        "chosen_reward": float(rewards[:, 0].mean()),
        "rejected_reward": float(rewards[:, 1].mean()),
        # Which reply the model itself finds likelier (per token): comparable between base and tuned model.
        "preference_accuracy": float((average[:, 0] > average[:, 1]).float().mean()),
    }
    base = {"preference_accuracy": float((ref_average[:, 0] > ref_average[:, 1]).float().mean())}
    for i, record in enumerate(records):
        rows.append(
            {
                "source": record.source,
                "base": {"chosen_logp": ref[i, 0].item(), "rejected_logp": ref[i, 1].item()},
                "tuned": {"chosen_logp": policy[i, 0].item(), "rejected_logp": policy[i, 1].item()},
            }
        )
    return base, tuned, rows


@torch.no_grad()
def kl_from_reference(models: Models, prompts: Sequence[rl_common.PromptExample], cfg: Any) -> float:
    """Mean over sampled completions of sum_t log pi(y_t) - log pi_ref(y_t): an unbiased estimate of KL(pi || ref)."""
    rl = cfg.task.rl.model_copy(update={"max_new_tokens": cfg.eval.max_new_tokens, "temperature": 1.0})
    torch.manual_seed(cfg.training.seed)
    total, n = 0.0, 0
    for start in range(0, min(len(prompts), KL_ROWS), cfg.eval.batch_size):
        chunk = prompts[start : min(start + cfg.eval.batch_size, KL_ROWS)]
        rollout = rl_common.sample(models.tuned, models.tokenizer, chunk, rl, 1)
        batch = {k: v.to(models.device) for k, v in rollout.batch.items()}
        new, mask, _, _ = rl_common.token_logps(models.tuned, batch)
        with models.reference() as ref_model:
            ref, _, _, _ = rl_common.token_logps(ref_model, batch)
        total += float(((new - ref) * mask).sum())
        n += len(chunk)
    return total / max(n, 1)


def win_rate(
    models: Models, prompts: Sequence[rl_common.PromptExample], cfg: Any, scorer: Any
) -> tuple[dict, dict, list]:
    """Greedy replies of base and tuned model scored by ``scorer``: mean reward each, and the tuned win rate
    (ties count half)."""
    rl = cfg.task.rl.model_copy(update={"max_new_tokens": cfg.eval.max_new_tokens})
    replies: dict[str, list[str]] = {"base": [], "tuned": []}
    for start in range(0, len(prompts), cfg.eval.batch_size):
        chunk = prompts[start : start + cfg.eval.batch_size]
        replies["tuned"] += rl_common.sample(models.tuned, models.tokenizer, chunk, rl, 1, greedy=True).texts
        with models.reference() as ref_model:
            replies["base"] += rl_common.sample(ref_model, models.tokenizer, chunk, rl, 1, greedy=True).texts
    messages, refs = [p.messages for p in prompts], [p.reference for p in prompts]
    scores = {name: scorer(messages, texts, refs) for name, texts in replies.items()}
    wins = [1.0 if t > b else 0.5 if t == b else 0.0 for t, b in zip(scores["tuned"], scores["base"], strict=True)]
    n = max(len(wins), 1)
    base = {"mean_reward": sum(scores["base"]) / n}
    tuned = {"mean_reward": sum(scores["tuned"]) / n, "win_rate": sum(wins) / n}
    rows = [
        {
            "base": {"reply": replies["base"][i], "reward": scores["base"][i]},
            "tuned": {"reply": replies["tuned"][i], "reward": scores["tuned"][i]},
        }
        for i in range(len(prompts))
    ]
    return base, tuned, rows


def _grade(cfg: Any, prompts: Sequence[rl_common.PromptExample], replies: dict[str, list[str]]) -> Any:
    """eval.graders on both models' greedy replies; the item of a prompt is its input, reference and messages."""
    from tunesmith.curate.grading import grade_outputs

    items = [
        {
            "input": next((m.content for m in reversed(p.messages) if m.role == "user"), ""),
            "reference": p.reference or "",
            "messages": [{"role": m.role, "content": m.content} for m in p.messages],
        }
        for p in prompts
    ]
    inputs, references = [i["input"] for i in items], [i["reference"] for i in items]
    return grade_outputs(cfg, replies, items, inputs, references)


def _prompts(records: Sequence[Any], tokenizer: Any, cfg: Any) -> list[rl_common.PromptExample]:
    """Each record's prompt, with its reference reply (the chosen one; none for an undesirable judged reply)."""
    prompts = []
    for r in records:
        if isinstance(r, Chat):
            prompts.append(rl_common.encode_prompt(r, tokenizer, cfg.training.max_seq_len))
            continue
        reply = r.chosen if isinstance(r, Preference) else r.completion
        chat = Chat([*r.prompt, Message("assistant", reply)], r.source)
        example = rl_common.encode_prompt(chat, tokenizer, cfg.training.max_seq_len)
        if isinstance(r, Feedback) and not r.label:
            example.reference = None
        prompts.append(example)
    return prompts


def _write(run: Any, out_dir: Path, metrics: dict, rows: list[dict], n: int, files: dict | None = None) -> dict:
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / "metrics.json", metrics)
        write_jsonl(tmp / "predictions.jsonl", rows)
        for name, content in (files or {}).items():
            write_json(tmp / name, content)
    if out_dir == run.dir.eval:
        run.dir.mark_done("evaluate", {"rows": n})
    return metrics


def _merge_rows(a: list[dict], b: list[dict]) -> list[dict]:
    if not a:
        return b
    for row, extra in zip(a, b, strict=False):
        for key in ("base", "tuned"):
            row.setdefault(key, {}).update(extra.get(key, {}))
    return a


def evaluate_preference_run(run: Any, split: str = "test", chats: list[Any] | None = None, out_dir: Any = None):
    """dpo / orpo / simpo / kto: reward accuracy and margins on the split (and on validation, if prepared),
    KL from the reference, and the win rate when a reward model is named."""
    if not run.dir.is_done("train"):
        raise TunesmithError(f"{run.dir.root}: evaluation needs a trained model; run `tunesmith train` first")
    cfg = run.config
    records = _records(run, split, chats)
    out_dir = (
        Path(out_dir) if out_dir is not None else (run.dir.eval if split == "test" else run.dir.root / f"eval-{split}")
    )
    console.print(f"[bold]evaluate[/]: {len(records)} rows ({cfg.task.name})")
    models = Models(run)
    base, tuned, rows = preference_metrics(run, models, records)
    if split == "test" and chats is None and run.dir.split("validation").is_file():
        _, validation, _ = preference_metrics(run, models, _records(run, "validation", None))
        tuned |= {f"validation_{k}": v for k, v in validation.items()}
    prompts = _prompts(records, models.tokenizer, cfg)
    tuned["kl_from_reference"] = kl_from_reference(models, prompts, cfg)
    scorer = eval_scorer(cfg)
    if scorer is not None:
        b, t, win_rows = win_rate(models, prompts, cfg, scorer)
        base, tuned, rows = base | b, tuned | t, _merge_rows(rows, win_rows)
    metrics = {"base": base, "tuned": tuned} if base else {"tuned": tuned}
    _print(metrics)
    return _write(run, out_dir, metrics, rows, len(records))


def evaluate_policy_run(run: Any, split: str = "test", chats: list[Any] | None = None, out_dir: Any = None):
    """ppo / grpo: mean reward of greedy replies (base and tuned), win rate, and KL from the reference."""
    if not run.dir.is_done("train"):
        raise TunesmithError(f"{run.dir.root}: evaluation needs a trained model; run `tunesmith train` first")
    cfg = run.config
    records = _records(run, split, chats)
    out_dir = (
        Path(out_dir) if out_dir is not None else (run.dir.eval if split == "test" else run.dir.root / f"eval-{split}")
    )
    console.print(f"[bold]evaluate[/]: {len(records)} prompts ({cfg.task.name})")
    models = Models(run)
    prompts = _prompts(records, models.tokenizer, cfg)
    base, tuned, rows = win_rate(models, prompts, cfg, eval_scorer(cfg))
    for row, p in zip(rows, prompts, strict=True):
        row["reference"] = p.reference
    tuned["kl_from_reference"] = kl_from_reference(models, prompts, cfg)
    metrics = {"base": base, "tuned": tuned}
    files: dict[str, Any] = {}
    if cfg.eval.graders:
        replies = {name: [row[name]["reply"] for row in rows] for name in ("base", "tuned")}
        graded = _grade(cfg, prompts, replies)
        for name in ("base", "tuned"):
            metrics[name].update(graded.metrics[name])
        for row, grades in zip(rows, graded.per_row, strict=True):
            row["grades"] = grades
        files = {"comparison.json": graded.comparison, "analysis.json": {"graders": graded.analysis}}
    if cfg.eval.gate:
        files["gate.json"] = gate_report(cfg.eval.gate, metrics, files.get("comparison.json", {}), {})
    _print(metrics)
    return _write(run, out_dir, metrics, rows, len(records), files)


def _print(metrics: dict) -> None:
    for side, values in metrics.items():
        console.print(f"  {side}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
