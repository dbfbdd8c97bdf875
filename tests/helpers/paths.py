"""The repository, its example data, and the datasets shared beside it."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SST2 = REPO / "examples" / "data" / "sst2"
SHARED = REPO.parent / "shared" / "datasets"
