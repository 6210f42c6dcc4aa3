"""``distillwatch replay --topic T --from TIME [--to TIME]``: replay a historical Kafka range.

Reads the requests topic itself — explicit partition assignment, no group membership, no offset
commits, ``isolation.level=read_committed`` — over a fixed offset range per partition, and runs
the same in-process three-stage pipeline as file replay (:class:`~consumers.core.pipeline.
LocalPipeline`). Nothing a live ``detect`` deployment owns (its consumer groups, changelogs,
internal topics or the live flags topic) is read or written, unless asked for explicitly.

Range. ``--from``/``--to`` are ISO 8601 (``2026-04-22T06:00:00Z``; no zone = UTC), epoch
milliseconds, ``earliest`` (``--from``) or ``latest`` (``--to``). They refer to the *Kafka message
timestamp*, exactly like Kafka's own tools: on every partition the range is ``[offsets_for_times
(from), offsets_for_times(to))`` — the first offset whose timestamp is ≥ ``--from`` up to, not
including, the first offset whose timestamp is ≥ ``--to`` — capped at the last stable offset seen
when the replay starts (so a replay of a live topic stops instead of following it). Messages are
never filtered by the event's own ``ts_ms``.

Order (what makes a replay deterministic). A single-partition topic is replayed in log order:
exactly the order a live deployment consumed it. A multi-partition topic is merged into one stream
by ``(message timestamp, partition, offset)`` of each partition's next message — every partition's
own order (hence every account's order) is kept, and ties are broken the same way every run.

Output. Flag v1 JSONL to ``--output FILE`` (written to ``FILE.partial`` and renamed at the end, so
an interrupted replay never leaves a complete-looking file), and/or to a Kafka topic: by default
``distillation.flags.replay.<run-id>``. Flags for a topic are spooled and produced at the end in
*one transaction*, so ``read_committed`` readers see a whole run or nothing. The live flags topic
(``--live-flags-topic``, default ``$DISTILLWATCH_FLAGS_TOPIC`` or ``distillation.flags``) is
refused as an output unless ``--to-live-flags`` is given.

Warm start. ``--warm-start-group G`` hands the replay's final state over to a *new* live
deployment of group ``G`` (see :func:`warm_start_entries` and ``docs/replay.md``).
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import os
import re
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

import orjson
import structlog

from consumers import __version__ as DETECTOR_VERSION
from consumers.config import KafkaSettings
from consumers.io import open_bin

if TYPE_CHECKING:  # the pipeline (river...) is imported when a replay runs, not by `diff`
    from consumers.core.config import DetectorConfig
    from consumers.core.pipeline import LocalPipeline

log = structlog.get_logger("distillwatch.replay_topic")

DEFAULT_FLAGS_TOPIC_PREFIX = "distillation.flags.replay."
#: the contract's default live flags topic: never a replay output without --to-live-flags
CONTRACT_LIVE_FLAGS_TOPIC = "distillation.flags"
EXIT_FATAL, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
MAX_REPORTED_ERRORS = 20
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_MIN_EPOCH_MS = 100_000_000_000  # 1973-03-03 in ms; smaller numbers are almost surely seconds

__all__ = [
    "PartitionRange",
    "Progress",
    "ReplayError",
    "ReplayOptions",
    "StreamMerger",
    "add_topic_arguments",
    "check_output_topic",
    "parse_time",
    "replay_topic",
    "resolve_range",
    "run_topic_replay",
    "warm_start_entries",
]


class ReplayError(Exception):
    """A replay that must not (or could not) run; ``exit_code`` 2 = refused/usage, 1 = failure."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


# ------------------------------------------------------------------------------ arguments


