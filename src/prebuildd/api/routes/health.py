"""Liveness (``/healthz``: the process answers), readiness (``/readyz``: this replica can do its work) and metrics.

``/readyz`` runs the database check and every check the server registered (``api.readiness``) at once, each
bounded, and answers 200 with every result, or 503 ``{"code", "message", "detail": {"checks": ...}}`` whose
message names each failing check: ``database_unavailable`` when the database cannot be reached, ``not_ready``
otherwise (migrations pending, an embedded daemon down, a reconcile loop that stopped attempting cycles).
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

import prebuildd
from prebuildd.api.deps import ServicesDep
from prebuildd.api.errors import ErrorBody
from prebuildd.api.readiness import ReadinessCheck, database_check, run_check
from prebuildd.domain.errors import ErrorCode, PrebuilddError

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz(services: ServicesDep) -> dict[str, str]:
    return {"status": "ok", "version": prebuildd.__version__, "replica": services.replica_id}


@router.get(
    "/readyz",
    summary="Readiness: the database answers, the schema is current, this replica's daemons and loop run",
    responses={503: {"model": ErrorBody, "description": "not ready; the message names each failing check"}},
)
async def readyz(services: ServicesDep) -> Any:
    checks = [ReadinessCheck("database", partial(database_check, services.db)), *services.readiness_checks]
    results = await asyncio.gather(*(run_check(check) for check in checks))
    body = {check.name: result.as_dict() for check, result in zip(checks, results, strict=True)}
    failing = [(check.name, result) for check, result in zip(checks, results, strict=True) if not result.ok]
    if not failing:
        return {"status": "ready", "checks": body}
    code = ErrorCode.DATABASE_UNAVAILABLE if any(r.database_down for _, r in failing) else ErrorCode.NOT_READY
    message = "not ready: " + "; ".join(f"{name}: {result.reason}" for name, result in failing)
    raise PrebuilddError(code, message, {"checks": body})


@router.get(
    "/metrics", summary="Prometheus metrics, served from the last reconcile snapshot", response_class=Response
)
async def metrics(services: ServicesDep) -> Response:
    body = await services.metrics_text() if services.metrics_text else services.metrics.render()
    return Response(body, media_type="text/plain; version=0.0.4")
