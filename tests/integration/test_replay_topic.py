"""``replay --topic`` against the real broker (consumers.replay_topic).

A known scenario (the simulator's ``smoke`` day, ~40k events) is written to a requests topic with
Kafka message timestamp = the event's ``ts_ms``, so a time range is well defined. Then:

* a range from the middle of it, replayed from Kafka, gives byte-for-byte the flags of a *file*
  replay of exactly the events in that range (1 partition: log order; 3 partitions: the
  documented merge order by (timestamp, partition, offset));
* two replays of the same range give identical flags (and ``diff`` says so);
* a replay never writes to the live flags topic unless ``--to-live-flags`` is given;
* live ``detect``, started from the same (empty) state at the same offset — set with Kafka's own
  ``kafka-consumer-groups --reset-offsets --to-datetime`` — gives the same flags as the replay;
  both runs are timed (printed: replay vs detect throughput on the same topic);
* warm start: a replay of the first half hands its state to a new live group, and ``detect`` on
  that group continues exactly where the replay stopped; for a multi-partition topic the learned
  model lands in every partition of the live group's changelog.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from consumers import detect, replay
from consumers.config import KafkaSettings
from consumers.contract.units import HOUR_MS
from consumers.core.account_stage import MODEL_KEY, AccountProcessor
from consumers.core.config import DetectorConfig
from consumers.core.pipeline import LocalPipeline
from consumers.diff import run as diff_run
from consumers.file_replay import replay_file
from consumers.flag_diff import compare
from consumers.kafka.changelog import read_changelog
from consumers.kafka.naming import changelog_topic, stage_group
from consumers.kafka.topic_replay import DEFAULT_FLAGS_TOPIC_PREFIX
from consumers.sim.generator import generate
from consumers.sim.writer import produce_events
from tests.eventgen import T0, valid_event, write_jsonl
from tests.kafka_helpers import consume_all, create_topics, delete_topics, end_offsets, produce

H = HOUR_MS
SEED = 11


# ------------------------------------------------------------------------------ fixtures


class Source:
    """A requests topic holding the scenario, and what the tests need to know about it."""

    def __init__(self, bootstrap: str, name: str, partitions: int, events: list[dict]):
        self.bootstrap = bootstrap
        self.name = name
        self.partitions = partitions
        self.events = events
        self.t0 = events[0]["ts_ms"]
        create_topics(bootstrap, [(name, partitions, False, {"retention.ms": "-1"})])
        n = produce_events(events, name, KafkaSettings(bootstrap_servers=bootstrap),
                           event_timestamps=True)
        assert n == len(events)

    def offsets_for(self, ms: int) -> dict[int, int]:
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "t-lookup"})
        try:
            res = c.offsets_for_times([TopicPartition(self.name, p, ms) for p in range(self.partitions)], 30)
            return {tp.partition: tp.offset for tp in res}
        finally:
            c.close()


@pytest.fixture(scope="module")
def events() -> list[dict]:
    ev, _labels = generate("smoke", SEED)
    evs = list(ev)
    assert all(a["ts_ms"] <= b["ts_ms"] for a, b in zip(evs, evs[1:], strict=False))
    return evs


@pytest.fixture(scope="module")
def src1(kafka_bootstrap: str, events: list[dict]) -> Source:
    return Source(kafka_bootstrap, f"t-replay_topic-{uuid.uuid4().hex[:8]}.requests1", 1, events)


@pytest.fixture(scope="module")
def src3(kafka_bootstrap: str, events: list[dict]) -> Source:
    return Source(kafka_bootstrap, f"t-replay_topic-{uuid.uuid4().hex[:8]}.requests3", 3, events)


@pytest.fixture
def default_topics(kafka_bootstrap: str) -> Iterator[list[str]]:
    """Replay topics created under the default (shared) name: deleted after the test."""
    made: list[str] = []
    yield made
    delete_topics(kafka_bootstrap, made)


# ------------------------------------------------------------------------------ helpers


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def replay_cli(bootstrap: str, *argv: str) -> int:
    p = argparse.ArgumentParser()
    replay.add_arguments(p)  # includes the --topic options (add_topic_arguments)
    return replay.run(p.parse_args(["--bootstrap-servers", bootstrap, "--progress", "none", *argv]))


def file_replay(lines: list[bytes], tmp_path: Path, name: str) -> list[bytes]:
    """Flags of ``replay --input`` over exactly these messages, in this order."""
    src = write_jsonl(tmp_path / f"{name}.in.jsonl", lines)
    out = tmp_path / f"{name}.flags.jsonl"
    replay_file(str(src), str(out), DetectorConfig())
    return out.read_bytes().splitlines()


def in_range(events: list[dict], lo: int | None, hi: int | None) -> list[bytes]:
    return [orjson.dumps(e) for e in events
            if (lo is None or e["ts_ms"] >= lo) and (hi is None or e["ts_ms"] < hi)]


def flags_of(bootstrap: str, topic: str) -> list[bytes]:
    return [r.value for r in consume_all(bootstrap, topic)]


def topic_exists(bootstrap: str, topic: str) -> bool:
    from confluent_kafka.admin import AdminClient

    return topic in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics


def kafka_tools_classpath() -> str | None:
    """The broker's jars (deploy/kafka/broker.sh fetches them), for Kafka's own CLI tools."""
    cache = os.environ.get("DISTILLWATCH_CACHE", os.path.expanduser("~/.cache/distillwatch"))
    libs = sorted(glob.glob(os.path.join(cache, "kafka-*", "libs", "kafka-tools-*.jar")))
    return os.path.join(os.path.dirname(libs[-1]), "*") if libs else None


def reset_group_to_datetime(src: Source, group: str, when_ms: int) -> dict[int, int]:
    """What docs/replay.md tells teams to run: kafka-consumer-groups --reset-offsets
    --to-datetime (Kafka's ConsumerGroupCommand; a Python commit of the same offsets when the
    jars are not on this machine). Returns the group's committed offsets afterwards."""
    cp = kafka_tools_classpath()
    if cp is not None:
        proc = subprocess.run(
            ["java", "-cp", cp, "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
             "--bootstrap-server", src.bootstrap, "--group", group, "--topic", src.name,
             "--reset-offsets", "--to-datetime", iso(when_ms), "--execute"],
            capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    else:
        c = Consumer({"bootstrap.servers": src.bootstrap, "group.id": group})
        try:
            c.commit(offsets=[TopicPartition(src.name, p, o) for p, o in src.offsets_for(when_ms).items()],
                     asynchronous=False)
        finally:
            c.close()
    c = Consumer({"bootstrap.servers": src.bootstrap, "group.id": group})
    try:
        res = c.committed([TopicPartition(src.name, p) for p in range(src.partitions)], timeout=30)
        return {tp.partition: tp.offset for tp in res}
    finally:
        c.close()


def run_detect(src: Source, group: str, prefix: str, flags_topic: str) -> float:
    """``distillwatch detect --stop-at-end`` in this process; returns its wall time."""
    p = argparse.ArgumentParser()
    detect.add_arguments(p)
    args = p.parse_args([
        "--bootstrap-servers", src.bootstrap, "--requests-topic", src.name,
        "--flags-topic", flags_topic, "--dlq-topic", f"{prefix}dlq", "--group-id", group,
        "--internal-prefix", prefix, "--stop-at-end",
    ])
    t = time.perf_counter()
    assert detect.run(args) == 0
    return time.perf_counter() - t


# ------------------------------------------------------------------------------ tests


def test_range_from_the_middle_equals_file_replay_of_that_range(
        src1: Source, topic_prefix: str, tmp_path: Path) -> None:
    lo, hi = src1.t0 + 8 * H, src1.t0 + 16 * H
    run_id = topic_prefix.rstrip(".") + "-file"
    out = tmp_path / "replay.jsonl"
    # ISO for --from, epoch ms for --to: both forms of the contract
    summary = tmp_path / "summary.json"
    assert replay_cli(src1.bootstrap, "--topic", src1.name, "--from", iso(lo), "--to", str(hi),
                      "--output", str(out), "--run-id", run_id, "--summary", str(summary)) == 0
    selected = in_range(src1.events, lo, hi)
    assert 0 < len(selected) < len(src1.events) - 10_000      # really the middle
    expected = file_replay(selected, tmp_path, "range")
    assert len(expected) >= 50                                 # a meaningful comparison
    assert out.read_bytes().splitlines() == expected
    # the whole day gives other flags: the range really was cut
    assert file_replay([orjson.dumps(e) for e in src1.events], tmp_path, "all") != expected
    # --output alone: nothing written to Kafka
    assert not topic_exists(src1.bootstrap, DEFAULT_FLAGS_TOPIC_PREFIX + run_id)
    s = orjson.loads(summary.read_bytes())
    start, end = src1.offsets_for(lo)[0], src1.offsets_for(hi)[0]
    assert [(r["start"], r["end"]) for r in s["ranges"]] == [(start, end)]
    assert s["messages"] == end - start == len(selected)
    assert s["flags"] == len(expected)
    assert s["flags_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_malformed_messages_are_reported_by_offset_and_never_fatal(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    topic = f"{topic_prefix}requests"
    create_topics(kafka_bootstrap, [topic])
    good = [orjson.dumps(valid_event(event_id=f"e{i}", ts_ms=T0 + i * 60_000,
                                     account_id=f"acct-{i % 3}")) for i in range(40)]
    msgs: list[bytes | None] = [*good[:10], b"not json", *good[10:20], None, *good[20:]]
    produce(kafka_bootstrap, topic, [(b"k", v) for v in msgs])
    out = tmp_path / "flags.jsonl"
    capsys.readouterr()
    assert replay_cli(kafka_bootstrap, "--topic", topic, "--from", "earliest",
                      "--output", str(out)) == 0
    err = capsys.readouterr().err
    assert f"{topic}[0]@10: not JSON" in err and f"{topic}[0]@21: not JSON" in err
    assert "2 malformed" in err and "40 events" in err
    assert out.read_bytes().splitlines() == file_replay(good, tmp_path, "good")


def test_two_replays_of_a_range_give_identical_flags(
        src1: Source, topic_prefix: str, tmp_path: Path, default_topics: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    lo, hi = src1.t0 + 6 * H, src1.t0 + 18 * H
    base = topic_prefix.rstrip(".")
    runs = []
    for k in (1, 2):
        run_id = f"{base}-{k}"
        topic = DEFAULT_FLAGS_TOPIC_PREFIX + run_id
        default_topics.append(topic)
        assert replay_cli(src1.bootstrap, "--topic", src1.name, "--from", str(lo), "--to", str(hi),
                          "--run-id", run_id) == 0
        runs.append(flags_of(src1.bootstrap, topic))
    assert runs[0] and runs[0] == runs[1]
    assert runs[0] == file_replay(in_range(src1.events, lo, hi), tmp_path, "range")
    res = compare([orjson.loads(v) for v in runs[0]], [orjson.loads(v) for v in runs[1]])
    assert res["identical"] and not res["changed"]
    capsys.readouterr()
    assert diff_run(argparse.Namespace(
        a=f"kafka:{default_topics[0]}", b=f"kafka:{default_topics[1]}", json=None,
        bootstrap_servers=src1.bootstrap, since=None, until=None, show=5, fail_on_change=True)) == 0
    assert "identical flags: yes" in capsys.readouterr().out
    # the same run id again: its topic already holds a run -> refused, topic untouched
    assert replay_cli(src1.bootstrap, "--topic", src1.name, "--from", str(lo), "--to", str(hi),
                      "--run-id", f"{base}-1") == 2
    assert flags_of(src1.bootstrap, default_topics[0]) == runs[0]


def test_replay_never_writes_to_the_live_flags_topic_without_the_option(
        src1: Source, topic_prefix: str, tmp_path: Path, default_topics: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    live = f"{topic_prefix}flags"
    create_topics(src1.bootstrap, [live])
    monkeypatch.setenv("DISTILLWATCH_FLAGS_TOPIC", live)     # how a deployment names it
    rng = ("--topic", src1.name, "--from", iso(src1.t0 + 10 * H), "--to", iso(src1.t0 + 14 * H))

    assert replay_cli(src1.bootstrap, *rng, "--flags-topic", live) == 2
    assert replay_cli(src1.bootstrap, *rng, "--flags-topic", "distillation.flags") == 2
    run_id = topic_prefix.rstrip(".") + "-guard"
    default_topics.append(DEFAULT_FLAGS_TOPIC_PREFIX + run_id)
    assert replay_cli(src1.bootstrap, *rng, "--run-id", run_id) == 0
    replayed = flags_of(src1.bootstrap, default_topics[0])
    assert replayed
    # not a single record, not even of an aborted transaction
    assert end_offsets(src1.bootstrap, live, isolation="read_uncommitted") == {0: (0, 0)}

    assert replay_cli(src1.bootstrap, *rng, "--to-live-flags") == 0
    assert flags_of(src1.bootstrap, live) == replayed


def test_multi_partition_range_is_the_documented_merge_of_the_partitions(
        src3: Source, tmp_path: Path) -> None:
    lo, hi = src3.t0 + 8 * H, src3.t0 + 16 * H
    out = tmp_path / "replay.jsonl"
    assert replay_cli(src3.bootstrap, "--topic", src3.name, "--from", str(lo), "--to", str(hi),
                      "--output", str(out)) == 0
    recs = []
    for r in consume_all(src3.bootstrap, src3.name):
        ts = orjson.loads(r.value)["ts_ms"]                  # = the message timestamp here
        if lo <= ts < hi:
            recs.append((ts, r.partition, r.offset, r.value))
    assert {p for _, p, _, _ in recs} == {0, 1, 2}
    merged = [v for *_, v in sorted(recs)]
    assert merged != [v for *_, v in sorted(recs, key=lambda x: (x[1], x[2]))]
    expected = file_replay(merged, tmp_path, "merged")
    assert len(expected) >= 50
    assert out.read_bytes().splitlines() == expected


def test_live_detect_from_the_same_state_gives_the_replay_flags(
        src1: Source, topic_prefix: str, tmp_path: Path) -> None:
    """Live detection on a new group reset (with Kafka's tool) to --from = replay from --from."""
    lo = src1.t0 + 9 * H
    group = f"{topic_prefix}live"
    committed = reset_group_to_datetime(src1, f"{group}.account", lo)
    assert committed == src1.offsets_for(lo)
    live_flags = f"{topic_prefix}live-flags"
    detect_s = run_detect(src1, group, topic_prefix, live_flags)
    live = flags_of(src1.bootstrap, live_flags)

    out = tmp_path / "replay.jsonl"
    t = time.perf_counter()
    assert replay_cli(src1.bootstrap, "--topic", src1.name, "--from", iso(lo), "--output", str(out)) == 0
    replay_s = time.perf_counter() - t
    assert len(live) >= 50
    assert out.read_bytes().splitlines() == live
    n = len(src1.events) - committed[0]
    print(f"\nTHROUGHPUT on {n:,} messages of {src1.name}: replay --topic {n / replay_s:,.0f} msg/s "
          f"({replay_s:.1f} s), detect --stop-at-end {n / detect_s:,.0f} msg/s ({detect_s:.1f} s)")


def test_warm_start_hands_the_state_over_to_a_new_live_deployment(
        src1: Source, topic_prefix: str, tmp_path: Path) -> None:
    mid = src1.t0 + 12 * H
    whole = tmp_path / "whole.jsonl"
    assert replay_cli(src1.bootstrap, "--topic", src1.name, "--from", "earliest",
                      "--output", str(whole)) == 0
    group = f"{topic_prefix}warm"
    first = tmp_path / "first.jsonl"
    assert replay_cli(src1.bootstrap, "--topic", src1.name, "--from", "earliest", "--to", iso(mid),
                      "--output", str(first), "--warm-start-group", group,
                      "--internal-prefix", topic_prefix) == 0
    handover = src1.offsets_for(mid)[0]
    kafka = KafkaSettings(bootstrap_servers=src1.bootstrap, internal_prefix=topic_prefix)
    cl = changelog_topic(kafka, group, "account")
    state = read_changelog(kafka, cl, {0: handover})[0]
    assert state.marker == handover and MODEL_KEY in state.entries
    assert any(k.startswith(b"a:") for k in state.entries)          # per-account state too
    c = Consumer({"bootstrap.servers": src1.bootstrap, "group.id": stage_group(group, "account")})
    assert c.committed([TopicPartition(src1.name, 0)], timeout=30)[0].offset == handover
    c.close()

    live_flags = f"{topic_prefix}warm-flags"
    run_detect(src1, group, topic_prefix, live_flags)
    continued = flags_of(src1.bootstrap, live_flags)
    head = first.read_bytes().splitlines()
    assert head and continued
    assert head + continued == whole.read_bytes().splitlines()

    # the group has state now: a second warm start is refused
    assert replay_cli(src1.bootstrap, "--topic", src1.name, "--from", "earliest", "--to", iso(mid),
                      "--output", str(tmp_path / "again.jsonl"), "--warm-start-group", group,
                      "--internal-prefix", topic_prefix) == 2


def test_warm_start_of_a_multi_partition_topic_carries_the_model(
        src3: Source, topic_prefix: str, tmp_path: Path) -> None:
    mid = src3.t0 + 12 * H
    group = f"{topic_prefix}warm3"
    common = ("--topic", src3.name, "--from", "earliest", "--to", str(mid),
              "--output", str(tmp_path / "f.jsonl"), "--internal-prefix", topic_prefix)
    assert replay_cli(src3.bootstrap, *common, "--warm-start-group", group,
                      "--warm-start-scope", "full") == 2
    assert replay_cli(src3.bootstrap, *common, "--warm-start-group", group) == 0

    # the model the replay learned: the same pipeline over the same merged stream
    recs = sorted((orjson.loads(r.value)["ts_ms"], r.partition, r.offset, r.value)
                  for r in consume_all(src3.bootstrap, src3.name))
    pipe = LocalPipeline(DetectorConfig(), changelog=True)
    pipe.feed([v for ts, *_, v in recs if ts < mid])
    model = dict(pipe.account.take_changes())[MODEL_KEY]

    handover = src3.offsets_for(mid)
    kafka = KafkaSettings(bootstrap_servers=src3.bootstrap, internal_prefix=topic_prefix)
    cl = changelog_topic(kafka, group, "account")
    restored = read_changelog(kafka, cl, handover)
    c = Consumer({"bootstrap.servers": src3.bootstrap, "group.id": stage_group(group, "account")})
    committed = c.committed([TopicPartition(src3.name, p) for p in range(3)], timeout=30)
    c.close()
    assert {tp.partition: tp.offset for tp in committed} == handover
    for p in range(3):
        assert restored[p].marker == handover[p]
        assert restored[p].entries == {MODEL_KEY: model}
        proc = AccountProcessor(DetectorConfig(), p)       # what the live runner does on assign
        proc.restore(list(restored[p].entries.items()))
        assert proc.model.dumps() == model
