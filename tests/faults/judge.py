"""The invariants, judged from outside: what the receiver got and what the fake
LLM was asked, against what the load generator was told was accepted.

* every accepted message answered exactly once: one distinct reply (delivery id
  and text) per ``in_reply_to`` delivered with a 2xx;
* each conversation's replies delivered (first 2xx arrival) in the order its
  messages were accepted;
* no POST of a delivery id repeated (the same attempt twice, or a second 2xx)
  unless a process was killed; repeats are counted either way;
* no conversation left held by a delivery member (its gauge);
* services' memory (RSS) below a bound.

The report states every number, and each violation with a few examples.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from happ_devtools.fake_llm import FakeLlm
from happ_devtools.receiver import Received
from tests.faults.load import Accepted, Load

EXAMPLES = 5
RSS_LIMIT_MB = 500.0


@dataclass(frozen=True)
class Post:
    """One POST the receiver got."""

    in_reply_to: str
    delivery_id: str
    attempt: int
    text: str
    status: int
    at: float

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def posts(received: Iterable[Received]) -> list[Post]:
    out = []
    for r in received:
        body = json.loads(r.body)
        out.append(
            Post(
                in_reply_to=str(body.get("in_reply_to")),
                delivery_id=r.headers.get("X-HAPP-Delivery-Id", ""),
                attempt=int(r.headers.get("X-HAPP-Attempt", "0")),
                text=str(body.get("text")),
                status=r.status or 0,
                at=r.at,
            )
        )
    return out


def first_ok(all_posts: Iterable[Post]) -> dict[str, float]:
    """When each message's reply first arrived with a 2xx answer."""
    first: dict[str, float] = {}
    for p in all_posts:
        if p.ok and p.at < first.get(p.in_reply_to, float("inf")):
            first[p.in_reply_to] = p.at
    return first


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latencies(load: Load, first: dict[str, float], *, lost: float | None = None) -> list[float]:
    """Accept → first 2xx arrival of the load's delivered messages; with ``lost``,
    that value stands for each accepted message never delivered."""
    out = []
    for m, a in load.accepted.items():
        if m in first:
            out.append(first[m] - a.at)
        elif lost is not None:
            out.append(lost)
    return out


@dataclass
class Report:
    scenario: str
    facts: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def fact(self, line: str) -> None:
        self.facts.append(line)

    def violated(self, what: str, examples: Sequence[object] = ()) -> None:
        shown = "; ".join(str(e) for e in examples[:EXAMPLES])
        self.violations.append(what + (f" (e.g. {shown})" if shown else ""))

    def text(self) -> str:
        lines = [f"scenario {self.scenario}", *(f"  {f}" for f in self.facts)]
        lines.append("VIOLATIONS:" if self.violations else "all invariants hold")
        lines += [f"  - {v}" for v in self.violations]
        return "\n".join(lines)

    def assert_ok(self) -> None:
        assert not self.violations, self.text()


def judge(
    report: Report,
    loads: Sequence[Load],
    received: Sequence[Received],
    llm: FakeLlm,
    *,
    repeats_allowed: bool,
    held: int | None,
    rss_mb: dict[str, float],
) -> None:
    """Check the invariants over ``loads``' messages; ``held`` is the delivery
    members' count of conversations held by a retry (None: not judged)."""
    accepted: dict[str, Accepted] = {m: a for load in loads for m, a in load.accepted.items()}
    mine = [p for p in posts(received) if p.in_reply_to in accepted]
    first = first_ok(mine)
    by_message: dict[str, list[Post]] = defaultdict(list)
    for p in mine:
        by_message[p.in_reply_to].append(p)

    for load in loads:
        lat = latencies(load, first)
        report.fact(
            f"load {load.name}: {load.total} planned, {len(load.accepted)} accepted, "
            f"{len(load.gave_up)} given up, {len(load.refused)} refused, retried "
            f"{dict(load.retries) or 0}; delivered {len(lat)}; latency p50 "
            f"{percentile(lat, 0.5):.2f} s, p99 {percentile(lat, 0.99):.2f} s, "
            f"max {max(lat, default=float('nan')):.2f} s"
        )
        if load.refused:
            report.violated(f"{load.name}: {len(load.refused)} messages refused", load.refused)

    lost = sorted(m for m in accepted if m not in first)
    if lost:
        report.violated(f"{len(lost)} of {len(accepted)} accepted messages never delivered", lost)

    twice = []
    for m, ps in by_message.items():
        ok = [p for p in ps if p.ok]
        ids, texts = {p.delivery_id for p in ok}, {p.text for p in ok}
        if len(ids) > 1 or len(texts) > 1:
            twice.append(f"{m}: delivery ids {sorted(ids)}, texts {sorted(texts)}")
    if twice:
        report.violated(f"{len(twice)} messages answered more than once", twice)
    other_text = [
        f"{m}: {p.text!r}"
        for m, ps in by_message.items()
        for p in ps
        if p.ok and not p.text.startswith(f"Echo: {m}")
    ]
    report.fact(f"replies not from the LLM (fallback text): {len(other_text)} {other_text[:3]}")

    calls = Counter(min(llm.per_message[m], 2) for m in accepted)
    many = [f"{m}: {llm.per_message[m]} calls" for m in accepted if llm.per_message[m] > 1]
    report.fact(
        f"LLM calls per accepted message: none {calls[0]}, one {calls[1]}, "
        f"more {calls[2]} {many[:3]}"
    )

    out_of_order = []
    conversations: dict[tuple[str, str], list[Accepted]] = defaultdict(list)
    for a in accepted.values():
        conversations[(a.load, a.conversation)].append(a)
    for (_, conversation), messages in conversations.items():
        latest_seq, latest_at = -1, 0.0
        for a in sorted(messages, key=lambda a: a.seq):
            at = first.get(a.message_id)
            if at is None:
                continue
            if at < latest_at:
                out_of_order.append(
                    f"{conversation}: m{a.seq} arrived {latest_at - at:.2f} s before m{latest_seq}"
                )
            else:
                latest_seq, latest_at = a.seq, at
    if out_of_order:
        report.violated(f"{len(out_of_order)} replies delivered out of order", out_of_order)

    reply_to = {p.delivery_id: p.in_reply_to for p in mine}
    attempts = Counter((p.delivery_id, p.attempt) for p in mine)
    repeated_attempts = [
        f"reply to {reply_to[d]} ({d}): attempt {a} POSTed {n} times"
        for (d, a), n in attempts.items()
        if n > 1
    ]
    oks = Counter(p.delivery_id for p in mine if p.ok)
    repeated_ok = [f"reply to {reply_to[d]} ({d}): {n} x 2xx" for d, n in oks.items() if n > 1]
    report.fact(
        f"POSTs {len(mine)}; same attempt repeated {sum(n - 1 for n in attempts.values())} "
        f"times; 2xx repeated {sum(n - 1 for n in oks.values())} times"
    )
    if not repeats_allowed and (repeated_attempts or repeated_ok):
        report.violated(
            f"no process was killed, yet {len(repeated_attempts)} attempts were POSTed more "
            f"than once and {len(repeated_ok)} replies got more than one 2xx",
            repeated_attempts + repeated_ok,
        )

    if held is not None:
        report.fact(f"conversations held by a retry after settling: {held}")
        if held:
            report.violated(f"{held} conversations still held by a retry after settling")

    report.fact("RSS MB: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(rss_mb.items())))
    big = [f"{k} {v:.0f} MB" for k, v in rss_mb.items() if v > RSS_LIMIT_MB]
    if big:
        report.violated(f"services above {RSS_LIMIT_MB:.0f} MB of RSS", big)
