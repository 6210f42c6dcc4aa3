"""Warm start: hand a replay's final state over to a *new* live deployment.

The replay's processors' state is written to the new deployment's changelogs (each partition ends
with the runner's offset marker) and the stage groups' offsets are committed, in one transaction;
the live runners then restore it as if they had processed the replayed range themselves. See
:func:`warm_start_entries` for the ``full`` and ``model`` scopes and ``docs/replay.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from consumers.config import KafkaSettings
from consumers.core.account_stage import MODEL_KEY
from consumers.core.pipeline import LocalPipeline
from consumers.kafka.admin import TopicSpec, changelog_spec, ensure_topics
from consumers.kafka.changelog import OFFSET_MARKER_KEY, encode_marker
from consumers.kafka.errors import EXIT_FATAL, ReplayError
from consumers.kafka.naming import STAGES, changelog_topic, stage_group, stage_inputs
from consumers.kafka.reader import topic_partitions, watermarks
from consumers.kafka.writer import Transaction

__all__ = [
    "WarmStartTarget",
    "check_warm_start_target",
    "group_consumer_factory",
    "latest_entries",
    "warm_start_entries",
    "warm_start_target",
    "write_warm_start",
]


def group_consumer_factory(kafka: KafkaSettings) -> Callable[[str], Any]:
    """A factory of consumers of a given group (to read its committed offsets; never subscribes)."""
    def make(group_id: str) -> Any:
        return Consumer(kafka.client_config() | {"group.id": group_id, "enable.auto.commit": False})
    return make


@dataclass
class WarmStartTarget:
    """Where a live deployment of ``group`` keeps its state (names from :mod:`consumers.kafka.naming`)."""

    group: str
    scope: str                      # "full" or "model"
    stage_groups: dict[str, str]    # stage -> consumer group id
    inputs: dict[str, str]          # stage -> input topic
    changelogs: dict[str, str]      # stage -> changelog topic
    partitions: dict[str, int]      # stage -> partitions of its input (and changelog)


def warm_start_target(kafka: KafkaSettings, group: str, requests_topic: str, n_partitions: int,
                      scope: str) -> WarmStartTarget:
    """Resolve ``auto`` scope and the live deployment's names; refuses ``full`` on >1 partition."""
    if scope == "auto":
        scope = "full" if n_partitions == 1 else "model"
    if scope == "full" and n_partitions != 1:
        raise ReplayError(
            f"--warm-start-scope full needs a 1-partition requests topic ({requests_topic!r} has "
            f"{n_partitions}): a replay merges partitions into one stream, but a live deployment "
            "keeps campaign state per partition. Use --warm-start-scope model.")
    kg = kafka.model_copy(update={"group_id": group, "requests_topic": requests_topic})
    inputs = stage_inputs(kg)
    stages = STAGES if scope == "full" else ("account",)
    return WarmStartTarget(
        group=group, scope=scope,
        stage_groups={s: stage_group(group, s) for s in stages},
        inputs={s: inputs[s] for s in stages},
        changelogs={s: changelog_topic(kg, group, s) for s in stages},
        partitions={s: (n_partitions if s == "account" else 1) for s in stages},
    )


def check_warm_start_target(consumer_factory: Any, admin_consumer: Any,
                            target: WarmStartTarget) -> dict[str, dict[int, int]]:
    """Refuse a group that already has state; return the current end offsets of the internal
    input topics (where a new deployment's campaign/policy stages will start)."""
    for cl in target.changelogs.values():
        parts = topic_partitions(admin_consumer, cl)
        if parts is not None and any(hi > lo for lo, hi in
                                     watermarks(admin_consumer, cl, parts).values()):
            raise ReplayError(f"warm start: changelog {cl!r} of group {target.group!r} already "
                              "holds state; warm start is for a NEW deployment (use a new "
                              "--group-id, or delete that deployment's topics and offsets)")
    ends: dict[str, dict[int, int]] = {}
    for stage, topic in target.inputs.items():
        parts = topic_partitions(admin_consumer, topic)
        if parts is None:
            ends[stage] = dict.fromkeys(range(target.partitions[stage]), 0)
            continue
        if stage != "account" and len(parts) != target.partitions[stage]:
            raise ReplayError(f"warm start: internal topic {topic!r} has {len(parts)} partitions; "
                              f"full warm start needs {target.partitions[stage]}")
        c = consumer_factory(target.stage_groups[stage])
        try:
            committed = c.committed([TopicPartition(topic, p) for p in parts], timeout=30)
        finally:
            c.close()
        if any(tp.offset >= 0 for tp in committed):
            raise ReplayError(f"warm start: group {target.stage_groups[stage]!r} already has "
                              f"committed offsets on {topic!r}; warm start is for a NEW deployment")
        marks = watermarks(admin_consumer, topic, parts)
        if stage != "account" and any(hi > lo for lo, hi in marks.values()):
            raise ReplayError(f"warm start: internal topic {topic!r} already holds records")
        ends[stage] = {p: hi for p, (_, hi) in marks.items()}
    return ends


