"""One OpenTelemetry trace from the integrator's webhook request to the POST on its
endpoint, across the three services' processes, through the Kafka records' headers.

The session's services export to a collector in this process (tests/conftest.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from happ_common import tracing
from happ_common.settings import TracingSettings
from happ_devtools.fake_collector import CollectedSpan
from tests.conftest import System, eventually

SERVER, CLIENT, CONSUMER = 2, 3, 5  # opentelemetry.proto Span.SpanKind


async def test_a_trace_runs_from_the_webhook_to_the_outgoing_post(system: System) -> None:
    assert system.collector is not None
    channel = await system.create_channel("/traced")
    trace_id, integrator_span = secrets.token_hex(16), secrets.token_hex(8)
    sent = await system.send(
        channel["id"],
        {"sender_id": "traced-user", "text": "trace me"},
        headers={"traceparent": f"00-{trace_id}-{integrator_span}-01"},
    )
    assert sent.status_code == 200, sent.text
    (got,) = await system.receiver.wait_for("/traced", 1)

    spans: list[CollectedSpan] = []

    async def all_exported() -> bool:
        nonlocal spans
        assert system.collector is not None
        spans = system.collector.trace(trace_id)
        return len(spans) >= 4

    await eventually(all_exported, 15)
    by_name = {(s.service, s.name): s for s in spans}
    webhook = by_name[("happ-ingress", "POST /webhook/{channel_id}")]
    answer = by_name[("happ-assistant", "inbound.messages process")]
    delivery = by_name[("happ-delivery", "outbound.replies process")]
    post = by_name[("happ-delivery", "POST")]
    # Each continues the one before it: the integrator's span, then HAPP's chain.
    assert webhook.parent_span_id == integrator_span and webhook.kind == SERVER
    assert answer.parent_span_id == webhook.span_id and answer.kind == CONSUMER
    assert delivery.parent_span_id == answer.span_id and delivery.kind == CONSUMER
    assert post.parent_span_id == delivery.span_id and post.kind == CLIENT
    assert answer.attributes["messaging.destination.name"] == "inbound.messages"
    assert post.attributes["happ.reply_id"] == got.json()["message_id"]
    # The endpoint can continue the trace: its parent is the POST's span.
    assert got.headers["traceparent"] == f"00-{trace_id}-{post.span_id}-01"


async def test_a_retried_delivery_stays_in_the_message_s_trace(system: System) -> None:
    assert system.collector is not None
    channel = await system.create_channel("/traced-retry")
    failed_once: list[bool] = []

    def first_fails(_: object) -> tuple[int, float]:
        failed_once.append(True)
        return (503, 0.0) if len(failed_once) == 1 else (200, 0.0)

    system.receiver.decide["/traced-retry"] = first_fails
    trace_id = secrets.token_hex(16)
    sent = await system.send(
        channel["id"],
        {"sender_id": "traced-user", "text": "retry me"},
        headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
    )
    assert sent.status_code == 200, sent.text
    first, second = await system.receiver.wait_for("/traced-retry", 2)
    assert first.headers["traceparent"].split("-")[1] == trace_id
    assert second.headers["traceparent"].split("-")[1] == trace_id

    async def both_attempts_exported() -> bool:
        # A consumer span ends after the POST inside it: it may come a batch later.
        assert system.collector is not None
        spans = system.collector.trace(trace_id)
        posts = sorted(str(s.attributes["happ.attempt"]) for s in spans if s.name == "POST")
        retries = [s for s in spans if s.name == "delivery.retry process"]
        return posts == ["1", "2"] and len(retries) == 1

    await eventually(both_attempts_exported, 15)
    spans = system.collector.trace(trace_id)
    (retry,) = [s for s in spans if s.name == "delivery.retry process"]
    (second_post,) = [s for s in spans if s.name == "POST" and s.attributes["happ.attempt"] == 2]
    assert second_post.parent_span_id == retry.span_id


@pytest.fixture
def in_memory() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.setup_tracing("probe", TracingSettings(), exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.stop_tracing()  # this process's other tests run untraced


def test_trace_headers_carry_a_span_to_the_next_process(in_memory: InMemorySpanExporter) -> None:
    with tracing.span("first", SpanKind.PRODUCER):
        carried = tracing.outgoing_headers()
    kafka_headers = [("content-type", b"application/json")] + [
        (k, v.encode()) for k, v in carried.items()
    ]
    with tracing.span(
        "second", SpanKind.CONSUMER, parent=tracing.kafka_trace_headers(kafka_headers)
    ):
        pass
    tracing.stop_tracing()  # exports what the batch processor holds
    provider_spans = {s.name: s for s in in_memory.get_finished_spans()}
    first, second = provider_spans["first"], provider_spans["second"]
    assert second.parent is not None
    assert second.parent.span_id == first.context.span_id
    assert second.context.trace_id == first.context.trace_id


def test_tracing_is_off_unless_an_endpoint_is_set() -> None:
    assert not TracingSettings().enabled
    assert TracingSettings(otel_exporter_otlp_endpoint="http://collector:4318").enabled
    assert not TracingSettings(
        otel_exporter_otlp_endpoint="http://collector:4318", otel_sdk_disabled=True
    ).enabled
    assert not tracing.setup_tracing("probe", TracingSettings())
    assert tracing.outgoing_headers() == {}
    assert tracing.kafka_trace_headers([("traceparent", b"00-x-y-01")]) is None
