"""``distillwatch run-stage``: run any :class:`~consumers.core.stage.StageSpec` on Kafka (dev, tests).

    distillwatch run-stage --spec package.module:attr --bootstrap-servers S --group-id G \\
        --topic logical=real [--topic ...] [--stop-at-end] [--instance-id ID]

Same logging (``--log-format``) and exit codes as ``detect``: 0 after a clean stop (SIGTERM,
SIGINT, ``--stop-at-end``), 1 with a ``run_stage_fatal`` log line on a fatal runner error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import structlog

from consumers.config import KafkaSettings
from consumers.core.stage import StageSpec
from consumers.kafka.clients import default_instance_id
from consumers.kafka.errors import FatalRunnerError
from consumers.kafka.runner import RunnerOptions, StageRunner

log = structlog.get_logger("distillwatch.run_stage")

EXIT_FATAL = 1


def load_spec(ref: str) -> StageSpec:
    """Import ``package.module:attr``; ``attr`` is a StageSpec or a callable returning one."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--spec must look like package.module:attr, not {ref!r}")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, StageSpec) and callable(obj):
        obj = obj()
    if not isinstance(obj, StageSpec):
        raise TypeError(f"{ref} is not a StageSpec")
    return obj


def parse_topic_map(items: Sequence[str]) -> dict[str, str]:
    """``["logical=real", ...]`` -> ``{"logical": "real"}``."""
    out: dict[str, str] = {}
    for item in items:
        logical, sep, real = item.partition("=")
        if not sep or not logical or not real:
            raise ValueError(f"--topic must look like logical=real, not {item!r}")
        out[logical] = real
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", required=True, help="package.module:attr of a StageSpec")
    parser.add_argument("--bootstrap-servers", default=None)
    parser.add_argument("--group-id", required=True)
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="LOGICAL=REAL",
        help="map a logical topic of the stage to a real topic (repeat)",
    )
    parser.add_argument("--instance-id", default=None)
    parser.add_argument("--static-membership", action="store_true")
    parser.add_argument("--session-timeout-ms", type=int, default=45000)
    parser.add_argument("--commit-interval-ms", type=int, default=1000)
    parser.add_argument("--catchup-commit-interval-ms", type=int, default=1000,
                        help="checkpoint interval while behind (a full batch came)")
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--transaction-timeout-ms", type=int, default=60000)
    parser.add_argument("--changelog-topic", default=None)
    parser.add_argument("--stop-at-end", action="store_true")
    parser.add_argument("--progress-interval-s", type=float, default=10.0)
    parser.add_argument("--txn-call-timeout-s", type=float, default=10.0)
    parser.add_argument("--txn-watchdog-margin-s", type=float, default=10.0)


def run(args: argparse.Namespace) -> int:
    kafka = KafkaSettings()
    if args.bootstrap_servers:
        kafka = kafka.model_copy(update={"bootstrap_servers": args.bootstrap_servers})
    spec = load_spec(args.spec)
    options = RunnerOptions(
        group_id=args.group_id,
        instance_id=args.instance_id or default_instance_id(),
        static_membership=args.static_membership,
        session_timeout_ms=args.session_timeout_ms,
        commit_interval_ms=args.commit_interval_ms,
        catchup_commit_interval_ms=args.catchup_commit_interval_ms,
        batch_size=args.batch_size,
        transaction_timeout_ms=args.transaction_timeout_ms,
        changelog_topic=args.changelog_topic,
        stop_at_end=args.stop_at_end,
        progress_interval_s=args.progress_interval_s,
        txn_call_timeout_s=args.txn_call_timeout_s,
        txn_watchdog_margin_s=args.txn_watchdog_margin_s,
    )
    runner = StageRunner(kafka, spec, parse_topic_map(args.topic), options)
    try:
        runner.run()
    except FatalRunnerError as exc:
        log.error("run_stage_fatal", stage=spec.name, error=str(exc), exit_code=EXIT_FATAL)
        print(f"distillwatch run-stage: fatal: {exc}", file=sys.stderr)
        return EXIT_FATAL
    return 0
