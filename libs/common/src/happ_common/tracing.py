"""Optional OpenTelemetry tracing: one trace from the webhook to the outgoing POST.

Off unless an OTLP endpoint is configured with the standard variables
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; the
exporter's other ``OTEL_*`` variables apply as usual). While off, every helper
here returns at once: the hot paths create no spans and touch no context.

The W3C trace context (``traceparent``, ``tracestate``) travels in the Kafka
records' headers, so the spans of the ingress, the assistant and the delivery
service form one trace; an integrator's own ``traceparent`` on the webhook
request is its parent, and the delivery's POST carries ``traceparent`` on to
the integrator's endpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind

from happ_common.settings import TracingSettings

TRACE_HEADERS = ("traceparent", "tracestate")

_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None


def setup_tracing(
    service: str, settings: TracingSettings | None = None, exporter: SpanExporter | None = None
) -> bool:
    """Turn tracing on for this process if configured (or given an ``exporter``)."""
    global _tracer, _provider
    settings = settings or TracingSettings()
    if exporter is None:
        if not settings.enabled:
            return False
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,  # imported only when used: it pulls in protobuf and requests
        )

        exporter = OTLPSpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name or f"happ-{service}"})
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider, _tracer = provider, provider.get_tracer("happ")
    return True


def stop_tracing() -> None:
    """Export what is buffered and turn tracing off (the SDK also flushes at exit)."""
    global _tracer, _provider  # noqa: PLW0603
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def enabled() -> bool:
    return _tracer is not None


@contextmanager
def span(
    name: str,
    kind: SpanKind,
    *,
    parent: Mapping[str, str] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[None]:
    """A span around the block; ``parent``: trace headers it continues (else the
    current span, if any)."""
    if _tracer is None:
        yield
        return
    context = propagate.extract(parent) if parent is not None else None
    with _tracer.start_as_current_span(
        name, context=context, kind=kind, attributes=dict(attributes or {})
    ):
        yield


def outgoing_headers() -> dict[str, str]:
    """The current span's trace headers, to send on (empty while tracing is off)."""
    if _tracer is None:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def kafka_trace_headers(
    headers: Iterable[tuple[str, bytes | None]] | None,
) -> dict[str, str] | None:
    """The trace headers of a Kafka record, if it has any (None while tracing is off)."""
    if _tracer is None or not headers:
        return None
    found = {k: v.decode("latin-1") for k, v in headers if k in TRACE_HEADERS and v is not None}
    return found or None