def add_topic_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``replay --topic`` (the lead calls this from ``consumers.replay.add_arguments``).

    ``--topic``, ``--output`` and ``--detector-config`` are defined by ``consumers.replay``.
    """
    g = p.add_argument_group("replay --topic (historical Kafka range)")
    g.add_argument("--from", dest="from_time", metavar="TIME",
                   help="start: ISO 8601 (no zone = UTC), epoch ms, or 'earliest' (required with --topic)")
    g.add_argument("--to", dest="to_time", metavar="TIME",
                   help="end, exclusive: ISO 8601, epoch ms, or 'latest' (default: the end of each "
                        "partition when the replay starts)")
    g.add_argument("--run-id", metavar="ID", help="names the replay's topic, group and transaction "
                                                  "(default: UTC time + random suffix)")
    g.add_argument("--flags-topic", dest="replay_flags_topic", metavar="T",
                   help="write flags to this topic (default distillation.flags.replay.<run-id>, or "
                        "none when --output is given); the live flags topic is refused")
    g.add_argument("--to-live-flags", action="store_true",
                   help="write flags to the LIVE flags topic (enforcement acts on them!)")
    g.add_argument("--live-flags-topic", metavar="T",
                   help="name of the live flags topic (default $DISTILLWATCH_FLAGS_TOPIC or "
                        "distillation.flags)")
    g.add_argument("--append", action="store_true",
                   help="allow writing into a replay topic that already holds records")
    g.add_argument("--bootstrap-servers", metavar="S",
                   help="default 127.0.0.1:9092 (DISTILLWATCH_BOOTSTRAP_SERVERS)")
    g.add_argument("--partitions", metavar="LIST",
                   help="replay only these partitions of --topic, e.g. 0,2,5 (default: all)")
    g.add_argument("--batch-size", dest="replay_batch_size", type=int, default=10_000, metavar="N",
                   help="messages per fetch and per pipeline batch (default 10000)")
    g.add_argument("--progress", choices=("auto", "bar", "log", "none"), default="auto",
                   help="progress bar on a terminal, JSON progress logs every 10 s otherwise")
    g.add_argument("--warm-start-group", metavar="G",
                   help="after the replay, hand its state over to a NEW live deployment of group G")
    g.add_argument("--warm-start-scope", choices=("auto", "full", "model"), default="auto",
                   help="full: all stage state (1-partition topics); model: the learned behaviour "
                        "model only; auto: full when possible")
    g.add_argument("--internal-prefix", metavar="P",
                   help="prefix of the live deployment's internal topics (default 'distillwatch.')")
    g.add_argument("--diff-against", metavar="SPEC",
                   help="afterwards, compare with the flags of another run (FILE or kafka:TOPIC)")
    g.add_argument("--summary", metavar="FILE", help="write a JSON summary of the run (ranges, "
                                                     "counts, throughput, flags sha256)")


# ------------------------------------------------------------------------------ time and ranges


def parse_time(text: str) -> int:
    """Epoch milliseconds of ``text``: ISO 8601 (date or date-time; no zone = UTC) or epoch ms.

    >>> parse_time("2026-04-22T06:00:00Z")
    1776837600000
    >>> parse_time("2026-04-22")
    1776816000000
    >>> parse_time("1776837600000")
    1776837600000
    """
    s = text.strip()
    if re.fullmatch(r"-?\d+", s):
        ms = int(s)
        if abs(ms) < _MIN_EPOCH_MS:
            raise ValueError(f"{text!r} looks like epoch seconds; give epoch milliseconds "
                             f"({ms * 1000}) or ISO 8601")
        return ms
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"{text!r} is neither ISO 8601 (2026-04-22T06:00:00Z) nor epoch "
                         "milliseconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _bound(text: str | None, words: tuple[str, ...], what: str) -> int | None:
    if text is None or text.strip().lower() in words:
        return None
    try:
        return parse_time(text)
    except ValueError as e:
        raise ReplayError(f"{what}: {e}") from None


def format_ms(ms: int | None) -> str:
    """ISO 8601 UTC of epoch milliseconds (``-`` for None)."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


# ------------------------------------------------------------------------------ merge order


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


# ------------------------------------------------------------------------------ progress


