"""The evaluate stage: is the tuned model better than the base, by how much, how sure are we, at what cost?

Runs the base model (zero-shot and k-shot) and the tuned model on the same test rows with the same decoding,
then writes to ``eval/``: ``metrics.json`` ({"base": ..., "tuned": ...}), ``comparison.json`` (delta, 95% CI and
p-value per metric), ``baselines.json`` (k-shot base, majority class), ``analysis.json`` (per-class details,
error analysis, forgetting, bias probe, graders), ``gate.json`` (when ``eval.gate`` is set) and ``predictions.jsonl``.
Graders (``eval.graders``) add the metrics ``grader:<name>``.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

from tunesmith.core.console import console
from tunesmith.core.errors import TunesmithError
from tunesmith.core.fs import atomic_dir, read_jsonl, write_json, write_jsonl
from tunesmith.curate.grading import chat_item, grade_outputs
from tunesmith.data.records import Chat, Message
from tunesmith.metrics.bias import counterfactual, flip_rate
from tunesmith.metrics.compare import compare, compare_correctness
from tunesmith.metrics.error_analysis import error_analysis
from tunesmith.metrics.text import extract_label, normalize
from tunesmith.pipeline.gate import gate_report
from tunesmith.pipeline.prompt_variants import variant_predictions, variant_replies, variant_results
from tunesmith.pipeline.risk_probes import RiskProbes, continue_probes, memorisation_report, risk_probes
from tunesmith.pipeline.trained import TrainedRun
from tunesmith.recipes.contract import ChatEvaluation

FORGETTING_MAX_TOKENS = 256
FACT_TOKENS = 16  # a few words answer a factual question
# comparison.json's entry for the tuned model's answers against the base model forced to pick a label (the argmax
# of its label probabilities): a gain over zero-shot text that is only the answer format learned shows up here.
CONSTRAINED_KEY = "accuracy_vs_base_constrained"


def evaluate_run(
    run: TrainedRun, split: str = "test", chats: list[Chat] | None = None, out_dir: Path | None = None
) -> dict:
    """Evaluate a trained run; return ``{"base": {...}, "tuned": {...}}`` metrics.

    By default on the prepared test split, written to ``eval/`` (the pipeline's evaluate stage). ``split``
    picks another prepared split; ``chats`` (rows of another file) with ``out_dir`` evaluates other data.
    """
    import torch

    cfg, recipe = run.config, chat_evaluation(run)
    if not run.dir.is_done("train"):
        raise TunesmithError(f"{run.dir.root}: evaluation needs a trained model; run `tunesmith train` first")
    if chats is None:
        path = run.dir.split(split)
        if not path.is_file():
            raise TunesmithError(f"{run.dir.root}: no prepared '{split}' split ({path} does not exist)")
        chats = [Chat.from_dict(r) for r in read_jsonl(path)]
    out_dir = out_dir or (run.dir.eval if split == "test" else run.dir.root / f"eval-{split}")
    references = [c.reference() for c in chats]
    labels = cfg.data.labels
    tokenizer = run.tuned_tokenizer()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = {"max_new_tokens": cfg.eval.max_new_tokens, "batch_size": cfg.eval.batch_size, "labels": labels}
    probes = _bias_probes(chats) if cfg.eval.bias_probe else []
    general = _general_examples(run, tokenizer) if cfg.eval.forgetting else []
    train_path = run.dir.split("train")
    train = [Chat.from_dict(r) for r in read_jsonl(train_path)] if train_path.is_file() else []
    train = [c for c in train if c.meta.get("task", cfg.data.name) == cfg.data.name]  # this task's rows of a mix
    shots = _few_shot_chats(train, chats, cfg.eval.few_shot, cfg.training.seed) if cfg.eval.baseline else None
    risk = risk_probes(cfg, train, tokenizer)
    console.print(
        f"[bold]evaluate[/]: {len(chats)} test rows, {len(probes)} bias probes, {len(general)} general-chat rows"
    )

    model = run.load_base().to(device)
    base = (
        _model_outputs(run, model, tokenizer, chats, probes, general, gen, "base", risk) if cfg.eval.baseline else None
    )
    k_shot = recipe.generate_replies(model, tokenizer, shots, description="base k-shot", **gen) if shots else None
    variants = cfg.eval.prompt_variants  # each asked before the adapter attaches (that changes the base in place)
    base_variants = variant_replies(recipe, model, tokenizer, chats, variants, gen, "base") if base else None
    tuned_model = run.tuned_from_base(model).to(device)
    tuned = _model_outputs(run, tuned_model, tokenizer, chats, probes, general, gen, "tuned", risk)
    tuned_variants = variant_replies(recipe, tuned_model, tokenizer, chats, variants, gen, "tuned")

    def score(replies: list[Any]) -> dict[str, float]:
        return recipe.score(replies, references, labels)

    metrics = {"tuned": score(tuned["replies"])}
    baselines: dict[str, dict[str, float]] = {}
    comparison = None
    if base is not None:
        metrics = {"base": score(base["replies"]), **metrics}
        comparison = compare(
            lambda preds, refs: recipe.score(preds, refs, labels),
            base["replies"],
            tuned["replies"],
            references,
            correct=lambda pred, ref: recipe.is_correct(pred, ref, labels),
            n_resamples=cfg.eval.bootstrap_samples,
            seed=cfg.training.seed,
        )
        against_constrained = _against_base_constrained(recipe, base["replies"], tuned["replies"], references, labels)
        if against_constrained is not None:
            comparison[CONSTRAINED_KEY] = compare_correctness(
                *against_constrained, n_resamples=cfg.eval.bootstrap_samples, seed=cfg.training.seed
            )
    if k_shot is not None:
        baselines[f"base_{cfg.eval.few_shot}_shot"] = score(k_shot)
    if labels:
        majority = _majority_label(train)
        if majority is not None:
            baselines["majority_class"] = score([recipe.reply(majority, 1.0)] * len(chats))

    inputs = [c.prompt_messages()[-1].content for c in chats]
    analysis = {
        name: _analysis(recipe, outputs, inputs, references, labels, probes)
        for name, outputs in (("base", base), ("tuned", tuned))
        if outputs is not None
    }
    if general:
        analysis["forgetting"] = _forgetting(base, tuned, cfg.eval.forgetting_warn_pct, len(general))
    _risk_analysis(analysis, risk, base, tuned, cfg.eval.bootstrap_samples, cfg.training.seed)
    graded = None
    if cfg.eval.graders:
        texts = {name: [r.text for r in o["replies"]] for name, o in (("base", base), ("tuned", tuned)) if o}
        graded = grade_outputs(cfg, texts, [chat_item(c) for c in chats], inputs, references)
        for name, values in graded.metrics.items():
            metrics[name].update(values)
        if comparison is not None:
            comparison.update(graded.comparison)
        analysis["graders"] = graded.analysis

    rows = []
    for i, (chat, reference) in enumerate(zip(chats, references, strict=True)):
        row = {"source": chat.source, "input": inputs[i], "reference": reference}
        row["base"] = base["replies"][i].text if base else None
        if k_shot is not None:
            row["base_k_shot"] = k_shot[i].text
        row["tuned"] = tuned["replies"][i].text
        row["tuned_confidence"] = round(tuned["replies"][i].confidence, 4)
        if tuned["replies"][i].label_probs is not None:
            row["tuned_label_probs"] = [round(p, 5) for p in tuned["replies"][i].label_probs]
        if base and base["replies"][i].label_probs is not None:
            row["base_label_probs"] = [round(p, 5) for p in base["replies"][i].label_probs]
        if graded is not None:
            row["grades"] = graded.per_row[i]
        rows.append(row)
    with atomic_dir(out_dir) as tmp:
        write_jsonl(tmp / "predictions.jsonl", rows)
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "baselines.json", baselines)
        write_json(tmp / "analysis.json", analysis)
        if comparison is not None:
            write_json(tmp / "comparison.json", comparison)
        if cfg.eval.gate:
            write_json(tmp / "gate.json", gate_report(cfg, metrics, comparison or {}, analysis))
        if variants:
            results = variant_results(variants, score, tuned_variants, base_variants, metrics)
            write_json(tmp / "prompt_variants.json", results)
            answers = variant_predictions(variants, chats, tuned_variants, base_variants)
            write_jsonl(tmp / "prompt_variants.jsonl", answers)
    forgetting = analysis.get("forgetting")
    if forgetting and forgetting.get("warning"):
        console.print(f"[yellow]warning: {forgetting['warning']}[/]")
    if out_dir == run.dir.eval:
        run.dir.mark_done("evaluate", {"rows": len(chats)})
    return metrics


def _against_base_constrained(
    recipe: ChatEvaluation, base: list[Any], tuned: list[Any], references: list[str], labels: list[str] | None
) -> tuple[list[bool], list[bool]] | None:
    """Per-row correctness of the base model's constrained answers and of the tuned model's replies; None when
    the replies carry no label probabilities (no label set, or labels sharing a first token)."""
    if not labels or not base or any(r.label_probs is None for r in base):
        return None
    base_right = [
        labels[max(range(len(labels)), key=r.label_probs.__getitem__)] == ref
        for r, ref in zip(base, references, strict=True)
    ]
    tuned_right = [recipe.is_correct(r, ref, labels) for r, ref in zip(tuned, references, strict=True)]
    return base_right, tuned_right


def _model_outputs(
    run: TrainedRun,
    model: Any,
    tokenizer: Any,
    chats: list[Chat],
    probes: list[tuple[int, Chat]],
    general: list[Any],
    gen: dict[str, int],
    name: str,
    risk: RiskProbes,
) -> dict[str, Any]:
    """Everything one model contributes: test replies, counterfactual replies, general-chat loss, risk probes."""
    recipe = chat_evaluation(run)
    from tunesmith.engine import evaluate_loss, make_accelerator

    replies = recipe.generate_replies(model, tokenizer, chats, description=name, **gen)
    probe_replies = (
        recipe.generate_replies(model, tokenizer, [c for _, c in probes], description=f"{name} bias", **gen)
        if probes
        else []
    )
    general_loss = None
    if general:
        accelerator = make_accelerator(run.config.training.precision)
        fns = recipe.task_fns(tokenizer)
        general_loss = evaluate_loss(model, general, fns, run.config.eval.batch_size, accelerator)
    batch = run.config.eval.batch_size
    facts = []
    if risk.facts:
        asked = {**gen, "labels": None, "max_new_tokens": FACT_TOKENS}
        facts = recipe.generate_replies(model, tokenizer, risk.facts, description=f"{name} facts", **asked)
    return {
        "replies": replies,
        "probe_replies": probe_replies,
        "general_loss": general_loss,
        "memorisation": continue_probes(model, tokenizer, risk.memorisation, batch) if risk.memorisation else [],
        "canaries": continue_probes(model, tokenizer, risk.canaries, batch) if risk.canaries else [],
        "facts": [r.text for r in facts],
    }


def _risk_analysis(
    analysis: dict[str, Any], risk: RiskProbes, base: dict | None, tuned: dict, n_resamples: int, seed: int
) -> None:
    """Memorisation per model (and tuned vs base with a CI), factual drift (needs the base model)."""
    from tunesmith.metrics.compare import compare_correctness
    from tunesmith.metrics.risk import factual_drift

    if risk.memorisation or risk.canaries:
        memorised = {}
        for name, outputs in (("base", base), ("tuned", tuned)):
            if outputs is not None:
                report = memorisation_report(risk, outputs["memorisation"], outputs["canaries"])
                memorised[name] = report.pop("memorised")
                analysis.setdefault(name, {})["memorisation"] = report
        if "base" in memorised and memorised["tuned"]:
            comparison = compare_correctness(memorised["base"], memorised["tuned"], n_resamples, seed)
            analysis["memorisation_comparison"] = comparison
    if risk.questions and base is not None:
        analysis["factual_drift"] = factual_drift(risk.questions, base["facts"], tuned["facts"], n_resamples, seed)


def _analysis(
    recipe: ChatEvaluation,
    outputs: dict[str, Any],
    inputs: list[str],
    references: list[str],
    labels: list[str] | None,
    probes: list[tuple[int, Chat]],
) -> dict[str, Any]:
    replies = outputs["replies"]
    texts = [r.text for r in replies]
    correct = [recipe.is_correct(r, ref, labels) for r, ref in zip(replies, references, strict=True)]
    result = {
        "details": recipe.details(replies, references, labels),
        "errors": error_analysis(inputs, references, texts, correct, [r.confidence for r in replies]),
    }
    if probes:

        def answer(text: str) -> str | None:
            return extract_label(text, labels) if labels else normalize(text)

        original = [answer(texts[i]) for i, _ in probes]
        swapped = [answer(r.text) for r in outputs["probe_replies"]]
        result["bias"] = {
            "rows_probed": len(probes),
            "flip_rate": flip_rate(original, swapped),
            "flips": [
                {"input": inputs[i], "counterfactual": chat.prompt_messages()[-1].content, "answer": a, "swapped": b}
                for (i, chat), a, b in zip(probes, original, swapped, strict=True)
                if a != b
            ][:10],
        }
    return result


def _forgetting(base: dict | None, tuned: dict, warn_pct: float, rows: int) -> dict[str, Any]:
    tuned_ppl = math.exp(tuned["general_loss"])
    result: dict[str, Any] = {"rows": rows, "tuned_perplexity": tuned_ppl}
    if base is not None:
        base_ppl = math.exp(base["general_loss"])
        change = 100 * (tuned_ppl - base_ppl) / base_ppl
        result.update(base_perplexity=base_ppl, change_pct=change)
        if change > warn_pct:
            result["warning"] = (
                f"perplexity on general chat rose {change:.1f}% (> {warn_pct}%): the tuned model may have "
                "forgotten general skills; consider a lower learning rate, fewer epochs or mixing in general data"
            )
    return result


def _bias_probes(chats: list[Chat]) -> list[tuple[int, Chat]]:
    """Counterfactual copies of test chats whose last user message mentions a swappable identity term."""
    probes = []
    for index, chat in enumerate(chats):
        prompt = chat.prompt_messages()
        swapped = counterfactual(prompt[-1].content)
        if swapped is not None:
            messages = [*prompt[:-1], Message(prompt[-1].role, swapped), Message("assistant", chat.reference())]
            probes.append((index, Chat(messages, source=chat.source)))
    return probes


def _general_examples(run: TrainedRun, tokenizer: Any) -> list[Any]:
    text = resources.files("tunesmith.resources").joinpath("general_chat.jsonl").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.strip()][: run.config.eval.forgetting_rows]
    chats = [Chat([Message(m["role"], m["content"]) for m in json.loads(r)["messages"]]) for r in rows]
    encoded = [chat_evaluation(run).encode(c, tokenizer, "assistant", FORGETTING_MAX_TOKENS) for c in chats]
    return [e for e in encoded if e.n_targets > 0]


def _few_shot_chats(train: list[Chat], chats: list[Chat], k: int, seed: int) -> list[Chat] | None:
    """Each test chat preceded by the same k training examples as earlier turns (seeded choice); None if k is 0."""
    k = min(k, len(train))
    if k == 0:
        return None
    shots = random.Random(seed).sample(train, k)
    context: list[Message] = []
    for shot in shots:
        context += [m for m in shot.prompt_messages() if m.role != "system"]
        context.append(Message("assistant", shot.reference()))
    result = []
    for chat in chats:
        prompt = chat.prompt_messages()
        system = [m for m in prompt if m.role == "system"]
        rest = [m for m in prompt if m.role != "system"]
        result.append(Chat([*system, *context, *rest, Message("assistant", chat.reference())], source=chat.source))
    return result


def _majority_label(train: list[Chat]) -> str | None:
    counts = Counter(chat.reference() for chat in train)
    return counts.most_common(1)[0][0] if counts else None


def chat_evaluation(run: TrainedRun) -> ChatEvaluation:
    evaluation = run.recipe.evaluation
    if not isinstance(evaluation, ChatEvaluation):
        raise TunesmithError(f"{run.dir.root}: a '{run.config.task.name}' run is not evaluated on chat replies")
    return evaluation
