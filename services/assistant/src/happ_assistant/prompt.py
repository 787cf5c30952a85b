"""From a conversation to Chat Completions messages.

Images become image parts; files and audio become described links, since chat
models cannot fetch them. History is trimmed to a character budget, newest kept.
"""

from __future__ import annotations

from collections.abc import Sequence

from happ_assistant.llm import ChatMessage
from happ_common.events import Attachment
from happ_common.messages import StoredMessage


def describe_attachment(a: Attachment) -> str:
    parts = [f"[{a.type} attachment"]
    if a.name:
        parts.append(f" “{a.name}”")
    if a.mime_type:
        parts.append(f" ({a.mime_type})")
    parts.append(f": {a.url}]")
    return "".join(parts)


def user_content(text: str, attachments: Sequence[Attachment]) -> str | list[dict[str, object]]:
    if not attachments:
        return text
    lines = [text] if text else []
    lines += [describe_attachment(a) for a in attachments if a.type != "image"]
    content: list[dict[str, object]] = [{"type": "text", "text": "\n".join(lines) or "(no text)"}]
    content += [
        {"type": "image_url", "image_url": {"url": a.url}} for a in attachments if a.type == "image"
    ]
    return content


def history_message(m: StoredMessage) -> ChatMessage:
    # An operator's replies are the platform's side of the conversation too: after
    # a hand-back the model carries on from what the person said.
    if m.role in ("assistant", "operator", "system"):
        return {"role": "assistant", "content": m.text}
    # Past images are described, not re-sent: they cost tokens on every turn.
    lines = [m.text] if m.text else []
    lines += [describe_attachment(a) for a in m.attachments]
    return {"role": "user", "content": "\n".join(lines) or "(no text)"}


def history_chars(m: StoredMessage) -> int:
    """What ``m`` costs of the character budget as history."""
    return len(str(history_message(m)["content"]))


def build_messages(
    system_prompt: str,
    history: Sequence[StoredMessage],
    text: str,
    attachments: Sequence[Attachment],
    *,
    max_chars: int,
) -> list[ChatMessage]:
    current: ChatMessage = {"role": "user", "content": user_content(text, attachments)}
    budget = max_chars - len(system_prompt) - len(text)
    kept: list[ChatMessage] = []
    for m in reversed(history):
        if m.role == "system":
            continue  # HAPP's own notices (handoff, off hours): not the model's words
        budget -= history_chars(m)
        if budget < 0:
            break
        kept.append(history_message(m))
    kept.reverse()
    return [{"role": "system", "content": system_prompt}, *kept, current]