def _hms(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """A one-line progress bar (rate, ETA) on a terminal, else ``replay_progress`` log lines.

    ``mode``: ``auto`` (bar when ``stream`` is a TTY), ``bar``, ``log`` or ``none``.
    """

    def __init__(self, total: int, mode: str = "auto", stream: IO[str] | None = None,
                 bar_every_s: float = 0.25, log_every_s: float = 10.0):
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            isatty = getattr(self.stream, "isatty", None)
            mode = "bar" if isatty is not None and isatty() else "log"
        self.mode = mode
        self.total = total
        self.every = bar_every_s if mode == "bar" else log_every_s
        self.t0 = time.monotonic()
        self._next = self.t0 + self.every
        self._width = 0

    def stats(self, done: int) -> dict[str, Any]:
        secs = max(time.monotonic() - self.t0, 1e-9)
        rate = done / secs
        left = max(self.total - done, 0)
        eta = left / rate if rate > 0 else None
        pct = 100.0 * done / self.total if self.total else 100.0
        return {"done": done, "total": self.total, "pct": round(min(pct, 100.0), 2),
                "rate_per_s": round(rate, 1), "eta_s": round(eta, 1) if eta is not None else None,
                "elapsed_s": round(secs, 1)}

    def line(self, done: int, flags: int) -> str:
        st = self.stats(done)
        width = 28
        filled = int(width * st["pct"] / 100)
        bar = "#" * filled + "." * (width - filled)
        return (f"replay {st['pct']:5.1f}% [{bar}] {done:,}/{self.total:,} msgs "
                f"{st['rate_per_s']:,.0f} msg/s ETA {_hms(st['eta_s'])} flags {flags:,}")

    def update(self, done: int, flags: int, force: bool = False) -> None:
        if self.mode == "none":
            return
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + self.every
        if self.mode == "bar":
            text = self.line(done, flags)
            pad = max(0, self._width - len(text))
            self._width = len(text)
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
        else:
            log.info("replay_progress", flags=flags, **self.stats(done))

    def close(self, done: int, flags: int) -> None:
        if self.mode == "bar":
            self.update(done, flags, force=True)
            self.stream.write("\n")
            self.stream.flush()
        elif self.mode == "log":
            self.update(done, flags, force=True)


# ------------------------------------------------------------------------------ options


@dataclass
class ReplayOptions:
    """A validated ``replay --topic`` request (see :meth:`from_args`)."""

    topic: str
    from_ms: int | None
    to_ms: int | None
    run_id: str
    kafka: KafkaSettings
    output: str | None = None
    flags_topic: str | None = None          # where flags go on Kafka (None: file only)
    live_flags_topic: str = CONTRACT_LIVE_FLAGS_TOPIC
    to_live: bool = False
    append: bool = False
    partitions: list[int] | None = None
    batch_size: int = 10_000
    progress: str = "auto"
    warm_group: str | None = None
    warm_scope: str = "auto"
    diff_against: str | None = None
    summary: str | None = None

    @property
    def group_id(self) -> str:
        """The replay's own consumer group id (used by the client only: it never commits)."""
        return f"distillwatch-replay.{self.run_id}"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ReplayOptions:
        """Validate the command line; raises :class:`ReplayError` (exit 2) on a bad request."""
        g = lambda name, default=None: getattr(args, name, default)  # noqa: E731
        topic = g("topic")
        if not topic:
            raise ReplayError("--topic is required")
        if g("from_time") is None:
            raise ReplayError("--from TIME is required with --topic (use --from earliest for the "
                              "whole retained history)")
        from_ms = _bound(g("from_time"), ("earliest", "beginning"), "--from")
        to_ms = _bound(g("to_time"), ("latest", "end", "now"), "--to")
        if from_ms is not None and to_ms is not None and to_ms <= from_ms:
            raise ReplayError(f"--to ({format_ms(to_ms)}) must be after --from ({format_ms(from_ms)})")
        run_id = g("run_id") or (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                                 + "-" + uuid.uuid4().hex[:6])
        if not _RUN_ID_RE.match(run_id):
            raise ReplayError(f"--run-id {run_id!r}: use letters, digits, '.', '_' and '-' only")
        over: dict[str, Any] = {}
        if g("bootstrap_servers"):
            over["bootstrap_servers"] = g("bootstrap_servers")
        if g("internal_prefix"):
            over["internal_prefix"] = g("internal_prefix")
        kafka = KafkaSettings(**over)
        live = g("live_flags_topic") or kafka.flags_topic
        partitions = None
        if g("partitions"):
            try:
                partitions = sorted({int(x) for x in str(g("partitions")).split(",") if x.strip()})
            except ValueError:
                raise ReplayError(f"--partitions {g('partitions')!r}: give a list like 0,2,5") from None
        batch = g("replay_batch_size", 10_000) or 10_000
        if batch < 1:
            raise ReplayError("--batch-size must be at least 1")
        to_live = bool(g("to_live_flags"))
        explicit = g("replay_flags_topic")
        if to_live:
            if explicit and explicit != live:
                raise ReplayError(f"--to-live-flags writes to the live flags topic {live!r}; do not "
                                  f"combine it with --flags-topic {explicit!r}")
            flags_topic: str | None = live
        elif explicit:
            flags_topic = explicit
        elif g("output"):
            flags_topic = None
        else:
            flags_topic = DEFAULT_FLAGS_TOPIC_PREFIX + run_id
        if flags_topic is not None:
            check_output_topic(flags_topic, live_topics={live, CONTRACT_LIVE_FLAGS_TOPIC},
                               to_live=to_live, requests_topic=topic)
        warm = g("warm_start_group")
        if warm and partitions is not None:
            raise ReplayError("--warm-start-group needs every partition: drop --partitions")
        return cls(topic=topic, from_ms=from_ms, to_ms=to_ms, run_id=run_id, kafka=kafka,
                   output=g("output"), flags_topic=flags_topic, live_flags_topic=live,
                   to_live=to_live, append=bool(g("append")), partitions=partitions,
                   batch_size=batch, progress=g("progress", "auto") or "auto", warm_group=warm,
                   warm_scope=g("warm_start_scope", "auto") or "auto",
                   diff_against=g("diff_against"), summary=g("summary"))


def check_output_topic(topic: str, live_topics: set[str], to_live: bool,
                       requests_topic: str | None = None) -> None:
    """Refuse (``ReplayError``) a replay output topic that is a live flags topic, unless
    ``to_live``, or the requests topic itself.

    >>> check_output_topic("distillation.flags.replay.r1", {"distillation.flags"}, False)
    >>> check_output_topic("distillation.flags", {"distillation.flags"}, False)
    Traceback (most recent call last):
    ...
    consumers.replay_topic.ReplayError: refusing to write replay flags to the live flags topic 'distillation.flags': enforcement acts on it. Give --to-live-flags to do that on purpose, or leave --flags-topic out (default distillation.flags.replay.<run-id>)
    """
    if requests_topic is not None and topic == requests_topic:
        raise ReplayError(f"refusing to write flags into the requests topic {topic!r}")
    if topic in live_topics and not to_live:
        raise ReplayError(
            f"refusing to write replay flags to the live flags topic {topic!r}: enforcement acts "
            "on it. Give --to-live-flags to do that on purpose, or leave --flags-topic out "
            f"(default {DEFAULT_FLAGS_TOPIC_PREFIX}<run-id>)")


# ------------------------------------------------------------------------------ Kafka reading


def _consumer(kafka: KafkaSettings, group_id: str, batch_size: int) -> Any:
    from confluent_kafka import Consumer

    conf = kafka.client_config()
    conf.update({
        # assign() only: the group never has members nor committed offsets
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        # a start offset deleted by retention mid-replay must fail, not silently move
        "auto.offset.reset": "error",
        # catch-up mode: big fetches, deep local queue
        "fetch.wait.max.ms": 100,
        "fetch.max.bytes": 104_857_600,
        "max.partition.fetch.bytes": 16_777_216,
        "queued.min.messages": max(100_000, 2 * batch_size),
        "queued.max.messages.kbytes": 262_144,
    })
    return Consumer(conf)


def topic_partitions(consumer: Any, topic: str, timeout: float = 30.0) -> list[int] | None:
    """Partitions of ``topic`` (``None`` when it does not exist)."""
    md = consumer.list_topics(topic, timeout=timeout)
    tmd = md.topics.get(topic)
    if tmd is None or tmd.error is not None or not tmd.partitions:
        return None
    return sorted(tmd.partitions)


def plan_ranges(consumer: Any, topic: str, partitions: list[int], from_ms: int | None,
                to_ms: int | None, timeout: float = 30.0) -> list[PartitionRange]:
    """Per partition, the offsets of ``[from_ms, to_ms)`` (see :func:`resolve_range`)."""
    from confluent_kafka import KafkaException, TopicPartition

    marks = {}
    for p in partitions:
        marks[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout,
                                                  cached=False)

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



def _consumer_error(err: Any, topic: str, p: int | None) -> None:
    """A consumer error other than end-of-partition while reading a range: raise when the replay
    cannot go on (start offset deleted by retention, fatal or non-retriable), else log it."""
    from confluent_kafka import KafkaError, KafkaException

    if err.code() == KafkaError._AUTO_OFFSET_RESET:
        raise ReplayError(f"{topic}[{p}]: start offset no longer exists (deleted by "
                          f"retention while replaying?): {err}", EXIT_FATAL)
    if err.fatal() or not err.retriable():
        raise KafkaException(err)
    log.warning("replay_consumer_error", error=str(err))


def read_ranges(consumer: Any, topic: str, ranges: list[PartitionRange], batch_size: int,
                stop: threading.Event, max_buffer: int | None = None,
                ) -> Iterator[list[tuple[int, int, bytes | None]]]:
    """Read the ranges and yield batches of ``(partition, offset, value)`` in replay order
    (:class:`StreamMerger`). Stops early (without error) when ``stop`` is set."""
    from confluent_kafka import KafkaError, TopicPartition

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
                            log.warning("replay_partition_shorter", topic=topic, partition=p,
                                        eof=m.offset(), planned_end=end[p])
                        finish(p)
                    continue
                _consumer_error(err, topic, p)
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
    from confluent_kafka import KafkaError, TopicPartition

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
                        log.warning("replay_partition_shorter", topic=topic, partition=p,
                                    eof=m.offset(), planned_end=end)
                    finished = True
                    break
                _consumer_error(err, topic, p)
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


# ------------------------------------------------------------------------------ output


class FlagSink:
    """Flags to a file (``FILE.partial``, renamed by :meth:`commit`) and/or a spool for a topic.

    Keeps the SHA-256 of the flag lines: two runs gave identical flags iff the digests match.
    """

    def __init__(self, path: str | None, spool: bool):
        self.path = path
        self.count = 0
        self.sha = hashlib.sha256()
        self._stdout = path == "-"
        self._tmp = None if path is None or self._stdout else path + ".partial"
        self._file: IO[bytes] | None
        if self._stdout:
            self._file = sys.stdout.buffer
        elif self._tmp is not None:
            self._file = open_bin(self._tmp, "wb")
        else:
            self._file = None
        self._spool: IO[bytes] | None = tempfile.TemporaryFile(prefix="distillwatch-replay-") if spool else None  # noqa: SIM115

    def write(self, flags: list[bytes]) -> None:
        if not flags:
            return
        data = b"\n".join(flags) + b"\n"
        self.sha.update(data)
        self.count += len(flags)
        if self._file is not None:
            self._file.write(data)
        if self._spool is not None:
            self._spool.write(data)

    def spooled(self) -> Iterator[bytes]:
        """The spooled flag values, in order."""
        if self._spool is None:
            return
        self._spool.flush()
        self._spool.seek(0)
        for line in self._spool:
            line = line.rstrip(b"\n")
            if line:
                yield line

    def commit(self) -> None:
        """Close the file and move it into place."""
        if self._file is not None:
            self._file.flush()
            if not self._stdout:
                self._file.close()
        if self._tmp is not None and self.path is not None:
            os.replace(self._tmp, self.path)
        self._file = None

    def discard(self) -> None:
        """Drop everything (interrupted or failed replay): no file is left behind."""
        if self._file is not None and not self._stdout:
            self._file.close()
        self._file = None
        if self._tmp is not None and os.path.exists(self._tmp):
            os.remove(self._tmp)
        self.close_spool()

    def close_spool(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def _watermarks(consumer: Any, topic: str, partitions: Iterable[int]) -> dict[int, tuple[int, int]]:
    from confluent_kafka import TopicPartition

    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30, cached=False)
            for p in partitions}


