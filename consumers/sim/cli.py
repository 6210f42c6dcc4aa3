"""``distillwatch simulate``: generate a scenario's traffic to a JSONL file or a Kafka topic,
plus its ground-truth labels.

    distillwatch simulate --scenario day --seed 7 --output events.jsonl.gz --labels labels.jsonl
    distillwatch simulate --scenario smoke --seed 1 --topic llm.requests --labels labels.jsonl \
        --bootstrap-servers 127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime

from consumers.sim.scenarios import SCENARIOS, get_scenario


def parse_time_ms(text: str) -> int:
    """ISO-8601 date/time (``Z`` or offset; naive means UTC) to ms since the epoch."""
    dt = datetime.fromisoformat(text.strip().replace("z", "Z"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``distillwatch simulate``."""
    parser.add_argument("--scenario", default="smoke", choices=sorted(SCENARIOS),
                        help="named scenario (default: smoke)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sink = parser.add_mutually_exclusive_group(required=True)
    sink.add_argument("--output", metavar="FILE",
                      help="write events as JSONL (gzip when FILE ends in .gz; - for stdout)")
    sink.add_argument("--topic", metavar="T", help="produce events to this Kafka topic")
    parser.add_argument("--labels", metavar="FILE", required=True,
                        help="write one ground-truth label per account (JSONL, .gz ok)")
    parser.add_argument("--bootstrap-servers", metavar="S",
                        help="Kafka bootstrap servers (default: DISTILLWATCH_BOOTSTRAP_SERVERS)")
    parser.add_argument("--start", metavar="ISO", help="scenario start (default 2026-04-22T00:00Z)")
    parser.add_argument("--days", type=float, help="override the scenario's duration")
    parser.add_argument("--scale", type=float, help="multiply account counts")
    parser.add_argument("--max-events", type=int, help="stop after this many events")
    parser.add_argument("--duplicate-rate", type=float,
                        help="share of requests delivered twice (default: the scenario's, 0.002)")
    parser.add_argument("--event-timestamps", action="store_true",
                        help="with --topic: Kafka message timestamp = event ts_ms")


def run(args: argparse.Namespace) -> int:
    """Generate the scenario; exit code 0 on success, 2 on bad arguments, 1 on failure."""
    import dataclasses

    from consumers.sim.generator import Simulation
    from consumers.sim.writer import DeliveryError, produce_events, write_events, write_labels

    try:
        start_ms = parse_time_ms(args.start) if args.start else None
        if args.days is not None and args.days <= 0:
            raise ValueError("--days must be > 0")
        if args.scale is not None and args.scale <= 0:
            raise ValueError("--scale must be > 0")
        sc = get_scenario(args.scenario, scale=args.scale, days=args.days, start_ms=start_ms)
        if args.duplicate_rate is not None:
            if not 0.0 <= args.duplicate_rate <= 1.0:
                raise ValueError("--duplicate-rate must be in [0, 1]")
            sc = dataclasses.replace(sc, duplicate_rate=args.duplicate_rate)
    except ValueError as e:
        print(f"simulate: {e}", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    sim = Simulation(sc, args.seed)
    n_labels = write_labels(sim.labels, args.labels)
    t1 = time.perf_counter()
    events = sim.events(args.max_events)
    try:
        if args.topic:
            from consumers.config import KafkaSettings

            overrides = {}
            if args.bootstrap_servers:
                overrides["bootstrap_servers"] = args.bootstrap_servers
            settings = KafkaSettings(**overrides)
            n = produce_events(events, args.topic, settings,
                               event_timestamps=args.event_timestamps,
                               progress=lambda k: print(f"simulate: {k} events produced",
                                                        file=sys.stderr))
            where = f"topic {args.topic}"
        else:
            n = write_events(events, args.output)
            where = args.output
    except (DeliveryError, OSError) as e:
        print(f"simulate: {e}", file=sys.stderr)
        return 1
    t2 = time.perf_counter()
    n_attack = sum(1 for a in sim.accounts if a.campaign is not None)
    print(
        f"simulate: scenario={sc.name} seed={args.seed} accounts={n_labels} "
        f"(attack {n_attack}) events={n} -> {where}; labels -> {args.labels}; "
        f"build {t1 - t0:.1f}s, events {t2 - t1:.1f}s ({n / max(t2 - t1, 1e-9):,.0f}/s)",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m consumers.sim.cli``)."""
    parser = argparse.ArgumentParser(
        prog="distillwatch simulate",
        description="Generate a scenario's traffic (JSONL file or Kafka topic) and its labels.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
