"""Pieces shared by the RL recipes (ppo, grpo): prompts, sampled rollouts, per-token log-probabilities, the
reference model, and the training-stage setup, checkpoints, resume and save that ``Run.train`` would otherwise do."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.core.config import RlConfig, RunConfig
from tunesmith.data.convert import to_chat
from tunesmith.data.records import Chat, Feedback, Labeled, Message, Pair, Preference, Record
from tunesmith.data.render import IGNORE_INDEX, render_prompt
from tunesmith.recipes.common.completions import pad_rows, token_ids
from tunesmith.recipes.contract import OwnEvaluation, OwnLoop, Recipe, own_loop_options
from tunesmith.recipes.sft import auto_class, load_model, predict

# The recipe contract's causal-LM hooks (the policy), shared with sft; ppo and grpo re-export them from here.
__all__ = ["auto_class", "load_model"]

ACCEPTS = (Chat, Pair, Preference, Feedback, Labeled)
# training.* settings the rollout loops honour (optimizer, schedule, length, checkpoints, seed, precision); the
# others (accumulation, checkpointing, compile, early stopping, validation, trackers, ...) are refused, not ignored.
OWN_LOOP_OPTIONS = own_loop_options(
    "epochs", "max_steps", "batch_size", "learning_rate", "weight_decay", "warmup_ratio", "scheduler",
    "decay_ratio", "max_grad_norm", "max_seq_len", "save_every", "keep_checkpoints", "seed", "precision",
)  # fmt: skip


def convert(record: Record, cfg: RunConfig) -> Chat:
    """A conversation whose final assistant reply is the reference (used by exact_match-style rewards)."""
    return to_chat(record, cfg.data.label_names, cfg.task.system_prompt)


@dataclass
class PromptExample:
    """A prompt to sample from, with its reference reply."""

    messages: list[Message]
    reference: str | None
    input_ids: list[int]
    truncated: bool = False

    @property
    def n_targets(self) -> int:
        return 1


def encode_row(record: Chat, tokenizer: Any, cfg: RunConfig) -> PromptExample:
    return encode_prompt(record, tokenizer, cfg.training.max_seq_len)


def encode_prompt(chat: Chat, tokenizer: Any, max_len: int) -> PromptExample:
    """The prompt's token ids (left-truncated to ``max_len``: the latest turns matter most)."""
    ids = token_ids(render_prompt(chat.prompt_messages(), tokenizer), tokenizer)
    return PromptExample(chat.prompt_messages(), chat.reference(), ids[-max_len:], len(ids) > max_len)


@dataclass
class Rollout:
    """Sampled completions: ``batch`` holds prompt + completion rows (labels mark completion tokens)."""

    prompts: list[PromptExample]
    completions: list[list[int]]
    texts: list[str]
    batch: dict[str, torch.Tensor]


def unwrap(model: Any) -> Any:
    return getattr(model, "module", model)


@torch.no_grad()
def sample(
    model: Any, tokenizer: Any, prompts: Sequence[PromptExample], rl: RlConfig, n: int, greedy: bool = False
) -> Rollout:
    """``n`` completions per prompt (grouped: prompt i's samples are rows i*n .. i*n+n-1), cut after EOS."""
    inner = unwrap(model)
    was_training = inner.training
    inner.eval()
    device = next(inner.parameters()).device
    width = max(len(p.input_ids) for p in prompts)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):  # left padding: generation continues every row from its end
        ids[i, width - len(p.input_ids) :] = torch.tensor(p.input_ids)
        mask[i, width - len(p.input_ids) :] = 1
    options: dict[str, Any] = {"do_sample": False} if greedy else {"do_sample": True, "temperature": rl.temperature}
    if not greedy:
        options["top_k"] = rl.top_k or 0
    out = inner.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=rl.max_new_tokens,
        num_return_sequences=n,
        pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id,
        **options,
    )
    inner.train(was_training)
    completions = []
    for row in out[:, width:].tolist():
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id) + 1]
        completions.append(row)
    grouped = [p for p in prompts for _ in range(n)]
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    batch = pad_rows([(p.input_ids, c) for p, c in zip(grouped, completions, strict=True)], pad)
    return Rollout(grouped, completions, [t.strip() for t in texts], batch)