def check_flags_topic(consumer: Any, opts: ReplayOptions) -> None:
    """Before reading: refuse to append a run to a replay topic that already holds records."""
    if opts.flags_topic is None or opts.to_live or opts.append:
        return
    parts = topic_partitions(consumer, opts.flags_topic)
    if parts is None:
        return
    marks = _watermarks(consumer, opts.flags_topic, parts)
    if any(hi > lo for lo, hi in marks.values()):
        raise ReplayError(f"flags topic {opts.flags_topic!r} already holds records (another run?); "
                          "choose another --run-id/--flags-topic, or give --append")


class _Transaction:
    """One Kafka transaction of a short-lived producer: produce with back-pressure, then
    :meth:`commit` (flush, check every delivery, commit). Leaving the ``with`` block without a
    commit — an exception, say — aborts, so readers with ``read_committed`` see all or nothing."""

    def __init__(self, kafka: KafkaSettings, transactional_id: str, what: str, **extra: Any):
        from confluent_kafka import Producer

        conf = kafka.client_config()
        conf.update({"transactional.id": transactional_id, "enable.idempotence": True,
                     "transaction.timeout.ms": 600_000, "linger.ms": 20, "compression.type": "lz4",
                     **extra})
        self.producer = Producer(conf)
        self.what = what
        self.errors: list[str] = []
        self.n = 0
        self._done = False

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def __enter__(self) -> _Transaction:
        self.producer.init_transactions(60)
        self.producer.begin_transaction()
        return self

    def send(self, topic: str, value: bytes, key: bytes | None, partition: int | None = None) -> None:
        kw: dict[str, Any] = {"on_delivery": self._on_delivery}
        if partition is not None:
            kw["partition"] = partition
        while True:
            try:
                self.producer.produce(topic, value, key, **kw)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.n += 1
        if self.n % 10_000 == 0:
            self.producer.poll(0)

    def commit(self) -> None:
        left = self.producer.flush(120)
        if self.errors or left:
            raise ReplayError(f"{self.what} failed: {self.errors[0] if self.errors else f'{left} not delivered'}",
                              EXIT_FATAL)
        self.producer.commit_transaction(120)
        self._done = True

    def __exit__(self, *exc: Any) -> None:
        if not self._done:
            try:
                self.producer.abort_transaction(30)
            except Exception:  # noqa: BLE001 - already failing; the broker aborts on timeout
                pass


