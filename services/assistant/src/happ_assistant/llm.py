"""Chat models: an OpenAI-compatible Chat Completions client, or the offline responder.

``OPENAI_BASE_URL`` points the client at OpenAI, Azure, vLLM, Ollama or a
llama.cpp server alike. Without ``OPENAI_API_KEY`` the offline responder answers
instead, and says so in every reply: it never pretends to be an LLM.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx2
import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion

ChatMessage = dict[str, Any]
HttpClient = Literal["aiohttp", "httpx"]

OFFLINE_PROVIDER = "offline"
OFFLINE_LABEL = "[HAPP offline responder: no LLM is configured]"


@dataclass(frozen=True)
class Completion:
    text: str
    provider: str
    model: str | None
    latency_ms: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    # The model called the handoff tool (SPEC §6a): a person should take over.
    handoff: bool = False


class LlmCallFailed(Exception):
    def __init__(
        self, kind: str, message: str, *, retryable: bool, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.retry_after_s = retry_after_s


HANDOFF_TOOL_NAME = "handoff_to_operator"
# Offered to the model on channels that hand off (assistant_with_handoff).
HANDOFF_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": HANDOFF_TOOL_NAME,
        "description": (
            "Hand the conversation to a human operator. Call it when the user asks "
            "for a person, or when you cannot help them."
        ),
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "Why, in a few words"}},
        },
    },
}


class ChatModel(Protocol):
    provider: str

    async def complete(
        self,
        messages: list[ChatMessage],
        *,
        model: str,
        temperature: float,
        timeout_s: float,
        tools: list[dict[str, Any]] | None = None,
    ) -> Completion: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How long the LLM may take for one message: ``attempts`` calls of at most
    ``timeout_s`` each, all within ``budget_s``, ``backoff_s`` doubling between them."""

    attempts: int = 3
    budget_s: float = 90.0
    timeout_s: float = 30.0
    backoff_s: float = 1.0


async def complete_with_retries(
    model: ChatModel,
    messages: list[ChatMessage],
    *,
    model_name: str,
    temperature: float,
    policy: RetryPolicy,
    tools: list[dict[str, Any]] | None = None,
    on_error: Callable[[LlmCallFailed], None] = lambda _: None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Completion:
    """The model's answer, retrying timeouts, 429s and 5xx with exponential backoff
    until the attempts or the time budget run out; then the last failure is raised.

    The backoff is jittered so a provider's hiccup is not answered by a
    synchronized stampede of hundreds of conversations, and a ``Retry-After``
    the provider sent is honoured when it fits the budget.
    """
    deadline = time.monotonic() + policy.budget_s
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            return await model.complete(
                messages,
                model=model_name,
                temperature=temperature,
                timeout_s=min(policy.timeout_s, max(remaining, 0.1)),
                tools=tools,
            )
        except LlmCallFailed as exc:
            on_error(exc)
            pause = policy.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)  # noqa: S311
            if exc.retry_after_s is not None:
                pause = max(pause, exc.retry_after_s)
            if (
                not exc.retryable
                or attempt >= policy.attempts
                or time.monotonic() + pause >= deadline
            ):
                raise
            await sleep(pause)


def _http_client(kind: HttpClient, max_connections: int) -> httpx2.AsyncClient:
    if kind == "aiohttp":
        # aiohttp keeps every idle connection up to the limit: hundreds of calls
        # taking seconds each reuse their connections instead of reconnecting.
        return openai.DefaultAioHttpClient(
            limits=httpx2.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            )
        )
    # httpx's pool does work per request in proportion to its kept-alive
    # connections: with 600 of them it did 133 calls/s, with the SDK's default
    # 100 it did 223/s (and reconnects the rest).
    return openai.DefaultAsyncHttpxClient(
        limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=100)
    )