def token_logps(
    model: Any, batch: dict[str, torch.Tensor], hidden: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Per-position log-probability of the next token (B, T-1), its completion mask, the last hidden states
    (B, T-1, H) when asked, and the per-position entropy."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=hidden)
    logits = out.logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    mask = (targets != IGNORE_INDEX).float()
    log_probs = logits.log_softmax(-1)
    picked = torch.gather(log_probs, 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    states = out.hidden_states[-1][:, :-1] if hidden else None
    return picked * mask, mask, states, entropy


@contextlib.contextmanager
def reference(model: Any, copy: Any | None) -> Iterator[Any]:
    """The reference model: ``model`` with adapters disabled (one copy of the base weights), else ``copy``."""
    from peft import PeftModel

    inner = unwrap(model)
    if isinstance(inner, PeftModel):
        with inner.disable_adapter():
            yield inner
    else:
        yield copy


def reference_copy(run: Any, model: Any) -> Any | None:
    """A frozen base model for methods whose adapters cannot be switched off (full, freeze); else None."""
    from peft import PeftModel

    if isinstance(unwrap(model), PeftModel):
        return None
    device = next(unwrap(model).parameters()).device
    return run.load_base().to(device).eval().requires_grad_(False)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


class Setup:
    """What ``Run.train`` prepares before its loop: tokenizer, prompts, model with the method applied, accelerator,
    optimizer and scheduler; ``checkpoint`` / ``restore`` save and resume the loop; ``save`` writes the trained
    model and marks the stage done."""

    def __init__(self, run: Any, resume: bool = False) -> None:
        from tunesmith.core.fs import read_jsonl
        from tunesmith.data.records import record_from_dict
        from tunesmith.data.render import ensure_chat_template
        from tunesmith.engine import make_accelerator
        from tunesmith.models.adapt import apply_method, check_method, count_parameters, quantization_config
        from tunesmith.models.load import load_tokenizer
        from tunesmith.models.resolve import resolve_model

        cfg: RunConfig = run.config
        check_method(cfg.method)
        self.run, self.cfg, self.started = run, cfg, time.perf_counter()
        resolved = resolve_model(cfg.model.name)
        self.tokenizer = load_tokenizer(cfg.model, resolved)
        ensure_chat_template(self.tokenizer)
        rows = read_jsonl(run.dir.split("train"))
        self.prompts = [encode_prompt(record_from_dict(r), self.tokenizer, cfg.training.max_seq_len) for r in rows]
        torch.manual_seed(cfg.training.seed)
        model = run.recipe.load_model(cfg, resolved, quantization_config(cfg.method))
        self.model = apply_method(model, cfg.method, tokenizer_path=resolved.location, task_type="CAUSAL_LM")
        self.model.train()  # throughout, so every step (a resumed run's first too) scores its rollouts alike
        self.trainable, self.total = count_parameters(self.model)
        t = cfg.training
        self.steps = t.max_steps or max(1, int(t.epochs * len(self.prompts) / t.batch_size))
        self.accelerator = make_accelerator(t.precision)
        self.device = self.accelerator.device
        self.model.to(self.device)
        self.generator = torch.Generator().manual_seed(t.seed)
        self.order: list[int] = []
        self.tokens = 0  # prompt + completion tokens of the rollouts trained on
        self.resume = resume
        if not resume:
            run.dir.metrics.unlink(missing_ok=True)

    def build_optimizer(self, updates_per_step: int, extra: Sequence[torch.nn.Module] = ()) -> None:
        """AdamW and the schedule over every update of the run, on the model's and ``extra`` trainable weights."""
        from tunesmith.engine import build_optimizer, build_scheduler

        holder = torch.nn.ModuleList([self.model, *extra]).to(self.device)
        self.holder = holder  # what a checkpoint saves: the policy's trainable weights and ``extra`` (a value head)
        self.optimizer = build_optimizer(holder, self.cfg.training)
        self.scheduler = build_scheduler(self.optimizer, self.cfg.training, self.steps * updates_per_step)
        self.params = [p for p in holder.parameters() if p.requires_grad]

    def checkpoint(self, step: int, info: dict[str, Any] | None = None) -> None:
        """Every ``training.save_every`` steps, ``checkpoints/step-N`` (the engine's layout and retention): the
        trainable weights of the policy and value head, optimizer, scheduler, RNG states, and ``info``."""
        from tunesmith.engine import save_checkpoint

        t = self.cfg.training
        if t.save_every and step % t.save_every == 0:
            elapsed = round(time.perf_counter() - self.started, 2)
            state = {"tokens": self.tokens, "elapsed_s": elapsed, **(info or {})}
            save_checkpoint(
                self.run.dir.checkpoints,
                step,
                self.holder,
                self.optimizer,
                self.scheduler,
                self.accelerator,
                state,
                t.keep_checkpoints,
            )

    def restore(self) -> dict[str, Any]:
        """With ``resume``, load the newest checkpoint and return its info (``step`` is the steps done); else
        ``{"step": 0}``. Call once everything that draws random numbers before the loop has done so: the RNG
        states are those of the moment the checkpoint was saved."""
        from tunesmith.core.fs import read_jsonl_log, write_jsonl
        from tunesmith.engine import checkpoints, load_checkpoint

        found = checkpoints(self.run.dir.checkpoints) if self.resume else []
        if not found:
            self.run.dir.metrics.unlink(missing_ok=True)  # --resume before the first checkpoint: train anew
            return {"step": 0}
        resumed = load_checkpoint(found[-1][1], self.holder, self.optimizer, self.scheduler, self.accelerator)
        for _ in range(resumed.step):  # the prompt order is a pure function of the seed: replay its draws
            self.next_prompts()
        self.tokens = resumed.info["tokens"]
        self.started = time.perf_counter() - resumed.info["elapsed_s"]
        # rows logged after the checkpoint (a kill came before the next one) are written again
        rows = [r for r in read_jsonl_log(self.run.dir.metrics) if r.get("step", 0) <= resumed.step]
        write_jsonl(self.run.dir.metrics, rows)
        return resumed.info

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(time.perf_counter() - self.started, 1e-9)

    def next_prompts(self) -> list[PromptExample]:
        """The next ``training.batch_size`` prompts of a seeded shuffle (reshuffled each pass)."""
        picked = []
        while len(picked) < self.cfg.training.batch_size:
            if not self.order:
                self.order = torch.randperm(len(self.prompts), generator=self.generator).tolist()
            picked.append(self.prompts[self.order.pop()])
        return picked

    def step(self, loss: torch.Tensor) -> float | None:
        """Backward, clip, optimizer and scheduler step; returns the gradient norm."""
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        norm = None
        if self.cfg.training.max_grad_norm:
            norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.training.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        return norm

    def log(self, row: dict[str, Any]) -> None:
        from tunesmith.core.fs import append_jsonl

        row = {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}
        row |= {"lr": self.scheduler.get_last_lr()[0], "elapsed_s": round(time.perf_counter() - self.started, 2)}
        append_jsonl(self.run.dir.metrics, row)

    def save(self, extra_files: dict[str, dict[str, torch.Tensor]] | None = None, info: dict | None = None) -> Any:
        from safetensors.torch import save_file

        from tunesmith.core.fs import atomic_dir
        from tunesmith.models.adapt import save_model

        run = self.run
        with atomic_dir(run.dir.model) as tmp:
            tuned = save_model(unwrap(self.model), self.cfg.method, tmp)
            self.tokenizer.save_pretrained(tmp)
            for name, tensors in (extra_files or {}).items():
                save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / name))
        run.dir.mark_done(
            "train",
            {
                "steps": self.steps,
                "tokens": self.tokens,
                "seconds": round(time.perf_counter() - self.started, 1),
                "trainable_parameters": self.trainable,
                **(info or {}),
            },
        )
        return tuned


def rl_recipe(name: str, train: Callable[..., Any], evaluate_run: Callable[..., Any]) -> Recipe:
    """The recipe of an RL task: chats or prompts in, its own rollout loop, the policy evaluation; the tuned model
    is a chat policy."""
    return Recipe(
        name=name,
        accepts=ACCEPTS,
        peft_task_type="CAUSAL_LM",
        packs=False,
        methods=("full", "freeze", "lora", "qlora", "ia3"),
        convert=convert,
        load_model=load_model,
        auto_class=auto_class,
        training=OwnLoop(train),
        evaluation=OwnEvaluation(evaluate_run),
        training_options=OWN_LOOP_OPTIONS,
        chat_replies=predict,
    )
