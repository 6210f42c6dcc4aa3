"""Deployment naming: every topic, consumer group and transactional id a deployment owns, built
in one place.

A deployment is a group id ``G`` (``--group-id``) under an internal prefix ``P``
(``--internal-prefix``, default ``distillwatch.``)::

    stage consumer group       G.<stage>
    stage changelog            P G.<stage>.changelog        (compacted; partition = input partition)
    internal topics            P G.observations, P G.verdicts
    transactional id           <stage group>.<stage>.<instance id>

Two deployments (live and a replay's warm-start target, say) therefore never share state.
"""

from __future__ import annotations

from consumers.config import KafkaSettings
from consumers.core.pipeline import DLQ, FLAGS, OBSERVATIONS, REQUESTS, VERDICTS

__all__ = [
    "STAGES",
    "changelog_topic",
    "pipeline_topics",
    "stage_group",
    "stage_inputs",
    "transactional_id",
]

STAGES = ("account", "campaign", "policy")
"""The detector's stages in pipeline order."""


def stage_group(group_id: str, stage: str) -> str:
    """The consumer group of one stage of deployment ``group_id``."""
    return f"{group_id}.{stage}"


def changelog_topic(kafka: KafkaSettings, group_id: str, stage: str) -> str:
    """The compacted changelog of ``stage`` in deployment (or runner group) ``group_id``."""
    return kafka.internal_topic(f"{group_id}.{stage}.changelog")


def transactional_id(group_id: str, stage: str, instance_id: str) -> str:
    """The transactional id of one runner: a restarted replica fences its predecessor."""
    return f"{group_id}.{stage}.{instance_id}"


def pipeline_topics(kafka: KafkaSettings) -> dict[str, str]:
    """Logical topic name -> real topic name, for deployment ``kafka.group_id``."""
    g = kafka.group_id
    return {
        REQUESTS: kafka.requests_topic,
        FLAGS: kafka.flags_topic,
        DLQ: kafka.dlq_topic,
        OBSERVATIONS: kafka.internal_topic(f"{g}.observations"),
        VERDICTS: kafka.internal_topic(f"{g}.verdicts"),
    }


def stage_inputs(kafka: KafkaSettings) -> dict[str, str]:
    """Stage -> the real topic it consumes."""
    topics = pipeline_topics(kafka)
    return {"account": topics[REQUESTS], "campaign": topics[OBSERVATIONS],
            "policy": topics[VERDICTS]}
