"""Topic administration for the runner and the CLI: create what is missing, check what exists.

* :func:`ensure_topics` creates missing topics (partitions, replication, configs such as
  ``cleanup.policy=compact`` for changelogs), tolerates "already exists", waits until metadata
  shows every topic with a leader for each partition, and raises :class:`TopicError` when an
  existing topic has fewer partitions than required (co-partitioning would silently break).
* :func:`partitions_of` returns a topic's partition count, or ``None`` when it does not exist;
  :func:`topic_partitions` the counts of several topics, from one metadata request.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from consumers.config import KafkaSettings
from consumers.kafka.errors import TopicError

log = structlog.get_logger("distillwatch.kafka.admin")

__all__ = ["TopicSpec", "changelog_spec", "ensure_topics", "partitions_of"]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic to create or check.

    ``replication_factor=-1`` means the broker's ``default.replication.factor``.
    ``config`` holds topic-level settings (``{"cleanup.policy": "compact"}``...).
    """

    name: str
    partitions: int
    replication_factor: int = 1
    config: Mapping[str, str] = field(default_factory=dict)


CHANGELOG_CONFIG = {
    "cleanup.policy": "compact",
    # Compaction only cleans closed segments: roll them often enough that a restore never reads
    # much more than the live state (the broker defaults are 7 days / 1 GiB).
    "segment.ms": "3600000",
    "segment.bytes": "104857600",
}


def changelog_spec(name: str, partitions: int, replication_factor: int = 1) -> TopicSpec:
    """The spec of a stage's compacted changelog topic (see :data:`CHANGELOG_CONFIG`)."""
    return TopicSpec(name, partitions, replication_factor, dict(CHANGELOG_CONFIG))


def admin_client(kafka: KafkaSettings) -> AdminClient:
    return AdminClient(kafka.client_config())


def _describe(admin: AdminClient, timeout: float) -> dict[str, tuple[int, bool]]:
    """``{topic: (partitions, all_partitions_have_a_leader)}`` for every existing topic."""
    md = admin.list_topics(timeout=timeout)
    out: dict[str, tuple[int, bool]] = {}
    for name, tmd in md.topics.items():
        if tmd.error is not None and tmd.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            continue
        led = tmd.error is None and all(
            p.leader >= 0 and p.error is None for p in tmd.partitions.values()
        )
        out[name] = (len(tmd.partitions), led)
    return out


def partitions_of(kafka: KafkaSettings, topic: str, timeout: float = 10.0) -> int | None:
    """Number of partitions of ``topic``; ``None`` when the topic does not exist."""
    admin = admin_client(kafka)
    md = admin.list_topics(topic=topic, timeout=timeout)
    tmd = md.topics.get(topic)
    if tmd is None or tmd.error is not None or not tmd.partitions:
        return None
    return len(tmd.partitions)


def topic_partitions(kafka: KafkaSettings, topics: Iterable[str], timeout: float = 10.0,
                     admin: AdminClient | None = None) -> dict[str, int | None]:
    """Partition counts of ``topics`` (``None``: the topic does not exist), from one metadata
    request: a stage checks its input, outputs and changelog at start-up with one client."""
    existing = _describe(admin or admin_client(kafka), timeout)
    return {t: existing[t][0] if t in existing and existing[t][0] else None for t in topics}


def _check_partitions(spec: TopicSpec, have: int) -> None:
    if have < spec.partitions:
        raise TopicError(
            f"topic {spec.name!r} has {have} partitions but {spec.partitions} are required "
            f"(co-partitioning with the input topic); increase its partitions or use another name"
        )


def ensure_topics(
    kafka: KafkaSettings, topics: Iterable[TopicSpec], timeout: float = 30.0,
    admin: AdminClient | None = None,
) -> list[str]:
    """Create the topics that do not exist and check the ones that do; returns the created names.

    An existing topic with fewer partitions than ``spec.partitions`` raises :class:`TopicError`
    (more partitions are accepted). Configs of existing topics are not changed. Returns once
    metadata shows every topic with a leader for each partition, or raises ``TimeoutError``.
    """
    specs = list(topics)
    if not specs:
        return []
    admin = admin or admin_client(kafka)
    existing = _describe(admin, timeout)
    missing: list[TopicSpec] = []
    for spec in specs:
        if spec.name in existing:
            _check_partitions(spec, existing[spec.name][0])
        else:
            missing.append(spec)
    created: list[str] = []
    if missing:
        new = [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=s.replication_factor,
                config={str(k): str(v) for k, v in s.config.items()},
            )
            for s in missing
        ]
        futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
        for name, fut in futures.items():
            try:
                fut.result(timeout=timeout)
                created.append(name)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue  # created concurrently by another instance: checked below
                raise TopicError(f"could not create topic {name!r}: {exc}") from exc
        if created:
            log.info("topics_created", topics=created)
    deadline = time.monotonic() + timeout
    by_name = {s.name: s for s in specs}
    while True:
        existing = _describe(admin, max(1.0, min(5.0, deadline - time.monotonic())))
        pending = []
        for name, spec in by_name.items():
            if name not in existing:
                pending.append(name)
                continue
            have, led = existing[name]
            _check_partitions(spec, have)
            if not led:
                pending.append(name)
        if not pending:
            return created
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topics not ready after {timeout:.0f}s: {pending}")
        time.sleep(0.02)
