"""``distillwatch detect``: the long-running consumer — the three stages on Kafka, exactly once.

Topics (real names from configuration; internal ones under ``internal_prefix`` and the group id,
so two deployments — live and a replay, say — never share state)::

    llm.requests ─► account ─► <prefix><group>.observations ─► campaign ─► <prefix><group>.verdicts ─► policy ─► distillation.flags
                       └─► llm.requests.dlq

Each stage is a consumer group of its own (``<group>.<stage>``) with a compacted changelog
(``<prefix><group>.<stage>.changelog``), so stages scale apart: ``--stage campaign`` runs only
that one. The default ``--stage all`` runs the three in threads of one process. Every option also
comes from the environment (``DISTILLWATCH_BOOTSTRAP_SERVERS``, ``DISTILLWATCH_GROUP_ID``, ...).
Exits 0 on SIGTERM/SIGINT after a final checkpoint; non-zero with a clear log line on a fatal error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import structlog

from consumers.config import DetectSettings, KafkaSettings
from consumers.core.config import DetectorConfig
from consumers.core.pipeline import DLQ, FLAGS, OBSERVATIONS, REQUESTS, VERDICTS, stage_specs
from consumers.kafka.admin import TopicSpec, ensure_topics, partitions_of
from consumers.kafka.errors import FatalRunnerError
from consumers.kafka.runner import RunnerOptions, StageRunner, run_all

log = structlog.get_logger("distillwatch.detect")

STAGES = ("account", "campaign", "policy")


def add_kafka_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap-servers", metavar="S", help="default 127.0.0.1:9092 (DISTILLWATCH_BOOTSTRAP_SERVERS)")
    p.add_argument("--requests-topic", metavar="T", help="default llm.requests")
    p.add_argument("--flags-topic", metavar="T", help="default distillation.flags")
    p.add_argument("--dlq-topic", metavar="T", help="default llm.requests.dlq")
    p.add_argument("--group-id", metavar="G", help="default distillwatch-detector")
    p.add_argument("--internal-prefix", metavar="P", help="prefix of internal topics, default 'distillwatch.'")


def kafka_settings(args: argparse.Namespace) -> KafkaSettings:
    """Settings from the environment, overridden by the options given on the command line."""
    fields = ("bootstrap_servers", "requests_topic", "flags_topic", "dlq_topic", "group_id", "internal_prefix")
    return KafkaSettings(**{f: getattr(args, f) for f in fields if getattr(args, f, None) is not None})


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_kafka_arguments(p)
    p.add_argument("--stage", choices=("all", *STAGES), help="default all (DISTILLWATCH_STAGE)")
    p.add_argument("--instance-id", help="stable id of this replica (pod name)")
    p.add_argument("--commit-interval-ms", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--internal-partitions", type=int)
    p.add_argument("--detector-config", metavar="FILE", help="JSON file of detector settings")
    p.add_argument("--stop-at-end", action="store_true", help="stop once the input is consumed (tests, demos)")


def pipeline_topics(kafka: KafkaSettings) -> dict[str, str]:
    """Logical topic name -> real topic name."""
    g = kafka.group_id
    return {
        REQUESTS: kafka.requests_topic,
        FLAGS: kafka.flags_topic,
        DLQ: kafka.dlq_topic,
        OBSERVATIONS: kafka.internal_topic(f"{g}.observations"),
        VERDICTS: kafka.internal_topic(f"{g}.verdicts"),
    }


def ensure_pipeline_topics(kafka: KafkaSettings, partitions: int | None = None) -> dict[str, str]:
    """Create the output and internal topics if missing; the requests topic must exist."""
    topics = pipeline_topics(kafka)
    n = partitions_of(kafka, topics[REQUESTS])
    if n is None:
        raise FatalRunnerError(
            f"requests topic {topics[REQUESTS]!r} does not exist on {kafka.bootstrap_servers} "
            "(create it, or point --requests-topic at the gateway's topic)")
    n_int = partitions or n
    ensure_topics(kafka, [
        TopicSpec(topics[FLAGS], n),
        TopicSpec(topics[DLQ], n),
        TopicSpec(topics[OBSERVATIONS], n_int),
        TopicSpec(topics[VERDICTS], n_int),
    ])
    return topics


def build_runners(kafka: KafkaSettings, cfg: DetectorConfig, ds: DetectSettings, stages: tuple[str, ...],
                  stop_at_end: bool = False, **overrides: Any) -> list[StageRunner]:
    topics = pipeline_topics(kafka)
    runners = []
    for spec in stage_specs(cfg):
        if spec.name not in stages:
            continue
        opts: dict[str, Any] = {
            "group_id": f"{kafka.group_id}.{spec.name}",
            "commit_interval_ms": ds.commit_interval_ms,
            "batch_size": ds.batch_size,
            "transaction_timeout_ms": ds.transaction_timeout_ms,
            "stop_at_end": stop_at_end,
            "changelog_topic": kafka.internal_topic(f"{kafka.group_id}.{spec.name}.changelog"),
        }
        if ds.instance_id:
            opts["instance_id"] = ds.instance_id
        opts.update(overrides)
        runners.append(StageRunner(kafka, spec, topics, RunnerOptions(**opts)))
    return runners


def run(args: argparse.Namespace) -> int:
    from consumers.replay import load_detector_config

    kafka = kafka_settings(args)
    ds_over = {k: getattr(args, k) for k in ("stage", "instance_id", "commit_interval_ms", "batch_size",
                                              "internal_partitions", "detector_config")
               if getattr(args, k, None) is not None}
    ds = DetectSettings(**ds_over)
    cfg = load_detector_config(ds.detector_config)
    stages = STAGES if ds.stage == "all" else (ds.stage,)
    log.info("detect_start", bootstrap=kafka.bootstrap_servers, group=kafka.group_id, stages=list(stages),
             detector_config=cfg.fingerprint(), topics=pipeline_topics(kafka))
    try:
        ensure_pipeline_topics(kafka, ds.internal_partitions)
        runners = build_runners(kafka, cfg, ds, stages, stop_at_end=bool(args.stop_at_end))
        if args.stop_at_end and len(runners) > 1:
            # in pipeline order: each stage's input is complete once the stage before it stopped
            for r in runners:
                r.run()
        else:
            run_all(runners)
    except FatalRunnerError as e:
        log.error("detect_fatal", error=str(e))
        print(f"distillwatch detect: fatal: {e}", file=sys.stderr)
        return 1
    log.info("detect_stopped")
    return 0