def latest_entries(changes: Iterable[tuple[bytes, bytes | None]]) -> list[tuple[bytes, bytes]]:
    """What ``restore`` would see from a fresh changelog holding ``changes``: the latest value
    per key, in the order of each key's latest write, tombstoned keys dropped."""
    latest: dict[bytes, bytes | None] = {}
    for k, v in changes:
        latest.pop(k, None)
        latest[k] = v
    return [(k, v) for k, v in latest.items() if v is not None]


def warm_start_entries(pipe: LocalPipeline, target: WarmStartTarget, handover: dict[int, int],
                       internal_ends: dict[str, dict[int, int]],
                       ) -> tuple[dict[tuple[str, int], list[tuple[bytes, bytes]]],
                                  dict[str, list[tuple[str, int, int]]]]:
    """The changelog records and committed offsets that hand the replay's state over.

    Returns ``({(changelog, partition): [(key, value), ...]}, {group: [(topic, partition,
    offset), ...]})``. Every changelog partition ends with the runner's offset marker equal to
    the offset committed for the stage's group, so the live runner restores it without waiting.

    * ``full`` (1 partition): the final state of all three processors; the account stage's group
      resumes the requests topic at the replay's end offset, the campaign and policy groups at the
      current end of their (new, empty) internal topics. The live deployment then continues
      exactly as if it had processed the replayed range itself.
    * ``model``: only the account stage's learned behaviour model (``__model__``), copied into
      every partition of the account changelog; per-account state, campaign state and flag
      history are NOT carried over. The account group resumes every partition at its replay end.
    """
    if not pipe.changelog:
        raise ValueError("warm start: the replay's LocalPipeline must keep its changes (changelog=True)")
    records: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
    offsets: dict[str, list[tuple[str, int, int]]] = {}
    acct_changes = latest_entries(pipe.account.take_changes())
    if target.scope == "full":
        procs = {"account": acct_changes, "campaign": latest_entries(pipe.campaign.take_changes()),
                 "policy": latest_entries(pipe.policy.take_changes())}
        for stage, entries in procs.items():
            nxt = handover[0] if stage == "account" else internal_ends[stage][0]
            records[(target.changelogs[stage], 0)] = [*entries, (OFFSET_MARKER_KEY, encode_marker(nxt))]
            offsets[target.stage_groups[stage]] = [(target.inputs[stage], 0, nxt)]
        return records, offsets
    model = [v for k, v in acct_changes if k == MODEL_KEY]
    if not model:
        raise ReplayError("warm start: the behaviour model learned nothing in this range (too short, "
                          "or no account old enough to train it); nothing to hand over", exit_code=EXIT_FATAL)
    cl = target.changelogs["account"]
    offsets[target.stage_groups["account"]] = []
    for p in range(target.partitions["account"]):
        nxt = handover[p]
        records[(cl, p)] = [(MODEL_KEY, model[-1]), (OFFSET_MARKER_KEY, encode_marker(nxt))]
        offsets[target.stage_groups["account"]].append((target.inputs["account"], p, nxt))
    return records, offsets


def write_warm_start(kafka: KafkaSettings, target: WarmStartTarget,
                     records: dict[tuple[str, int], list[tuple[bytes, bytes]]],
                     offsets: dict[str, list[tuple[str, int, int]]], run_id: str) -> int:
    """Write changelog records and commit the groups' offsets in one transaction."""
    specs = [changelog_spec(cl, target.partitions[s], -1) for s, cl in target.changelogs.items()]
    specs += [TopicSpec(t, target.partitions[s], replication_factor=-1)
              for s, t in target.inputs.items() if s != "account"]
    ensure_topics(kafka, specs)
    with Transaction(kafka, f"{target.group}.warmstart.{run_id}", "warm start: writing changelogs") as txn:
        for (topic, p), entries in records.items():
            for k, v in entries:
                txn.send(topic, v, k, partition=p)
        for group, offs in offsets.items():
            c = Consumer(kafka.client_config() | {"group.id": group, "enable.auto.commit": False})
            try:
                txn.producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, o) for t, p, o in offs], c.consumer_group_metadata(), 60)
            finally:
                c.close()
        txn.commit()
        return txn.n
