"""The judges of model graders (``score_model``, ``label_model``) and the grading context evaluation and RL rewards
build from ``eval.grading``.

A grader's ``model`` (or ``eval.grading.judge_model``) names a trained run directory (its tuned model), a local
model (an alias such as ``smollm2-135m``, a folder, a hub id), or, when ``judge_base_url`` is set and the name is
neither a run nor a local model, a model of that OpenAI-compatible endpoint. Local judges answer greedily unless the
grader's ``sampling_params`` ask for a temperature (then seeded), and pick a label by the likelihood of each label's
words after the prompt, so the same inputs always get the same grades.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunesmith.core.config import GradingConfig, ModelConfig
from tunesmith.core.errors import ConfigError
from tunesmith.data.records import Message
from tunesmith.data.render import ensure_chat_template, render_prompt
from tunesmith.metrics.graders import Conversation, GradingContext, MissingResource, load_wordnet
from tunesmith.metrics.text import extract_label

LOCAL_BATCH = 8


class ModelJudge:
    """Answers conversations with the model a grader names; each model is loaded once and kept."""

    def __init__(self, grading: GradingConfig) -> None:
        self.grading = grading
        self.loaded: dict[str, Any] = {}

    def replies(self, model: str, conversations: Sequence[Conversation], sampling: dict[str, Any]) -> list[str]:
        return self._backend(model).replies(conversations, sampling)

    def choose(self, model: str, conversations: Sequence[Conversation], labels: Sequence[str]) -> list[str]:
        return self._backend(model).choose(conversations, labels)

    def _backend(self, model: str) -> Any:
        if model not in self.loaded:
            self.loaded[model] = self._load(model)
        return self.loaded[model]

    def _load(self, name: str) -> Any:
        from tunesmith.models.resolve import ALIASES

        max_tokens = self.grading.judge_max_new_tokens
        if (Path(name) / "config.yaml").is_file() and (Path(name) / "model").is_dir():
            return LocalJudge(*_trained_run(Path(name)), max_tokens)
        if name in ALIASES or Path(name).expanduser().exists() or not self.grading.judge_base_url:
            return LocalJudge(*_local_model(name), max_tokens)
        key = os.environ.get(self.grading.judge_api_key_env)
        return EndpointJudge(self.grading.judge_base_url, name, key, max_tokens)


class LocalJudge:
    """A causal LM in this process: chat-template prompts, batched generation, label likelihoods."""

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int) -> None:
        import torch

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        ensure_chat_template(tokenizer)
        self.max_new_tokens = max_new_tokens

    def _prompt(self, conversation: Conversation) -> str:
        return render_prompt([Message(m["role"], m["content"]) for m in conversation], self.tokenizer)

    def replies(self, conversations: Sequence[Conversation], sampling: dict[str, Any]) -> list[str]:
        import torch

        temperature = sampling.get("temperature") or 0.0
        options: dict[str, Any] = {}
        if temperature > 0:
            options = {"do_sample": True, "temperature": temperature, "top_p": sampling.get("top_p") or 1.0}
            torch.manual_seed(sampling.get("seed") or 0)
        max_new = min(self.max_new_tokens, sampling.get("max_completions_tokens") or self.max_new_tokens)
        prompts = [self._prompt(c) for c in conversations]
        return [t.strip() for t in continue_texts(self.model, self.tokenizer, prompts, max_new, LOCAL_BATCH, options)]

    def choose(self, conversations: Sequence[Conversation], labels: Sequence[str]) -> list[str]:
        from tunesmith.curate.annotate import word_loglik

        scores = word_loglik(self.model, self.tokenizer, [self._prompt(c) for c in conversations], list(labels))
        return [labels[int(i)] for i in scores.argmax(axis=1)]


class EndpointJudge:
    """A model behind an OpenAI-compatible ``/v1/chat/completions``."""

    def __init__(self, base_url: str, model: str, api_key: str | None, max_new_tokens: int) -> None:
        import openai

        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed", max_retries=2, timeout=120)
        self.model, self.max_new_tokens = model, max_new_tokens

    def replies(self, conversations: Sequence[Conversation], sampling: dict[str, Any]) -> list[str]:
        options = {k: sampling[k] for k in ("temperature", "top_p", "seed", "reasoning_effort") if k in sampling}
        options.setdefault("temperature", 0.0)
        max_tokens = sampling.get("max_completions_tokens") or self.max_new_tokens
        out = []
        for conversation in conversations:
            response = self.client.chat.completions.create(
                model=self.model, messages=conversation, max_tokens=max_tokens, **options
            )
            out.append((response.choices[0].message.content or "").strip())
        return out

    def choose(self, conversations: Sequence[Conversation], labels: Sequence[str]) -> list[str]:
        replies = self.replies(conversations, {"temperature": 0.0})
        return [extract_label(reply, list(labels)) or reply for reply in replies]


def continue_texts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
    options: dict | None = None,
) -> list[str]:
    """Each prompt text continued by ``model`` (greedy unless ``options`` say to sample), in batches left-padded so
    every row continues from its end; the continuations decoded without special tokens."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    out: list[str] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(chunk):
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
        with torch.no_grad():
            generated = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
                **(options or {"do_sample": False}),
            )
        out += tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
    return out


def grading_context(graders: Sequence[Any], grading: GradingConfig) -> GradingContext:
    """What the graders need, made once: a judge when any grader asks a model, an encoder for cosine similarity;
    a missing resource (WordNet for meteor) is a ConfigError before anything is graded."""
    kinds = {kind for grader in graders for kind in _kinds(grader)}
    if "meteor" in kinds:
        try:
            load_wordnet()
        except MissingResource as exc:
            raise ConfigError(f"eval.graders: {exc}") from None
    embed = None
    if "cosine" in kinds:
        from tunesmith.models.embed import embed_texts

        def embed(texts: list[str]) -> Any:
            return embed_texts(texts, "minilm-l6")

    judge = ModelJudge(grading) if kinds & {"score_model", "label_model"} else None
    return GradingContext(
        judge=judge,
        embed=embed,
        judge_model=grading.judge_model,
        python_timeout_s=grading.python_timeout_s,
        python_memory_mb=grading.python_memory_mb,
    )


def _kinds(grader: Any) -> list[str]:
    if grader.type == "multi":
        return [kind for sub in grader.graders.values() for kind in _kinds(sub)]
    return [grader.type, getattr(grader, "evaluation_metric", "")]


def _local_model(name: str) -> tuple[Any, Any]:
    from tunesmith.models.load import load_causal_lm, load_tokenizer
    from tunesmith.models.resolve import resolve_model

    resolved = resolve_model(name)
    config = ModelConfig(name=name)
    return load_causal_lm(config, resolved), load_tokenizer(config, resolved)


def _trained_run(folder: Path) -> tuple[Any, Any]:
    """A finished run's tuned causal LM and its tokenizer (as a reward-model run is opened for rewards)."""
    import yaml
    from transformers import AutoModelForCausalLM

    from tunesmith.core.config import validate_config
    from tunesmith.models.adapt import load_trained, needs_base
    from tunesmith.models.load import load_causal_lm, load_tokenizer
    from tunesmith.models.resolve import ResolvedModel

    config_path = folder / "config.yaml"
    cfg = validate_config(yaml.safe_load(config_path.read_text(encoding="utf-8")), source=str(config_path))
    base = load_causal_lm(cfg.model) if needs_base(cfg.method) else None
    model = load_trained(cfg.method, folder / "model", base, AutoModelForCausalLM)
    saved = folder / "model"
    return model, load_tokenizer(cfg.model, ResolvedModel(str(saved), str(saved.resolve()), "local"))
