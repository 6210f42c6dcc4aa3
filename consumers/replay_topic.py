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
import re
import signal
import sys
import threading
import time
import uuid
from dataclasses import asdict
from typing import Any

import orjson
import structlog
from confluent_kafka import KafkaException

from consumers.config import KafkaSettings
from consumers.core.config import DetectorConfig
from consumers.flag_diff import render_text
from consumers.kafka.errors import EXIT_FATAL, ReplayError
from consumers.kafka.topic_replay import (
    CONTRACT_LIVE_FLAGS_TOPIC,
    DEFAULT_FLAGS_TOPIC_PREFIX,
    ReplayOptions,
    ReplayResult,
    check_output_topic,
    replay_topic,
)
from consumers.times import format_ms, parse_time

log = structlog.get_logger("distillwatch.replay_topic")

EXIT_INTERRUPTED = 130
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")

__all__ = ["add_topic_arguments", "options_from_args", "run_topic_replay"]


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


def _bound(text: str | None, words: tuple[str, ...], what: str) -> int | None:
    if text is None or text.strip().lower() in words:
        return None
    try:
        return parse_time(text)
    except ValueError as e:
        raise ReplayError(f"{what}: {e}") from None


def options_from_args(args: argparse.Namespace) -> ReplayOptions:
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
    return ReplayOptions(topic=topic, from_ms=from_ms, to_ms=to_ms, run_id=run_id, kafka=kafka,
                         output=g("output"), flags_topic=flags_topic, live_flags_topic=live,
               to_live=to_live, append=bool(g("append")), partitions=partitions,
               batch_size=batch, progress=g("progress", "auto") or "auto", warm_group=warm,
               warm_scope=g("warm_start_scope", "auto") or "auto",
               diff_against=g("diff_against"), summary=g("summary"))


def _install_stop(stop: threading.Event) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}

    def handler(_sig: int, _frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    return previous


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
    stop = threading.Event()
    previous = _install_stop(stop)
    try:
        opts = options_from_args(args)
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
        print(render_text(res.diff), file=sys.stderr)
    if opts.summary:
        with open(opts.summary, "wb") as f:
            f.write(orjson.dumps(asdict(res), option=orjson.OPT_INDENT_2))
    return 0
