"""Helpers for integration tests that talk to a real Kafka broker.

Plain functions (no fixtures) so any test, benchmark or script can use them:

* :func:`create_topics` creates topics (partitions, compaction, extra config) and waits until
  every partition has a leader;
* :func:`consume_all` reads a topic from the beginning to its current end and returns the records
  in (partition, offset) order;
* :func:`produce` writes (key, value[, headers]) messages, optionally in one committed or aborted
  transaction;
* :func:`wait_for_topics`, :func:`delete_topics`, :func:`topic_config` and :func:`end_offsets`
  for the rest.

Topic names in tests come from the ``topic_prefix`` fixture (``tests/conftest.py``), so tests
never share topics and need not delete them.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from consumers.config import KafkaSettings
from consumers.kafka.clients import reader_config
from consumers.kafka.reader import read_to_end, watermarks
from consumers.kafka.writer import produce_blocking

__all__ = [
    "Record",
    "TopicSpec",
    "consume_all",
    "create_topics",
    "delete_topics",
    "end_offsets",
    "produce",
    "topic_config",
    "wait_for_topics",
]

Headers = list[tuple[str, bytes | None]]


class Record(NamedTuple):
    """One consumed message. Unpacks as ``key, value, headers, partition, offset``."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    partition: int
    offset: int


@dataclass(frozen=True)
class TopicSpec:
    """What :func:`create_topics` creates: ``compacted`` sets ``cleanup.policy=compact``."""

    name: str
    partitions: int = 1
    compacted: bool = False
    config: Mapping[str, str] = field(default_factory=dict)

    def topic_config(self) -> dict[str, str]:
        """The topic-level configuration sent to the broker."""
        conf = {str(k): str(v) for k, v in self.config.items()}
        if self.compacted:
            conf.setdefault("cleanup.policy", "compact")
        return conf


TopicLike = TopicSpec | str | tuple[Any, ...] | Mapping[str, Any]


def _spec(item: TopicLike) -> TopicSpec:
    if isinstance(item, TopicSpec):
        return item
    if isinstance(item, str):
        return TopicSpec(item)
    if isinstance(item, tuple):
        return TopicSpec(*item)
    if isinstance(item, Mapping):
        return TopicSpec(**item)
    raise TypeError(f"not a topic spec: {item!r}")


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def wait_for_topics(
    bootstrap: str, topics: Mapping[str, int] | Iterable[str], timeout: float = 30.0
) -> None:
    """Wait until every topic exists with (at least) the given partition count, all led.

    ``topics`` maps names to expected partition counts, or is an iterable of names (any count).
    Raises ``TimeoutError`` naming what is still missing.
    """
    expected = dict(topics) if isinstance(topics, Mapping) else {t: 1 for t in topics}
    admin = _admin(bootstrap)
    deadline = time.monotonic() + timeout
    missing: list[str] = list(expected)
    while True:
        try:
            md = admin.list_topics(timeout=max(1.0, min(5.0, deadline - time.monotonic())))
        except KafkaException:
            md = None
        if md is not None:
            missing = []
            for name, n in expected.items():
                tmd = md.topics.get(name)
                if tmd is None or tmd.error is not None or len(tmd.partitions) < n:
                    missing.append(name)
                elif any(p.leader < 0 or p.error is not None for p in tmd.partitions.values()):
                    missing.append(name)
            if not missing:
                return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topics not ready after {timeout:.0f}s: {missing}")
        time.sleep(0.1)


def create_topics(
    bootstrap: str,
    specs: Iterable[TopicLike],
    *,
    timeout: float = 30.0,
    exist_ok: bool = False,
) -> list[str]:
    """Create topics and wait until all their partitions have a leader; returns the names.

    Each spec is a :class:`TopicSpec`, a name (1 partition), a tuple
    ``(name, partitions[, compacted[, config]])`` or a dict with those keys. Replication factor
    is 1 (single local broker). With ``exist_ok`` a topic that already exists is not an error.
    """
    parsed = [_spec(s) for s in specs]
    if not parsed:
        return []
    admin = _admin(bootstrap)
    new = [
        NewTopic(s.name, num_partitions=s.partitions, replication_factor=1, config=s.topic_config())
        for s in parsed
    ]
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if (
                exist_ok
                and isinstance(err, KafkaError)
                and (err.code() == KafkaError.TOPIC_ALREADY_EXISTS)
            ):
                continue
            raise RuntimeError(f"could not create topic {name!r}: {exc}") from exc
    wait_for_topics(bootstrap, {s.name: s.partitions for s in parsed}, timeout=timeout)
    return [s.name for s in parsed]


def delete_topics(bootstrap: str, topics: Iterable[str], timeout: float = 30.0) -> None:
    """Delete topics (missing ones are ignored) and wait until they are gone from metadata."""
    names = list(topics)
    if not names:
        return
    admin = _admin(bootstrap)
    for name, fut in admin.delete_topics(names, operation_timeout=timeout).items():
        try:
            fut.result(timeout=timeout)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
                raise RuntimeError(f"could not delete topic {name!r}: {exc}") from exc
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(timeout=5)
        left = [n for n in names if n in md.topics]
        if not left:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topics still present after {timeout:.0f}s: {left}")
        time.sleep(0.1)


def topic_config(bootstrap: str, topic: str, timeout: float = 30.0) -> dict[str, str]:
    """The topic's effective configuration as ``{name: value}`` (values as strings)."""
    admin = _admin(bootstrap)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([res], request_timeout=timeout)[res].result(timeout=timeout)
    return {name: entry.value for name, entry in entries.items()}


