"""The studio's FastAPI app: a menu of pages, shared layout and static files, errors as readable JSON."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from tunesmith.core.errors import TunesmithError
from tunesmith.studio.pages import pages
from tunesmith.studio.store import Conflict


def create_app() -> FastAPI:
    from importlib.resources import files

    app = FastAPI(title="tunesmith studio", docs_url="/api/docs", redoc_url=None)
    app.state.pages = pages()
    app.mount("/static", StaticFiles(directory=str(files("tunesmith") / "studio" / "static")), name="static")
    for page in pages():
        app.include_router(page.router)

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse(f"/{pages()[0].slug}")

    @app.exception_handler(TunesmithError)
    def user_error(request: Request, exc: TunesmithError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=409 if isinstance(exc, Conflict) else 400)

    return app


def serve(host: str = "127.0.0.1", port: int = 7860) -> None:
    import uvicorn

    uvicorn.run(create_app(), host=host, port=port, log_level="warning")
