"""The detector deployed on Kafka: its topics and one :class:`StageRunner` per stage.

Topics (real names from configuration, internal ones named by :mod:`consumers.kafka.naming`)::

    llm.requests ─► account ─► <prefix><group>.observations ─► campaign ─► <prefix><group>.verdicts ─► policy ─► distillation.flags
                       └─► llm.requests.dlq

Each stage is a consumer group of its own (``<group>.<stage>``) with a compacted changelog
(``<prefix><group>.<stage>.changelog``), so stages scale apart.
"""

from __future__ import annotations

from typing import Any

from consumers.config import DetectSettings, KafkaSettings
from consumers.core.config import DetectorConfig
from consumers.core.pipeline import DLQ, FLAGS, OBSERVATIONS, REQUESTS, VERDICTS, stage_specs
from consumers.kafka.admin import TopicSpec, ensure_topics, partitions_of
from consumers.kafka.errors import FatalRunnerError
from consumers.kafka.naming import changelog_topic, pipeline_topics, stage_group
from consumers.kafka.runner import RunnerOptions, StageRunner

__all__ = ["build_runners", "ensure_pipeline_topics"]


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
    """One runner per stage in ``stages`` (pipeline order); ``overrides`` are RunnerOptions."""
    topics = pipeline_topics(kafka)
    runners = []
    for spec in stage_specs(cfg):
        if spec.name not in stages:
            continue
        opts: dict[str, Any] = {
            "group_id": stage_group(kafka.group_id, spec.name),
            "commit_interval_ms": ds.commit_interval_ms,
            "catchup_commit_interval_ms": ds.catchup_commit_interval_ms,
            "batch_size": ds.batch_size,
            "transaction_timeout_ms": ds.transaction_timeout_ms,
            "stop_at_end": stop_at_end,
            "changelog_topic": changelog_topic(kafka, kafka.group_id, spec.name),
        }
        if ds.instance_id:
            opts["instance_id"] = ds.instance_id
        opts.update(overrides)
        runners.append(StageRunner(kafka, spec, topics, RunnerOptions(**opts)))
    return runners
