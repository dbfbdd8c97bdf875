"""Readers of sources that are not one text file: Parquet, a folder (of ``.txt``/``.md`` files, or a Hugging Face
dataset saved with ``save_to_disk``) and a hub dataset (``hf:NAME?name=CONFIG&split=SPLIT``).

Parquet is read a record batch at a time and Hugging Face datasets through their memory-mapped Arrow files, so
neither has to fit in memory as a whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from tunesmith.core.errors import DataError
from tunesmith.data.lines import bad_utf8, decode, read_all
from tunesmith.data.rows import Row, RowStream


def read_folder(path: Path) -> RowStream:
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        yield from _read_saved_dataset(path)
        return
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".txt", ".md"))
    if not files:
        raise DataError(f"{path}: a folder needs .txt/.md files or a Hugging Face dataset saved with save_to_disk")
    for file in files:
        text = decode(file, file.read_bytes()) if file.stat().st_size else ""
        if text.strip() and bad_utf8(text) is None:
            yield Row(1, {"text": text}, file=str(file))


def _dataset_rows(dataset: Any, batch_size: int = 1000) -> RowStream:
    """Rows of a ``datasets.Dataset``, read a batch at a time from its memory-mapped Arrow files."""
    number = 0
    for batch in dataset.iter(batch_size=batch_size):
        for values in zip(*batch.values(), strict=True):
            number += 1
            yield Row(number, dict(zip(batch, values, strict=True)))


def _read_saved_dataset(path: Path) -> RowStream:
    import datasets

    dataset = datasets.load_from_disk(str(path))
    if isinstance(dataset, datasets.DatasetDict):
        raise DataError(
            f"{path}: holds a DatasetDict with splits {', '.join(dataset)}; point at one split's folder, "
            f"e.g. {path / next(iter(dataset))}"
        )
    yield from _dataset_rows(dataset)


def read_hub(spec: str) -> RowStream:
    """``hf:NAME?name=CONFIG&split=SPLIT`` through ``datasets.load_dataset`` (honours HF_HUB_OFFLINE)."""
    import datasets

    name, _, query = spec.removeprefix("hf:").partition("?")
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    split = options.pop("split", "train")
    try:
        dataset = datasets.load_dataset(name, options.pop("name", None), split=split, **options)
    except Exception as exc:  # the hub raises many kinds; all mean the same to a user
        raise DataError(f"{spec}: could not load the Hugging Face dataset: {exc}") from None
    yield from _dataset_rows(dataset)


def read_parquet(path: Path) -> RowStream:
    """A record batch at a time (a ``.parquet.gz`` is decompressed in memory first)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        source = pa.BufferReader(read_all(path)) if path.suffix.lower() == ".gz" else path
        batches = pq.ParquetFile(source).iter_batches(batch_size=10_000)
        number = 0
        for batch in batches:
            for values in batch.to_pylist():
                number += 1
                yield Row(number, values)
    except pa.ArrowException as exc:
        raise DataError(f"{path}: not a valid Parquet file ({exc})") from None
