"""Check an exported GGUF in llama.cpp itself (llama-cpp-python), where GGUF files are used.

transformers' GGUF loader reads the tensors back, but not the way llama.cpp runs them: llama.cpp splits text with
its own pre-tokenizer (named in the metadata), stops at the end-of-generation tokens it reads from the metadata, and
quantizes its activations. So the file is loaded in llama.cpp and compared with the Hugging Face model and tokenizer:

- tokenization: the same ids for probe texts (spaces, digits, unicode, newlines, the chat template's special
  tokens, llama.cpp's own pre-tokenizer check text, the chat prompts), and the same BOS added or not;
- generation: on chat prompts rendered with the model's template, transformers' greedy reply against llama.cpp's
  top token, step by step on transformers' tokens (teacher-forced, so one early difference does not cascade): f16
  must pick the same token at every step (the same greedy reply), q8_0 at >= 95% of the steps; both must stop at
  the same end-of-turn token, which llama.cpp must treat as the end of generation.

A failed check raises ``TunesmithError`` with the figures; without llama-cpp-python the check is skipped and says
how to install it.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tunesmith.core.errors import TunesmithError
from tunesmith.models.gguf_pretok import CHECK_TEXT
from tunesmith.models.merge import generation_config_for

if TYPE_CHECKING:
    from pathlib import Path

PROBE_TEXTS = (
    "Hello world",
    "  two leading spaces, and two trailing  ",
    "digits 1234567890, 3.14159, 2026-12-07 and 1,000,000",
    "unicode: café naïve Ünïcödé 日本語 🚀🦙 нещо",
    "new\nlines\n\n\tand a tab\n",
    CHECK_TEXT,
)
MAX_NEW_TOKENS = 24
MIN_AGREEMENT = {"f16": 1.0, "q8_0": 0.95}  # share of greedy steps with the same top token
Reply = tuple[list[int], list[int], int | None]  # prompt ids, greedy reply ids, the end-of-turn token it ended at
INSTALL_HINT = "pip install 'tunesmith[gguf]' (builds llama-cpp-python; `make install` does it in a checkout)"


def llama_cpp_missing() -> str | None:
    """Why the llama.cpp check cannot run here (llama-cpp-python is not installed, and how to install it), or None."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return f"llama-cpp-python is not installed; to check the GGUF in llama.cpp: {INSTALL_HINT}"
    return None


def check_in_llama_cpp(path: Path, tokenizer: Any, kind: str, replies: list[Reply]) -> dict[str, Any]:
    """Load ``path`` in llama.cpp and compare it with ``tokenizer`` and transformers' greedy ``replies``
    (``greedy_replies``); return the figures, or raise ``TunesmithError`` with them when it behaves differently."""
    import llama_cpp

    longest = max(len(ids) + len(reply) for ids, reply, _ in replies)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=longest + 8, logits_all=True, verbose=False, seed=0)
    try:
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        figures: dict[str, Any] = {
            "llama_cpp_python": llama_cpp.__version__,
            "kind": kind,
            "pre_tokenizer": llm.metadata.get("tokenizer.ggml.pre"),
        }
        prompts = [tokenizer.decode(ids) for ids, _, _ in replies]
        figures["tokenization"] = _tokenization(llm, tokenizer, [*PROBE_TEXTS, *_special_texts(tokenizer), *prompts])
        _require_tokenization(figures, kind)  # with other token ids, replies cannot be compared
        steps = agreeing = identical = same_stop = stopped = 0
        for ids, reply, stop in replies:
            tops = _teacher_forced_tops(llm, ids, reply)
            steps += len(reply)
            agreeing += sum(int(a == b) for a, b in zip(tops, reply, strict=True))
            identical += int(tops == reply)
            stopped += int(stop is not None)
            same_stop += int(stop is None or (bool(llama_cpp.llama_vocab_is_eog(vocab, stop)) and tops[-1] == stop))
    finally:
        llm.close()
    figures["greedy"] = {
        "prompts": len(replies),
        "max_new_tokens": MAX_NEW_TOKENS,
        "steps": steps,
        "top_token_agreement": agreeing / max(steps, 1),
        "identical_replies": identical,  # every step's top token equal to transformers' greedy token
        "stopped": stopped,  # replies that ended at an end-of-turn token within max_new_tokens
        "same_stop": same_stop,
        "required_agreement": MIN_AGREEMENT[kind],
    }
    _require(figures, kind)
    return figures


