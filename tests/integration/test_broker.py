"""Real-broker tests of the local Kafka set-up and of the shared test helpers.

They check what the rest of the suite relies on: topics are created with the requested partitions
and configuration, ``consume_all`` returns exactly what is on a topic in (partition, offset)
order, transactions are honoured (``read_committed`` sees a transaction only after its commit
and never sees an aborted one) and the group + transaction coordinators work together
(consume-transform-produce with offsets committed inside the transaction).
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from consumers.config import KafkaSettings
from consumers.kafka.admin import admin_client, changelog_spec, ensure_topics, topic_partitions
from consumers.kafka.errors import TopicError
from tests.kafka_helpers import (
    Record,
    TopicSpec,
    consume_all,
    create_topics,
    end_offsets,
    produce,
    topic_config,
)


def test_integration_marker_is_applied(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("integration") is not None


def test_create_topics_with_partitions(kafka_bootstrap: str, topic_prefix: str) -> None:
    names = create_topics(
        kafka_bootstrap,
        [
            TopicSpec(topic_prefix + "three", partitions=3),
            topic_prefix + "one",
            (topic_prefix + "two", 2),
            {"name": topic_prefix + "four", "partitions": 4},
        ],
    )
    assert names == [topic_prefix + s for s in ("three", "one", "two", "four")]
    md = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10)
    counts = {n: len(md.topics[n].partitions) for n in names}
    assert counts == {names[0]: 3, names[1]: 1, names[2]: 2, names[3]: 4}


def test_topic_partitions_and_ensure_topics_share_one_client(kafka_bootstrap: str, topic_prefix: str) -> None:
    """What a stage checks at start-up: several topics' partition counts from one metadata
    request (``None``: missing), then its changelog created with the same admin client."""
    a, b, missing, cl = (topic_prefix + s for s in ("a", "b", "missing", "a.changelog"))
    create_topics(kafka_bootstrap, [(a, 3), b])
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    admin = admin_client(kafka)
    assert topic_partitions(kafka, [a, b, missing, cl], admin=admin) == {a: 3, b: 1, missing: None, cl: None}
    assert ensure_topics(kafka, [changelog_spec(cl, 3, -1)], admin=admin) == [cl]
    assert topic_partitions(kafka, [cl]) == {cl: 3}  # its own client when none is given
    with pytest.raises(TopicError, match="has 1 partitions but 3 are required"):
        ensure_topics(kafka, [changelog_spec(b, 3, -1)], admin=admin)


def test_create_existing_topic_fails_unless_exist_ok(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    name = topic_prefix + "dup"
    create_topics(kafka_bootstrap, [name])
    with pytest.raises(RuntimeError, match="could not create topic"):
        create_topics(kafka_bootstrap, [name])
    assert create_topics(kafka_bootstrap, [name], exist_ok=True) == [name]


def test_consume_all_returns_partition_offset_order(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = topic_prefix + "ordered"
    create_topics(kafka_bootstrap, [TopicSpec(topic, partitions=3)])
    # Partition 1 stays empty on purpose; partition 2 is written before partition 0.
    produce(kafka_bootstrap, topic, [("b", "p2-0"), ("b", "p2-1")], partition=2)
    produce(
        kafka_bootstrap,
        topic,
        [("a", "p0-0", [("h", b"1")]), ("a", "p0-1"), (None, b"p0-2")],
        partition=0,
    )
    records = consume_all(kafka_bootstrap, topic)
    assert records == [
        Record(b"a", b"p0-0", [("h", b"1")], 0, 0),
        Record(b"a", b"p0-1", [], 0, 1),
        Record(None, b"p0-2", [], 0, 2),
        Record(b"b", b"p2-0", [], 2, 0),
        Record(b"b", b"p2-1", [], 2, 1),
    ]
    key, value, headers, partition, offset = records[0]
    assert (key, value, headers, partition, offset) == (b"a", b"p0-0", [("h", b"1")], 0, 0)


def test_consume_all_of_empty_topic(kafka_bootstrap: str, topic_prefix: str) -> None:
    topic = topic_prefix + "empty"
    create_topics(kafka_bootstrap, [TopicSpec(topic, partitions=2)])
    assert consume_all(kafka_bootstrap, topic, timeout=10) == []


def test_transaction_visible_to_read_committed_only_after_commit(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = topic_prefix + "txn"
    create_topics(kafka_bootstrap, [TopicSpec(topic, partitions=2)])
    # An earlier, committed transaction on partition 0.
    produce(kafka_bootstrap, topic, [("k", "before")], partition=0, transactional_id=topic + "0")
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"{topic_prefix}tx"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(4):
        producer.produce(topic, key=f"k{i}", value=f"v{i}", partition=i % 2)
    assert producer.flush(30) == 0

    # Written but not committed: read_uncommitted sees it, read_committed does not.
    uncommitted = consume_all(kafka_bootstrap, topic, isolation="read_uncommitted")
    assert sorted(r.value or b"" for r in uncommitted) == [b"before", b"v0", b"v1", b"v2", b"v3"]
    # read_committed stops at the open transaction (last stable offset) without waiting for it.
    before = consume_all(kafka_bootstrap, topic, isolation="read_committed", timeout=10)
    assert [(r.partition, r.value) for r in before] == [(0, b"before")]

    producer.commit_transaction(30)
    committed = consume_all(kafka_bootstrap, topic, isolation="read_committed")
    assert [(r.partition, r.key, r.value) for r in committed] == [
        (0, b"k", b"before"),
        (0, b"k0", b"v0"),
        (0, b"k2", b"v2"),
        (1, b"k1", b"v1"),
        (1, b"k3", b"v3"),
    ]


def test_aborted_transaction_is_never_seen(kafka_bootstrap: str, topic_prefix: str) -> None:
    topic = topic_prefix + "abort"
    create_topics(kafka_bootstrap, [topic])
    txid = f"{topic_prefix}tx"
    produce(
        kafka_bootstrap,
        topic,
        [("a", "aborted-1"), ("a", "aborted-2")],
        transactional_id=txid,
        abort=True,
    )
    produce(kafka_bootstrap, topic, [("b", "committed-1")], transactional_id=txid)
    produce(kafka_bootstrap, topic, [("c", "aborted-3")], transactional_id=txid, abort=True)

    committed = consume_all(kafka_bootstrap, topic, isolation="read_committed")
    assert [r.value for r in committed] == [b"committed-1"]
    everything = consume_all(kafka_bootstrap, topic, isolation="read_uncommitted")
    assert [r.value for r in everything] == [
        b"aborted-1",
        b"aborted-2",
        b"committed-1",
        b"aborted-3",
    ]
    # The log also holds the three transaction markers, which no reader is given.
    ((low, high),) = end_offsets(kafka_bootstrap, topic, isolation="read_uncommitted").values()
    assert (low, high) == (0, 7)


def test_compacted_topic_config(kafka_bootstrap: str, topic_prefix: str) -> None:
    compacted, plain, tuned = (topic_prefix + s for s in ("compacted", "plain", "tuned"))
    create_topics(
        kafka_bootstrap,
        [
            TopicSpec(compacted, partitions=2, compacted=True),
            TopicSpec(plain),
            TopicSpec(tuned, compacted=True, config={"min.cleanable.dirty.ratio": "0.01"}),
        ],
    )
    assert topic_config(kafka_bootstrap, compacted)["cleanup.policy"] == "compact"
    assert topic_config(kafka_bootstrap, plain)["cleanup.policy"] == "delete"
    tuned_conf = topic_config(kafka_bootstrap, tuned)
    assert tuned_conf["cleanup.policy"] == "compact"
    assert tuned_conf["min.cleanable.dirty.ratio"] == "0.01"

    # A compacted topic takes keyed writes; every version is readable until the cleaner runs.
    produce(
        kafka_bootstrap,
        compacted,
        [("acct-1", "v1"), ("acct-1", "v2"), ("acct-2", "x")],
        partition=0,
    )
    values = [(r.key, r.value) for r in consume_all(kafka_bootstrap, compacted)]
    assert values[-1] == (b"acct-2", b"x")
    assert (b"acct-1", b"v2") in values


def test_consume_transform_produce_exactly_once(kafka_bootstrap: str, topic_prefix: str) -> None:
    """Group coordinator + transaction coordinator: offsets committed inside the transaction."""
    src, dst = topic_prefix + "src", topic_prefix + "dst"
    create_topics(kafka_bootstrap, [TopicSpec(src, partitions=2), TopicSpec(dst, partitions=2)])
    produce(kafka_bootstrap, src, [(f"k{i}", str(i)) for i in range(10)])

    group = f"{topic_prefix}group-{uuid.uuid4().hex[:6]}"
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"{topic_prefix}eos"}
    )
    try:
        consumer.subscribe([src])
        producer.init_transactions(30)
        seen: list[int] = []
        attempts = 0
        while len(seen) < 10 and attempts < 300:
            attempts += 1
            msgs = consumer.consume(num_messages=100, timeout=0.5)
            msgs = [m for m in msgs if m.error() is None]
            if not msgs:
                continue
            producer.begin_transaction()
            for m in msgs:
                n = int(m.value() or b"")
                seen.append(n)
                producer.produce(dst, key=m.key(), value=str(n * n), partition=m.partition() or 0)
            producer.send_offsets_to_transaction(
                consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
            )
            producer.commit_transaction(30)
        assert sorted(seen) == list(range(10))
    finally:
        consumer.close()

    out = consume_all(kafka_bootstrap, dst)
    assert sorted(int(r.value or b"") for r in out) == [i * i for i in range(10)]

    admin_consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        committed = admin_consumer.committed(
            [TopicPartition(src, 0), TopicPartition(src, 1)], timeout=30
        )
    finally:
        admin_consumer.close()
    assert all(tp.error is None for tp in committed)
    ends = end_offsets(kafka_bootstrap, src)
    assert {tp.partition: tp.offset for tp in committed} == {p: hi for p, (_, hi) in ends.items()}


def test_produce_rejects_unknown_topic(kafka_bootstrap: str, topic_prefix: str) -> None:
    """auto.create.topics.enable=false: writing to a missing topic fails instead of creating it."""
    with pytest.raises((KafkaException, TimeoutError)):
        produce(kafka_bootstrap, topic_prefix + "missing", [("k", "v")], timeout=3)
    md = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10)
    assert topic_prefix + "missing" not in md.topics
