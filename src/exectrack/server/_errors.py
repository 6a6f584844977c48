"""The API's one error shape, ``{"error": {"code", "parameter", "message"}}``, and the
handlers that give every failure that shape: bad input is a 4xx naming the parameter,
a store that fails is a 503, never a 500 with a driver's text."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from exectrack._log import get_logger
from exectrack._redact import redact_text
from exectrack.errors import InvalidArgumentError, StoreError

__all__ = ["ApiError", "error_body", "install_handlers", "parameter"]

log = get_logger(__name__)

_CODES = {
    400: "invalid_parameter",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    503: "store_unavailable",
}


class ApiError(Exception):
    """An error response: HTTP status, machine code, message, the parameter at fault."""

    def __init__(
        self, status: int, message: str, *, parameter: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "http_error")
        self.message = message
        self.parameter = parameter


def error_body(code: str, message: str, parameter: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "parameter": parameter, "message": message}}


def _response(err: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        error_body(err.code, err.message, err.parameter), status_code=err.status, headers=headers
    )


@contextmanager
def parameter(name: str) -> Iterator[None]:
    """Turn the query layer's InvalidArgumentError into a 400 naming ``name``."""
    try:
        yield
    except InvalidArgumentError as exc:
        raise ApiError(400, str(exc), parameter=name) from None


def _validation_error(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(part) for part in first.get("loc", ())]
    name = loc[1] if len(loc) > 1 and loc[0] in ("query", "path", "header") else None
    message = str(first.get("msg", "invalid request"))
    return ApiError(400, f"{name}: {message}" if name else message, parameter=name)


def install_handlers(app: FastAPI) -> None:
    """Every failure answers with the error shape."""

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return _response(exc)

    async def validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _response(_validation_error(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        err = ApiError(exc.status_code, str(exc.detail))
        return _response(err, headers=dict(exc.headers or {}))

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        return _response(ApiError(400, str(exc)))

    async def store_error(request: Request, exc: Exception) -> JSONResponse:
        log.warning("exectrack server: the store failed: %s", redact_text(str(exc)))
        state = getattr(request.app.state, "exectrack", None)
        if state is not None:
            state.store_errors += 1
        return _response(ApiError(503, "the run store is unavailable; try again"))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(InvalidArgumentError, invalid)
    app.add_exception_handler(StoreError, store_error)
