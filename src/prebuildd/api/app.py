"""The FastAPI application: routers, error handlers, OpenAPI at /openapi.json.

The OpenAPI document lists the errors the server really sends (``api.errors.ERROR_RESPONSES``, each with the
``{"code", "message", "detail"}`` body) and not FastAPI's default 422: request validation answers 400.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

import prebuildd
from prebuildd.api.context import Services
from prebuildd.api.errors import ERROR_RESPONSES, install_error_handlers
from prebuildd.api.routes import (
    agent,
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
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.services = services
    install_error_handlers(app)
    app.include_router(health.router)
    for module in (organizations, users, templates, workspaces, jobs, prebuilds, provisioner, agent):
        app.include_router(module.router, prefix="/api/v1", responses=ERROR_RESPONSES)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


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
