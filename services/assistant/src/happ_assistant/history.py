"""Each conversation's recent history, in memory, in the instance that owns it.

A conversation's messages share one Kafka key, hence one partition, and the
consumer group gives a partition to one instance: while the assignment holds,
this instance is the only one handling the conversation's messages. The
ingress stores user messages as it accepts them, but a history read leaves out
those not handled yet (happ_common.messages.handled): they join it in their
turn, here. History read once from MongoDB and extended with what this instance
handles is therefore exact, and the hot
path reads no history from the database (the embedded database does ~300
operations/s, GUIDE.md). When a partition is revoked its conversations are
dropped, since the next owner writes to them from then on.

Memory is bounded twice: a cached conversation holds no more than its channel's
prompt can use (``max_history`` + ``SLACK`` messages, within the character
budget), and the whole cache holds no more than an estimated number of bytes
(messages with their metadata and attachments), least recently used dropped
first, besides its bound in conversations.
"""

from __future__ import annotations

import sys
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import Gauge

from happ_assistant.filters import RateWindow
from happ_assistant.prompt import history_chars
from happ_common.ids import ConversationKey
from happ_common.messages import StoredMessage, handled

Partition = tuple[str, int]  # (topic, partition): aiokafka's TopicPartition is one

# AssistantSettings.max_history's upper bound.
MAX_HISTORY = 200
# A redelivered message and its reply may already be stored after the history
# that precedes them, so a load reads this many more than the history asked for.
SLACK = 2

CACHED = Gauge(
    "happ_assistant_history_cache_conversations", "Conversations whose history is held in memory"
)
CACHED_BYTES = Gauge(
    "happ_assistant_history_cache_bytes",
    "Estimated memory of the conversation histories held in memory",
)

# What a cached message takes besides its text, attachments and metadata, measured
# with tracemalloc on CPython 3.11 (tests/test_assistant_units.py checks the
# estimate against it): ~2 KB for a message read from MongoDB (less for one built
# in memory: fewer fields set), ~1.5 KB more for an LLM trace, ~0.4 KB per
# attachment besides its strings, ~0.8 KB for a user message's handling.
_MESSAGE_OVERHEAD = 2_000
_TRACE_OVERHEAD = 1_500
_HANDLING_OVERHEAD = 800
_ATTACHMENT_OVERHEAD = 400
_CONVERSATION_OVERHEAD = 1_000


def message_bytes(m: StoredMessage) -> int:
    """An estimate of the memory ``m`` holds, on the high side."""
    size = _MESSAGE_OVERHEAD + sys.getsizeof(m.text)
    if m.handling is not None:
        size += _HANDLING_OVERHEAD
    if m.llm is not None:
        size += _TRACE_OVERHEAD + (sys.getsizeof(m.llm.error) if m.llm.error else 0)
    for a in m.attachments:
        size += _ATTACHMENT_OVERHEAD + sys.getsizeof(a.url)
        size += sum(sys.getsizeof(v) for v in (a.name, a.mime_type) if v is not None)
    if m.metadata:
        size += _json_value_bytes(m.metadata)
    return size


def _json_value_bytes(value: object) -> int:
    # Walked rather than sized from its JSON: parsed, a few long strings take about
    # their JSON size, many small values up to six times it.
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        size += sum(_json_value_bytes(k) + _json_value_bytes(v) for k, v in value.items())
    elif isinstance(value, list):
        size += sum(_json_value_bytes(v) for v in value)
    return size


def conversation_order(messages: Sequence[StoredMessage]) -> list[StoredMessage]:
    """Messages (oldest first) in the order the assistant saw them: each reply right
    after the message it answers.

    By timestamp alone a user writing again before the previous reply was ready
    reads "user 1, user 2, reply 1, reply 2"; the in-memory history of the same
    conversation reads "user 1, reply 1, user 2, reply 2". A reload must not
    change what the model is shown.
    """
    present = {m.message_id for m in messages if m.role == "user"}
    answers: dict[str, list[StoredMessage]] = {}
    for m in messages:
        if m.role != "user" and m.in_reply_to is not None and m.in_reply_to in present:
            answers.setdefault(m.in_reply_to, []).append(m)
    ordered: list[StoredMessage] = []
    for m in messages:
        if m.role != "user" and m.in_reply_to in present:
            continue  # placed right after the message it answers (a reply, a notice)
        ordered.append(m)
        ordered.extend(answers.get(m.message_id, ()))
    return ordered


