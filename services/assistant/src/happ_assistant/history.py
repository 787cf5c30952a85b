"""Each conversation's recent history, in memory, in the instance that owns it.

A conversation's messages share one Kafka key, hence one partition, and the
consumer group gives a partition to one instance: while the assignment holds,
this instance is the conversation's only writer. History read once from MongoDB
and extended with what this instance writes is therefore exact, and the hot
path reads no history from the database (the embedded database does ~300
operations/s, GUIDE.md). When a partition is revoked its conversations are
dropped, since the next owner writes to them from then on.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence

from prometheus_client import Gauge

from happ_assistant.prompt import history_chars
from happ_common.messages import StoredMessage

ConversationKey = tuple[str, str]  # (channel_id, sender_id)
Partition = tuple[str, int]  # (topic, partition): aiokafka's TopicPartition is one

# AssistantSettings.max_history's upper bound.
MAX_HISTORY = 200
# A redelivered message and its reply may already be stored after the history
# that precedes them, so a load reads this many more than the history asked for.
SLACK = 2

CACHED = Gauge(
    "happ_assistant_history_cache_conversations", "Conversations whose history is held in memory"
)


def conversation_order(messages: Sequence[StoredMessage]) -> list[StoredMessage]:
    """Messages (oldest first) in the order the assistant saw them: each reply right
    after the message it answers.

    By timestamp alone a user writing again before the previous reply was ready
    reads "user 1, user 2, reply 1, reply 2"; the in-memory history of the same
    conversation reads "user 1, reply 1, user 2, reply 2". A reload must not
    change what the model is shown.
    """
    present = {m.message_id for m in messages}
    replies = {
        m.in_reply_to: m for m in messages if m.role == "assistant" and m.in_reply_to in present
    }
    ordered: list[StoredMessage] = []
    for m in messages:
        if m.role == "assistant" and m.in_reply_to in present:
            continue  # placed right after the message it answers
        ordered.append(m)
        reply = replies.get(m.message_id)
        if reply is not None:
            ordered.append(reply)
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
    ) -> None:
        self._messages: deque[StoredMessage] = deque()
        self._by_id: dict[str, StoredMessage] = {}
        self._chars = 0
        self._max_chars = max_chars
        # The newest `depth` messages of the conversation are known (None: all).
        self.depth = depth
        # Older messages were dropped for the character budget: they could never
        # be sent again, so whatever max_history asks for, nothing is missing.
        self.trimmed = False
        # The conversation's document exists in MongoDB.
        self.stored = stored
        for m in messages:
            self._push(m)

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
        self._push(message)
        if self.depth is not None:
            self.depth += 1

    def _push(self, message: StoredMessage) -> None:
        self._messages.append(message)
        self._by_id[message.message_id] = message
        self._chars += history_chars(message)
        while self._messages and (
            self._chars > self._max_chars or len(self._messages) > MAX_HISTORY + SLACK
        ):
            if self._chars > self._max_chars:
                self.trimmed = True
            old = self._messages.popleft()
            del self._by_id[old.message_id]
            self._chars -= history_chars(old)
            if self.depth is None or self.depth > len(self._messages):
                self.depth = len(self._messages)


class HistoryCache:
    """Conversations of the partitions this instance owns, least recently used dropped
    first beyond ``max_conversations``."""

    def __init__(self, max_conversations: int, *, max_chars: int) -> None:
        self._max = max_conversations
        self._max_chars = max_chars
        self._entries: OrderedDict[ConversationKey, tuple[Partition, Conversation]] = OrderedDict()
        # Bumped on revocation: a load that started before it must not be kept.
        self._epochs: dict[Partition, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: ConversationKey, max_history: int) -> Conversation | None:
        entry = self._entries.get(key)
        if entry is None or not entry[1].covers(max_history):
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def epoch(self, partition: Partition) -> int:
        return self._epochs.get(partition, 0)

    def loaded(self, stored: list[StoredMessage] | None, *, asked: int) -> Conversation:
        """A conversation from what the database returned for ``asked`` newest messages
        (``None``: it has no document, hence no messages yet)."""
        messages = conversation_order(stored or [])
        complete = stored is None or len(stored) < asked
        return Conversation(
            messages,
            depth=None if complete else len(messages),
            stored=stored is not None,
            max_chars=self._max_chars,
        )

    def put(
        self, key: ConversationKey, partition: Partition, epoch: int, conversation: Conversation
    ) -> None:
        if self._epochs.get(partition, 0) != epoch:
            return  # revoked while it loaded: the partition's next owner writes to it now
        self._entries[key] = (partition, conversation)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        CACHED.set(len(self._entries))

    def forget(self, key: ConversationKey) -> None:
        self._entries.pop(key, None)
        CACHED.set(len(self._entries))

    def revoke(self, partitions: set[Partition]) -> None:
        """The pipeline's ``on_revoked``: drop what those partitions' conversations hold."""
        for p in partitions:
            self._epochs[p] = self._epochs.get(p, 0) + 1
        for key in [k for k, (p, _) in self._entries.items() if p in partitions]:
            del self._entries[key]
        CACHED.set(len(self._entries))
