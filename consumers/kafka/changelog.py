"""Stage changelogs: the compacted topic that makes per-partition processor state durable.

Layout: changelog partition ``p`` holds the state of the processor of input partition ``p``.
Every checkpoint transaction writes, for each partition it touched, the processor's
``take_changes()`` entries (``value=None`` is a tombstone) followed by one *offset marker*:
key :data:`OFFSET_MARKER_KEY`, value the next input offset (ASCII decimal) — the same offset the
transaction commits for the consumer group. The marker is internal: it is never passed to
``Processor.restore`` and processors must not use keys starting with ``b"\\x00dw."``.

Why the marker: the group's committed offset and the changelog are written by one transaction,
but a transaction's commit markers reach different partitions at slightly different moments.
:func:`read_changelog` therefore reads (``read_committed``) until it has seen the marker equal
to the committed offset it is restoring for, so a new owner never starts from a state older than
its offsets, even right after the previous owner's commit.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from consumers.config import KafkaSettings
from consumers.kafka.clients import kafka_error, reader_config
from consumers.kafka.errors import FatalRunnerError

log = structlog.get_logger("distillwatch.kafka.changelog")

OFFSET_MARKER_KEY = b"\x00dw.offset"
"""Reserved changelog key of the per-partition offset marker."""

RESERVED_PREFIX = b"\x00dw."


class RestoreInterrupted(Exception):
    """Raised by :func:`read_changelog` when ``should_stop()`` turned true mid-restore."""


def encode_marker(next_offset: int) -> bytes:
    """Value of an offset marker: the next input offset to process, ASCII decimal."""
    return str(next_offset).encode()


def decode_marker(value: bytes | None) -> int | None:
    """Inverse of :func:`encode_marker`; ``None`` for a missing or malformed marker."""
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def is_internal_key(key: bytes | None) -> bool:
    """True for changelog keys owned by the runner (never given to processors)."""
    return key is not None and key.startswith(RESERVED_PREFIX)


@dataclass(slots=True)
class PartitionRestore:
    """What was read from one changelog partition.

    ``entries``: latest value per key in the order of each key's latest write (tombstoned keys
    dropped — restore always starts from an empty processor). ``records``: changelog records
    read (markers included). ``marker``: the last offset marker seen, ``None`` if none.
    """

    entries: dict[bytes, bytes] = field(default_factory=dict)
    records: int = 0
    marker: int | None = None

    def add(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one changelog record (log order)."""
        self.records += 1
        if key is None:
            return
        if key == OFFSET_MARKER_KEY:
            self.marker = decode_marker(value)
            return
        entries = self.entries
        entries.pop(key, None)  # re-insert so iteration order is the order of latest writes
        if value is not None:
            entries[key] = value


def _restore_consumer(kafka: KafkaSettings, group_id: str) -> Consumer:
    # Restore wants to reach the end fast, not to wait for new data.
    return Consumer(reader_config(kafka, f"{group_id}.restore.{uuid.uuid4().hex[:8]}",
                                  extra={"fetch.wait.max.ms": 50}))


# Transient while a broker restarts or leadership moves: retried, not fatal.
_TRANSIENT = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
})


def _watermarks(consumer: Consumer, topic: str, p: int, deadline: float,
                should_stop: Callable[[], bool] | None) -> tuple[int, int]:
    """``(low, high)`` of a changelog partition, retrying transient errors until ``deadline``."""
    while True:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
        except KafkaException as exc:
            err = kafka_error(exc)
            transient = err is not None and not err.fatal() and (
                err.retriable() or err.code() in _TRANSIENT)
            if not transient or time.monotonic() >= deadline:
                raise
            if should_stop is not None and should_stop():
                raise RestoreInterrupted(f"stop requested while restoring {topic!r}") from exc
            log.warning("restore_watermarks_retry", topic=topic, partition=p, error=str(err))
            time.sleep(0.5)