def describe(figures: dict[str, Any]) -> str:
    """One sentence for the model card and the CLI."""
    if "skipped" in figures:
        return f"The llama.cpp check was skipped: {figures['skipped']}."
    tok, greedy = figures["tokenization"], figures["greedy"]
    return (
        f"Loaded in llama.cpp (llama-cpp-python {figures['llama_cpp_python']}, pre-tokenizer "
        f"'{figures['pre_tokenizer']}'): tokenization equal to the "
        f"tokenizer's on {tok['equal']}/{tok['texts']} probe texts; greedy replies to {greedy['prompts']} chat "
        "prompts: "
        f"top token agreed at {greedy['top_token_agreement']:.1%} of {greedy['steps']} steps (teacher-forced), "
        f"{greedy['identical_replies']}/{greedy['prompts']} replies identical, {greedy['same_stop']}/"
        f"{greedy['prompts']} stopped at the same end-of-turn token."
    )


def _require_tokenization(figures: dict[str, Any], kind: str) -> None:
    tok = figures["tokenization"]
    if tok["equal"] < tok["texts"] or not tok["bos_as_tokenizer"]:
        first = tok["mismatches"][0] if tok["mismatches"] else None
        raise TunesmithError(
            f"the {kind} GGUF behaves differently in llama.cpp: llama.cpp tokenizes {tok['texts'] - tok['equal']} "
            f"of {tok['texts']} probe texts differently from the tokenizer (pre-tokenizer "
            f"'{figures['pre_tokenizer']}')"
            + (f", e.g. {first['text']!r}: {first['llama_cpp'][:12]} vs {first['tokenizer'][:12]}" if first else "")
            + ("" if tok["bos_as_tokenizer"] else "; it adds BOS differently")
        )


def _require(figures: dict[str, Any], kind: str) -> None:
    greedy = figures["greedy"]
    problems = []
    if greedy["top_token_agreement"] < MIN_AGREEMENT[kind]:
        problems.append(
            f"its top token agreed with transformers' greedy at {greedy['top_token_agreement']:.1%} of "
            f"{greedy['steps']} steps (required {MIN_AGREEMENT[kind]:.0%} for {kind})"
        )
    if kind == "f16" and greedy["identical_replies"] < greedy["prompts"]:
        problems.append(f"only {greedy['identical_replies']}/{greedy['prompts']} greedy replies were identical")
    if greedy["same_stop"] < greedy["prompts"]:
        problems.append(
            f"only {greedy['same_stop']}/{greedy['prompts']} replies stopped at the same end-of-turn token in llama.cpp"
        )
    if problems:
        raise TunesmithError(f"the {kind} GGUF behaves differently in llama.cpp: " + "; ".join(problems))


def _special_texts(tokenizer: Any) -> list[str]:
    """Texts with the special tokens a chat template writes, between ordinary words."""
    specials = [t for t in tokenizer.all_special_tokens if t not in (tokenizer.pad_token, tokenizer.unk_token)]
    return [f"{token}user\nhi there{token} 42" for token in specials]


def _tokenization(llm: Any, tokenizer: Any, texts: list[str]) -> dict[str, Any]:
    mismatches = []
    for text in texts:
        ours = llm.tokenize(text.encode(), add_bos=False, special=True)
        theirs = tokenizer(text, add_special_tokens=False)["input_ids"]
        if ours != theirs:
            mismatches.append({"text": text[:80], "llama_cpp": ours[:40], "tokenizer": theirs[:40]})
    bos = llm.tokenize(b"Hello", add_bos=True, special=True) == tokenizer("Hello")["input_ids"]
    equal = len(texts) - len(mismatches)
    return {"texts": len(texts), "equal": equal, "bos_as_tokenizer": bos, "mismatches": mismatches}


@torch.no_grad()
def greedy_replies(model: Any, tokenizer: Any, prompts: list[str]) -> list[Reply]:
    """transformers' greedy reply to each prompt, in float32: (prompt ids, reply ids, the end-of-turn token it
    stopped at or None)."""
    reference = model if next(model.parameters()).dtype == torch.float32 else copy.deepcopy(model).float()
    reference.eval()
    config = generation_config_for(reference, tokenizer)
    config.max_new_tokens, config.do_sample = MAX_NEW_TOKENS, False
    stops = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        generated = reference.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            generation_config=config,
        )[0, len(ids) :].tolist()
        out.append((ids, generated, generated[-1] if generated and generated[-1] in stops else None))
    return out


def _teacher_forced_tops(llm: Any, ids: list[int], reply: list[int]) -> list[int]:
    """llama.cpp's top token at each step of ``reply``, fed the reply's own previous tokens."""
    llm.reset()
    llm.eval([*ids, *reply[:-1]])
    return [int(t) for t in np.argmax(llm.scores[len(ids) - 1 : len(ids) - 1 + len(reply)], axis=1)]
