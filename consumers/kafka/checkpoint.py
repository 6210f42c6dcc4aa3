"""A checkpoint: what a stage runner did since its last commit, and the commit itself.

A :class:`Checkpoint` lives from one commit to the next. Its :class:`TxnStatus` is explicit and
checked before each step::

    EMPTY ──mark_processed──► PROCESSED ──emit──► OPEN ──commit──► COMMITTED
      │                          │                 │
      └──────────────────────────┴──── abort ──────┴──────────────► ABORTED  (the runner rewinds)

* ``PROCESSED``: records were processed but produced nothing yet; no transaction is open (it is
  begun lazily, at the first output or at the commit).
* :meth:`Checkpoint.commit` runs named steps in order: ``begin`` (if needed), ``changelog``
  (each processor's ``take_changes()`` to partition ``p`` of the changelog, then the offset
  marker of :mod:`consumers.kafka.changelog`), ``offsets`` (``send_offsets_to_transaction``),
  ``commit``. A failure leaves the status ``OPEN``: the runner then aborts.
* ``ABORTED``: nothing of this checkpoint became visible; the processors hold state that was
  never committed, so the runner must rebuild them from the changelog and seek back (rewind)
  before it processes again. A replaced producer aborts the checkpoint the same way.

A finished checkpoint (``COMMITTED``/``ABORTED``) accepts no more steps: the runner starts a new one.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import TopicPartition

from consumers.core.stage import Processor, Record
from consumers.kafka.changelog import OFFSET_MARKER_KEY, encode_marker
from consumers.kafka.errors import ProcessorFailure
from consumers.kafka.transactional import TransactionalProducer

__all__ = ["Checkpoint", "CheckpointSummary", "TxnStatus"]


class TxnStatus(enum.Enum):
    """Where a checkpoint's transaction is (see the module docstring)."""

    EMPTY = "empty"
    PROCESSED = "processed"
    OPEN = "open"
    COMMITTED = "committed"
    ABORTED = "aborted"

    @property
    def finished(self) -> bool:
        return self in (TxnStatus.COMMITTED, TxnStatus.ABORTED)


class CheckpointStateError(RuntimeError):
    """A step was asked of a checkpoint in a status that does not allow it (a runner bug)."""


@dataclass(frozen=True, slots=True)
class CheckpointSummary:
    """What a commit wrote: partitions whose offsets it committed, changelog records, seconds."""

    partitions: int
    changelog_records: int
    seconds: float


