"""The Kafka layer: an exactly-once, checkpointed runner for the pure-core stages.

* :mod:`consumers.kafka.runner` — :class:`StageRunner` / :class:`RunnerOptions` (EOS v2 loop,
  changelog restore, rebalances, signals) and the dev entry point
  ``python -m consumers.kafka.runner``.
* :mod:`consumers.kafka.admin` — :func:`ensure_topics`, :func:`partitions_of`.
* :mod:`consumers.kafka.changelog` — changelog layout and restore reader.
* :mod:`consumers.kafka.metrics` — :class:`RunnerMetrics`.
* :mod:`consumers.kafka.errors` — :class:`FatalRunnerError`, :class:`TopicError`.

Plugging a stage in::

    kafka = KafkaSettings()
    topics = {"requests": kafka.requests_topic, "flags": kafka.flags_topic, "dlq": kafka.dlq_topic}
    ensure_topics(kafka, [TopicSpec(kafka.flags_topic, n), TopicSpec(kafka.dlq_topic, n)])
    runner = StageRunner(kafka, spec, topics, RunnerOptions(group_id=f"{kafka.group_id}.{spec.name}"))
    runner.run()        # or run_all([runner_a, runner_b]) for several stages in one process
"""

from consumers.kafka.admin import TopicSpec, changelog_spec, ensure_topics, partitions_of
from consumers.kafka.errors import FatalRunnerError, TopicError
from consumers.kafka.metrics import RunnerMetrics

_RUNNER_NAMES = ("RunnerOptions", "StageRunner", "run_all")


def __getattr__(name: str):  # lazy, so `python -m consumers.kafka.runner` imports runner once
    if name in _RUNNER_NAMES:
        from consumers.kafka import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FatalRunnerError",
    "RunnerMetrics",
    "RunnerOptions",
    "StageRunner",
    "TopicError",
    "TopicSpec",
    "changelog_spec",
    "ensure_topics",
    "partitions_of",
    "run_all",
]
