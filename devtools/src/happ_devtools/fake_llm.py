"""A fake OpenAI-compatible Chat Completions server, for tests and benchmarks.

It answers ``POST /v1/chat/completions`` with a reply built from the last user
message (``Echo: <text>``), records every request it got, and can be told to
wait or to fail, to exercise the assistant's timeouts and fallbacks. Offered
tools, it calls ``handoff_to_operator`` when the last user message contains
``HANDOFF_PHRASE``, as a model would when the user asks for a person.

The switches on ``FakeLlm`` itself act on every call. Tests share one fake for
a whole session, so a test that wants failures or delays of its own scripts a
model name instead (``fake.models["my-model"] = ModelScript(fail_with=500)``)
and points its channel at that model: other tests' calls are unaffected.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Body = dict[str, Any]

# Hundreds of clients connect at once in a benchmark; aiohttp's default listen
# backlog (128) drops the rest's SYNs, which the kernel retries a second later.
BACKLOG = 4096
HANDOFF_PHRASE = "let me talk to a human"


@dataclass
class ModelScript:
    """How the fake answers the calls naming one model."""

    fail_with: int | None = None  # answer every call with this HTTP status
    fail_first: int = 0  # fail this many calls (with ``fail_first_with``) before answering
    fail_first_with: int = 503
    delay_s: float = 0.0
    delay_for: Callable[[Body], float] | None = None  # per request, e.g. from its text
    calls: int = 0


@dataclass
class FakeLlm:
    delay_s: float = 0.0
    fail_with: int | None = None  # answer every call with this HTTP status
    fail_first: int = 0  # fail this many calls (with 503) before answering
    requests: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    models: dict[str, ModelScript] = field(default_factory=dict)
    keep_requests: bool = True  # a long benchmark need not hold every request
    # Calls per last user message: with one unique text per message, how many
    # times the LLM was asked to answer each message.
    per_message: Counter[str] = field(default_factory=Counter)
    # Append " [call N]" (N from per_message) to answers, so a message answered
    # twice yields two different replies.
    tag_calls: bool = False

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._complete)
        return app

    def requests_for(self, model: str) -> list[Body]:
        return [r for r in self.requests if r.get("model") == model]

    async def _complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls += 1
        self.per_message[_last_text(body)] += 1
        if self.keep_requests:
            self.requests.append(body)
        script = self.models.get(body.get("model", ""))
        if script is not None:
            return await self._scripted(script, body)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            return _error(self.fail_with, "fake failure")
        if self.fail_first > 0:
            self.fail_first -= 1
            return _error(503, "fake overload")
        return self._answer(body)

    async def _scripted(self, script: ModelScript, body: Body) -> web.Response:
        script.calls += 1
        delay = script.delay_s + (script.delay_for(body) if script.delay_for else 0.0)
        if delay:
            await asyncio.sleep(delay)
        if script.fail_with is not None:
            return _error(script.fail_with, "fake failure")
        if script.fail_first > 0:
            script.fail_first -= 1
            return _error(script.fail_first_with, "fake overload")
        return self._answer(body)

    def _answer(self, body: Body) -> web.Response:
        last = _last_text(body)
        if body.get("tools") and HANDOFF_PHRASE in last.lower():
            return _tool_call(body, "handoff_to_operator")
        if self.tag_calls:
            last = f"{last} [call {self.per_message[last]}]"
        return web.json_response(
            {
                "id": f"chatcmpl-{self.calls}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"Echo: {last}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        )


def _tool_call(body: Body, name: str) -> web.Response:
    return web.json_response(
        {
            "id": "chatcmpl-tool",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": name, "arguments": "{}"},
                            }
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
    )


def _last_text(body: Body) -> str:
    last = body["messages"][-1]["content"]
    if isinstance(last, list):
        last = " ".join(p.get("text", "") for p in last if p.get("type") == "text")
    return str(last)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message}}, status=status)


async def start(fake: FakeLlm, port: int, host: str = "127.0.0.1") -> web.AppRunner:
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=BACKLOG).start()
    return runner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument(
        "--model-delay",
        action="append",
        default=[],
        metavar="MODEL=SECONDS",
        help="calls naming MODEL wait this long instead (repeatable)",
    )
    args = parser.parse_args()
    fake = FakeLlm(delay_s=args.delay, keep_requests=False)
    for spec in args.model_delay:
        model, _, seconds = spec.partition("=")
        fake.models[model] = ModelScript(delay_s=float(seconds))
    web.run_app(
        fake.app(),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        backlog=BACKLOG,
    )


if __name__ == "__main__":
    main()
