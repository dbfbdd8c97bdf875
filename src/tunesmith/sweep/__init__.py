"""Hyperparameter sweeps with Optuna (``tunesmith sweep``): ``load_sweep`` a config, then ``run_sweep`` it.

The driver is ``search``; the other modules each hold one part of a sweep (see its docstring).
"""

from tunesmith.sweep.load import Sweep, load_sweep
from tunesmith.sweep.search import run_sweep

__all__ = ["Sweep", "load_sweep", "run_sweep"]