def _partitions(bootstrap: str, topic: str, timeout: float) -> list[int]:
    wait_for_topics(bootstrap, [topic], timeout=timeout)
    md = _admin(bootstrap).list_topics(topic=topic, timeout=timeout)
    return sorted(md.topics[topic].partitions)


def end_offsets(
    bootstrap: str, topic: str, isolation: str = "read_committed", timeout: float = 30.0
) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}``; with ``read_committed`` *high* is the last stable offset."""
    consumer = _consumer(bootstrap, isolation)
    try:
        return watermarks(consumer, topic, _partitions(bootstrap, topic, timeout), timeout)
    finally:
        consumer.close()


def _consumer(bootstrap: str, isolation: str) -> Consumer:
    """The Kafka layer's reader (assigns partitions, never joins its group nor commits)."""
    if isolation not in ("read_committed", "read_uncommitted"):
        raise ValueError(f"isolation must be read_committed or read_uncommitted, not {isolation!r}")
    return Consumer(reader_config(KafkaSettings(bootstrap_servers=bootstrap),
                                  f"test-reader-{uuid.uuid4().hex[:12]}", isolation=isolation))


def _headers(msg: Any) -> Headers:
    raw = msg.headers() or []
    items = raw.items() if isinstance(raw, Mapping) else raw
    return [(str(k), v.encode() if isinstance(v, str) else v) for k, v in items]


def consume_all(
    bootstrap: str,
    topic: str,
    isolation: str = "read_committed",
    timeout: float = 30.0,
) -> list[Record]:
    """Read ``topic`` from its beginning to its end and return the records
    (:func:`consumers.kafka.reader.read_to_end`: the end is each partition's high watermark, or
    its last stable offset with ``read_committed``, taken when the call starts; records of open
    or aborted transactions are never returned under ``read_committed``). Records come back
    sorted by (partition, offset). Raises ``TimeoutError`` if the end is not reached in time.
    """
    _partitions(bootstrap, topic, timeout)  # waits until the topic exists
    msgs = read_to_end(KafkaSettings(bootstrap_servers=bootstrap), topic, timeout_s=timeout,
                       isolation=isolation)
    return [Record(m.key(), m.value(), _headers(m), m.partition(), m.offset()) for m in msgs]  # type: ignore[arg-type]


Message = tuple[Any, ...]


def _bytes(x: Any) -> bytes | None:
    if x is None or isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode()
    raise TypeError(f"key/value must be bytes, str or None, not {type(x).__name__}")


def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[Message],
    *,
    partition: int | None = None,
    transactional_id: str | None = None,
    abort: bool = False,
    timeout: float = 30.0,
) -> int:
    """Produce ``(key, value[, headers])`` messages and wait until all are acknowledged.

    Keys and values are bytes or str. With ``transactional_id`` all messages go into one
    transaction: they are written to the log, then the transaction is committed, or aborted
    when ``abort`` is true (the messages stay in the log, visible only to
    ``read_uncommitted`` readers). Returns the number sent.
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "linger.ms": 5,
    }
    if transactional_id:
        conf["transactional.id"] = transactional_id
    elif abort:
        raise ValueError("abort=True needs a transactional_id")
    producer = Producer(conf)
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    if transactional_id:
        producer.init_transactions(timeout)
        producer.begin_transaction()
    n = 0
    for m in messages:
        key, value = _bytes(m[0]), _bytes(m[1])
        kwargs: dict[str, Any] = {"on_delivery": on_delivery}
        if len(m) > 2 and m[2]:
            kwargs["headers"] = list(m[2].items()) if isinstance(m[2], Mapping) else list(m[2])
        if partition is not None:
            kwargs["partition"] = partition
        produce_blocking(producer, topic, value, key, **kwargs)
        producer.poll(0)
        n += 1
    if transactional_id:
        # Flush first so the messages are really written (and, on abort, then marked aborted)
        # rather than purged from the local queue by abort_transaction.
        left = producer.flush(timeout)
        if left:
            raise TimeoutError(f"{left} messages to {topic!r} not delivered within {timeout:.0f}s")
        if abort:
            producer.abort_transaction(timeout)
        else:
            producer.commit_transaction(timeout)
    else:
        left = producer.flush(timeout)
        if left:
            raise TimeoutError(f"{left} messages to {topic!r} not delivered within {timeout:.0f}s")
    if errors:
        raise KafkaException(errors[0])
    return n


@contextmanager
def run_own_broker(port: int, data_dir: Path) -> Iterator[tuple[str, Callable[[], None]]]:
    """A broker of the caller's own (``deploy/kafka/broker.sh``) on ``port`` (controller on
    ``port + 1``) with its data in ``data_dir``, for tests that restart it; yields its bootstrap
    address and a function that restarts it, and stops it on exit."""
    env = dict(os.environ, KAFKA_PORT=str(port), KAFKA_CONTROLLER_PORT=str(port + 1),
               KAFKA_DATA_DIR=str(data_dir))
    script = str(Path(__file__).resolve().parents[1] / "deploy" / "kafka" / "broker.sh")

    def broker(cmd: str) -> None:
        p = subprocess.run(["bash", script, cmd], env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, f"broker.sh {cmd} failed:\n{p.stdout}\n{p.stderr}"

    broker("start")
    try:
        yield f"127.0.0.1:{port}", lambda: broker("restart")
    finally:
        broker("stop")
