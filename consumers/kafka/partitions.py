"""Input partitions of a stage runner: a consumed batch split per partition, the committed
offsets a new owner starts from, and processors restored from the changelog.

Pure of runner state: :class:`~consumers.kafka.runner.StageRunner` calls these with its consumer
and keeps, per owned partition, the processor and how far it read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from consumers.config import KafkaSettings
from consumers.core.stage import Processor, Record, StageSpec
from consumers.kafka.changelog import PartitionRestore, RestoreInterrupted, read_changelog
from consumers.kafka.clients import kafka_error
from consumers.kafka.errors import FatalRunnerError, ProcessorFailure

__all__ = ["committed_offsets", "restore_processors", "split_batch"]

_EOF = KafkaError._PARTITION_EOF
# committed() reports these without librdkafka's retriable flag; they are transient.
_RETRIABLE_OFFSET_FETCH = frozenset(
    {
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._WAIT_COORD,
        KafkaError.UNSTABLE_OFFSET_COMMIT,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.REQUEST_TIMED_OUT,
    }
)


def split_batch(msgs: list[Message], topic: str, on_error: Callable[[KafkaError], None],
                ) -> tuple[dict[int, list[Record]], dict[int, int] | None]:
    """``({partition: records in offset order}, {partition: end offset} of end-of-partition
    events or None)``. Records carry the real ``topic`` (processors put it in DLQ headers);
    ``on_error`` gets every other consumer error (it may raise)."""
    by_part: dict[int, list[Record]] = {}
    eof_at: dict[int, int] | None = None
    for m in msgs:
        err = m.error()
        if err is not None:
            if err.code() == _EOF:
                if eof_at is None:
                    eof_at = {}
                eof_at[m.partition()] = m.offset()  # type: ignore[index,assignment]  # set on EOF events
            else:
                on_error(err)
            continue
        # a message without error always has partition and offset; keep the hot loop cast-free
        p: int = m.partition()  # type: ignore[assignment]
        recs = by_part.get(p)
        if recs is None:
            recs = by_part[p] = []
        ts_type, ts = m.timestamp()
        recs.append(
            Record(
                topic,
                m.key(),
                m.value(),  # type: ignore[arg-type]  # None (a tombstone) goes to the DLQ
                p,
                m.offset(),  # type: ignore[arg-type]
                m.headers(),  # type: ignore[arg-type]
                ts if ts_type != TIMESTAMP_NOT_AVAILABLE else None,
            )
        )
    return by_part, eof_at


def committed_offsets(consumer: Consumer, topic: str, parts: Sequence[int], *,
                      should_stop: Callable[[], bool],
                      on_wait: Callable[[Sequence[int], float, str], None],
                      ) -> dict[int, int | None]:
    """The group's stable committed offsets of ``parts`` (``None``: nothing committed).

    A read_committed consumer waits for pending transactions: transient errors are retried
    (``on_wait(parts, waited_s, error)`` each time) until they pass, or raise
    :class:`RestoreInterrupted` once ``should_stop()``.
    """
    tps = [TopicPartition(topic, p) for p in parts]
    start = time.monotonic()
    while True:
        try:
            res = consumer.committed(tps, timeout=10)
            break
        except KafkaException as exc:
            err = kafka_error(exc)
            if (
                err is None
                or err.fatal()
                or not (err.retriable() or err.code() in _RETRIABLE_OFFSET_FETCH)
            ):
                raise
            if should_stop():
                raise RestoreInterrupted("stop requested while fetching offsets") from exc
            on_wait(parts, time.monotonic() - start, str(err))
    out: dict[int, int | None] = {}
    for tp in res:
        if tp.error is not None:
            raise FatalRunnerError(f"committed offset of {tp.topic}[{tp.partition}]: {tp.error}")
        out[tp.partition] = tp.offset if tp.offset >= 0 else None
    return out


def restore_processors(kafka: KafkaSettings, spec: StageSpec, changelog: str,
                       committed: dict[int, int | None], *, group_id: str,
                       settle_timeout_s: float, should_stop: Callable[[], bool],
                       on_progress: Callable[[dict[int, int]], None],
                       ) -> tuple[dict[int, Processor], dict[int, PartitionRestore]]:
    """A new processor per partition of ``committed``, restored from the stage's changelog as of
    the committed offset (:func:`consumers.kafka.changelog.read_changelog`). A processor whose
    ``restore`` raises is a :class:`ProcessorFailure`."""
    results = read_changelog(kafka, changelog, committed, group_id=group_id,
                             settle_timeout_s=settle_timeout_s, should_stop=should_stop,
                             on_progress=on_progress)
    procs: dict[int, Processor] = {}
    for p, res in sorted(results.items()):
        proc = spec.factory(p)
        try:
            if res.entries:
                proc.restore(list(res.entries.items()))
        except Exception as exc:
            raise ProcessorFailure(
                f"stage {spec.name!r}: restore() of partition {p} raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        procs[p] = proc
    return procs, results
