"""Every Kafka client connects the way the KAFKA_* settings say: TLS end to end
through a TLS-only broker, SASL on the wire of each client, idempotent producers,
and half-configured connections refused with the reason."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from happ_common.kafka import DirectPublisher, EventPublisher, PublishFailed
from happ_common.kafka_connection import client_options, faststream_security
from happ_common.pipeline import KeyedPipeline, PipelineConfig
from happ_common.settings import InfraSettings
from happ_common.topics import ensure_topics
from happ_devtools.certs import DevTls
from happ_devtools.fake_llm import FakeLlm
from happ_devtools.procs import free_port
from tests.conftest import ARTIFACTS, System, running_system

ROOT = Path(__file__).resolve().parent.parent
SASL_HANDSHAKE = 17  # Kafka API key


async def test_the_whole_system_runs_on_a_broker_reachable_only_over_tls(
    tls: DevTls, tmp_path: Path
) -> None:
    """The broker listens in plaintext behind a stunnel TLS proxy and advertises only the
    proxy, so every connection of every service (topics, producers, consumer groups,
    the admin's dead-letter reader) must speak TLS with the CA from KAFKA_SSL_CA_FILE."""
    async with running_system(
        tls, tmp_path / "happ", FakeLlm(), ARTIFACTS / "kafka-tls", kafka_tls=True
    ) as system:
        env = system.stack.env()
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SSL"
        channel = await system.create_channel("/over-tls")
        accepted = await system.send(channel["id"], {"sender_id": "u1", "text": "Hi over TLS"})
        assert accepted.status_code == 200, accepted.text
        (got,) = await system.receiver.wait_for("/over-tls", 1)
        assert got.json()["text"] == "Echo: Hi over TLS"
        assert got.json()["in_reply_to"] == accepted.json()["message_id"]

        dead_letters = await system.admin.get("/api/dead-letters")
        assert dead_letters.status_code == 200, dead_letters.text  # read over TLS too

        # The port really is TLS-only: a plaintext client cannot even bootstrap.
        with pytest.raises(KafkaError):
            await _plaintext_metadata(system)


async def _plaintext_metadata(system: System) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=system.stack.kafka_bootstrap, request_timeout_ms=3000
    )
    try:
        await asyncio.wait_for(consumer.start(), 10)
    finally:
        await consumer.stop()


def test_tls_options_verify_the_broker_against_the_configured_ca(tls: DevTls) -> None:
    infra = InfraSettings(
        kafka_security_protocol="SSL",
        kafka_ssl_ca_file=tls.ca_file,
        kafka_ssl_cert_file=tls.cert_file,  # a client certificate, for mutual TLS
        kafka_ssl_key_file=tls.key_file,
    )
    options = client_options(infra)
    context = options["ssl_context"]
    assert options["security_protocol"] == "SSL"
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert any("HAPP development CA" in str(cert["subject"]) for cert in context.get_ca_certs())
    security = faststream_security(infra)
    assert security is not None and security.use_ssl


@dataclass
class Handshake:
    client_id: str
    mechanism: str


class RecordingProxy:
    """A TCP proxy in front of the real broker that records each SASL handshake.

    The embedded broker has no working SASL (it answers "unsupported mechanism"),
    so this proves what the clients put on the wire, not a login."""

    def __init__(self, broker: str) -> None:
        host, port = broker.rsplit(":", 1)
        self._broker = (host, int(port))
        self.handshakes: list[Handshake] = []
        self.port = free_port()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RecordingProxy]:
        server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        try:
            yield self
        finally:
            server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._broker)
        await asyncio.gather(
            self._requests(reader, up_writer),
            self._copy(up_reader, writer),
            return_exceptions=True,
        )

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = await reader.readexactly(4)
                frame = await reader.readexactly(struct.unpack(">i", size)[0])
                api_key, _version, _correlation, id_len = struct.unpack(">hhih", frame[:10])
                client_id = frame[10 : 10 + max(id_len, 0)].decode()
                if api_key == SASL_HANDSHAKE:
                    body = frame[10 + max(id_len, 0) :]
                    (mech_len,) = struct.unpack(">h", body[:2])
                    self.handshakes.append(Handshake(client_id, body[2 : 2 + mech_len].decode()))
                writer.write(size + frame)
                await writer.drain()
        finally:
            writer.close()

    @staticmethod
    async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


def _sasl(bootstrap: str, mechanism: str) -> InfraSettings:
    return InfraSettings(
        kafka_bootstrap_servers=bootstrap,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="happ",
        kafka_sasl_password="s3cret",
    )


async def _try(start: Callable[[], Awaitable[Any]]) -> None:
    # Each client fails to log in (the broker has no SASL); only its attempt matters.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(start(), 4)


