"""Schemathesis hooks for ``python -m happ_devtools.openapi_check``.

``st`` loads this module when ``SCHEMATHESIS_HOOKS=happ_devtools.schemathesis_hooks``
(the check sets it). Two things no OpenAPI document can say:

- A webhook request needs the channel's HMAC: one sent without
  ``X-HAPP-Signature`` is signed here with ``HAPP_CHECK_SECRET`` (the check's
  channel requires signatures), so schema-valid messages are accepted while a
  generated, wrong signature still gets its documented 401.
- Some rules are beyond what a JSON schema can state, and the documents state
  them in words: a working-hours interval ends after it starts, a ``regex``
  route compiles, and a message's ``metadata`` is at most 16 KiB as JSON, with
  no NUL in any key and integers within 64 bits (what MongoDB can store); a
  blank ``outgoing_url`` only with ``delivery: response``.
  Schema-valid (positive) cases breaking them are not generated; negative cases
  are kept as they are.
"""

from __future__ import annotations

import os
import re
from typing import Any

import schemathesis
from schemathesis import GenerationMode

from happ_common.signing import happ_signature
from happ_ingress.schemas import metadata_problem

SIGNATURE = "X-HAPP-Signature"
WEBHOOK_PATHS = ("/webhook/", "/cm/")


class SignWebhook:
    """A ``requests`` auth callable: signs the body as it is sent, if unsigned."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def __call__(self, request: Any) -> Any:
        if SIGNATURE not in request.headers:
            body = request.body or b""
            raw = body.encode() if isinstance(body, str) else bytes(body)
            request.headers[SIGNATURE] = happ_signature(self.secret, raw)
        return request


@schemathesis.hook
def before_call(ctx: Any, case: Any, kwargs: dict[str, Any]) -> None:
    secret = os.environ.get("HAPP_CHECK_SECRET")
    if secret and case.operation.path.startswith(WEBHOOK_PATHS):
        kwargs["auth"] = SignWebhook(secret)


CHANNEL_PATHS = ("/api/channels", "/api/channels/{channel_id}")


def rules_hold(body: object, method: str = "POST", path: str = "") -> bool:
    """False for a body breaking one of the rules above (the services answer 422)."""
    if not isinstance(body, dict):
        return True
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and metadata_problem(metadata) is not None:
        return False
    hours = body.get("working_hours")
    intervals = hours.get("intervals") if isinstance(hours, dict) else None
    for interval in intervals if isinstance(intervals, list) else []:
        if isinstance(interval, dict):
            start, end = interval.get("start"), interval.get("end")
            if isinstance(start, str) and isinstance(end, str) and end <= start:
                return False
    # Only a channel whose replies never leave by POST has no endpoint (a new
    # channel without one; a PATCH that removes it).
    url = body.get("outgoing_url", "" if method == "POST" else None)
    if path in CHANNEL_PATHS and url == "" and body.get("delivery") != "response":
        return False
    routes = body.get("routes")
    for route in routes if isinstance(routes, list) else []:
        if isinstance(route, dict) and route.get("match") == "regex":
            try:
                re.compile(str(route.get("pattern")))
            except re.error:
                return False
    return True


def keep(case: Any) -> bool:
    meta = case.meta
    if meta is None or meta.generation.mode is not GenerationMode.POSITIVE:
        return True
    return rules_hold(case.body, case.method.upper(), case.operation.path)


@schemathesis.hook
def filter_case(ctx: Any, case: Any) -> bool:
    return keep(case)


@schemathesis.hook
def before_add_examples(ctx: Any, examples: list[Any]) -> None:
    # The examples phase builds its cases from the schema's examples, without
    # the filter above.
    examples[:] = [case for case in examples if keep(case)]
