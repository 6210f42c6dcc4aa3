"""Reading topics: the one place that reads a topic with ``isolation.level=read_committed``
outside a stage runner (which consumes in a group; see :mod:`consumers.kafka.runner`).

* :func:`read_to_end` — every committed record of a topic, from the beginning to the end it had
  when the read started (flags topics, DLQs, tests); :func:`read_flags_topic` decodes Flag v1.
* :func:`plan_ranges` / :func:`read_ranges` — offset ranges ``[from, to)`` by message timestamp,
  read in a deterministic merge order (historical replays).

Readers assign partitions themselves, never join their group and never commit
(:func:`consumers.kafka.clients.reader_config`). Control records (transaction markers) are never
delivered, so a partition counts as read once the reader's *position* passed its end.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from consumers.config import KafkaSettings
from consumers.io import read_lines
from consumers.kafka.clients import reader_config
from consumers.kafka.errors import RangeTruncated, TopicError

log = structlog.get_logger("distillwatch.kafka.reader")

__all__ = [
    "PartitionRange",
    "load_flags",
    "StreamMerger",
    "plan_ranges",
    "range_consumer",
    "read_flags_topic",
    "read_ranges",
    "read_to_end",
    "resolve_range",
    "topic_partitions",
    "watermarks",
]


def topic_partitions(consumer: Any, topic: str, timeout: float = 30.0) -> list[int] | None:
    """Partitions of ``topic`` (``None`` when it does not exist)."""
    md = consumer.list_topics(topic, timeout=timeout)
    tmd = md.topics.get(topic)
    if tmd is None or tmd.error is not None or not tmd.partitions:
        return None
    return sorted(tmd.partitions)


def watermarks(consumer: Any, topic: str, partitions: Iterable[int],
               timeout: float = 30.0) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}``; for a read_committed consumer *high* is the last stable
    offset."""
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout,
                                              cached=False)
            for p in partitions}


# ------------------------------------------------------------------------------ to the end


def read_to_end(kafka: KafkaSettings, topic: str, *, timeout_s: float = 120.0,
                isolation: str = "read_committed") -> list[Message]:
    """Every record of ``topic`` from the beginning to the end each partition had when the read
    started (with ``read_committed``: the last stable offset, so records of open or aborted
    transactions are never returned), sorted by (partition, offset).

    Raises :class:`~consumers.kafka.errors.TopicError` when the topic does not exist and
    ``TimeoutError`` when the end is not reached within ``timeout_s``.
    """
    if isolation not in ("read_committed", "read_uncommitted"):
        raise ValueError(f"isolation must be read_committed or read_uncommitted, not {isolation!r}")
    consumer = Consumer(reader_config(kafka, isolation=isolation))
    try:
        deadline = time.monotonic() + timeout_s
        parts = topic_partitions(consumer, topic, min(30.0, timeout_s))
        if parts is None:
            raise TopicError(f"topic {topic!r} not found on {kafka.bootstrap_servers}")
        ends = {p: hi for p, (lo, hi) in watermarks(consumer, topic, parts,
                                                     min(30.0, timeout_s)).items() if hi > lo}
        pending = set(ends)
        if not pending:
            return []
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(pending)])
        out: list[Message] = []
        while pending:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"reading {topic!r} did not reach the end within "
                                   f"{timeout_s:.0f}s: partitions {sorted(pending)}")
            for msg in consumer.consume(num_messages=500, timeout=0.2):
                err = msg.error()
                p, offset = msg.partition(), msg.offset()
                if p is None or offset is None:
                    continue
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if offset >= ends.get(p, 0):
                            pending.discard(p)
                        continue
                    raise KafkaException(err)
                if p in ends and offset < ends[p]:
                    out.append(msg)
                if offset >= ends.get(p, 0) - 1:
                    pending.discard(p)
            if pending:
                # Control records (commit/abort markers) are never delivered; the position still
                # moves past them.
                for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
                    if tp.offset >= 0 and tp.offset >= ends[tp.partition]:
                        pending.discard(tp.partition)
        out.sort(key=lambda m: (m.partition(), m.offset()))
        return out
    finally:
        consumer.close()