async def test_sasl_settings_reach_every_kafka_client(system: System) -> None:
    """Each kind of client HAPP builds: the ingress's producer, the workers' FastStream
    producer, the keyed pipeline's consumer, the topic admin and the dead-letter reader."""
    from happ_admin.dead_letters.service import DeadLetterService  # noqa: PLC0415

    async with RecordingProxy(system.stack.kafka_bootstrap).running() as proxy:
        for mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            infra = _sasl(f"127.0.0.1:{proxy.port}", mechanism)
            options = client_options(infra)
            assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
                "happ",
                "s3cret",
            )
            assert "ssl_context" not in options  # SASL_PLAINTEXT: no TLS asked for

            clients: dict[str, Callable[[], Awaitable[Any]]] = {}
            direct = DirectPublisher(infra, client_id="probe-ingress", timeout_s=3)
            clients["probe-ingress"] = direct.start
            event = EventPublisher(infra, client_id="probe-worker", timeout_s=3)
            clients["probe-worker"] = event.start
            pipeline = KeyedPipeline(
                PipelineConfig(
                    name="probe-pipeline",
                    connection=options,
                    group_id="probe",
                    topics=("inbound.messages",),
                ),
                _never_called,
            )
            clients["happ-probe-pipeline"] = pipeline.start
            clients["happ-topics"] = lambda: ensure_topics(infra)
            dead_letters = DeadLetterService(infra, event)
            clients["aiokafka"] = lambda: dead_letters.list(1)
            for client_id, start in clients.items():
                await _try(start)
                assert any(
                    h.client_id.startswith(client_id) and h.mechanism == mechanism
                    for h in proxy.handshakes
                ), (client_id, mechanism, proxy.handshakes)
            for stop in (direct.stop, event.stop, pipeline.stop):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(stop(), 5)
            proxy.handshakes.clear()


async def _never_called(*_: Any) -> None:
    raise AssertionError("no record can arrive without a login")


def test_no_kafka_client_is_built_outside_the_connection_module() -> None:
    """A client given ``bootstrap_servers`` by hand would miss TLS and SASL."""
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("services", "libs")
        for path in (ROOT / folder).rglob("*.py")
        if path.name != "kafka_connection.py"
        and re.search(r"\bbootstrap_servers\s*=", path.read_text())
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs KAFKA_SASL_MECHANISM"),
        (
            {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": "PLAIN",
                "kafka_sasl_username": "u",
            },
            "needs KAFKA_SASL_PASSWORD",
        ),
        ({"kafka_sasl_username": "u"}, "KAFKA_SASL_* is set but KAFKA_SECURITY_PROTOCOL"),
        ({"kafka_ssl_ca_file": "/ca.pem"}, "KAFKA_SSL_* is set but KAFKA_SECURITY_PROTOCOL"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cert_file": "/c.pem"},
            "KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together",
        ),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
    ],
)
def test_a_half_configured_connection_is_refused_naming_what_is_missing(
    settings: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(reason)):
        InfraSettings(**settings)


async def test_producers_are_idempotent_unless_turned_off(system: System) -> None:
    """On by default; the embedded broker refuses InitProducerId, which is how this
    test sees the flag reach the wire (and why the local stack turns it off)."""
    assert InfraSettings.model_fields["kafka_enable_idempotence"].default is True
    bootstrap = system.stack.kafka_bootstrap
    idempotent = EventPublisher(
        InfraSettings(kafka_bootstrap_servers=bootstrap, kafka_enable_idempotence=True),
        client_id="probe-idempotent",
    )
    with pytest.raises(KafkaError):
        await asyncio.wait_for(idempotent.start(), 10)
    await idempotent.stop()

    plain = EventPublisher(
        InfraSettings(kafka_bootstrap_servers=bootstrap, kafka_enable_idempotence=False),
        client_id="probe-plain",
    )
    await plain.start()
    await plain.stop()


async def test_a_producer_out_of_step_with_the_broker_reports_itself_dead() -> None:
    """aiokafka cannot recover an idempotent producer from OutOfOrderSequenceNumber
    (aio-libs/aiokafka#1017); the embedded broker has no idempotence to provoke it,
    so the broker's answer is injected here: /healthz and /readyz must both fail."""
    from aiokafka.errors import OutOfOrderSequenceNumber  # noqa: PLC0415

    publisher = EventPublisher(InfraSettings(), client_id="probe-broken")

    async def out_of_step(*_: Any, **__: Any) -> None:
        raise OutOfOrderSequenceNumber()

    publisher.broker.publish = out_of_step  # type: ignore[method-assign,assignment]
    assert publisher.healthy()
    with pytest.raises(PublishFailed):
        await publisher.publish_raw("outbound.replies", b"{}", b"k", {})
    assert not publisher.healthy()
    with pytest.raises(PublishFailed, match="restart the process"):
        await publisher.ping()