class Conversation:
    """The newest messages of one conversation, oldest first, within a character budget."""

    def __init__(
        self,
        messages: Iterable[StoredMessage],
        *,
        depth: int | None,
        stored: bool,
        max_chars: int,
        asked: int = MAX_HISTORY + SLACK,
    ) -> None:
        self._messages: deque[StoredMessage] = deque()
        self._by_id: dict[str, StoredMessage] = {}
        self._sizes: dict[str, int] = {}
        self._chars = 0
        self._max_chars = max_chars
        # At most this many messages are kept: the largest history until the cache
        # holds the conversation, then what its channel's prompt can use.
        self._keep = MAX_HISTORY + SLACK
        # The history (max_history + SLACK) it was read from the database for.
        self.asked = asked
        # Estimated bytes held, reported to the cache that holds the conversation.
        self.size = _CONVERSATION_OVERHEAD
        self.on_resize: Callable[[int], None] | None = None
        # The newest `depth` messages of the conversation are known (None: all).
        self.depth = depth
        # Older messages were dropped for the character budget: they could never
        # be sent again, so whatever max_history asks for, nothing is missing.
        self.trimmed = False
        # The conversation's document exists in MongoDB.
        self.stored = stored
        for m in messages:
            self._push(m)
        # The sender's pace (sender_rate_per_minute), rebuilt from what was loaded.
        self.rate = RateWindow.seeded(self._messages)

    def __len__(self) -> int:
        return len(self._messages)

    def get(self, message_id: str) -> StoredMessage | None:
        return self._by_id.get(message_id)

    def covers(self, max_history: int) -> bool:
        return self.depth is None or self.trimmed or self.depth >= max_history + SLACK

    def history_before(self, message_id: str, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` messages preceding ``message_id`` (all, if it is not here)."""
        if limit <= 0:
            return []
        messages = list(self._messages)
        if message_id in self._by_id:
            at = next(i for i, m in enumerate(messages) if m.message_id == message_id)
            messages = messages[:at]
        return messages[-limit:]

    def add(self, message: StoredMessage) -> None:
        if message.message_id in self._by_id:
            return
        if self.depth is not None:
            self.depth += 1  # before the push, whose trimming may lower it
        self._push(message)

    def hold(self, count: int) -> None:
        """Holds no more than ``count`` messages from now on, the oldest dropped.

        Raising it is safe only while the conversation covers the history wanted:
        what it holds is then all the prompt can use, and it grows from there."""
        self._keep = min(count, MAX_HISTORY + SLACK)
        self._resized(self._trim())

    def _push(self, message: StoredMessage) -> None:
        self._messages.append(message)
        self._by_id[message.message_id] = message
        self._chars += history_chars(message)
        grown = self._sizes[message.message_id] = message_bytes(message)
        self._resized(grown + self._trim())

    def _trim(self) -> int:
        """Drops the oldest messages beyond the budget and the count; the bytes freed,
        negative."""
        freed = 0
        while self._messages and (
            self._chars > self._max_chars or len(self._messages) > self._keep
        ):
            if self._chars > self._max_chars:
                self.trimmed = True
            old = self._messages.popleft()
            del self._by_id[old.message_id]
            freed -= self._sizes.pop(old.message_id)
            self._chars -= history_chars(old)
            if self.depth is None or self.depth > len(self._messages):
                self.depth = len(self._messages)
        return freed

    def _resized(self, delta: int) -> None:
        self.size += delta
        if delta and self.on_resize is not None:
            self.on_resize(delta)


class HistoryCache:
    """Conversations of the partitions this instance owns, least recently used dropped
    first beyond ``max_conversations`` or ``max_bytes`` (estimated; ``None``: no bound
    in bytes)."""

    def __init__(
        self, max_conversations: int, *, max_chars: int, max_bytes: int | None = None
    ) -> None:
        self._max = max_conversations
        self._max_chars = max_chars
        self._max_bytes = sys.maxsize if max_bytes is None else max_bytes
        self._entries: OrderedDict[ConversationKey, tuple[Partition, Conversation]] = OrderedDict()
        self.bytes = 0
        # Bumped on revocation: a load that started before it must not be kept.
        self._epochs: dict[Partition, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: ConversationKey, max_history: int) -> Conversation | None:
        entry = self._entries.get(key)
        if entry is None or not entry[1].covers(max_history):
            return None
        self._entries.move_to_end(key)
        entry[1].hold(max_history + SLACK)  # the channel's max_history may have changed
        return entry[1]

    def epoch(self, partition: Partition) -> int:
        return self._epochs.get(partition, 0)

    def loaded(
        self, stored: list[StoredMessage] | None, *, asked: int, whole: bool | None = None
    ) -> Conversation:
        """A conversation from what the database returned for ``asked`` newest messages
        (``None``: it has no document, hence no messages yet); ``whole``: whether
        that is all of it (by default: fewer than asked)."""
        # The ingress stores a message as it accepts it: the newest may be waiting
        # their turn behind the one being handled, and join the history in it
        # (repository.recent reads past them).
        messages = conversation_order([m for m in stored or [] if handled(m)])
        complete = stored is None or (len(messages) < asked if whole is None else whole)
        return Conversation(
            messages,
            depth=None if complete else len(messages),
            stored=stored is not None,
            max_chars=self._max_chars,
            asked=asked,
        )

    def put(
        self, key: ConversationKey, partition: Partition, epoch: int, conversation: Conversation
    ) -> None:
        if self._epochs.get(partition, 0) != epoch:
            return  # revoked while it loaded: the partition's next owner writes to it now
        self.forget(key)
        conversation.hold(conversation.asked)
        self._entries[key] = (partition, conversation)
        self.bytes += conversation.size
        conversation.on_resize = self._resized
        self._evict()

    def forget(self, key: ConversationKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._release(entry[1])
        self._measure()

    def revoke(self, partitions: set[Partition]) -> None:
        """The pipeline's ``on_revoked``: drop what those partitions' conversations hold."""
        for p in partitions:
            self._epochs[p] = self._epochs.get(p, 0) + 1
        for key in [k for k, (p, _) in self._entries.items() if p in partitions]:
            self._release(self._entries.pop(key)[1])
        self._measure()

    def _resized(self, delta: int) -> None:
        # A held conversation grew (the service adds each message and its reply) or
        # shrank: the bound holds after every change, not only at the next put.
        self.bytes += delta
        self._evict()

    def _evict(self) -> None:
        while self._entries and (len(self._entries) > self._max or self.bytes > self._max_bytes):
            self._release(self._entries.popitem(last=False)[1][1])
        self._measure()

    def _release(self, conversation: Conversation) -> None:
        # Whoever still uses it (the message being handled) may; it no longer counts here.
        conversation.on_resize = None
        self.bytes -= conversation.size

    def _measure(self) -> None:
        CACHED.set(len(self._entries))
        CACHED_BYTES.set(self.bytes)
