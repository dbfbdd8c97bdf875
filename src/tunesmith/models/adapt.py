"""Make a loaded model trainable by the configured method, save what it trained, and load it back.

peft methods (lora, qlora, prefix, prompt, ia3) are saved as peft adapters; freeze, full and prune save the whole
model (prune with LoRA merges the adapter into the smaller model); ``adapter`` saves only its bottleneck layers.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from tunesmith.core.config import MethodConfig
from tunesmith.core.errors import ConfigError

PEFT_METHODS = ("lora", "qlora", "prefix", "prompt", "ia3")
TASK_HEADS = ("classifier", "score", "qa_outputs")  # names of transformers' task heads
VIRTUAL_TOKEN_METHODS = ("prefix", "prompt")  # their virtual tokens cannot sit inside a packed block mask


def check_method(method: MethodConfig) -> None:
    """Reject a method this machine cannot run, before any model loads."""
    if method.name != "qlora":
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            "method.name is 'qlora', which needs a CUDA GPU (bitsandbytes 4-bit weights), and none is available.\n"
            "  fix: use method.name: lora on this machine (same adapter, full-precision base), or run on a GPU"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("method.name is 'qlora' but bitsandbytes is not installed.\n  fix: pip install bitsandbytes")


def quantization_config(method: MethodConfig) -> Any | None:
    """The 4-bit loading settings for qlora; None for every other method."""
    if method.name != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=method.qlora.quant_type,
        bnb_4bit_use_double_quant=method.qlora.double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def supports_packing(method: MethodConfig) -> bool:
    """Prefix and prompt tuning prepend virtual tokens to each row, so they train on padded batches."""
    return method.name not in VIRTUAL_TOKEN_METHODS


def apply_method(
    model: Any, method: MethodConfig, tokenizer_path: str | None = None, task_type: str = "CAUSAL_LM"
) -> Any:
    """Return the model to train, with only the method's weights trainable.

    ``tokenizer_path`` is needed by prompt tuning with ``init_text``. A ``prune`` model is expected to be pruned
    already (see ``tunesmith.models.prune``); here it gets its follow-up method (lora or full). ``task_type`` is
    peft's (the recipe's ``peft_task_type``): for task heads peft also trains and saves the head.
    """
    name = method.prune.then if method.name == "prune" else method.name
    if name == "full":
        model.requires_grad_(True)
        return model
    if name == "freeze":
        from tunesmith.models.freeze import freeze_model

        return freeze_model(model, method.freeze)
    if name == "adapter":
        from tunesmith.models.bottleneck import adapter_model
        from tunesmith.models.layers import output_head

        model = adapter_model(model, method.adapter)
        if task_type not in ("CAUSAL_LM", "SEQ_2_SEQ_LM"):  # a fresh task head must learn too (as peft does)
            output_head(model).requires_grad_(True)
        return model
    from peft import get_peft_model

    if name == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if name == "prefix":
        from tunesmith.models.prefix_compat import accept_past_key_values

        accept_past_key_values(model)
    return get_peft_model(model, _peft_config(model, name, method, tokenizer_path, task_type))


def lora_targets(model: Any, requested: str | list[str]) -> str | list[str]:
    """LoRA's target modules: ``all-linear`` becomes the model family's projections (``models/families.py``);
    for an architecture the table does not list, and for explicit names, what was asked."""
    from tunesmith.models.families import family_of

    family = family_of(model)
    if requested == "all-linear" and family is not None and family.lora is not None:
        return list(family.lora)
    return requested


def ia3_targets(model: Any, method: MethodConfig) -> tuple[list[str] | None, list[str] | None]:
    """IA3's (target, feed-forward) modules: the configured ones, else the family's, else None (peft's default)."""
    from tunesmith.models.families import family_of

    ia3 = method.ia3
    if ia3.target_modules is not None:
        return ia3.target_modules, ia3.feedforward_modules
    family = family_of(model)
    if family is None or family.ia3 is None:
        return None, None
    return list(family.ia3), list(family.ia3_feedforward or ())


def _peft_config(model: Any, name: str, method: MethodConfig, tokenizer_path: str | None, task_type: str) -> Any:
    import peft

    from tunesmith.models.families import uses_conv1d

    if name == "prefix":
        return peft.PrefixTuningConfig(task_type=task_type, num_virtual_tokens=method.prefix.num_virtual_tokens)
    if name == "prompt":
        prompt = method.prompt
        text = {}
        if prompt.init_text:
            if tokenizer_path is None:
                raise ConfigError("method.prompt.init_text needs the model's tokenizer; pass tokenizer_path")
            text = {
                "prompt_tuning_init": "TEXT",
                "prompt_tuning_init_text": prompt.init_text,
                "tokenizer_name_or_path": tokenizer_path,
            }
        return peft.PromptTuningConfig(task_type=task_type, num_virtual_tokens=prompt.num_virtual_tokens, **text)
    if name == "ia3":
        targets, feedforward = ia3_targets(model, method)
        return peft.IA3Config(
            task_type=task_type,
            target_modules=targets,
            feedforward_modules=feedforward,
            fan_in_fan_out=uses_conv1d(model, targets if targets is not None else "all"),
        )
    lora = method.lora  # lora, qlora, prune then lora
    targets = lora_targets(model, lora.target_modules)
    return peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        fan_in_fan_out=uses_conv1d(model, targets),  # GPT-2's Conv1D stores its weight transposed
        use_dora=lora.dora,
        use_rslora=lora.rslora,
        task_type=task_type,
        # peft leaves the head out of "all-linear" only for causal LMs and SEQ_CLS; the token-classification and
        # span heads it trains in full (modules_to_save) must not also get LoRA layers.
        **({"exclude_modules": list(TASK_HEADS)} if task_type in ("TOKEN_CLS", "QUESTION_ANS") else {}),
    )


