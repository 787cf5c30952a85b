"""``make bench-db``: what the embedded database's writes cost, in the shapes
HAPP uses them. The numbers behind two choices: a reply's delivery state in its
own ``_id``-only collection (``happ_common.deliveries``) and the database run
``--standalone`` (no oplog). Writes docs/benchmarks.md."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from pymongo import AsyncMongoClient, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from happ_common.messages import conversation_touch
from happ_common.mongo import Document, ensure_indexes
from happ_common.settings import HappSettings
from happ_devtools.benchkit import record
from happ_devtools.procs import free_port
from happ_devtools.stack import embedded_database

DOCS = int(os.environ.get("BENCH_DOCS", "6000"))
BATCH = 500
BODY = '{"to":"user_42","text":"Reply number 1 to your question.","channel_id":"cm_x"}' * 3


async def _rate(count: int, batches: Callable[[int], Awaitable[object]]) -> float:
    started = time.perf_counter()
    for start in range(0, count, BATCH):
        await batches(start)
    return count / (time.perf_counter() - started)


def _log_entry(i: int) -> Document:
    return {
        "_id": "log_" + os.urandom(16).hex(),
        "channel_id": "cm_benchbenchbench",
        "direction": "outgoing",
        "created_at": datetime.now(UTC),
        "method": "POST",
        "url": "https://example.com/happ",
        "status_code": 200,
        "error_code": None,
        "duration_ms": 1.2,
        "request_body": BODY,
        "response_body": '{"ok":true}',
        "message_id": f"rpl_{i:08d}",
        "attempt": 1,
    }


async def measure(uri: str) -> dict[str, float]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri)
    db = client.happ
    await ensure_indexes(db, HappSettings())
    await db.request_log.create_index([("channel_id", 1), ("message_id", 1)])  # the admin's
    now = datetime.now(UTC)
    messages: AsyncCollection[Document] = db.messages
    await messages.insert_many(
        [
            {
                "channel_id": "cm_benchbenchbench",
                "message_id": f"rpl_{i:08d}",
                "sender_id": f"user{i % 1000}",
                "role": "assistant",
                "text": "Reply number 1 to your question.",
                "status": "pending",
                "created_at": now,
            }
            for i in range(DOCS)
        ]
    )
    state = {"status": "delivered", "attempts": 1, "last_status_code": 200, "updated_at": now}
    results = {
        "status update on the reply's `messages` document (bulk `UpdateOne`)": await _rate(
            DOCS,
            lambda s: messages.bulk_write(
                [
                    UpdateOne(
                        {"channel_id": "cm_benchbenchbench", "message_id": f"rpl_{i:08d}"},
                        {"$set": state},
                    )
                    for i in range(s, s + BATCH)
                ],
                ordered=False,
            ),
        ),
        "first state into `deliveries` (`insert_many`)": await _rate(
            DOCS,
            lambda s: db.deliveries.insert_many(
                [{"_id": f"cm_benchbenchbench/rpl_{i:08d}", **state} for i in range(s, s + BATCH)]
            ),
        ),
        "later state in `deliveries` (bulk `UpdateOne` by `_id`)": await _rate(
            DOCS,
            lambda s: db.deliveries.bulk_write(
                [
                    UpdateOne({"_id": f"cm_benchbenchbench/rpl_{i:08d}"}, {"$set": state})
                    for i in range(s, s + BATCH)
                ],
                ordered=False,
            ),
        ),
        # What the assistant writes after each reply (its last one per message, #14).
        "conversation summary (`conversation_touch`: bulk `UpdateOne` upsert, 1,000 conversations)": await _rate(
            DOCS,
            lambda s: db.conversations.bulk_write(
                [
                    UpdateOne(
                        *conversation_touch(
                            "cm_benchbenchbench", f"user{i % 1000}", None, now, "A reply."
                        ),
                        upsert=True,
                    )
                    for i in range(s, s + BATCH)
                ],
                ordered=False,
            ),
        ),
        "request-log entries (`insert_many`, four indexes)": await _rate(
            DOCS,
            lambda s: db.request_log.insert_many([_log_entry(i) for i in range(s, s + BATCH)]),
        ),
    }
    await client.close()
    return results


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="happ-bench-"))
    runs: dict[str, dict[str, float]] = {}
    for standalone in (True, False):
        port = free_port()
        name = "standalone (no oplog)" if standalone else "replica-set mode (oplog)"
        db = embedded_database(
            port,
            data / name.split(maxsplit=1)[0],
            data / f"{name.split(maxsplit=1)[0]}.log",
            standalone=standalone,
        )
        try:
            runs[name] = asyncio.run(measure(f"mongodb://127.0.0.1:{port}"))
        finally:
            db.stop()
    names = list(runs)
    rows = [
        f"| {what} | " + " | ".join(f"{runs[n][what]:,.0f}" for n in names) + " |"
        for what in runs[names[0]]
    ]
    report = "\n".join(
        [
            "## Embedded database writes (`make bench-db`)",
            "",
            f"{DOCS:,} documents or updates each, {BATCH} per call, one client, SecantusDB as"
            " `make run` starts it, HAPP's indexes (`ensure_indexes`). Per second:",
            "",
            "| write | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
            *rows,
            "",
            "Every update runs in a transaction of its own; an `insert_many` shares one across"
            " the batch. Hence the delivery state's own `_id`-only collection, whose first write"
            " per reply is an insert (docs/architecture.md).",
            "",
            "Command: `make bench-db` (`BENCH_DOCS` changes the count).",
        ]
    )
    print(report)
    record("db", report)


if __name__ == "__main__":
    main()
