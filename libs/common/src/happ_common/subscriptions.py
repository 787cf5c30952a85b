"""What a consumer reads: each topic with its event type, how its records are
ordered, and the handler that receives the decoded event.

A consumer service lists its subscriptions once (its ``handlers.py``), in
FastStream's subscriber style; the keyed pipeline (``happ_common.pipeline``)
reads the topics, runs one record per key at a time and calls
:meth:`Subscriptions.handle`, which decodes the record and hands the event to its
topic's handler with where it was read. Handlers never decode or route by topic
themselves. A record that is not its topic's event can never be handled: it
raises ``PoisonRecord``, which the pipeline dead-letters rather than retries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from happ_common.pipeline import KeyFunction, PoisonRecord, Record, record_key

E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an event was read. A partition's owner keeps state per partition
    (conversations in memory, delivery gates), so handlers need it; the offset
    names the record in logs and dead letters."""

    topic: str
    partition: int
    offset: int


EventHandler = Callable[[E, Origin], Awaitable[None]]


def each_record(record: Record) -> object:
    """A key of its own for every record: handled independently of the others
    on its topic, whatever its Kafka key (which still picks its partition)."""
    return (record.topic, record.partition, record.offset)


@dataclass(frozen=True, slots=True)
class _Subscription:
    events: TypeAdapter[Any]
    name: str
    handle: EventHandler[Any]
    key: KeyFunction


class Subscriptions:
    """A consumer's topics, each with its event type, key and handler."""

    def __init__(self) -> None:
        self._by_topic: dict[str, _Subscription] = {}

    def subscribe(
        self,
        topic: str,
        event: type[E] | TypeAdapter[E],
        handle: EventHandler[E],
        *,
        key: KeyFunction = record_key,
        name: str | None = None,
    ) -> None:
        """``handle`` receives each record of ``topic`` decoded as ``event`` (a
        model, or an adapter over a union of them: ``name`` then says what it is,
        for the dead-letter reason). Records with the same ``key`` run one at a
        time, in order; by default a record's Kafka key."""
        if topic in self._by_topic:
            raise ValueError(f"{topic} is subscribed to already")
        events = event if isinstance(event, TypeAdapter) else TypeAdapter(event)
        label = name or str(getattr(event, "__name__", topic))
        self._by_topic[topic] = _Subscription(events, label, handle, key)

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(self._by_topic)

    def key_of(self, record: Record) -> object:
        """The pipeline's ``key_of``: the record's subscription orders it. A topic
        nothing subscribes to (never read today) is keyed as by default, so that
        ``handle`` dead-letters its record rather than the fetch loop failing."""
        subscription = self._by_topic.get(record.topic)
        return (subscription.key if subscription else record_key)(record)

    async def handle(self, record: Record) -> None:
        """The pipeline's handler: the record decoded, to its topic's handler."""
        subscription = self._by_topic.get(record.topic)
        if subscription is None:
            raise PoisonRecord(f"nothing here handles {record.topic}")
        try:
            event = subscription.events.validate_json(record.value or b"")
        except ValidationError as exc:
            raise PoisonRecord(
                f"not a {subscription.name}: {exc.error_count()} errors: {exc}"
            ) from exc
        await subscription.handle(event, Origin(record.topic, record.partition, record.offset))
