"""``distillwatch replay``: the detector over a JSONL(.gz) file of RequestEvent v1, no broker.

Runs the same three stages as ``detect`` (:class:`consumers.core.pipeline.LocalPipeline`), in
file order, and writes Flag v1 JSONL. Malformed lines are counted and reported on standard error
(line number and reason), never fatal. Deterministic: the same file and configuration give the
same flags, byte for byte.

``--topic`` replays a historical Kafka topic range instead (see :mod:`consumers.replay_topic`).
The replay itself is :func:`consumers.file_replay.replay_file`.
"""

from __future__ import annotations

import argparse
import sys

from consumers.config import load_detector_config
from consumers.file_replay import replay_file
from consumers.replay_topic import add_topic_arguments, run_topic_replay


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", metavar="FILE", help="JSONL of RequestEvent v1 (.gz ok; - for stdin)")
    src.add_argument("--topic", metavar="T", help="replay a historical Kafka topic range instead")
    p.add_argument("--output", metavar="FILE", help="Flag v1 JSONL (default: standard output)")
    p.add_argument("--detector-config", metavar="FILE", help="JSON file of detector settings")
    add_topic_arguments(p)


def run(args: argparse.Namespace) -> int:
    cfg = load_detector_config(args.detector_config)
    if args.topic:
        return run_topic_replay(args, cfg)
    try:
        replay_file(args.input, args.output, cfg)
    except FileNotFoundError as e:
        print(f"replay: no such file: {e.filename}", file=sys.stderr)
        return 2
    return 0
