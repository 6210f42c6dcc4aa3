"""Writing to Kafka: the one blocking-produce helper and a short-lived transaction.

* :func:`produce_blocking` — ``produce`` that waits (serving delivery reports) while the
  producer's local queue is full (``BufferError``) instead of failing. Every producer of this
  project goes through it: the stage runner's outputs and changelogs, replay flags, warm start.
* :class:`Transaction` — one transaction of a short-lived producer: produce, then
  :meth:`Transaction.commit` (flush, check every delivery, commit). Leaving the ``with`` block
  without a commit aborts, so ``read_committed`` readers see all or nothing.
* :func:`produce_flags` — Flag v1 values to a topic, keyed by account, in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson
from confluent_kafka import Producer

from consumers.config import KafkaSettings
from consumers.kafka.admin import TopicSpec, ensure_topics
from consumers.kafka.clients import transaction_config

__all__ = ["Transaction", "TransactionFailed", "produce_blocking", "produce_flags"]

_QUEUE_FULL_POLL_S = 0.05


def produce_blocking(producer: Producer, topic: str, value: bytes | None, key: bytes | None,
                     *, on_full: Callable[[], None] | None = None, **kwargs: Any) -> None:
    """``producer.produce(topic, value, key, **kwargs)``, waiting while the local queue is full.

    While full, polls for delivery reports (which frees the queue) and calls ``on_full()`` — a
    chance for the caller to raise (the stage runner stops on a fatal client error there).
    """
    try:
        producer.produce(topic, value, key, **kwargs)
        return
    except BufferError:
        pass
    while True:
        producer.poll(_QUEUE_FULL_POLL_S)
        try:
            producer.produce(topic, value, key, **kwargs)
            return
        except BufferError:
            if on_full is not None:
                on_full()


class TransactionFailed(RuntimeError):
    """A short-lived transaction could not deliver its records (nothing became visible)."""


class Transaction:
    """One Kafka transaction of a short-lived producer (see the module docstring)."""

    def __init__(self, kafka: KafkaSettings, txn_id: str, what: str, **extra: Any):
        self.producer = Producer(transaction_config(kafka, txn_id, **extra))
        self.what = what
        self.errors: list[str] = []
        self.n = 0
        self._done = False

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def __enter__(self) -> Transaction:
        self.producer.init_transactions(60)
        self.producer.begin_transaction()
        return self

    def send(self, topic: str, value: bytes, key: bytes | None, partition: int | None = None) -> None:
        kw: dict[str, Any] = {"on_delivery": self._on_delivery}
        if partition is not None:
            kw["partition"] = partition
        produce_blocking(self.producer, topic, value, key, **kw)
        self.n += 1
        if self.n % 10_000 == 0:
            self.producer.poll(0)

    def commit(self) -> None:
        """Flush, check every delivery, commit; raises :class:`TransactionFailed` otherwise."""
        left = self.producer.flush(120)
        if self.errors or left:
            raise TransactionFailed(
                f"{self.what} failed: {self.errors[0] if self.errors else f'{left} not delivered'}")
        self.producer.commit_transaction(120)
        self._done = True

    def __exit__(self, *exc: Any) -> None:
        if not self._done:
            try:
                self.producer.abort_transaction(30)
            except Exception:  # noqa: BLE001 - already failing; the broker aborts on timeout
                pass


def produce_flags(kafka: KafkaSettings, topic: str, values: Iterable[bytes], partitions: int,
                  txn_id: str) -> int:
    """Create ``topic`` if missing and produce the flags, keyed by account, in one transaction."""
    ensure_topics(kafka, [TopicSpec(topic, partitions, replication_factor=-1)])
    # same key -> partition mapping as the live runner (and the Java clients)
    with Transaction(kafka, txn_id, f"producing flags to {topic!r}",
                     partitioner="murmur2_random") as txn:
        for v in values:
            txn.send(topic, v, orjson.loads(v)["account_id"].encode())
        txn.commit()
        return txn.n
