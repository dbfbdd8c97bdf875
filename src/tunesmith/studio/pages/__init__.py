"""Studio pages. A page is a module with ``PAGE = Page(...)``; add it to ``PAGES`` and it appears in the menu."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter


@dataclass(frozen=True)
class Page:
    slug: str  # URL path: /<slug>
    title: str  # menu entry
    router: APIRouter  # its HTML page at /<slug> and its JSON API under /api/<slug>/


def pages() -> list[Page]:
    """Every page in menu order (later issues add prepare, train and watch, compare, chat)."""
    from tunesmith.studio.pages import annotate

    return [annotate.PAGE]
