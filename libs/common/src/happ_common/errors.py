"""The error types of the HTTP services, the one place they become responses, and
the OpenAPI responses generated from them.

Body shape (SPEC §3): ``{"error": {"code", "message", "details": [{field, problem}]}}``.
Every error a service answers is an ``ErrorKind`` (status, code, when it happens,
the headers it always carries); raising one gives a ``HappError``, and
``error_responses`` turns a service's kinds into its OpenAPI document's error
responses, so the document lists exactly the codes the code can answer.
Unexpected failures become 503 ``SERVICE_UNAVAILABLE`` with ``Retry-After``: the
contract allows no other 5xx, and a 503 tells the caller to try again rather
than to give up on its message.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, ValidationError, create_model
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


# What each response header an error carries means, for the OpenAPI document.
HEADER_DOCS = {
    "Retry-After": "Seconds to wait before trying again.",
    "WWW-Authenticate": "How to authenticate: `Bearer`.",
    "Allow": "The methods this path accepts.",
}


@dataclass(frozen=True)
class ErrorKind:
    """One error an API answers: its status, its code, when it happens (one line,
    for the API description) and the response headers it always carries."""

    status: int
    code: str
    when: str
    headers: tuple[str, ...] = ()

    def __call__(
        self,
        message: str,
        details: Sequence[ErrorDetail] = (),
        headers: dict[str, str] | None = None,
    ) -> HappError:
        """The error to raise: ``message`` says what to fix, in one sentence."""
        missing = set(self.headers) - set(headers or {})
        if missing:
            raise ValueError(f"{self.code} always carries {sorted(missing)}")
        return HappError(self.status, self.code, message, details, headers)


INVALID_PAYLOAD = ErrorKind(
    422,
    "INVALID_PAYLOAD",
    "not JSON, not an object, wrong Content-Type, or missing or invalid fields "
    "(listed in `details`)",
)
SERVICE_UNAVAILABLE = ErrorKind(
    503,
    "SERVICE_UNAVAILABLE",
    "the database or the broker is unavailable; retry after `Retry-After` seconds",
    ("Retry-After",),
)
# Answered by the routing itself, for a path or a method no operation has: not
# part of any operation's responses.
NOT_FOUND = ErrorKind(404, "NOT_FOUND", "no such path")
METHOD_NOT_ALLOWED = ErrorKind(405, "METHOD_NOT_ALLOWED", "the path has no such method", ("Allow",))


def invalid_payload(message: str, details: Sequence[ErrorDetail] = ()) -> HappError:
    return INVALID_PAYLOAD(message, details)


def service_unavailable(message: str, retry_after_s: int = 5) -> HappError:
    return SERVICE_UNAVAILABLE(message, headers={"Retry-After": str(retry_after_s)})


def error_model(name: str, codes: Sequence[str]) -> type[BaseModel]:
    """``ErrorBody`` with ``error.code`` one of ``codes``, named ``name`` (and
    ``<name>Info``) in the OpenAPI document's components."""
    info = create_model(
        f"{name}Info",
        __base__=ErrorInfo,
        code=(Literal[tuple(codes)], ...),  # type: ignore[arg-type]
        details=(list[ErrorDetail], ...),
    )
    return create_model(name, __base__=ErrorBody, error=(info, ...))


def error_responses(kinds: Iterable[ErrorKind], name: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI responses (FastAPI's ``responses=``) of these error kinds: one per
    status, its body a model named ``<name><status>`` whose ``error.code`` is one of
    the kinds' codes, each code and when it happens in the description, and the
    headers every one of them carries."""
    by_status: dict[int, list[ErrorKind]] = {}
    for kind in kinds:
        same = by_status.setdefault(kind.status, [])
        if kind.code not in [k.code for k in same]:
            same.append(kind)
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted(by_status):
        group = by_status[status]
        response: dict[str, Any] = {
            "description": "; ".join(f"`{k.code}`: {k.when}" for k in group),
            "model": error_model(f"{name}{status}", [k.code for k in group]),
        }
        always = set.intersection(*(set(k.headers) for k in group))
        if always:
            response["headers"] = {
                header: {
                    "description": HEADER_DOCS.get(header, header),
                    "required": True,
                    "schema": {"type": "string"},
                }
                for header in sorted(always)
            }
        out[status] = response
    return out


@functools.cache
def _template_regex(path_format: str) -> re.Pattern[str]:
    """A path template as OpenAPI reads it: a parameter never spans a ``/``."""
    parts = re.split(r"\{[^}]+\}", path_format)
    return re.compile("^" + "[^/]+".join(re.escape(p) for p in parts) + "$")


def allowed_methods(request: Request) -> str:
    """The ``Allow`` header of a 405: every method some route of this path accepts
    (FastAPI names only the first matching route's). Paths are matched as the
    OpenAPI document reads them, so ``.../messages/m1/resend`` allows POST only,
    though ``{message_id:path}`` would let GET read it as message ``m1/resend``;
    by the routes' own patterns when no template matches."""
    path = request.scope["path"]
    routes = [
        (context.route, context.methods)
        for context in iter_route_contexts(request.app.routes)
        if context.methods
    ]
    for template in (True, False):
        methods: set[str] = set()
        for route, route_methods in routes:
            regex = (
                _template_regex(route.path_format)
                if template and hasattr(route, "path_format")
                else getattr(route, "path_regex", None)
            )
            if regex is not None and regex.match(path):
                methods |= set(route_methods)
        if methods:
            break
    return ", ".join(sorted(methods))


_STATUS_CODES = {
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: NOT_FOUND.code,
    405: METHOD_NOT_ALLOWED.code,
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

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code >= 500:
            return service_unavailable(
                "The service could not handle the request; retry."
            ).response()
        if exc.status_code == 400:
            # The framework's only 400: a body it could not read (not UTF-8, say).
            # Any unreadable body is INVALID_PAYLOAD, as the webhook answers it.
            return invalid_payload("The body is not valid JSON: send UTF-8 JSON.").response()
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        code = _STATUS_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
        return HappError(exc.status_code, code, str(exc.detail), headers=headers).response()

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return service_unavailable("The service hit an internal problem; retry shortly.").response()

    app.add_exception_handler(HappError, on_happ_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
