"""The reference enforcement subscriber: flags topic → :class:`~consumers.enforce.store.Store`.

* reads ``distillation.flags`` with ``isolation.level=read_committed`` in its own consumer group
  (records of aborted detector transactions are never seen);
* applies each batch in ONE database transaction, and commits the batch's Kafka offsets only
  after the database transaction committed: a crash in between re-delivers the batch, and the
  store skips what it already has by ``flag_id`` — at-least-once delivery + idempotent apply =
  effectively once;
* a malformed record is audited (``malformed``), counted and skipped; it never stops the stream;
* ``until_end``: stop once every assigned partition is at its end (tests, batch use);
* SIGTERM / SIGINT: finish the batch in hand (DB commit, offset commit), close, exit 0.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from dataclasses import dataclass
from types import FrameType
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumers.config import KafkaSettings
from consumers.enforce.store import Store

log = structlog.get_logger("distillwatch.enforce")


@dataclass
class SubscriberOptions:
    group_id: str = "distillwatch-enforce"
    batch_size: int = 500
    poll_timeout_s: float = 0.5
    until_end: bool = False
    #: with ``until_end``: give up (non-zero exit) when the end is not reached in this time
    max_wait_s: float = 300.0


class EnforceError(RuntimeError):
    """A fatal Kafka error (authentication, authorization, unknown topic...)."""


def consumer_config(kafka: KafkaSettings, opts: SubscriberOptions) -> dict[str, Any]:
    """librdkafka settings of the subscriber (contains secrets: never log it)."""
    conf = kafka.client_config()
    conf.update({
        "group.id": opts.group_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "partition.assignment.strategy": "cooperative-sticky",
    })
    return conf


def _tp(m: Message) -> tuple[str, int]:
    return str(m.topic()), int(m.partition() or 0)


class Subscriber:
    def __init__(self, kafka: KafkaSettings, store: Store, opts: SubscriberOptions):
        self.kafka, self.store, self.opts = kafka, store, opts
        self.stopping = False
        self.counters: Counter[str] = Counter()
        self._assigned: set[tuple[str, int]] = set()
        self._at_end: set[tuple[str, int]] = set()
        self._errors: list[KafkaError] = []

    def _on_error(self, err: KafkaError) -> None:
        # authentication / authorization failures are fatal for a subscriber: report, stop
        if err.fatal() or err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED,
                                         KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                         KafkaError.GROUP_AUTHORIZATION_FAILED):
            self._errors.append(err)
        else:
            log.warning("kafka_error", error=err.str(), code=err.name())

    def _on_assign(self, _c: Consumer, parts: list[TopicPartition]) -> None:
        for p in parts:
            self._assigned.add((p.topic, p.partition))
        log.info("partitions_assigned", partitions=sorted(p.partition for p in parts))

    def _on_revoke(self, _c: Consumer, parts: list[TopicPartition]) -> None:
        # nothing pending: every batch is committed (DB, then offsets) before the next poll
        for p in parts:
            self._assigned.discard((p.topic, p.partition))
            self._at_end.discard((p.topic, p.partition))
        log.info("partitions_revoked", partitions=sorted(p.partition for p in parts))

    def _signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("enforce_signal", signal=signal.Signals(signum).name)
        self.stopping = True

    def run(self) -> int:
        """Consume until SIGTERM/SIGINT (or the end with ``until_end``); returns an exit code."""
        prev = {s: signal.signal(s, self._signal) for s in (signal.SIGTERM, signal.SIGINT)}
        conf = consumer_config(self.kafka, self.opts)
        conf["error_cb"] = self._on_error
        consumer = Consumer(conf)
        topic = self.kafka.flags_topic
        started = time.monotonic()
        try:
            consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                               on_lost=self._on_revoke)
            log.info("enforce_start", topic=topic, group=self.opts.group_id, store=self.store.dialect,
                     until_end=self.opts.until_end)
            while not self.stopping:
                if self._errors:
                    raise EnforceError(self._errors[0].str())
                msgs = consumer.consume(self.opts.batch_size, self.opts.poll_timeout_s)
                batch: list[Message] = []
                for m in msgs:
                    err = m.error()
                    if err is None:
                        batch.append(m)
                        self._at_end.discard(_tp(m))
                    elif err.code() == KafkaError._PARTITION_EOF:
                        self._at_end.add(_tp(m))
                    elif err.fatal() or err.code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                                       KafkaError.GROUP_AUTHORIZATION_FAILED,
                                                       KafkaError.UNKNOWN_TOPIC_OR_PART):
                        raise EnforceError(err.str())
                    else:
                        log.warning("consume_error", error=err.str())
                if batch:
                    self._apply(consumer, batch)
                if self.opts.until_end:
                    if self._assigned and self._assigned <= self._at_end:
                        log.info("caught_up")
                        break
                    if time.monotonic() - started > self.opts.max_wait_s:
                        raise EnforceError(f"end of {topic} not reached within {self.opts.max_wait_s:.0f}s")
        except (EnforceError, KafkaException) as e:
            log.error("enforce_fatal", error=str(e), counters=dict(self.counters))
            return 1
        finally:
            try:
                consumer.close()
            finally:
                for s, h in prev.items():
                    signal.signal(s, h)
        log.info("enforce_stopped", counters=dict(self.counters))
        return 0

    def _apply(self, consumer: Consumer, batch: list[Message]) -> None:
        records = [(m.value(), f"{m.topic()}:{m.partition()}:{m.offset()}") for m in batch]
        results = self.store.apply_many(records)  # ONE DB transaction, committed here
        for r in results:
            self.counters[r.outcome] += 1
            if r.outcome == "malformed":
                log.warning("malformed_flag", why=r.why)
        ends: dict[tuple[str, int], int] = {}
        for m in batch:
            ends[_tp(m)] = int(m.offset() or 0) + 1
        # only now: the DB transaction is durable, so the offsets may move past these records
        try:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()],
                            asynchronous=False)
        except KafkaException as e:
            # e.g. the partitions were just revoked (rebalance): harmless — whoever reads them next
            # gets these records again and the store skips them by flag_id
            err = e.args[0] if e.args else None
            if isinstance(err, KafkaError) and err.fatal():
                raise
            self.counters["offset_commit_failed"] += 1
            log.warning("offset_commit_failed", error=str(e))
        self.counters["records"] += len(batch)