def produce_flags(kafka: KafkaSettings, topic: str, values: Iterable[bytes], partitions: int,
                  transactional_id: str) -> int:
    """Create ``topic`` if missing and produce the flags, keyed by account, in one transaction."""
    from consumers.kafka.admin import TopicSpec, ensure_topics

    ensure_topics(kafka, [TopicSpec(topic, partitions, replication_factor=-1)])
    # same key -> partition mapping as the live runner (and the Java clients)
    with _Transaction(kafka, transactional_id, f"producing flags to {topic!r}",
                      partitioner="murmur2_random") as txn:
        for v in values:
            txn.send(topic, v, orjson.loads(v)["account_id"].encode())
        txn.commit()
        return txn.n


# ------------------------------------------------------------------------------ warm start


@dataclass
class WarmStartTarget:
    """Where a live deployment of ``group`` keeps its state (names as ``consumers.detect``)."""

    group: str
    scope: str                      # "full" or "model"
    stage_groups: dict[str, str]    # stage -> consumer group id
    inputs: dict[str, str]          # stage -> input topic
    changelogs: dict[str, str]      # stage -> changelog topic
    partitions: dict[str, int]      # stage -> partitions of its input (and changelog)


def warm_start_target(kafka: KafkaSettings, group: str, requests_topic: str, n_partitions: int,
                      scope: str) -> WarmStartTarget:
    """Resolve ``auto`` scope and the live deployment's names; refuses ``full`` on >1 partition."""
    from consumers.core.pipeline import OBSERVATIONS, REQUESTS, VERDICTS
    from consumers.detect import STAGES, pipeline_topics

    if scope == "auto":
        scope = "full" if n_partitions == 1 else "model"
    if scope == "full" and n_partitions != 1:
        raise ReplayError(
            f"--warm-start-scope full needs a 1-partition requests topic ({requests_topic!r} has "
            f"{n_partitions}): a replay merges partitions into one stream, but a live deployment "
            "keeps campaign state per partition. Use --warm-start-scope model.")
    kg = kafka.model_copy(update={"group_id": group, "requests_topic": requests_topic})
    topics = pipeline_topics(kg)
    inputs = {"account": topics[REQUESTS], "campaign": topics[OBSERVATIONS],
              "policy": topics[VERDICTS]}
    stages = STAGES if scope == "full" else ("account",)
    return WarmStartTarget(
        group=group, scope=scope,
        stage_groups={s: f"{group}.{s}" for s in stages},
        inputs={s: inputs[s] for s in stages},
        changelogs={s: kg.internal_topic(f"{group}.{s}.changelog") for s in stages},
        partitions={s: (n_partitions if s == "account" else 1) for s in stages},
    )


