"""peft's prefix tuning on transformers >= 5.25, which renamed the forward's ``past_key_values`` to ``cache``.

peft 0.21.2 still speaks the old name, and the rename breaks it in two ways:

- a task-head model (classify, tag, qa) is refused: peft looks for ``past_key_values`` in the forward's signature;
- generation of a causal or seq2seq LM silently ignores the prefix: peft puts the prefix in
  ``past_key_values`` while ``generate`` passes its own (empty) ``cache``, and transformers keeps ``cache``, so
  the tuned model generates exactly what the base model would.

``accept_past_key_values`` gives the model, before peft wraps it, a forward that takes ``past_key_values`` and
hands it on as ``cache``, and a ``prepare_inputs_for_generation`` whose inputs name the cache the way peft
reads and writes it. Nothing changes for a model whose forward still has ``past_key_values``. The tests assert
that plain peft still fails without it, so they tell when peft has caught up and this module can go.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from transformers import GenerationMixin


def needs_shim(model: Any) -> bool:
    """Whether ``model``'s forward takes the cache as ``cache`` only (transformers >= 5.25)."""
    own = inspect.signature(model.forward).parameters
    if "past_key_values" in own:
        return False
    return "cache" in own or "cache" in inspect.signature(model.base_model.forward).parameters


def accept_past_key_values(model: Any) -> None:
    """Make ``model`` (a transformers model, before ``get_peft_model``) take peft's prefix under its old name."""
    if not needs_shim(model):
        return
    model.forward = _forward_taking_past_key_values(model.forward)
    if isinstance(model, GenerationMixin):
        model.prepare_inputs_for_generation = _inputs_naming_past_key_values(model.prepare_inputs_for_generation)


def _forward_taking_past_key_values(forward: Any) -> Any:
    def forward_with_prefix(*args: Any, past_key_values: Any = None, **kwargs: Any) -> Any:
        if past_key_values is not None:
            kwargs["cache"] = past_key_values
        return forward(*args, **kwargs)

    # The signature callers inspect (peft's check, generate's argument validation): the original one plus
    # ``past_key_values``.
    signature = inspect.signature(forward)
    params = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
    params.append(inspect.Parameter("past_key_values", inspect.Parameter.KEYWORD_ONLY, default=None))
    params += [p for p in signature.parameters.values() if p.kind == p.VAR_KEYWORD]
    forward_with_prefix.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return forward_with_prefix


def _inputs_naming_past_key_values(prepare: Any) -> Any:
    @functools.wraps(prepare)
    def prepare_with_past_key_values(*args: Any, **kwargs: Any) -> dict[str, Any]:
        if "past_key_values" in kwargs:
            kwargs["cache"] = kwargs.pop("past_key_values")
        inputs = prepare(*args, **kwargs)
        if "cache" in inputs:
            inputs["past_key_values"] = inputs.pop("cache")
        return inputs

    return prepare_with_past_key_values
