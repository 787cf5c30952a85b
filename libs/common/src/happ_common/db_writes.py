"""Counts the documents each service asks the database to write.

Writes per message are what a production MongoDB's size and cost follow, so
they are a metric an operator can watch (and ``make bench`` divides by the
messages), not a number only a benchmark knows. Counted from PyMongo's command
monitoring, as sent: an ``insert`` counts its documents, an ``update`` or
``delete`` its statements (matched or not), a ``findAndModify`` one.
"""

from __future__ import annotations

from prometheus_client import Counter
from pymongo import monitoring

DB_WRITES = Counter(
    "happ_db_writes_total",
    "Documents this process asked the database to write (inserted documents, update and"
    " delete statements)",
    ["collection", "operation"],
)
DB_WRITE_COMMANDS = Counter(
    "happ_db_write_commands_total",
    "Write commands this process sent to the database (one may carry many documents)",
    ["collection", "operation"],
)

# The command's field holding one entry per written document.
_BATCHED = {"insert": "documents", "update": "updates", "delete": "deletes"}


class WriteCounter(monitoring.CommandListener):
    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        field = _BATCHED.get(name)
        if field is not None:
            entries = event.command.get(field)
            count = len(entries) if isinstance(entries, list) else 1
        elif name == "findAndModify":
            count = 1
        else:
            return
        labels = {"collection": str(event.command.get(name)), "operation": name}
        DB_WRITES.labels(**labels).inc(count)
        DB_WRITE_COMMANDS.labels(**labels).inc()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass
