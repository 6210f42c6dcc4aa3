"""``distillwatch evaluate``: measure flags against ground truth and write the quality report.

    distillwatch evaluate --events FILE --labels FILE (--flags FILE | --topic T
                          [--bootstrap-servers S]) --report DIR

Prints the headline table (and, when the labels carry a sweep campaign's ``dims``, the table per
dimension bucket) to standard output and writes ``DIR/metrics.json`` and ``DIR/index.html``. With ``--topic`` the flags topic is read from the beginning to its end (the
high watermarks taken at start, or the last stable offset while a transaction is open) by a
``read_committed`` consumer that assigns every partition and commits nothing
(:func:`consumers.kafka.reader.read_flags_topic`).

Exit codes: 0 done; 1 done but a target was missed and ``--fail-on-targets`` was given;
2 bad input (missing file, unreadable topic).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from consumers.contract.units import HOUR_MS
from consumers.kafka.reader import read_flags_topic

from .dimensions import dimension_table
from .metrics import DEFAULT_DEDUP_WINDOW_MS, evaluate, headline_table, load_jsonl
from .report import write_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``distillwatch evaluate``."""
    parser.add_argument("--events", required=True, help="RequestEvent v1 JSONL (.gz ok), sorted by ts_ms")
    parser.add_argument("--labels", required=True, help="ground-truth labels JSONL (.gz ok), one line per account")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--flags", help="Flag v1 JSONL (.gz ok), in publication order")
    src.add_argument("--topic", help="read the flags from this Kafka topic instead (to its end)")
    parser.add_argument("--bootstrap-servers", default=None,
                        help="Kafka bootstrap servers for --topic (default: DISTILLWATCH_BOOTSTRAP_SERVERS)")
    parser.add_argument("--topic-timeout", type=float, default=120.0,
                        help="seconds allowed to read the flags topic to its end (default 120)")
    parser.add_argument("--report", required=True, help="output directory for metrics.json and index.html")
    parser.add_argument("--dedup-window-h", type=float, default=DEFAULT_DEDUP_WINDOW_MS / HOUR_MS,
                        help="event-time window in which a repeated event_id is a duplicate "
                             "(default 24; 0 = remember every id: exact, memory grows with events)")
    parser.add_argument("--fail-on-targets", action="store_true",
                        help="exit 1 when a quality target is missed")


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the headline table, write the report. Returns the exit code."""
    for path in (args.events, args.labels, args.flags):
        if path is not None and not os.path.isfile(path):
            print(f"evaluate: no such file: {path}", file=sys.stderr)
            return 2
    window = None if args.dedup_window_h <= 0 else int(args.dedup_window_h * HOUR_MS)
    sources: dict[str, Any] = {"events": args.events, "labels": args.labels}
    if args.topic:
        topic_stats: dict[str, int] = {}
        try:
            flags: Any = read_flags_topic(args.topic, args.bootstrap_servers, args.topic_timeout, topic_stats)
        except Exception as exc:  # noqa: BLE001 - report any broker failure as bad input
            print(f"evaluate: cannot read flags topic {args.topic!r}: {exc}", file=sys.stderr)
            return 2
        sources["flags"] = f"kafka topic {args.topic}"
    else:
        flags = load_jsonl(args.flags)
        sources["flags"] = args.flags
    t0 = time.monotonic()
    metrics = evaluate(load_jsonl(args.events), load_jsonl(args.labels), flags,
                       dedup_window_ms=window, sources=sources)
    if args.topic:
        metrics["inputs"]["flags"]["not_json"] += topic_stats.get("not_json", 0)
    elapsed = time.monotonic() - t0
    mj, html = write_report(metrics, args.report)
    print(headline_table(metrics))
    if metrics.get("dimensions"):
        print()
        print(dimension_table(metrics["dimensions"]))
    ev = metrics["inputs"]["events"]
    print(f"\n{ev['unique']:,} requests ({ev['duplicates']:,} duplicates, {ev['invalid'] + ev['not_json']:,} "
          f"unreadable) evaluated in {elapsed:.1f}s · report: {html} · metrics: {mj}")
    if args.fail_on_targets:
        failed = [c for c in metrics["checks"] if c["ok"] is False]
        for c in failed:
            print(f"target missed: {c['metric']} {c['group']} = {c['value']:.4f} (target {c['op']} "
                  f"{c['target']})", file=sys.stderr)
        return 1 if failed else 0
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m consumers.evaluate.cli``)."""
    parser = argparse.ArgumentParser(prog="distillwatch evaluate", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
