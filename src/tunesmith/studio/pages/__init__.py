"""Studio pages. A page is a module with ``PAGE = Page(...)``; add it to ``pages()`` and it appears in the menu."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter


@dataclass(frozen=True)
class Page:
    slug: str  # URL path: /<slug>
    title: str  # menu entry
    router: APIRouter  # its HTML page at /<slug> and its JSON API under /api/<slug>/


def pages() -> list[Page]:
    """Every page in menu order: the workflow from data to a shipped model, then annotation."""
    from tunesmith.studio.pages import annotate, compare, data, new_run, playground, runs, ship

    return [data.PAGE, new_run.PAGE, runs.PAGE, compare.PAGE, playground.PAGE, ship.PAGE, annotate.PAGE]
