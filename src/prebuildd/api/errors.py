"""Errors as JSON `{"message", "detail"}` with the right status, whatever raised them."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from prebuildd.domain.errors import BuildError
from prebuildd.domain.manifest import ManifestError


class ApiError(Exception):
    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")


def forbidden(message: str) -> ApiError:
    return ApiError(403, message)


def _body(message: str, detail: Any = None) -> dict[str, Any]:
    return {"message": message, "detail": detail}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(_body(exc.message, exc.detail), status_code=exc.status)

    @app.exception_handler(BuildError)
    async def _build_error(request: Request, exc: BuildError) -> JSONResponse:
        return JSONResponse(_body(exc.message, {"transient": exc.is_transient}), status_code=exc.status)

    @app.exception_handler(ManifestError)
    async def _manifest_error(request: Request, exc: ManifestError) -> JSONResponse:
        detail = {"file": exc.file, "key": exc.key, "reason": exc.reason}
        return JSONResponse(_body(str(exc), detail), status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            problems.append({"field": location, "problem": error.get("msg", "invalid")})
        message = "; ".join(f"{p['field']}: {p['problem']}" for p in problems) or "invalid request"
        return JSONResponse(_body(f"invalid request: {message}", problems), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers)
