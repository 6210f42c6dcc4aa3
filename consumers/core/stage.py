"""The interface between the pure core and whatever feeds it (Kafka, a file, a test).

The detector is a small pipeline of *stages*. Each stage consumes one or more input topics, keeps
per-partition state, and emits records to output topics. A stage never talks to Kafka: it is a
:class:`Processor`, one instance per input partition, fed batches of :class:`Record` and asked
for its state changes at each checkpoint.

The runner (``consumers.kafka.runner``) owns everything else: consuming, producing, transactions,
changelog topics, restore on assignment, rebalances. File replay (``consumers.replay``) chains the
same processors in one process. Because processors depend only on the order of the records they
are given (never on batch boundaries or the wall clock), both give the same output.

Contract for a processor:

* ``process(records)`` handles records in order and returns the records to emit, in order.
  An input record's ``topic`` is the real topic it was read from (it goes into DLQ headers); an
  output record's ``topic`` is a *logical* name (``"flags"``, ``"dlq"``, ``"observations"``...)
  that the runner maps to a real topic name from configuration.
* ``take_changes()`` returns the state changes since the previous call as changelog entries
  ``(key, value)`` — ``value=None`` is a tombstone — and forgets them. The runner writes them to
  the stage's compacted changelog topic in the same transaction as the outputs and offsets.
* ``restore(entries)`` rebuilds state from changelog entries (latest value per key, in log
  order) before any ``process`` call. After ``restore(all entries ever taken)``, the processor
  must behave exactly like the one that produced them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(slots=True)
class Record:
    """One message in or out of a stage."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int = -1
    offset: int = -1
    headers: list[tuple[str, bytes]] | None = field(default=None)
    timestamp_ms: int | None = None


class Processor(Protocol):
    def process(self, records: list[Record]) -> list[Record]: ...

    def take_changes(self) -> list[tuple[bytes, bytes | None]]: ...

    def restore(self, entries: Iterable[tuple[bytes, bytes | None]]) -> None: ...

    def discard_changes(self) -> None: ...


class ProcessorFactory(Protocol):
    """Builds the processor for one input partition of a stage."""

    def __call__(self, partition: int) -> Processor: ...


@dataclass(frozen=True, slots=True)
class StageSpec:
    """What the runner needs to know to run a stage.

    ``inputs``: logical names of the topics the stage consumes (co-partitioned: partition ``p``
    of every input goes to the processor of partition ``p``). ``outputs``: logical names it may
    emit to. ``name``: used for the consumer group suffix and the changelog topic name.
    """

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    factory: ProcessorFactory
