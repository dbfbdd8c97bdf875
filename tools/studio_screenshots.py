"""Copy the studio tests' page screenshots into docs/studio/, made small (a 64-colour palette, optimized PNG).

TUNESMITH_ARTIFACTS=/tmp/artifacts python -m pytest tests/studio/test_pages.py
python tools/studio_screenshots.py /tmp/artifacts/studio
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "studio"


def shrink(source: Path, target: Path, colors: int = 64) -> int:
    """Write ``source`` as a palette PNG at ``target``; return its size in bytes."""
    from PIL import Image

    with Image.open(source) as image:
        image.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    return target.stat().st_size


def main(folder: str) -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    shots = sorted(Path(folder).glob("*.png"))
    if not shots:
        sys.exit(f"no screenshots in {folder}: run the studio tests with TUNESMITH_ARTIFACTS set")
    for shot in shots:
        size = shrink(shot, DOCS / shot.name)
        print(f"{shot.name}: {shot.stat().st_size:,} -> {size:,} bytes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "artifacts/studio")
