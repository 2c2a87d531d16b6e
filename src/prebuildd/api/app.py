"""The FastAPI application: routers, error handlers, OpenAPI at /openapi.json, and Swagger UI at /docs.

The OpenAPI document lists the errors the server really sends (``api.errors.ERROR_RESPONSES``, each with the
``{"code", "message", "detail"}`` body) and not FastAPI's default 422: request validation answers 400.

``/docs`` is Swagger UI from the copy vendored in ``api/static/swagger-ui`` (Apache-2.0, its LICENSE and NOTICE
beside it), served under ``/docs/assets``: FastAPI's default page loads it from a CDN and is blank offline. The
online validator badge is off for the same reason; nothing on the page leaves the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

import prebuildd
from prebuildd.api.auditing import RequestIdMiddleware
from prebuildd.api.context import Services
from prebuildd.api.errors import ERROR_RESPONSES, install_error_handlers
from prebuildd.api.routes import (
    agent,
    audit,
    health,
    jobs,
    organizations,
    prebuilds,
    provisioner,
    templates,
    users,
    workspaces,
)


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="prebuildd",
        version=prebuildd.__version__,
        description="Warm pools of prebuilt workspaces.",
        openapi_url="/openapi.json",
        docs_url=None,  # served below, from the vendored assets
        redoc_url=None,
    )
    app.state.services = services
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    for module in (organizations, users, templates, workspaces, jobs, prebuilds, provisioner, agent, audit):
        app.include_router(module.router, prefix="/api/v1", responses=ERROR_RESPONSES)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    _install_docs(app)
    return app


SWAGGER_UI = Path(__file__).parent / "static" / "swagger-ui"
DOCS_ASSETS = "/docs/assets"


def _install_docs(app: FastAPI) -> None:
    app.mount(DOCS_ASSETS, StaticFiles(directory=SWAGGER_UI), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},
        )


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated document without the 422 FastAPI adds to every operation with parameters or a body."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                responses = operation.get("responses", {})
                responses.pop("422", None)
                for status, response in responses.items():
                    if status[0] in "45" and "content" not in response:
                        response["content"] = body
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema
