"""Configuration of the Kafka layer: :class:`RunnerOptions` and the librdkafka configurations of
every client this project creates (they contain secrets: never log one).

* :func:`consumer_config` — a stage runner's group consumer (EOS: read_committed, manual offsets,
  cooperative rebalancing).
* :func:`producer_config` — a stage runner's transactional producer.
* :func:`reader_config` — a reader that assigns partitions itself, never joins its group and
  never commits (topic reads, changelog restores, replays).
* :func:`transaction_config` — a short-lived transactional producer (replay flags, warm start).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException

from consumers.config import KafkaSettings
from consumers.kafka.naming import transactional_id

if TYPE_CHECKING:
    from consumers.kafka.telemetry import Telemetry

__all__ = [
    "RunnerOptions",
    "consumer_config",
    "default_instance_id",
    "kafka_error",
    "producer_config",
    "reader_config",
    "transaction_config",
]


def default_instance_id() -> str:
    """``<hostname>-<pid>``: unique per process. Use a *stable* id (pod name) in production."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(slots=True)
class RunnerOptions:
    """How a :class:`StageRunner` runs.

    ``instance_id`` should be stable across restarts of the same replica (a StatefulSet pod
    name): the transactional id is ``{group_id}.{stage}.{instance_id}``, so a restarted replica
    fences its predecessor and aborts its open transaction at once instead of after
    ``transaction_timeout_ms``. ``static_membership`` additionally sets ``group.instance.id``
    (KIP-345): a restart within ``session_timeout_ms`` gets its partitions back without a
    rebalance, but a stopped member keeps its partitions until the session times out.
    ``stop_at_end`` (demo, tests, replay) stops once every assigned input partition reached its
    end and everything is committed. ``txn_call_timeout_s`` is passed to librdkafka's
    transactional calls; a call still blocked ``txn_watchdog_margin_s`` later is treated as hung
    (librdkafka issues #5456/#5511: ``send_offsets_to_transaction`` can ignore its timeout after a
    broker restart): the producer is replaced and the runner resumes from the last checkpoint.
    ``restore_settle_timeout_s`` (default ``transaction_timeout_ms`` + 10 s) bounds how long a
    restore waits for the changelog to catch up with the committed offset (see
    :mod:`consumers.kafka.changelog`); it is only reached after an operator reset the group's
    offsets. ``telemetry``: the process's metrics registry (``None``: a private one, not served);
    ``statistics_interval_ms``: how often librdkafka reports consumer lag to it (0 = never).
    ``fault_hook`` is for tests only: called with a point name (``"batch"``, ``"checkpoint"``,
    ``"commit"``) and may raise to simulate failures.
    """

    group_id: str
    instance_id: str = field(default_factory=default_instance_id)
    commit_interval_ms: int = 100
    catchup_commit_interval_ms: int = 1000
    batch_size: int = 2000
    poll_timeout_s: float = 0.1
    transaction_timeout_ms: int = 60000
    stop_at_end: bool = False
    changelog_topic: str | None = None
    create_changelog: bool = True
    changelog_replication_factor: int = -1
    static_membership: bool = False
    session_timeout_ms: int = 45000
    restore_settle_timeout_s: float | None = None
    progress_interval_s: float = 10.0
    linger_ms: int = 10
    max_consecutive_aborts: int = 5
    shutdown_retry_s: float = 30.0
    txn_call_timeout_s: float = 10.0
    txn_watchdog_margin_s: float = 10.0
    max_producer_replacements: int = 3
    statistics_interval_ms: int = 1000
    telemetry: Telemetry | None = None
    consumer_overrides: dict[str, Any] = field(default_factory=dict)
    producer_overrides: dict[str, Any] = field(default_factory=dict)
    fault_hook: Callable[[str], None] | None = None


def kafka_error(exc: KafkaException) -> KafkaError | None:
    """The :class:`KafkaError` a :class:`KafkaException` carries, if any."""
    err = exc.args[0] if exc.args else None
    return err if isinstance(err, KafkaError) else None


def consumer_config(kafka: KafkaSettings, stage: str, options: RunnerOptions) -> dict[str, Any]:
    """The stage runner's group consumer."""
    conf = kafka.client_config()
    conf.update(
        {
            "group.id": options.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.partition.eof": True,
            "session.timeout.ms": options.session_timeout_ms,
        }
    )
    if options.static_membership:
        conf["group.instance.id"] = f"{stage}.{options.instance_id}"
    conf.update(options.consumer_overrides)
    return conf


def producer_config(kafka: KafkaSettings, stage: str, options: RunnerOptions) -> dict[str, Any]:
    """The stage runner's transactional producer."""
    conf = kafka.client_config()
    conf.update(
        {
            "transactional.id": transactional_id(options.group_id, stage, options.instance_id),
            "enable.idempotence": True,
            "transaction.timeout.ms": options.transaction_timeout_ms,
            "linger.ms": options.linger_ms,
            "batch.num.messages": 10000,
            "compression.type": "lz4",
            # Same key -> partition mapping as the Java clients (and Kafka Streams).
            "partitioner": "murmur2_random",
        }
    )
    conf.update(options.producer_overrides)
    return conf


def reader_config(kafka: KafkaSettings, group_id: str | None = None, *,
                  isolation: str = "read_committed",
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A reader that assigns partitions itself: never joins its group, never commits.

    librdkafka still wants a ``group.id``; the default is a random one under ``distillwatch-reader``.
    """
    conf = kafka.client_config()
    conf.update(
        {
            "group.id": group_id or f"distillwatch-reader-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": isolation,
            "enable.partition.eof": True,
        }
    )
    conf.update(extra or {})
    return conf


def transaction_config(kafka: KafkaSettings, txn_id: str, **extra: Any) -> dict[str, Any]:
    """A short-lived transactional producer (one transaction of a replay or a warm start)."""
    conf = kafka.client_config()
    conf.update({"transactional.id": txn_id, "enable.idempotence": True,
                 "transaction.timeout.ms": 600_000, "linger.ms": 20, "compression.type": "lz4",
                 **extra})
    return conf
