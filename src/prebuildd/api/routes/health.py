"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

import prebuildd
from prebuildd.api.deps import ServicesDep
from prebuildd.store.migrate import pending_migrations

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok", "version": prebuildd.__version__}


@router.get(
    "/readyz",
    summary="Readiness: the database answers and its schema is current",
    responses={503: {"description": "not ready"}},
)
async def readyz(services: ServicesDep) -> Any:
    try:
        async with services.db.transaction() as conn:
            pending = await pending_migrations(conn)
    except Exception as exc:
        return JSONResponse({"message": f"database unreachable: {exc}", "detail": None}, status_code=503)
    if pending:
        return JSONResponse(
            {"message": f"migrations not applied: {pending}", "detail": None}, status_code=503
        )
    return {"status": "ready"}


@router.get(
    "/metrics", summary="Prometheus metrics, served from the last reconcile snapshot", response_class=Response
)
async def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")
