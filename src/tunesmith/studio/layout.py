"""The studio's shared page layout: templates rendered inside the menu of every page (``app.state.pages``)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from jinja2 import Environment, PackageLoader

_env = Environment(loader=PackageLoader("tunesmith.studio", "templates"), autoescape=True)


def render(request: Request, template: str, active: str, **context: Any) -> str:
    """A page inside the shared layout (menu of every page, the active one marked, the workspace named)."""
    studio = request.app.state.studio
    return _env.get_template(template).render(
        pages=request.app.state.pages, active=active, workspace=str(studio.workspace.root), **context
    )
