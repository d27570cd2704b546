"""The FastAPI application: every API router, the API key, the body cap, the error handlers, offline docs
at `/docs` and the Gradio UI at `/`."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from pathlib import Path

from pintor.server.config import ServerConfig

log = logging.getLogger("pintor.server")

# Swagger UI files served from the installed `swagger-ui-py` package: /docs works offline, no CDN.
_DOCS_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")


def create_app(config: ServerConfig, painters: dict | None = None):
    """Builds the app: loads the models (once), opens the history and prepares the job queue.

    The worker thread starts with the app's lifespan (uvicorn, or `with TestClient(app)`) and stops with it.

    Args:
        config (`ServerConfig`): the settings.
        painters (`dict`, *optional*): already loaded painters by served name, instead of `config.models`.

    Returns:
        `fastapi.FastAPI`, with the `Service` at `app.state.service`.
    """
    from fastapi import Depends, FastAPI
    from fastapi.middleware.cors import CORSMiddleware

    import pintor
    from pintor.server import a1111, errors, native, openai_api
    from pintor.server.security import BodyLimitMiddleware, require_api_key
    from pintor.server.service import Service

    service = Service(config, painters)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.queue.start()
        try:
            yield
        finally:
            service.close()

    app = FastAPI(title="pintor", version=pintor.__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None,
                  description="Kandinsky 2.x text-to-image over HTTP: OpenAI-compatible (`/v1`), "
                              "A1111-compatible (`/sdapi/v1`) and native (`/api/v1`) endpoints.")
    app.state.service = service
    errors.install(app)
    auth = [Depends(require_api_key)]
    for router in (openai_api.router, a1111.router, native.router):
        app.include_router(router, dependencies=auth)
    _add_docs(app, auth)
    if config.cors_origins:
        # Off unless asked for: a browser page from another origin must not drive a local server by default.
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["X-Pintor-Job"])
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    if config.ui:
        from pintor.server.ui import mount_ui

        app = mount_ui(app, service)
    return app


def _add_docs(app, auth) -> None:
    from fastapi import APIRouter
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import FileResponse, JSONResponse

    from pintor.server.errors import APIError

    router = APIRouter(include_in_schema=False, dependencies=auth)
    static = _swagger_static()

    @router.get("/openapi.json")
    async def openapi():
        return JSONResponse(app.openapi())

    @router.get("/docs")
    async def docs():
        if static is None:  # the package is missing: the schema is still there
            return JSONResponse(app.openapi())
        return get_swagger_ui_html(openapi_url="/openapi.json", title="pintor API",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon-32x32.png")

    @router.get("/docs/static/{name}")
    async def docs_static(name: str):
        if static is None or name not in _DOCS_FILES:
            raise APIError(404, "not found", "not_found")
        return FileResponse(static / name)

    app.include_router(router)


def _swagger_static() -> Path | None:
    # Located without importing the package (it pulls in YAML and Jinja for its own handlers).
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "static"
    return path if all((path / f).is_file() for f in _DOCS_FILES) else None
