"""The faces' first: the ``tunesmith`` command (``app``: every command; ``data``: ``tunesmith data ...``)."""

from tunesmith.cli.app import app, main

__all__ = ["app", "main"]
