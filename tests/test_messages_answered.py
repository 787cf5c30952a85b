"""What came of a user's message is stored on what was sent for it, and read back
onto the message (happ_common.messages.answered): pure functions, no services."""

from __future__ import annotations

from datetime import UTC, datetime

from happ_common.ids import output_ids_for
from happ_common.messages import Handling, StoredMessage, all_answered, answered

NOW = datetime.now(UTC)


def user(message_id: str = "m1", **fields: object) -> StoredMessage:
    return StoredMessage.model_validate(
        {
            "channel_id": "cm_t",
            "message_id": message_id,
            "sender_id": "u",
            "role": "user",
            "text": "hi",
            "created_at": NOW,
            "status": "accepted",
            **fields,
        }
    )


def output(message_id: str, in_reply_to: str, handling: Handling | None) -> StoredMessage:
    return StoredMessage(
        channel_id="cm_t",
        message_id=message_id,
        sender_id="u",
        role="system",
        text="x",
        created_at=NOW,
        status="pending",
        in_reply_to=in_reply_to,
        in_reply_to_handling=handling,
    )


def test_the_reply_is_preferred_to_the_handoff_event_whose_handling_wins() -> None:
    reply_id, event_id = output_ids_for("cm_t", "m1")
    notice = output(reply_id, "m1", Handling(outcome="rate_notice"))
    assert answered(user(), {reply_id: notice}).handling == Handling(outcome="rate_notice")
    # A reply stored by an instance that answered, an event by one that handed off.
    reply = output(reply_id, "m1", Handling(outcome="answered"))
    event = output(event_id, "m1", Handling(outcome="handoff", trigger="mode"))
    got = answered(user(), {event_id: event, reply_id: reply})
    assert (got.status, got.reply_id) == ("replied", reply_id)
    assert got.handling == Handling(outcome="handoff", trigger="mode")
    only_event = answered(user(), {event_id: event})
    assert (only_event.reply_id, only_event.handling) == (event_id, event.in_reply_to_handling)


def test_a_message_with_nothing_sent_or_written_before_keeps_what_it_says() -> None:
    reply_id, _ = output_ids_for("cm_t", "m1")
    ignored = user(handling=Handling(outcome="ignored", trigger="keyword:stop"))
    assert answered(ignored, {}) == ignored
    # Another message's output under this id is not this message's.
    assert answered(user(), {reply_id: output(reply_id, "m2", None)}).status == "accepted"
    legacy = user(status="replied", reply_id="rpl_old", handling=Handling(outcome="answered"))
    newer = output(reply_id, "m1", Handling(outcome="handoff", trigger="tool"))
    assert answered(legacy, {reply_id: newer}) == legacy


def test_a_loaded_history_is_answered_from_itself() -> None:
    first_reply, _ = output_ids_for("cm_t", "m1")
    history = [
        user("m1"),
        output(first_reply, "m1", Handling(outcome="answered")),
        user("m2"),  # still being answered
    ]
    got = all_answered(history)
    assert [m.status for m in got] == ["replied", "pending", "accepted"]
    assert got[0].handling == Handling(outcome="answered") and got[2].handling is None
