"""``happ_db_writes_total`` counts the documents a service asks the database to
write, as sent: what ``make bench`` divides by the messages, and what an
operator watches per accepted webhook."""

from __future__ import annotations

import uuid

from prometheus_client import REGISTRY
from pymongo import DeleteOne, InsertOne, UpdateOne

from happ_common import mongo
from happ_common.settings import InfraSettings
from tests.conftest import System


def counted(metric: str, collection: str, operation: str) -> float:
    labels = {"collection": collection, "operation": operation}
    return REGISTRY.get_sample_value(metric, labels) or 0.0


async def test_documents_and_commands_are_counted_per_collection_and_operation(
    system: System,
) -> None:
    client = mongo.connect(InfraSettings(mongodb_uri=system.stack.mongodb_uri))
    coll = client["happ_test_writes"][f"c{uuid.uuid4().hex[:8]}"]
    name = coll.name
    before = {
        op: (
            counted("happ_db_writes_total", name, op),
            counted("happ_db_write_commands_total", name, op),
        )
        for op in ("insert", "update", "delete", "findAndModify")
    }
    try:
        await coll.insert_many([{"_id": i} for i in range(3)])
        await coll.bulk_write(
            [UpdateOne({"_id": 0}, {"$set": {"x": 1}}), UpdateOne({"_id": 9}, {"$set": {"x": 1}})]
        )
        await coll.bulk_write([InsertOne({"_id": 5}), DeleteOne({"_id": 1})], ordered=True)
        await coll.find_one_and_update({"_id": 2}, {"$set": {"x": 2}})
        await coll.find_one({"_id": 0})  # a read: not counted
    finally:
        await client.drop_database("happ_test_writes")
        await client.close()

    def delta(op: str) -> tuple[float, float]:
        docs, commands = before[op]
        return (
            counted("happ_db_writes_total", name, op) - docs,
            counted("happ_db_write_commands_total", name, op) - commands,
        )

    # Documents as sent (an update that matches nothing still counts), commands apart.
    assert delta("insert") == (4, 2)
    assert delta("update") == (2, 1)
    assert delta("delete") == (1, 1)
    assert delta("findAndModify") == (1, 1)
