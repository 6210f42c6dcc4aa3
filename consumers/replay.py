"""``distillwatch replay``: the detector over a JSONL(.gz) file of RequestEvent v1, no broker.

Runs the same three stages as ``detect`` (:class:`consumers.core.pipeline.LocalPipeline`), in
file order, and writes Flag v1 JSONL. Malformed lines are counted and reported on standard error
(line number and reason), never fatal. Deterministic: the same file and configuration give the
same flags, byte for byte.

``--topic`` replays a historical Kafka topic range instead (see :mod:`consumers.replay_topic`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import structlog

from consumers.core.config import DetectorConfig
from consumers.core.pipeline import LocalPipeline
from consumers.io import output, read_numbered

log = structlog.get_logger("distillwatch.replay")

MAX_REPORTED_ERRORS = 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", metavar="FILE", help="JSONL of RequestEvent v1 (.gz ok; - for stdin)")
    src.add_argument("--topic", metavar="T", help="replay a historical Kafka topic range instead")
    p.add_argument("--output", metavar="FILE", help="Flag v1 JSONL (default: standard output)")
    p.add_argument("--detector-config", metavar="FILE", help="JSON file of detector settings")
    from consumers.replay_topic import add_topic_arguments

    add_topic_arguments(p)


def load_detector_config(path: str | None) -> DetectorConfig:
    if not path:
        return DetectorConfig()
    with open(path, "rb") as f:
        return DetectorConfig.model_validate_json(f.read())


def replay_file(path: str, out_path: str | None, cfg: DetectorConfig) -> dict[str, int]:
    """Replay a file; return counters. Malformed lines are reported on stderr."""
    if path != "-" and not os.path.exists(path):
        # before --output is opened: a typo must not truncate the flags of an earlier run
        raise FileNotFoundError(2, "no such file", path)
    pipe = LocalPipeline(cfg)
    n_lines = n_flags = 0
    reported = 0
    t0 = time.perf_counter()
    with output(out_path) as out:
        for numbers, lines in read_numbered(path):
            flags = pipe.feed(lines, source=path, offsets=numbers)
            for r in pipe.dead_letters:
                if reported < MAX_REPORTED_ERRORS:
                    h = dict(r.headers or [])
                    line_no = int(h["dlq.offset"])
                    print(f"replay: line {line_no}: {h['dlq.error'].decode()}", file=sys.stderr)
                    reported += 1
            pipe.dead_letters.clear()
            n_lines += len(lines)
            if flags:
                out.write(b"\n".join(flags) + b"\n")
                n_flags += len(flags)
    c = pipe.counters()["account"]
    secs = time.perf_counter() - t0
    if c["invalid"] > reported:
        print(f"replay: ... {c['invalid'] - reported} more malformed lines", file=sys.stderr)
    print(
        f"replay: {n_lines} lines, {c['events']} events, {c['invalid']} malformed, "
        f"{c['duplicates']} duplicates, {n_flags} flags in {secs:.1f}s "
        f"({n_lines / max(secs, 1e-9):,.0f} lines/s)",
        file=sys.stderr,
    )
    return {"lines": n_lines, "events": c["events"], "invalid": c["invalid"],
            "duplicates": c["duplicates"], "flags": n_flags}


def run(args: argparse.Namespace) -> int:
    cfg = load_detector_config(args.detector_config)
    if args.topic:
        from consumers.replay_topic import run_topic_replay

        return run_topic_replay(args, cfg)
    try:
        replay_file(args.input, args.output, cfg)
    except FileNotFoundError as e:
        print(f"replay: no such file: {e.filename}", file=sys.stderr)
        return 2
    return 0