def check_warm_start_target(consumer_factory: Any, admin_consumer: Any,
                            target: WarmStartTarget) -> dict[str, dict[int, int]]:
    """Refuse a group that already has state; return the current end offsets of the internal
    input topics (where a new deployment's campaign/policy stages will start)."""
    from confluent_kafka import TopicPartition

    for cl in target.changelogs.values():
        parts = topic_partitions(admin_consumer, cl)
        if parts is not None and any(hi > lo for lo, hi in
                                     _watermarks(admin_consumer, cl, parts).values()):
            raise ReplayError(f"warm start: changelog {cl!r} of group {target.group!r} already "
                              "holds state; warm start is for a NEW deployment (use a new "
                              "--group-id, or delete that deployment's topics and offsets)")
    ends: dict[str, dict[int, int]] = {}
    for stage, topic in target.inputs.items():
        parts = topic_partitions(admin_consumer, topic)
        if parts is None:
            ends[stage] = dict.fromkeys(range(target.partitions[stage]), 0)
            continue
        if stage != "account" and len(parts) != target.partitions[stage]:
            raise ReplayError(f"warm start: internal topic {topic!r} has {len(parts)} partitions; "
                              f"full warm start needs {target.partitions[stage]}")
        c = consumer_factory(target.stage_groups[stage])
        try:
            committed = c.committed([TopicPartition(topic, p) for p in parts], timeout=30)
        finally:
            c.close()
        if any(tp.offset >= 0 for tp in committed):
            raise ReplayError(f"warm start: group {target.stage_groups[stage]!r} already has "
                              f"committed offsets on {topic!r}; warm start is for a NEW deployment")
        marks = _watermarks(admin_consumer, topic, parts)
        if stage != "account" and any(hi > lo for lo, hi in marks.values()):
            raise ReplayError(f"warm start: internal topic {topic!r} already holds records")
        ends[stage] = {p: hi for p, (_, hi) in marks.items()}
    return ends


def latest_entries(changes: Iterable[tuple[bytes, bytes | None]]) -> list[tuple[bytes, bytes]]:
    """What ``restore`` would see from a fresh changelog holding ``changes``: the latest value
    per key, in the order of each key's latest write, tombstoned keys dropped."""
    latest: dict[bytes, bytes | None] = {}
    for k, v in changes:
        latest.pop(k, None)
        latest[k] = v
    return [(k, v) for k, v in latest.items() if v is not None]


def warm_start_entries(pipe: LocalPipeline, target: WarmStartTarget, handover: dict[int, int],
                       internal_ends: dict[str, dict[int, int]],
                       ) -> tuple[dict[tuple[str, int], list[tuple[bytes, bytes]]],
                                  dict[str, list[tuple[str, int, int]]]]:
    """The changelog records and committed offsets that hand the replay's state over.

    Returns ``({(changelog, partition): [(key, value), ...]}, {group: [(topic, partition,
    offset), ...]})``. Every changelog partition ends with the runner's offset marker equal to
    the offset committed for the stage's group, so the live runner restores it without waiting.

    * ``full`` (1 partition): the final state of all three processors; the account stage's group
      resumes the requests topic at the replay's end offset, the campaign and policy groups at the
      current end of their (new, empty) internal topics. The live deployment then continues
      exactly as if it had processed the replayed range itself.
    * ``model``: only the account stage's learned behaviour model (``__model__``), copied into
      every partition of the account changelog; per-account state, campaign state and flag
      history are NOT carried over. The account group resumes every partition at its replay end.
    """
    from consumers.core.account_stage import MODEL_KEY
    from consumers.kafka.changelog import OFFSET_MARKER_KEY, encode_marker

    records: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
    offsets: dict[str, list[tuple[str, int, int]]] = {}
    acct_changes = latest_entries(pipe.account.take_changes())
    if target.scope == "full":
        procs = {"account": acct_changes, "campaign": latest_entries(pipe.campaign.take_changes()),
                 "policy": latest_entries(pipe.policy.take_changes())}
        for stage, entries in procs.items():
            nxt = handover[0] if stage == "account" else internal_ends[stage][0]
            records[(target.changelogs[stage], 0)] = [*entries, (OFFSET_MARKER_KEY, encode_marker(nxt))]
            offsets[target.stage_groups[stage]] = [(target.inputs[stage], 0, nxt)]
        return records, offsets
    model = [v for k, v in acct_changes if k == MODEL_KEY]
    if not model:
        raise ReplayError("warm start: the behaviour model learned nothing in this range (too short, "
                          "or no account old enough to train it); nothing to hand over", EXIT_FATAL)
    cl = target.changelogs["account"]
    offsets[target.stage_groups["account"]] = []
    for p in range(target.partitions["account"]):
        nxt = handover[p]
        records[(cl, p)] = [(MODEL_KEY, model[-1]), (OFFSET_MARKER_KEY, encode_marker(nxt))]
        offsets[target.stage_groups["account"]].append((target.inputs["account"], p, nxt))
    return records, offsets