def save_model(model: Any, method: MethodConfig, folder: Path, state_dict: dict[str, Any] | None = None) -> Any:
    """Save the trained model in the method's format to ``folder``; return the model as saved.

    ``state_dict`` holds the whole weights when the model's own are sharded (FSDP, ZeRO-3). A pruned model
    trained with LoRA is merged first: the pruned architecture is a model of its own, which then loads in plain
    transformers like a fully fine-tuned one.
    """
    if method.name == "adapter":
        from tunesmith.models.bottleneck import save_adapters

        save_adapters(model, folder, method.adapter, state_dict)
        return model
    if method.name == "prune" and method.prune.then == "lora":
        if state_dict is not None:
            raise ValueError("a pruned model trained with LoRA is merged before saving; sharded weights cannot be")
        model = model.merge_and_unload()
    model.save_pretrained(folder, safe_serialization=True, state_dict=state_dict)
    return model


def needs_base(method: MethodConfig) -> bool:
    """Whether the saved model is an addition to the base model (an adapter) rather than whole weights."""
    return method.name in PEFT_METHODS or method.name == "adapter"


def load_trained(method: MethodConfig, folder: Path, base: Any | None, auto_class: Any | None = None) -> Any:
    """Load what ``save_model`` wrote: adapters onto ``base`` (changed in place), whole models from ``folder``
    with ``auto_class`` (the recipe's, default ``AutoModelForCausalLM``)."""
    if needs_base(method) and base is None:
        raise ValueError(f"method {method.name!r} saves an adapter; pass the base model it was trained on")
    if method.name in PEFT_METHODS:
        return load_adapter(base, folder)
    if method.name == "adapter":
        from tunesmith.models.bottleneck import load_adapters

        return load_adapters(base, folder)
    if auto_class is None:
        from transformers import AutoModelForCausalLM

        auto_class = AutoModelForCausalLM
    return auto_class.from_pretrained(str(folder), use_safetensors=True)


def load_adapter(base: Any, folder: Path, is_trainable: bool = False, adapter_name: str = "default") -> Any:
    """Load the peft adapter saved in ``folder`` onto ``base`` (changed in place)."""
    from peft import PeftConfig, PeftModel

    from tunesmith.models.prefix_compat import accept_past_key_values

    if PeftConfig.from_pretrained(str(folder)).peft_type == "PREFIX_TUNING":
        accept_past_key_values(base)
    return PeftModel.from_pretrained(base, str(folder), is_trainable=is_trainable, adapter_name=adapter_name)


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts (peft's count for peft models: it counts 4-bit weights in full)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
