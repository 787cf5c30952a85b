"""A fake OpenAI-compatible Chat Completions server, for tests and benchmarks.

It answers ``POST /v1/chat/completions`` with a reply built from the last user
message (``Echo: <text>``), records every request it got, and can be told to
wait or to fail, to exercise the assistant's timeouts and fallbacks.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class FakeLlm:
    delay_s: float = 0.0
    fail_with: int | None = None  # answer every call with this HTTP status
    fail_first: int = 0  # fail this many calls (with 503) before answering
    requests: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        return app

    async def _complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls += 1
        self.requests.append(body)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            return web.json_response({"error": {"message": "fake failure"}}, status=self.fail_with)
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.json_response({"error": {"message": "fake overload"}}, status=503)
        last = body["messages"][-1]["content"]
        if isinstance(last, list):
            last = " ".join(p.get("text", "") for p in last if p.get("type") == "text")
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


async def start(fake: FakeLlm, port: int, host: str = "127.0.0.1") -> web.AppRunner:
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    web.run_app(
        FakeLlm(delay_s=args.delay).app(), host="127.0.0.1", port=args.port, access_log=None
    )


if __name__ == "__main__":
    main()
