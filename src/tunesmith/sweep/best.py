"""The best trial of a sweep: its config written as a runnable ``best.yaml`` and, with ``keep_models: best``, the
other ended trials' model folders deleted.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import yaml

from tunesmith.core.config import _BlockDumper
from tunesmith.core.fs import write_text
from tunesmith.sweep.load import Sweep
from tunesmith.sweep.space import set_key


def keep_best(sweep: Sweep, best: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Write ``best.yaml`` for the ``best`` trial, apply ``keep_models``; the summary's ``best`` entry."""
    best_raw = copy.deepcopy(sweep.base)
    for key, value in best.params.items():
        set_key(best_raw, key, value)
    best_raw["output"] = {**sweep.base.get("output", {}), "name": f"{sweep.name}-best"}
    header = f"# best of sweep '{sweep.name}': trial {best.number}, {sweep.settings.metric} = {best.value:.6g}\n"
    write_text(sweep.dir / "best.yaml", header + yaml.dump(best_raw, Dumper=_BlockDumper, sort_keys=False))
    best_dir = Path(best.user_attrs["run_dir"])
    entry = {
        "trial": best.number,
        "value": best.value,
        "params": best.params,
        "config": str(sweep.dir / "best.yaml"),
        "model": str(best_dir / "model"),
    }
    if sweep.settings.keep_models == "best":
        for row in rows:
            # Every worker of a shared study does this once the study is done (each sees its own trials' folders,
            # or the same ones in a shared folder, perhaps at the same moment): deleting twice must be harmless.
            if row["run_dir"] and row["trial"] != best.number and row["state"] in ("COMPLETE", "PRUNED", "FAIL"):
                shutil.rmtree(Path(row["run_dir"]) / "model", ignore_errors=True)
    return entry