def write_warm_start(kafka: KafkaSettings, target: WarmStartTarget,
                     records: dict[tuple[str, int], list[tuple[bytes, bytes]]],
                     offsets: dict[str, list[tuple[str, int, int]]], run_id: str) -> int:
    """Write changelog records and commit the groups' offsets in one transaction."""
    from confluent_kafka import Consumer, TopicPartition

    from consumers.kafka.admin import TopicSpec, changelog_spec, ensure_topics

    specs = [changelog_spec(cl, target.partitions[s], -1) for s, cl in target.changelogs.items()]
    specs += [TopicSpec(t, target.partitions[s], replication_factor=-1)
              for s, t in target.inputs.items() if s != "account"]
    ensure_topics(kafka, specs)
    with _Transaction(kafka, f"{target.group}.warmstart.{run_id}", "warm start: writing changelogs") as txn:
        for (topic, p), entries in records.items():
            for k, v in entries:
                txn.send(topic, v, k, partition=p)
        for group, offs in offsets.items():
            c = Consumer(kafka.client_config() | {"group.id": group, "enable.auto.commit": False})
            try:
                txn.producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, o) for t, p, o in offs], c.consumer_group_metadata(), 60)
            finally:
                c.close()
        txn.commit()
        return txn.n


# ------------------------------------------------------------------------------ the replay


@dataclass
class ReplayResult:
    """What a replay did (also the ``--summary`` JSON)."""

    run_id: str
    topic: str
    from_ms: int | None
    to_ms: int | None
    ranges: list[dict[str, int]]
    messages: int = 0
    events: int = 0
    invalid: int = 0
    duplicates: int = 0
    flags: int = 0
    flags_sha256: str = ""
    seconds: float = 0.0
    messages_per_s: float = 0.0
    output_file: str | None = None
    flags_topic: str | None = None
    to_live_flags: bool = False
    warm_start: dict[str, Any] | None = None
    interrupted: bool = False
    detector_version: str = DETECTOR_VERSION
    detector_config: str = ""
    order: str = "log"
    diff: dict[str, Any] | None = field(default=None, repr=False)


