"""The FastAPI application: routers, error handlers, OpenAPI at /openapi.json."""

from __future__ import annotations

from fastapi import FastAPI

import prebuildd
from prebuildd.api.errors import install_error_handlers
from prebuildd.api.routes import agent, health, jobs, prebuilds, provisioner, templates, users, workspaces
from prebuildd.services import Services


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
    for module in (users, templates, workspaces, jobs, prebuilds, provisioner, agent):
        app.include_router(module.router, prefix="/api/v1")
    return app