def read_changelog(
    kafka: KafkaSettings,
    topic: str,
    targets: Mapping[int, int | None],
    *,
    group_id: str = "distillwatch",
    settle_timeout_s: float = 70.0,
    progress_every_s: float = 5.0,
    batch_size: int = 5000,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[dict[int, int]], None] | None = None,
) -> dict[int, PartitionRestore]:
    """Read changelog partitions ``targets`` from the beginning to their end.

    ``targets`` maps each partition to the committed input offset the state must correspond to
    (``None``: nothing committed yet). A partition is done when the reader reached the end of the
    partition (``read_committed``: the last stable offset) *and* the last offset marker equals the
    target. If the marker still differs ``settle_timeout_s`` after first reaching the end (an
    operator reset the group's offsets, or the group's offsets expired) a warning is logged and
    the state read so far is used. ``on_progress({partition: records left})`` is called after
    every fetch (records left = the partition's end when the restore started minus what was
    read). Raises :class:`FatalRunnerError` on a fatal consumer error
    and :class:`RestoreInterrupted` when ``should_stop()`` returns true.
    """
    results = {p: PartitionRestore() for p in targets}
    if not targets:
        return results
    consumer = _restore_consumer(kafka, group_id)
    pending = set(targets)
    first_eof: dict[int, float] = {}
    ends: dict[int, int] = {}
    read_to: dict[int, int] = {}
    t0 = time.monotonic()
    next_progress = t0 + progress_every_s
    try:
        for p in sorted(targets):
            low, high = _watermarks(consumer, topic, p, t0 + settle_timeout_s, should_stop)
            if high <= low:  # empty: nothing to read and no transaction in flight
                if targets[p] is not None:
                    log.warning(
                        "changelog_empty_with_committed_offset",
                        topic=topic,
                        partition=p,
                        committed=targets[p],
                        hint="the changelog was deleted or recreated; starting from empty state",
                    )
                pending.discard(p)
            else:
                ends[p] = high
                read_to[p] = low
        if not pending:
            return results
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(pending)])
        while pending:
            if should_stop is not None and should_stop():
                raise RestoreInterrupted(f"stop requested while restoring {topic!r}")
            msgs = consumer.consume(num_messages=batch_size, timeout=0.2)
            now = time.monotonic()
            for m in msgs:
                err = m.error()
                p = m.partition()  # type: ignore[assignment]  # always set on messages and EOF events
                if err is None:
                    results[p].add(m.key(), m.value())
                    read_to[p] = m.offset() + 1  # type: ignore[operator]  # set on messages
                    continue
                if err.code() != KafkaError._PARTITION_EOF:
                    if err.fatal():
                        raise FatalRunnerError(f"changelog {topic!r} restore failed: {err}")
                    log.warning("restore_consumer_error", topic=topic, error=str(err))
                    continue
                if p not in pending:
                    continue
                read_to[p] = max(read_to.get(p, 0), m.offset() or 0)
                res = results[p]
                target = targets[p]
                if res.marker == target:
                    pending.discard(p)
                elif target is None:
                    log.warning(
                        "changelog_without_committed_offset",
                        topic=topic,
                        partition=p,
                        marker=res.marker,
                        hint="the group's offsets were deleted or expired; state is kept and "
                        "input is re-read from the reset position",
                    )
                    pending.discard(p)
                elif res.marker is not None and res.marker > target:
                    log.warning(
                        "changelog_ahead_of_committed_offset",
                        topic=topic,
                        partition=p,
                        marker=res.marker,
                        committed=target,
                        hint="the group's offsets were reset backwards; state is kept",
                    )
                    pending.discard(p)
                else:
                    # The committing transaction's markers may not have reached this partition
                    # yet (or an older open transaction holds the last stable offset): keep
                    # reading until the marker arrives.
                    first_eof.setdefault(p, now)
            if on_progress is not None:
                on_progress({p: max(0, ends[p] - read_to[p]) if p in ends else 0
                             for p in sorted(pending)})
            for p, since in list(first_eof.items()):
                if p in pending and now - since > settle_timeout_s:
                    log.warning(
                        "changelog_behind_committed_offset",
                        topic=topic,
                        partition=p,
                        marker=results[p].marker,
                        committed=targets[p],
                        waited_s=round(now - since, 1),
                        hint="offsets were committed without this stage's changelog (offset "
                        "reset?); continuing with the state read so far",
                    )
                    pending.discard(p)
            if now >= next_progress:
                next_progress = now + progress_every_s
                log.info(
                    "restore_progress",
                    topic=topic,
                    partitions_left=sorted(pending),
                    records=sum(r.records for r in results.values()),
                    seconds=round(now - t0, 1),
                )
    except KafkaException as exc:
        raise FatalRunnerError(f"changelog {topic!r} restore failed: {exc}") from exc
    finally:
        consumer.close()
    return results
