"""The studio's FastAPI app: a menu of pages, shared layout and static files, errors as readable JSON, behind the
gate of ``security.py`` and confined to its workspace."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse

from tunesmith.core.errors import TunesmithError
from tunesmith.jobs.service import JobStateError
from tunesmith.jobs.spec import JobRequestError
from tunesmith.studio.context import Settings, Studio
from tunesmith.studio.pages import pages
from tunesmith.studio.runs import RunNotFound
from tunesmith.studio.security import Guard, allowed_hosts
from tunesmith.studio.store import Conflict
from tunesmith.studio.workspace import OutsideWorkspace

UPLOAD_PATHS = ("/api/data/upload",)


def create_app(settings: Settings, workers: bool = True) -> FastAPI:
    """The studio for ``settings``; ``workers``: run its jobs in threads of this process while it serves."""
    from importlib.resources import files

    from fastapi.staticfiles import StaticFiles

    studio = Studio.open(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if workers:
            studio.start_workers()
        try:
            yield
        finally:
            studio.close()

    app = FastAPI(title="tunesmith studio", docs_url="/api/docs", redoc_url=None, lifespan=lifespan)
    app.state.studio = studio
    app.state.pages = pages()
    app.mount("/static", StaticFiles(directory=str(files("tunesmith") / "studio" / "static")), name="static")
    for page in app.state.pages:
        app.include_router(page.router)

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse(f"/{app.state.pages[0].slug}")

    @app.exception_handler(TunesmithError)
    def user_error(request: Request, exc: TunesmithError) -> JSONResponse:
        status = 409 if isinstance(exc, Conflict) else 403 if isinstance(exc, OutsideWorkspace) else 400
        return JSONResponse({"error": str(exc)}, status_code=404 if isinstance(exc, RunNotFound) else status)

    @app.exception_handler(JobRequestError)
    def job_error(request: Request, exc: JobRequestError) -> JSONResponse:
        return JSONResponse({"error": exc.message, "param": exc.param}, status_code=400)

    @app.exception_handler(JobStateError)
    def state_error(request: Request, exc: JobStateError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=409)

    hosts = allowed_hosts(settings.host, settings.allow_hosts)
    app.add_middleware(
        Guard,
        token=settings.token,
        hosts=hosts,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        upload_paths=UPLOAD_PATHS,
    )
    return app


def serve(settings: Settings, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(settings), host=settings.host, port=port, log_level="warning", timeout_graceful_shutdown=5)
