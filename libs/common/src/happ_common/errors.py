"""The one error type of the HTTP services and the one place it becomes a response.

Body shape (SPEC §3): ``{"error": {"code", "message", "details": [{field, problem}]}}``.
Unexpected failures become 503 ``SERVICE_UNAVAILABLE`` with ``Retry-After``: the
contract allows no other 5xx, and a 503 tells the caller to try again rather
than to give up on its message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    field: str
    problem: str


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] = []


class ErrorBody(BaseModel):
    error: ErrorInfo


class HappError(Exception):
    """An error with its HTTP status, SPEC code and a one-sentence fix."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        details: Sequence[ErrorDetail] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = list(details)
        self.headers = headers or {}

    def body(self) -> ErrorBody:
        return ErrorBody(
            error=ErrorInfo(code=self.code, message=self.message, details=self.details)
        )

    def response(self) -> Response:
        return Response(
            self.body().model_dump_json(),
            status_code=self.status_code,
            headers=self.headers,
            media_type="application/json",
        )


def details_from_validation(exc: ValidationError | RequestValidationError) -> list[ErrorDetail]:
    out: list[ErrorDetail] = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        out.append(ErrorDetail(field=".".join(loc) or "(body)", problem=str(err.get("msg", ""))))
    return out


def invalid_payload(message: str, details: Sequence[ErrorDetail] = ()) -> HappError:
    return HappError(422, "INVALID_PAYLOAD", message, details)


def service_unavailable(message: str, retry_after_s: int = 5) -> HappError:
    return HappError(
        503, "SERVICE_UNAVAILABLE", message, headers={"Retry-After": str(retry_after_s)}
    )


_STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
}


def install_error_handlers(app: FastAPI) -> None:
    async def on_happ_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HappError)
        return exc.response()

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return invalid_payload(
            "The request is invalid: fix the fields listed in details.",
            details_from_validation(exc),
        ).response()

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
        if exc.status_code >= 500:
            return service_unavailable(
                "The service could not handle the request; retry."
            ).response()
        return HappError(exc.status_code, code, str(exc.detail)).response()

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return service_unavailable("The service hit an internal problem; retry shortly.").response()

    app.add_exception_handler(HappError, on_happ_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
