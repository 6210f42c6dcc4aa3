"""The Kafka layer: services split by role. Commands (``consumers.detect``, ``replay``...) call
them; nothing here imports a command.

* :mod:`~consumers.kafka.clients` — librdkafka configurations of every client.
* :mod:`~consumers.kafka.naming` — deployment names: topics, groups, changelogs, transactional ids.
* :mod:`~consumers.kafka.admin` — :func:`ensure_topics`, :func:`partitions_of`, :func:`topic_partitions`.
* :mod:`~consumers.kafka.reader` — reading topics with read_committed: to the end, or a range.
* :mod:`~consumers.kafka.writer` — the one blocking produce, a short-lived transaction.
* :mod:`~consumers.kafka.transactional` — the runner's transactional producer (watchdog, retries).
* :mod:`~consumers.kafka.checkpoint` — :class:`Checkpoint` and its :class:`TxnStatus`.
* :mod:`~consumers.kafka.changelog` — changelog layout and restore reader.
* :mod:`~consumers.kafka.runner` — :class:`StageRunner` (EOS v2 loop, restore, rebalances).
* :mod:`~consumers.kafka.partitions` — batches split per partition, committed offsets, restore.
* :mod:`~consumers.kafka.deployment` — the detector's topics and runners.
* :mod:`~consumers.kafka.telemetry` — Prometheus metrics, ``/metrics``, ``/healthz``, ``/readyz``.
* :mod:`~consumers.kafka.topic_replay`, :mod:`~consumers.kafka.warm_start` — historical replay.
* :mod:`~consumers.kafka.metrics` — :class:`RunnerMetrics` (plain counters, logged).
* :mod:`~consumers.kafka.errors` — :class:`FatalRunnerError`, :class:`TopicError`, ...

Plugging a stage in::

    kafka = KafkaSettings()
    topics = {"requests": kafka.requests_topic, "flags": kafka.flags_topic, "dlq": kafka.dlq_topic}
    ensure_topics(kafka, [TopicSpec(kafka.flags_topic, n), TopicSpec(kafka.dlq_topic, n)])
    runner = StageRunner(kafka, spec, topics, RunnerOptions(group_id=f"{kafka.group_id}.{spec.name}"))
    runner.run()        # or run_all([runner_a, runner_b]) for several stages in one process
"""

from consumers.kafka.admin import (
    TopicSpec,
    changelog_spec,
    ensure_topics,
    partitions_of,
    topic_partitions,
)
from consumers.kafka.checkpoint import Checkpoint, TxnStatus
from consumers.kafka.errors import FatalRunnerError, TopicError
from consumers.kafka.metrics import RunnerMetrics
from consumers.kafka.runner import RunnerOptions, StageRunner, run_all

__all__ = [
    "Checkpoint",
    "FatalRunnerError",
    "RunnerMetrics",
    "RunnerOptions",
    "StageRunner",
    "TopicError",
    "TopicSpec",
    "TxnStatus",
    "changelog_spec",
    "ensure_topics",
    "partitions_of",
    "run_all",
    "topic_partitions",
]
