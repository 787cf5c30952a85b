"""The SPEC §6a filters as a pure decision: every rule and their order, without a broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from happ_assistant.filters import RateWindow, decide
from happ_common.channels import ConversationRules, WorkingHours, contains_phrase
from happ_common.conversation_state import ConversationDoc, left_for_people
from happ_common.messages import Handling, StoredMessage

# A Monday, 10:00 UTC = 12:00 in Kyiv (winter).
MONDAY_10 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def rules(**fields: Any) -> ConversationRules:
    return ConversationRules.model_validate(fields)


def outcome(r: ConversationRules, text: str = "hello", **kw: Any) -> tuple[str, str | None]:
    d = decide(
        r,
        sender_id=kw.get("sender", "u"),
        text=text,
        at=kw.get("at", MONDAY_10),
        state=kw.get("state"),
        rate=kw.get("rate", RateWindow()),
    )
    return d.outcome, d.trigger


def test_the_assistant_answers_when_no_rule_applies() -> None:
    assert outcome(rules()) == ("answered", None)


def test_ignored_senders_win_over_everything() -> None:
    r = rules(mode="operators", ignore_senders=["bot"], routes=[{"pattern": "hello"}])
    assert outcome(r, sender="bot") == ("ignored", "ignore_senders")
    assert outcome(r, sender="human") == ("handoff", "route:hello")


def test_a_conversation_a_person_holds_stays_with_them() -> None:
    r = rules(mode="assistant_with_handoff", handoff_keywords=["human"])
    for state in ("waiting", "operator"):
        assert outcome(r, "human please", state=state) == ("for_operator", f"conversation:{state}")
    assert outcome(r, "human please", state="closed") == ("handoff", "keyword:human")


def test_routes_and_keywords_need_people_on_the_channel() -> None:
    routes = [{"match": "regex", "pattern": r"refund\s+\d+"}, {"pattern": "billing"}]
    with_people = rules(mode="assistant_with_handoff", routes=routes, handoff_keywords=["agent"])
    assert outcome(with_people, "REFUND 42 now") == ("handoff", r"route:refund\s+\d+")
    assert outcome(with_people, "a Billing question") == ("handoff", "route:billing")
    assert outcome(with_people, "billingsgate") == ("answered", None)  # whole words only
    assert outcome(with_people, "an agent, please") == ("handoff", "keyword:agent")
    alone = rules(mode="assistant", routes=routes, handoff_keywords=["agent"])
    assert outcome(alone, "refund 42, agent") == ("answered", None)


def test_working_hours_in_the_channels_time_zone() -> None:
    hours = {
        "timezone": "Europe/Kyiv",
        "intervals": [{"days": ["mon", "tue"], "start": "09:00", "end": "11:30"}],
    }
    r = rules(working_hours=hours, off_hours_text="Closed")
    assert outcome(r, at=MONDAY_10 - timedelta(hours=2, minutes=30)) == ("answered", None)
    assert outcome(r, at=MONDAY_10) == ("off_hours", "working_hours")  # 12:00 in Kyiv
    to_people = rules(working_hours=hours, mode="assistant_with_handoff")
    assert outcome(to_people, at=MONDAY_10) == ("handoff", "working_hours")
    assert outcome(rules(working_hours=hours), at=MONDAY_10) == ("answered", None)
    wh = WorkingHours.model_validate(hours)
    assert wh.is_open(datetime(2026, 12, 1, 7, 0, tzinfo=UTC))  # Tuesday 09:00 in Kyiv
    assert not wh.is_open(datetime(2026, 12, 2, 7, 0, tzinfo=UTC))  # Wednesday


def test_the_sender_rate_sends_one_notice_then_silence_until_the_window_passes() -> None:
    r = rules(sender_rate_per_minute=2, rate_notice_text="Slow down")
    window = RateWindow()
    seen = [
        outcome(r, at=MONDAY_10 + timedelta(seconds=s), rate=window)[0] for s in (0, 1, 2, 3, 30)
    ]
    assert seen == ["answered", "answered", "rate_notice", "rate_limited", "rate_limited"]
    # Silenced messages do not count: a minute after the first two, all is well again.
    assert outcome(r, at=MONDAY_10 + timedelta(seconds=61), rate=window)[0] == "answered"
    assert outcome(r, at=MONDAY_10 + timedelta(seconds=62), rate=window)[0] == "answered"
    assert outcome(r, at=MONDAY_10 + timedelta(seconds=63), rate=window)[0] == "rate_notice"


def test_operators_mode_sends_every_new_conversation_to_people() -> None:
    assert outcome(rules(mode="operators")) == ("handoff", "mode")


def test_a_message_sent_while_a_person_held_the_conversation_stays_theirs() -> None:
    back = MONDAY_10
    doc = ConversationDoc.model_validate(
        {"_id": "c\nu", "channel_id": "c", "sender_id": "u", "handed_back_at": back}
    )
    assert left_for_people(doc, back - timedelta(seconds=1))
    assert not left_for_people(doc, back + timedelta(seconds=1))
    assert not left_for_people(None, back)


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"routes": [{"match": "regex", "pattern": "(["}]}, "routes"),
        ({"working_hours": {"timezone": "Nowhere/City", "intervals": []}}, "working_hours"),
        ({"handoff_keywords": ["  "]}, "handoff_keywords"),
        ({"sender_rate_per_minute": 0}, "sender_rate_per_minute"),
    ],
)
def test_bad_rules_are_refused(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as err:
        rules(**fields)
    assert any(str(e["loc"][0]) == where for e in err.value.errors())


def test_phrases_match_whole_words_across_spacing_and_case() -> None:
    assert contains_phrase("I want a REAL   person", "real person")
    assert not contains_phrase("unreal personality", "real person")


def test_a_message_being_handled_again_is_not_counted_twice_by_the_rate() -> None:
    def user(i: int, handling: Handling | None) -> StoredMessage:
        return StoredMessage(
            channel_id="c",
            message_id=f"m{i}",
            sender_id="u",
            role="user",
            text="x",
            created_at=MONDAY_10 + timedelta(seconds=i),
            status="accepted",
            handling=handling,
        )

    window = RateWindow.seeded(
        [
            user(0, Handling(outcome="answered")),
            user(1, Handling(outcome="rate_limited")),
            user(2, None),  # stored, not decided: the message now handled again
        ]
    )
    assert list(window.times) == [MONDAY_10]
    r = rules(sender_rate_per_minute=2)
    assert outcome(r, at=MONDAY_10 + timedelta(seconds=2), rate=window)[0] == "answered"