def read_flags_topic(topic: str, bootstrap_servers: str | None = None, timeout_s: float = 120.0,
                     stats: dict[str, int] | None = None,
                     kafka: KafkaSettings | None = None) -> list[dict[str, Any]]:
    """Every committed Flag v1 of ``topic`` (see :func:`read_to_end`), partition by partition in
    offset order (an account's flags are in one partition: the key is the account id).

    Values that are not JSON objects are skipped and counted in ``stats["not_json"]``.
    """
    if kafka is None:
        kafka = KafkaSettings(bootstrap_servers=bootstrap_servers) if bootstrap_servers else KafkaSettings()
    stats = stats if stats is not None else {}
    values = (v for msg in read_to_end(kafka, topic, timeout_s=timeout_s) if (v := msg.value()) is not None)
    return _json_objects(values, stats)


def _json_objects(values: Iterable[bytes], stats: dict[str, int]) -> list[dict[str, Any]]:
    """The values that are JSON objects; the others are counted in ``stats["not_json"]``."""
    stats.setdefault("not_json", 0)
    out: list[dict[str, Any]] = []
    for value in values:
        try:
            v = orjson.loads(value)
        except orjson.JSONDecodeError:
            stats["not_json"] += 1
            continue
        if isinstance(v, dict):
            out.append(v)
        else:
            stats["not_json"] += 1
    return out


