"""How every Kafka client connects: bootstrap servers, TLS and SASL, from one place.

The ingress's producer, the workers' FastStream broker, the keyed pipeline's
consumers, the admin client that creates and checks topics, and the admin
service's dead-letter reader all take their connection from here, so pointing
HAPP at a managed Kafka (TLS, SASL/SCRAM) is a matter of the ``KAFKA_*``
settings, never of one client that was forgotten.
"""

from __future__ import annotations

import ssl
from typing import Any

from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from happ_common.settings import InfraSettings

_SASL: dict[str, type[SASLPlaintext | SASLScram256 | SASLScram512]] = {
    "PLAIN": SASLPlaintext,
    "SCRAM-SHA-256": SASLScram256,
    "SCRAM-SHA-512": SASLScram512,
}


def client_options(infra: InfraSettings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
    options: dict[str, Any] = {
        "bootstrap_servers": infra.kafka_bootstrap_servers,
        "security_protocol": infra.kafka_security_protocol,
    }
    if uses_tls(infra):
        options["ssl_context"] = ssl_context(infra)
    if infra.kafka_sasl_mechanism is not None:
        options["sasl_mechanism"] = infra.kafka_sasl_mechanism
        options["sasl_plain_username"] = infra.kafka_sasl_username
        options["sasl_plain_password"] = _password(infra)
    return options


def faststream_security(infra: InfraSettings) -> BaseSecurity | None:
    """The same connection in FastStream's terms (it builds aiokafka's options from it)."""
    context = ssl_context(infra) if uses_tls(infra) else None
    if infra.kafka_sasl_mechanism is None:
        return BaseSecurity(ssl_context=context) if context is not None else None
    return _SASL[infra.kafka_sasl_mechanism](
        username=infra.kafka_sasl_username or "",
        password=_password(infra),
        ssl_context=context,
        use_ssl=context is not None,
    )


def uses_tls(infra: InfraSettings) -> bool:
    return infra.kafka_security_protocol in ("SSL", "SASL_SSL")


def ssl_context(infra: InfraSettings) -> ssl.SSLContext:
    """Server verification against KAFKA_SSL_CA_FILE (or the system's CAs), hostname
    checked; a client certificate when one is configured (mutual TLS)."""
    cafile = str(infra.kafka_ssl_ca_file) if infra.kafka_ssl_ca_file else None
    context = ssl.create_default_context(cafile=cafile)
    if infra.kafka_ssl_cert_file is not None and infra.kafka_ssl_key_file is not None:
        key_password = infra.kafka_ssl_key_password
        context.load_cert_chain(
            str(infra.kafka_ssl_cert_file),
            str(infra.kafka_ssl_key_file),
            key_password.get_secret_value() if key_password else None,
        )
    return context


def _password(infra: InfraSettings) -> str:
    return infra.kafka_sasl_password.get_secret_value() if infra.kafka_sasl_password else ""
