"""Errors as JSON ``{"code", "message", "detail"}``, mapped to HTTP in one place, whatever raised them.

Every refusal is a ``PrebuilddError`` (its code's status comes from ``domain.errors.HTTP_STATUS``); request
validation becomes ``invalid_request`` with one ``{"field", "problem"}`` per problem, and Starlette's own errors
(unknown route, wrong method) get the code of their status. ``ERROR_RESPONSES`` is what the OpenAPI document
says each error looks like.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from prebuildd.api.auditing import record_refusal_of
from prebuildd.domain.errors import HTTP_STATUS, ErrorCode, PrebuilddError

_CODE_OF_STATUS: dict[int, ErrorCode] = {
    400: ErrorCode.INVALID_REQUEST,
    401: ErrorCode.UNAUTHENTICATED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.INVALID_REQUEST,
    406: ErrorCode.NOT_ACCEPTABLE,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.TOO_LARGE,
    503: ErrorCode.DATABASE_UNAVAILABLE,
}


class ErrorBody(BaseModel):
    """Every error the API sends."""

    code: ErrorCode = Field(description="What kind of refusal this is; stable, for clients to branch on.")
    message: str = Field(description="What was wrong and what to do, for people.")
    detail: Any = Field(default=None, description="Structured detail: field problems, the manifest key, …")


def error_body(code: ErrorCode, message: str, detail: Any = None) -> dict[str, Any]:
    return {"code": code.value, "message": message, "detail": detail}


def error_response(exc: PrebuilddError) -> JSONResponse:
    return JSONResponse(error_body(exc.code, exc.message, exc.detail), status_code=HTTP_STATUS[exc.code])


def _response(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _response("Invalid request, parameter or manifest (`detail` lists each field's problem)"),
    401: _response("Missing, unknown, expired or revoked credentials"),
    403: _response("The caller's role does not allow this"),
    404: _response("Not found, or not visible to the caller"),
    503: _response("The database is unreachable; retry later"),
}
"""The errors every /api/v1 route may answer with. Routes add their own (406 import pending, 409 conflict, 413 too
large) with a description; the document gives those the same body. FastAPI's default 422 is never sent."""


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PrebuilddError)
    async def _refusal(request: Request, exc: PrebuilddError) -> JSONResponse:
        await record_refusal_of(request, exc)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            problems.append({"field": location, "problem": error.get("msg", "invalid")})
        message = "; ".join(f"{p['field']}: {p['problem']}" for p in problems) or "invalid request"
        body = error_body(ErrorCode.INVALID_REQUEST, f"invalid request: {message}", problems)
        await record_refusal_of(request, PrebuilddError(ErrorCode.INVALID_REQUEST, body["message"], problems))
        return JSONResponse(body, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODE_OF_STATUS.get(exc.status_code, ErrorCode.INTERNAL)
        message = _unparsable_body(exc) or str(exc.detail)
        return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _fault(request: Request, exc: Exception) -> JSONResponse:
        # Starlette calls this for an unexpected exception and then re-raises it, so the server's log still has
        # the traceback; the audited action is recorded as an error, and the client gets the one error body.
        await record_refusal_of(
            request, PrebuilddError(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}")
        )
        return JSONResponse(
            error_body(ErrorCode.INTERNAL, "internal error: the server's log has the details"),
            status_code=500,
        )


def _unparsable_body(exc: StarletteHTTPException) -> str | None:
    """What FastAPI's "error parsing the body" (400) really was, when the JSON decoder gave up on its limits."""
    if exc.status_code != 400:
        return None
    if isinstance(exc.__cause__, RecursionError):
        return "invalid JSON body: nested too deeply"
    if isinstance(exc.__cause__, ValueError) and "integer string conversion" in str(exc.__cause__):
        return "invalid JSON body: a number has more than 4300 digits"
    return None