class Checkpoint:
    """The work of one stage runner since its last commit (see the module docstring).

    ``stage``: the stage name (messages); ``input_topic``/``changelog_topic``: real names;
    ``output_topics``: logical -> real names of the stage's outputs.
    """

    def __init__(self, producer: TransactionalProducer, *, stage: str, input_topic: str,
                 changelog_topic: str, output_topics: Mapping[str, str]) -> None:
        self.producer = producer
        self.stage = stage
        self.input_topic = input_topic
        self.changelog_topic = changelog_topic
        self.output_topics = output_topics
        self.status = TxnStatus.EMPTY
        self.created_at = time.monotonic()
        self.txn_started_at: float | None = None
        self.processed: set[int] = set()  # input partitions processed in this checkpoint

    def __repr__(self) -> str:
        return (f"Checkpoint(stage={self.stage!r}, status={self.status.value}, "
                f"processed={sorted(self.processed)})")

    # ------------------------------------------------------------------ steps

    def _expect(self, step: str, *allowed: TxnStatus) -> None:
        if self.status not in allowed:
            raise CheckpointStateError(
                f"stage {self.stage!r}: checkpoint step {step!r} in status {self.status.value}")

    @property
    def dirty(self) -> bool:
        """Records were processed since the last commit (there is something to commit or abort)."""
        return self.status in (TxnStatus.PROCESSED, TxnStatus.OPEN)

    @property
    def txn_open(self) -> bool:
        return self.status is TxnStatus.OPEN

    def age_s(self) -> float:
        return time.monotonic() - self.created_at

    def txn_age_ms(self) -> float | None:
        """Age of the transaction begun by this checkpoint and not yet committed or aborted
        (``None`` when none)."""
        if self.txn_started_at is None:
            return None
        return (time.monotonic() - self.txn_started_at) * 1000

    def mark_processed(self, partition: int) -> None:
        self._expect("mark_processed", TxnStatus.EMPTY, TxnStatus.PROCESSED, TxnStatus.OPEN)
        self.processed.add(partition)
        if self.status is TxnStatus.EMPTY:
            self.status = TxnStatus.PROCESSED

    def forget(self, partition: int) -> None:
        """A partition was given up: its offsets are not committed by this checkpoint."""
        self.processed.discard(partition)

    def begin(self) -> None:
        self._expect("begin", TxnStatus.EMPTY, TxnStatus.PROCESSED, TxnStatus.OPEN)
        if self.status is not TxnStatus.OPEN:
            self.producer.begin_transaction()
            self.txn_started_at = time.monotonic()
            self.status = TxnStatus.OPEN

    def emit(self, outputs: list[Record], counts: dict[str, int]) -> None:
        """Produce a processor's outputs in the transaction (``counts``: per logical topic)."""
        self.begin()
        topics = self.output_topics
        try_produce, produce = self.producer.try_produce, self.producer.produce
        for rec in outputs:
            try:
                topic = topics[rec.topic]
            except KeyError:
                raise ProcessorFailure(
                    f"stage {self.stage!r} emitted to undeclared topic {rec.topic!r} "
                    f"(declared: {sorted(topics)})"
                ) from None
            try:  # the client's produce directly: a third of the cost per record (~490k per day)
                try_produce(topic, rec.value, rec.key, headers=rec.headers)
            except BufferError:  # the local queue is full: wait for room
                produce(topic, rec.value, rec.key, headers=rec.headers)
            counts[rec.topic] += 1

    def commit(self, processors: Mapping[int, Processor], next_offsets: Mapping[int, int | None],
               group_metadata: Callable[[], Any],
               hook: Callable[[str], None] | None = None) -> CheckpointSummary | None:
        """Commit outputs + state changes + offsets; ``None`` when there was nothing to commit.

        Steps: begin → changelog → offsets → commit. Raises what the producer raises (the status
        stays ``OPEN``; the caller aborts) and :class:`ProcessorFailure` when ``take_changes``
        raises.
        """
        if not self.dirty:
            return None
        t0 = time.monotonic()
        if hook is not None:
            hook("checkpoint")
        self.begin()
        # step: changelog
        changelog = self.changelog_topic
        produce = self.producer.produce
        offsets: list[TopicPartition] = []
        n_changes = 0
        for p, proc in processors.items():
            try:
                changes = proc.take_changes()
            except Exception as exc:
                raise ProcessorFailure(
                    f"stage {self.stage!r}: take_changes() of partition {p} raised "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            for key, value in changes:
                produce(changelog, value, key, partition=p)
            n_changes += len(changes)
            nxt = next_offsets.get(p)
            if nxt is not None and (changes or p in self.processed):
                produce(changelog, encode_marker(nxt), OFFSET_MARKER_KEY, partition=p)
                n_changes += 1
                offsets.append(TopicPartition(self.input_topic, p, nxt))
        # step: offsets
        if offsets:
            self._expect("offsets", TxnStatus.OPEN)
            self.producer.send_offsets_to_transaction(offsets, group_metadata())
        # step: commit
        self._expect("commit", TxnStatus.OPEN)
        self.producer.commit_transaction(
            before=(lambda: hook("commit")) if hook is not None else None)
        self.status = TxnStatus.COMMITTED
        self.txn_started_at = None
        self.processed.clear()
        return CheckpointSummary(len(offsets), n_changes, time.monotonic() - t0)

    def abort(self) -> None:
        """Abort the open transaction (if any): its outputs never become visible.

        Raises what the producer raises (:class:`ProducerHung`, ``KafkaException``); the
        checkpoint is ``ABORTED`` either way (its work must be redone).
        """
        was_open = self.status is TxnStatus.OPEN
        self.status = TxnStatus.ABORTED
        self.processed.clear()
        if was_open:
            self.producer.abort_transaction()
        self.txn_started_at = None

    def abandon(self) -> None:
        """The producer was replaced (its successor aborted the transaction): nothing to call."""
        self.status = TxnStatus.ABORTED
        self.txn_started_at = None
        self.processed.clear()
