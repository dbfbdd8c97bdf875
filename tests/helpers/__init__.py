"""Helpers shared by the test modules (plain functions and constants; the pytest fixtures are in conftest.py).

``paths``: the repository and its data. ``models``: tiny models and tokenizers built from configs. ``data``: synthetic
data files. ``configs``: run configs for the tiny models. ``training``: encoded examples, gradients, a trained run.
``cli``: the `tunesmith` command in a subprocess or in this process, a server process or thread, free ports. ``report``:
report.html in headless Chromium.
"""