def _retry_after(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: rare from LLM APIs, our own backoff applies


class OpenAIChat:
    provider = "openai"

    def __init__(
        self,
        api_key: str,
        base_url: str | None,
        *,
        http_client: HttpClient = "aiohttp",
        max_connections: int = 1024,
    ) -> None:
        # Retries are ours (bounded by a time budget, then the fallback text),
        # so the SDK's own are off.
        self._client = AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            http_client=_http_client(http_client, max_connections),
        )

    async def complete(
        self,
        messages: list[ChatMessage],
        *,
        model: str,
        temperature: float,
        timeout_s: float,
        tools: list[dict[str, Any]] | None = None,
    ) -> Completion:
        started = time.perf_counter()
        body: dict[str, Any] = {"model": model, "messages": messages, "temperature": temperature}
        if tools:
            body["tools"] = tools
        try:
            # The SDK's timeout bounds each socket operation; this bounds the call.
            async with asyncio.timeout(timeout_s):
                # The SDK's documented raw request rather than chat.completions.create:
                # create() walks the request through its TypedDict annotations, most
                # of this process's CPU under load (docs/architecture.md, "Measured
                # numbers behind the choices"). Our body is wire-format JSON already;
                # errors, auth and the response model are the same.
                resp = await self._client.post(
                    "/chat/completions",
                    cast_to=ChatCompletion,
                    body=body,
                    options={"timeout": timeout_s, "security": {"bearer_auth": True}},
                )
        except (TimeoutError, openai.APITimeoutError) as exc:
            message = f"no answer within {timeout_s:g} s"
            raise LlmCallFailed("timeout", message, retryable=True) from exc
        except openai.APIConnectionError as exc:
            raise LlmCallFailed("connection", str(exc), retryable=True) from exc
        except openai.RateLimitError as exc:
            raise LlmCallFailed(
                "rate_limited", str(exc), retryable=True, retry_after_s=_retry_after(exc)
            ) from exc
        except openai.APIStatusError as exc:
            retryable = exc.status_code >= 500 or exc.status_code in (408, 409)
            raise LlmCallFailed(
                f"http_{exc.status_code}",
                str(exc),
                retryable=retryable,
                retry_after_s=_retry_after(exc),
            ) from exc
        except openai.OpenAIError as exc:
            raise LlmCallFailed("error", str(exc), retryable=False) from exc
        latency = (time.perf_counter() - started) * 1000
        answer = resp.choices[0].message if resp.choices else None
        text = (answer.content or "").strip() if answer else ""
        handoff = answer is not None and any(
            getattr(getattr(call, "function", None), "name", None) == HANDOFF_TOOL_NAME
            for call in answer.tool_calls or ()
        )
        if not text and not handoff:
            raise LlmCallFailed("empty", "the model returned no text", retryable=True)
        usage = resp.usage
        return Completion(
            text=text,
            provider=self.provider,
            model=resp.model or model,
            latency_ms=round(latency, 2),
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            handoff=handoff,
        )

    async def close(self) -> None:
        await self._client.close()


class OfflineResponder:
    """Answers without any model, plainly labelled, so the pipeline runs end to end."""

    provider = OFFLINE_PROVIDER

    async def complete(
        self,
        messages: list[ChatMessage],
        *,
        model: str,
        temperature: float,
        timeout_s: float,
        tools: list[dict[str, Any]] | None = None,
    ) -> Completion:
        last = messages[-1]["content"] if messages else ""
        if isinstance(last, list):
            last = " ".join(p.get("text", "") for p in last if p.get("type") == "text")
        said = str(last).strip().replace("\n", " ")
        if len(said) > 200:
            said = said[:200] + "…"
        turns = sum(1 for m in messages if m["role"] == "user")
        text = (
            f"{OFFLINE_LABEL} I received your message: “{said}”. "
            f"This conversation has {turns} message(s) from you so far. "
            "Set OPENAI_API_KEY to get AI replies."
        )
        return Completion(text=text, provider=self.provider, model=None, latency_ms=0.0)

    async def close(self) -> None:
        return None
