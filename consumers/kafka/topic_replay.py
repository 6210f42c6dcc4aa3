"""Historical replay of a Kafka topic range: the service behind ``distillwatch replay --topic``.

Reads the requests topic itself — explicit partition assignment, no group membership, no offset
commits, ``isolation.level=read_committed`` — over a fixed offset range per partition
(:mod:`consumers.kafka.reader`), and runs the same in-process three-stage pipeline as file replay
(:class:`~consumers.core.pipeline.LocalPipeline`). Nothing a live ``detect`` deployment owns (its
consumer groups, changelogs, internal topics or the live flags topic) is read or written, unless
asked for explicitly. Flags for a topic are spooled and produced at the end in one transaction
(:func:`consumers.kafka.writer.produce_flags`); a warm start hands the final state over to a new
deployment (:mod:`consumers.kafka.warm_start`). The command line is :mod:`consumers.replay_topic`.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import IO, Any

import orjson
import structlog

from consumers import __version__ as DETECTOR_VERSION
from consumers.config import KafkaSettings
from consumers.core.config import DetectorConfig
from consumers.core.pipeline import LocalPipeline
from consumers.flag_diff import compare
from consumers.flag_sink import FlagSink
from consumers.kafka.errors import EXIT_FATAL, RangeTruncated, ReplayError
from consumers.kafka.reader import (
    load_flags,
    plan_ranges,
    range_consumer,
    read_ranges,
    topic_partitions,
    watermarks,
)
from consumers.kafka.warm_start import (
    check_warm_start_target,
    group_consumer_factory,
    warm_start_entries,
    warm_start_target,
    write_warm_start,
)
from consumers.kafka.writer import TransactionFailed, produce_flags
from consumers.progress import Progress
from consumers.times import format_ms

log = structlog.get_logger("distillwatch.replay_topic")

DEFAULT_FLAGS_TOPIC_PREFIX = "distillation.flags.replay."
#: the contract's default live flags topic: never a replay output without --to-live-flags
CONTRACT_LIVE_FLAGS_TOPIC = "distillation.flags"
MAX_REPORTED_ERRORS = 20

__all__ = [
    "CONTRACT_LIVE_FLAGS_TOPIC",
    "DEFAULT_FLAGS_TOPIC_PREFIX",
    "ReplayOptions",
    "ReplayResult",
    "check_flags_topic",
    "check_output_topic",
    "replay_topic",
]


def replay_transactional_id(run_id: str) -> str:
    """The transactional id of a replay's flags transaction."""
    return f"distillwatch-replay.{run_id}"


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


def check_output_topic(topic: str, live_topics: set[str], to_live: bool,
                       requests_topic: str | None = None) -> None:
    """Refuse (``ReplayError``) a replay output topic that is a live flags topic, unless
    ``to_live``, or the requests topic itself.

    >>> check_output_topic("distillation.flags.replay.r1", {"distillation.flags"}, False)
    >>> check_output_topic("distillation.flags", {"distillation.flags"}, False)
    Traceback (most recent call last):
    ...
    consumers.kafka.errors.ReplayError: refusing to write replay flags to the live flags topic 'distillation.flags': enforcement acts on it. Give --to-live-flags to do that on purpose, or leave --flags-topic out (default distillation.flags.replay.<run-id>)
    """
    if requests_topic is not None and topic == requests_topic:
        raise ReplayError(f"refusing to write flags into the requests topic {topic!r}")
    if topic in live_topics and not to_live:
        raise ReplayError(
            f"refusing to write replay flags to the live flags topic {topic!r}: enforcement acts "
            "on it. Give --to-live-flags to do that on purpose, or leave --flags-topic out "
            f"(default {DEFAULT_FLAGS_TOPIC_PREFIX}<run-id>)")


def check_flags_topic(consumer: Any, opts: ReplayOptions) -> None:
    """Before reading: refuse to append a run to a replay topic that already holds records."""
    if opts.flags_topic is None or opts.to_live or opts.append:
        return
    parts = topic_partitions(consumer, opts.flags_topic)
    if parts is None:
        return
    marks = watermarks(consumer, opts.flags_topic, parts)
    if any(hi > lo for lo, hi in marks.values()):
        raise ReplayError(f"flags topic {opts.flags_topic!r} already holds records (another run?); "
                          "choose another --run-id/--flags-topic, or give --append")


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


def replay_topic(opts: ReplayOptions, cfg: DetectorConfig, stop: threading.Event | None = None,
                 progress_stream: IO[str] | None = None) -> ReplayResult:
    """Run a topic replay (see the module docstring). Raises :class:`ReplayError` when refused."""
    stop = stop or threading.Event()
    consumer = range_consumer(opts.kafka, opts.group_id, opts.batch_size)
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
            try:
                baseline = load_flags(opts.diff_against, opts.kafka.bootstrap_servers)
            except (OSError, RuntimeError, ValueError) as e:
                raise ReplayError(f"--diff-against {opts.diff_against}: {e}") from None
        target = internal_ends = None
        if opts.warm_group:
            target = warm_start_target(opts.kafka, opts.warm_group, opts.topic, n_parts, opts.warm_scope)
            internal_ends = check_warm_start_target(group_consumer_factory(opts.kafka), consumer,
                                                    target)
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

        pipe = LocalPipeline(cfg, changelog=opts.warm_group is not None)
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
                          replay_transactional_id(opts.run_id))
        sink.commit()
        if baseline is not None:
            result.diff = compare(baseline, [orjson.loads(v) for v in sink.spooled()],
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
    except (RangeTruncated, TransactionFailed) as e:
        if sink is not None:
            sink.discard()
        raise ReplayError(str(e), EXIT_FATAL) from e
    except BaseException:
        if sink is not None:
            sink.discard()
        raise
    finally:
        consumer.close()
