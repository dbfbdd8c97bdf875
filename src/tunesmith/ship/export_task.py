"""What an export of a run's task is: the ``AutoModelFor...`` class a user loads it with, the Hugging Face pipeline
it serves, the label names its config carries, what it refuses, and how the model card shows its use.

The class comes from the task's recipe (``Recipe.auto_class``), so a new task with a head exports without a change
here; only the card's usage snippet is per class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunesmith.core.errors import TunesmithError
from tunesmith.pipeline.trained import TrainedRun

# AutoModelFor... class -> the transformers pipeline task that serves it
PIPELINES = {
    "AutoModelForCausalLM": "text-generation",
    "AutoModelForSequenceClassification": "text-classification",
    "AutoModelForTokenClassification": "token-classification",
    "AutoModelForQuestionAnswering": "question-answering",
    "AutoModelForSeq2SeqLM": "text2text-generation",
}
REWARD_LABEL = "reward"  # the one output of a reward model's score head


@dataclass(frozen=True)
class ExportTarget:
    """One task's export: a folder ``auto_class.from_pretrained`` loads, with ``config_update`` in its config."""

    task: str
    auto_class: Any
    labels: list[str] | None = None  # head order; written as id2label / label2id
    config_update: dict[str, Any] = field(default_factory=dict)

    @property
    def class_name(self) -> str:
        return self.auto_class.__name__

    @property
    def pipeline_tag(self) -> str:
        return PIPELINES.get(self.class_name, "text-generation")

    @property
    def causal(self) -> bool:
        return self.class_name == "AutoModelForCausalLM"


def export_target(run: TrainedRun) -> ExportTarget:
    """The export of ``run``'s task (one task: a multi-head run is exported head by head, see ``export.py``)."""
    auto_class = run.recipe.auto_class()
    task = run.config.task.name
    labels = [REWARD_LABEL] if task == "reward" else None
    if PIPELINES.get(auto_class.__name__) in ("text-classification", "token-classification") and labels is None:
        labels = run.labels()
        if not labels:
            raise TunesmithError(f"{run.dir.root}: the run's label set is unknown (no prepared training split)")
    update = {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}} if labels else {}
    return ExportTarget(task, auto_class, labels, update)


def refuse_unsupported(target: ExportTarget, gguf: str | None) -> None:
    """A ``TunesmithError`` for an option the task's model cannot be exported with."""
    if gguf and not target.causal:
        raise TunesmithError(
            f"--gguf: GGUF files hold causal language models for llama.cpp; a {target.task} run's model loads with "
            f"{target.class_name}, which llama.cpp does not run.\n  fix: export it without --gguf"
        )


def check_head(model: Any, target: ExportTarget) -> None:
    """Refuse a model whose head does not have one output per label of the run."""
    if target.labels is not None and model.config.num_labels != len(target.labels):
        raise TunesmithError(
            f"the run's model has {model.config.num_labels} outputs but the run has {len(target.labels)} labels "
            f"({', '.join(target.labels[:8])}); was its training data changed after training?"
        )


def usage(target: ExportTarget, kind: str, path: str, base: str, run: TrainedRun) -> str:
    """The model card's snippet: how a user loads and uses this folder."""
    if kind == "adapter":
        head = f", num_labels={len(target.labels)}" if target.labels else ""
        return (
            "```python\nfrom peft import PeftModel\n"
            f"from transformers import {target.class_name}, AutoTokenizer\n\n"
            f'base = {target.class_name}.from_pretrained("{base}"{head})\n'
            f'model = PeftModel.from_pretrained(base, "{path}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{path}")\n```'
        )
    if kind == "bottleneck":
        head = f", num_labels={len(target.labels)}" if target.labels else ""
        return BOTTLENECK.format(class_name=target.class_name, base=base, head=head, path=path)
    snippet = SNIPPETS.get(target.class_name if target.task != "reward" else "reward")
    if snippet is None:
        return CAUSAL.format(path=path)
    return snippet.format(path=path, prefix=run.config.task.seq2seq.prefix)


BOTTLENECK = """```python
from pathlib import Path

from transformers import {class_name}, AutoTokenizer
from tunesmith.models.bottleneck import load_adapters  # tunesmith's own layout: bottleneck layers after projections

base = {class_name}.from_pretrained("{base}"{head})
model = load_adapters(base, Path("{path}"))
tokenizer = AutoTokenizer.from_pretrained("{path}")
```"""

CAUSAL = """```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{path}")
model = AutoModelForCausalLM.from_pretrained("{path}")
messages = [{{"role": "user", "content": "..."}}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
reply = model.generate(**inputs, max_new_tokens=64)  # stops at the chat template's end of turn
print(tokenizer.decode(reply[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```"""

SNIPPETS = {
    "AutoModelForSequenceClassification": """```python
from transformers import pipeline

classifier = pipeline("text-classification", model="{path}")
print(classifier("...", top_k=None))  # every label with its probability
```""",
    "AutoModelForTokenClassification": """```python
from transformers import pipeline

tagger = pipeline("token-classification", model="{path}", aggregation_strategy="first")
print(tagger("..."))  # tagged on each word's first sub-token, as trained
```""",
    "AutoModelForQuestionAnswering": """```python
from transformers import pipeline

reader = pipeline("question-answering", model="{path}")
print(reader(question="...", context="..."))
```""",
    "AutoModelForSeq2SeqLM": """```python
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{path}")
model = AutoModelForSeq2SeqLM.from_pretrained("{path}")
inputs = tokenizer("{prefix}...", return_tensors="pt")
print(tokenizer.decode(model.generate(**inputs, max_new_tokens=64)[0], skip_special_tokens=True))
```""",
    "reward": """```python
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{path}")
model = AutoModelForSequenceClassification.from_pretrained("{path}")  # one output: the reward
chat = [{{"role": "user", "content": "..."}}, {{"role": "assistant", "content": "..."}}]
inputs = tokenizer.apply_chat_template(chat, return_tensors="pt", return_dict=True)
with torch.no_grad():
    reward = model(**inputs).logits[0, 0].item()  # higher: a better reply
```""",
}
