"""The one exception type a user is meant to read: it carries the problem and how to fix it."""

from __future__ import annotations


class TunesmithError(Exception):
    """A problem with the user's input or environment, reported without a traceback (exit code 2)."""

    exit_code = 2


class ConfigError(TunesmithError):
    """The run configuration is invalid; raised before any work starts."""


class DataError(TunesmithError):
    """A data file is missing, empty or does not match what the config asks for."""


class ModelNotFoundError(TunesmithError):
    """A model name could not be resolved to weights."""


class TrainingPaused(TunesmithError):
    """Training stopped on request (SIGUSR1) after saving a checkpoint; ``--resume`` continues it."""

    exit_code = 75  # EX_TEMPFAIL: try again later
