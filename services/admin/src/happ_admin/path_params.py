"""A path parameter that may hold any character: a sender id is the
integrator's own string. Starlette's ``path`` convertor (``.*``) stops at a
newline, so a request naming such a sender matched no route and got a bare 404
instead of the documented ``CONVERSATION_NOT_FOUND``."""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor


class AnyText(Convertor[str]):
    regex = "(?s:.+)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anytext", AnyText())

# The sender of a conversation in a route's path (``/``, newlines and all).
SENDER_ID = "{sender_id:anytext}"