def _install_stop(stop: threading.Event) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}

    def handler(_sig: int, _frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    return previous


def replay_topic(opts: ReplayOptions, cfg: DetectorConfig, stop: threading.Event | None = None,
                 progress_stream: IO[str] | None = None) -> ReplayResult:
    """Run a topic replay (see the module docstring). Raises :class:`ReplayError` when refused."""
    stop = stop or threading.Event()
    consumer = _consumer(opts.kafka, opts.group_id, opts.batch_size)
    sink: FlagSink | None = None
    try:
        parts = topic_partitions(consumer, opts.topic)
        if parts is None:
            raise ReplayError(f"topic {opts.topic!r} does not exist on {opts.kafka.bootstrap_servers}")
        n_parts = len(parts)
        if opts.partitions is not None:
            unknown = sorted(set(opts.partitions) - set(parts))
            if unknown:
                raise ReplayError(f"--partitions {unknown}: {opts.topic!r} has partitions 0..{n_parts - 1}")
            parts = opts.partitions
        check_flags_topic(consumer, opts)
        baseline = None
        if opts.diff_against:  # read first: an unreadable baseline must not cost a whole replay
            from consumers import diff

            try:
                baseline = diff.load_flags(opts.diff_against, opts.kafka.bootstrap_servers)
            except (OSError, RuntimeError, ValueError) as e:
                raise ReplayError(f"--diff-against {opts.diff_against}: {e}") from None
        target = internal_ends = None
        if opts.warm_group:
            target = warm_start_target(opts.kafka, opts.warm_group, opts.topic, n_parts, opts.warm_scope)

            def group_consumer(gid: str) -> Any:
                from confluent_kafka import Consumer

                return Consumer(opts.kafka.client_config() | {"group.id": gid,
                                                               "enable.auto.commit": False})

            internal_ends = check_warm_start_target(group_consumer, consumer, target)
        ranges = plan_ranges(consumer, opts.topic, parts, opts.from_ms, opts.to_ms)
        total = sum(r.size for r in ranges)
        order = "log" if len(parts) == 1 else "merge(timestamp,partition,offset)"
        result = ReplayResult(run_id=opts.run_id, topic=opts.topic, from_ms=opts.from_ms,
                              to_ms=opts.to_ms, ranges=[asdict(r) for r in ranges],
                              output_file=opts.output, flags_topic=opts.flags_topic,
                              to_live_flags=opts.to_live, detector_config=cfg.fingerprint(),
                              order=order)
        for r in ranges:
            if r.start == r.low and r.low > 0 and opts.from_ms is not None and r.size:
                log.warning("replay_range_truncated", topic=opts.topic, partition=r.partition,
                            log_start_offset=r.low,
                            hint="the range starts at the log start offset: older messages, "
                                 "possibly inside the range, were deleted by retention")
        log.info("replay_start", run_id=opts.run_id, topic=opts.topic, group=opts.group_id,
                 **{"from": format_ms(opts.from_ms), "to": format_ms(opts.to_ms)},
                 messages=total, order=order, flags_topic=opts.flags_topic,
                 output=opts.output, detector_config=cfg.fingerprint(),
                 ranges={r.partition: [r.start, r.end] for r in ranges})

        from consumers.core.pipeline import LocalPipeline

        pipe = LocalPipeline(cfg)
        sink = FlagSink(opts.output, spool=opts.flags_topic is not None or bool(opts.diff_against))
        progress = Progress(total, opts.progress, stream=progress_stream)
        fed = reported = 0
        t0 = time.perf_counter()
        for batch in read_ranges(consumer, opts.topic, ranges, opts.batch_size, stop):
            flags = pipe.feed([v or b"" for _, _, v in batch])  # a null value is malformed
            if pipe.dead_letters:
                for rec in pipe.dead_letters:
                    if reported < MAX_REPORTED_ERRORS:
                        h = dict(rec.headers or [])
                        p, off, _ = batch[int(h["dlq.offset"]) - fed]
                        print(f"replay: {opts.topic}[{p}]@{off}: {h['dlq.error'].decode()}",
                              file=sys.stderr)
                        reported += 1
                pipe.dead_letters.clear()
            fed += len(batch)
            sink.write(flags)
            progress.update(fed, sink.count)
        result.seconds = time.perf_counter() - t0
        progress.close(fed, sink.count)
        c = pipe.counters()["account"]
        result.messages, result.events = fed, c["events"]
        result.invalid, result.duplicates = c["invalid"], c["duplicates"]
        result.flags, result.flags_sha256 = sink.count, sink.sha.hexdigest()
        result.messages_per_s = fed / max(result.seconds, 1e-9)
        if stop.is_set():
            result.interrupted = True
            sink.discard()
            log.warning("replay_interrupted", run_id=opts.run_id, messages=fed, total=total,
                        hint="nothing was written to Kafka and no output file was left")
            return result
        if result.invalid > reported:
            print(f"replay: ... {result.invalid - reported} more malformed messages", file=sys.stderr)
        if opts.flags_topic is not None:
            produce_flags(opts.kafka, opts.flags_topic, sink.spooled(), n_parts,
                          f"distillwatch-replay.{opts.run_id}")
        sink.commit()
        if baseline is not None:
            from consumers import diff

            result.diff = diff.compare(baseline, [orjson.loads(v) for v in sink.spooled()],
                                       name_a=opts.diff_against or "", name_b=f"replay {opts.run_id}")
        sink.close_spool()
        if target is not None and internal_ends is not None:
            handover = {r.partition: r.end for r in ranges}
            records, offsets = warm_start_entries(pipe, target, handover, internal_ends)
            n = write_warm_start(opts.kafka, target, records, offsets, opts.run_id)
            result.warm_start = {"group": target.group, "scope": target.scope, "records": n,
                                 "changelogs": target.changelogs,
                                 "offsets": {g: [list(o) for o in offs] for g, offs in offsets.items()}}
            log.info("replay_warm_start", **result.warm_start)
        return result
    except BaseException:
        if sink is not None:
            sink.discard()
        raise
    finally:
        consumer.close()


def _report(res: ReplayResult) -> str:
    where = []
    if res.output_file:
        where.append(f"file {res.output_file}")
    if res.flags_topic:
        where.append(f"topic {res.flags_topic}" + (" (LIVE)" if res.to_live_flags else ""))
    return (f"replay: run {res.run_id}: {res.topic} [{format_ms(res.from_ms)}, {format_ms(res.to_ms)}) "
            f"{res.messages:,} messages, {res.events:,} events, {res.invalid:,} malformed, "
            f"{res.duplicates:,} duplicates, {res.flags:,} flags -> {' and '.join(where) or 'nowhere'} "
            f"in {res.seconds:.1f}s ({res.messages_per_s:,.0f} msg/s); flags sha256 {res.flags_sha256[:16]}")


def run_topic_replay(args: argparse.Namespace, cfg: DetectorConfig) -> int:
    """Entry point of ``distillwatch replay --topic`` (called by :mod:`consumers.replay`)."""
    from confluent_kafka import KafkaException

    stop = threading.Event()
    previous = _install_stop(stop)
    try:
        opts = ReplayOptions.from_args(args)
        res = replay_topic(opts, cfg, stop)
    except ReplayError as e:
        print(f"replay: {e}", file=sys.stderr)
        return e.exit_code
    except KafkaException as e:
        print(f"replay: Kafka error: {e}", file=sys.stderr)
        return EXIT_FATAL
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
    if res.interrupted:
        print(f"replay: interrupted after {res.messages:,} messages; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(_report(res), file=sys.stderr)
    if res.warm_start:
        print(f"replay: warm start ({res.warm_start['scope']}) of group {res.warm_start['group']}: "
              f"{res.warm_start['records']} changelog records, offsets committed", file=sys.stderr)
    log.info("replay_done", **{k: v for k, v in asdict(res).items() if k not in ("ranges", "diff")})
    if res.diff is not None:
        from consumers import diff

        print(diff.render_text(res.diff), file=sys.stderr)
    if opts.summary:
        with open(opts.summary, "wb") as f:
            f.write(orjson.dumps(asdict(res), option=orjson.OPT_INDENT_2))
    return 0