def load_flags(spec: str, bootstrap_servers: str | None = None,
               stats: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Flags of a run: ``kafka:TOPIC`` or a JSONL file (``.gz`` ok, ``-`` = stdin).

    Lines that are not JSON objects are skipped and counted in ``stats["not_json"]``. Raises
    ``OSError`` for a missing file and ``RuntimeError`` for a missing topic.
    """
    stats = stats if stats is not None else {}
    if spec.startswith("kafka:"):
        topic = spec[len("kafka:"):]
        if not topic:
            raise ValueError("kafka: needs a topic name (kafka:distillation.flags)")
        return read_flags_topic(topic, bootstrap_servers, stats=stats)
    return _json_objects((line for lines in read_lines(spec) for line in lines), stats)


# ------------------------------------------------------------------------------ ranges


def range_consumer(kafka: KafkaSettings, group_id: str, batch_size: int) -> Consumer:
    """A reader tuned for catching up over a historical range."""
    return Consumer(reader_config(
        kafka, group_id,
        # a start offset deleted by retention mid-read must fail, not silently move
        extra={"auto.offset.reset": "error",
           # catch-up mode: big fetches, deep local queue
           "fetch.wait.max.ms": 100,
           "fetch.max.bytes": 104_857_600,
           "max.partition.fetch.bytes": 16_777_216,
           "queued.min.messages": max(100_000, 2 * batch_size),
           "queued.max.messages.kbytes": 262_144}))


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """Offsets ``[start, end)`` of one partition, and its ``[low, high)`` when planned."""

    partition: int
    start: int
    end: int
    low: int
    high: int

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


def resolve_range(partition: int, low: int, high: int, start_lookup: int | None,
                  end_lookup: int | None) -> PartitionRange:
    """The offset range of one partition from its watermarks and ``offsets_for_times`` answers.

    ``start_lookup``/``end_lookup``: ``None`` when the bound was not given (earliest / latest),
    a negative number when no message has a timestamp at or after the bound (Kafka answers -1),
    else the offset Kafka found.

    >>> resolve_range(0, 10, 100, 40, 70)
    PartitionRange(partition=0, start=40, end=70, low=10, high=100)
    >>> resolve_range(0, 10, 100, None, -1)          # --from earliest, --to after the last message
    PartitionRange(partition=0, start=10, end=100, low=10, high=100)
    >>> resolve_range(0, 10, 100, -1, None).size     # --from after the last message: empty
    0
    """
    if start_lookup is None:
        start = low
    elif start_lookup < 0:
        start = high
    else:
        start = min(max(low, start_lookup), high)
    if end_lookup is None or end_lookup < 0:
        end = high
    else:
        end = min(max(low, end_lookup), high)
    return PartitionRange(partition, start, max(start, end), low, high)


class StreamMerger:
    """Merges partitions into one deterministic stream, ordered by ``(timestamp, partition, offset)``
    of each partition's *next* message (so every partition keeps its own order).

    A message is released only when every partition that may still deliver messages has one
    buffered, so the result does not depend on how the fetcher interleaves partitions.

    >>> m = StreamMerger([0, 1])
    >>> m.add(0, 5, 0, b"a"); m.add(0, 9, 1, b"b")
    >>> m.pop_ready()              # partition 1 may still deliver something earlier
    []
    >>> m.add(1, 7, 0, b"c"); [v for _, _, v in m.pop_ready()]
    [b'a', b'c']
    >>> m.finish(1); [v for _, _, v in m.pop_ready()]
    [b'b']
    """

    def __init__(self, partitions: Iterable[int]):
        self._buf: dict[int, deque[tuple[int, int, bytes | None]]] = {p: deque() for p in partitions}
        self._open = set(self._buf)
        self._starved = set(self._buf)  # open partitions with nothing buffered
        self._heap: list[tuple[int, int, int]] = []  # (ts, partition, offset) of each buffered head

    def add(self, partition: int, ts: int, offset: int, value: bytes | None) -> None:
        """Buffer the next message of ``partition`` (messages of a partition in offset order)."""
        b = self._buf[partition]
        if not b:
            heapq.heappush(self._heap, (ts, partition, offset))
            self._starved.discard(partition)
        b.append((ts, offset, value))

    def finish(self, partition: int) -> None:
        """``partition`` will deliver no more messages."""
        self._open.discard(partition)
        self._starved.discard(partition)

    def buffered(self, partition: int) -> int:
        return len(self._buf[partition])

    def pop_ready(self) -> list[tuple[int, int, bytes | None]]:
        """Release the ``(partition, offset, value)`` that can be ordered now."""
        out: list[tuple[int, int, bytes | None]] = []
        heap, bufs, starved, open_ = self._heap, self._buf, self._starved, self._open
        while heap and not starved:
            _, p, off = heapq.heappop(heap)
            b = bufs[p]
            _, _, value = b.popleft()
            out.append((p, off, value))
            if b:
                ts2, off2, _ = b[0]
                heapq.heappush(heap, (ts2, p, off2))
            elif p in open_:
                starved.add(p)
        return out

    def pending(self) -> int:
        return sum(len(b) for b in self._buf.values())


def plan_ranges(consumer: Any, topic: str, partitions: list[int], from_ms: int | None,
                to_ms: int | None, timeout: float = 30.0) -> list[PartitionRange]:
    """Per partition, the offsets of ``[from_ms, to_ms)`` (see :func:`resolve_range`)."""
    marks = watermarks(consumer, topic, partitions, timeout)

    def lookup(ms: int | None) -> dict[int, int | None]:
        if ms is None:
            return dict.fromkeys(partitions)
        res = consumer.offsets_for_times([TopicPartition(topic, p, ms) for p in partitions],
                                         timeout=timeout)
        out: dict[int, int | None] = {}
        for tp in res:
            if tp.error is not None:
                raise KafkaException(tp.error)
            out[tp.partition] = tp.offset
        return out

    starts, ends = lookup(from_ms), lookup(to_ms)
    return [resolve_range(p, marks[p][0], marks[p][1], starts[p], ends[p]) for p in partitions]


def _range_error(err: Any, topic: str, p: int | None) -> None:
    """A consumer error other than end-of-partition while reading a range: raise when the read
    cannot go on (start offset deleted by retention, fatal or non-retriable), else log it."""
    if err.code() == KafkaError._AUTO_OFFSET_RESET:
        raise RangeTruncated(f"{topic}[{p}]: start offset no longer exists (deleted by "
                             f"retention while replaying?): {err}")
    if err.fatal() or not err.retriable():
        raise KafkaException(err)
    log.warning("range_consumer_error", error=str(err))


def read_ranges(consumer: Any, topic: str, ranges: list[PartitionRange], batch_size: int,
                stop: threading.Event, max_buffer: int | None = None,
                ) -> Iterator[list[tuple[int, int, bytes | None]]]:
    """Read the ranges and yield batches of ``(partition, offset, value)`` in replay order
    (:class:`StreamMerger`). Stops early (without error) when ``stop`` is set."""
    live = [r for r in ranges if r.size > 0]
    if not live:
        return
    end = {r.partition: r.end for r in live}
    if len(live) == 1:
        yield from _read_one(consumer, topic, live[0], batch_size, stop)
        return
    merger = StreamMerger(end)
    max_buffer = max_buffer or max(4 * batch_size, 100_000)
    paused: set[int] = set()
    done: set[int] = set()
    consumer.assign([TopicPartition(topic, r.partition, r.start) for r in live])

    def finish(p: int) -> None:
        if p not in done:
            done.add(p)
            merger.finish(p)
            consumer.pause([TopicPartition(topic, p)])

    while len(done) < len(end) or merger.pending():
        if stop.is_set():
            return
        if len(done) < len(end):
            msgs = consumer.consume(num_messages=batch_size, timeout=0.5)
        else:
            msgs = []
        for m in msgs:
            err = m.error()
            p = m.partition()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if p in end and p not in done:
                        if m.offset() < end[p]:
                            log.warning("range_partition_shorter", topic=topic, partition=p,
                                        eof=m.offset(), planned_end=end[p])
                        finish(p)
                    continue
                _range_error(err, topic, p)
                continue
            if p in done:
                continue
            off = m.offset()
            if off >= end[p]:
                finish(p)
                continue
            _, ts = m.timestamp()
            merger.add(p, ts, off, m.value())
            if off >= end[p] - 1:
                finish(p)
        for p in end:
            if p not in done and p not in paused and merger.buffered(p) > max_buffer:
                consumer.pause([TopicPartition(topic, p)])
                paused.add(p)
        ready = merger.pop_ready()
        for i in range(0, len(ready), batch_size):
            yield ready[i:i + batch_size]
        for p in list(paused):
            if p in done:
                paused.discard(p)
            elif merger.buffered(p) < max_buffer // 2:
                consumer.resume([TopicPartition(topic, p)])
                paused.discard(p)


def _read_one(consumer: Any, topic: str, r: PartitionRange, batch_size: int,
              stop: threading.Event) -> Iterator[list[tuple[int, int, bytes | None]]]:
    """One partition: log order, no merge (the hot path of single-partition replays)."""
    p, end = r.partition, r.end
    consumer.assign([TopicPartition(topic, p, r.start)])
    eof = KafkaError._PARTITION_EOF
    while not stop.is_set():
        out: list[tuple[int, int, bytes | None]] = []
        finished = False
        for m in consumer.consume(num_messages=batch_size, timeout=0.5):
            err = m.error()
            if err is not None:
                if err.code() == eof:
                    if m.offset() < end:
                        log.warning("range_partition_shorter", topic=topic, partition=p,
                                    eof=m.offset(), planned_end=end)
                    finished = True
                    break
                _range_error(err, topic, p)
                continue
            off = m.offset()
            if off >= end:
                finished = True
                break
            out.append((p, off, m.value()))
            if off >= end - 1:
                finished = True
                break
        if out:
            yield out
        if finished:
            return
