"""Pure tests of the Kafka layer: client configs, changelog bookkeeping, batch handling.

No broker: the runner's batch logic is driven with duck-typed fake messages and producer.
"""

from __future__ import annotations

import argparse
import threading

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError, KafkaException
from pydantic import SecretStr

from consumers.config import KafkaSettings
from consumers.core.stage import Record, StageSpec
from consumers.kafka.changelog import (
    OFFSET_MARKER_KEY,
    PartitionRestore,
    decode_marker,
    encode_marker,
    is_internal_key,
)
from consumers.kafka.metrics import RunnerMetrics
from consumers.kafka.runner import (
    RunnerOptions,
    StageRunner,
    _ProcessorFailure,
    _ProducerHung,
    add_arguments,
    consumer_config,
    load_spec,
    parse_topic_map,
    producer_config,
)
from tests.integration.toy_stage import SPEC, CountProcessor, make_spec

TOPICS = {"in": "real.in", "out": "real.out", "dlq": "real.dlq"}


def test_consumer_config_is_eos_ready() -> None:
    conf = consumer_config(KafkaSettings(), SPEC, RunnerOptions(group_id="g"))
    assert conf["group.id"] == "g"
    assert conf["enable.auto.commit"] is False
    assert conf["isolation.level"] == "read_committed"
    assert conf["partition.assignment.strategy"] == "cooperative-sticky"
    assert conf["enable.partition.eof"] is True
    assert conf["auto.offset.reset"] == "earliest"
    assert "group.instance.id" not in conf


def test_static_membership_and_overrides() -> None:
    opts = RunnerOptions(
        group_id="g",
        instance_id="pod-3",
        static_membership=True,
        consumer_overrides={"fetch.min.bytes": 1024},
    )
    conf = consumer_config(KafkaSettings(), SPEC, opts)
    assert conf["group.instance.id"] == "toy.pod-3"
    assert conf["fetch.min.bytes"] == 1024


def test_producer_config_is_transactional() -> None:
    opts = RunnerOptions(group_id="g", instance_id="pod-3", transaction_timeout_ms=30000)
    conf = producer_config(KafkaSettings(), SPEC, opts)
    assert conf["transactional.id"] == "g.toy.pod-3"
    assert conf["enable.idempotence"] is True
    assert conf["transaction.timeout.ms"] == 30000
    assert conf["partitioner"] == "murmur2_random"
    assert conf["compression.type"] == "lz4"


def test_secret_reaches_librdkafka_but_not_reprs() -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password=SecretStr("hunter2"),
    )
    conf = producer_config(kafka, SPEC, RunnerOptions(group_id="g"))
    assert conf["sasl.password"] == "hunter2"
    runner = StageRunner(kafka, SPEC, TOPICS, RunnerOptions(group_id="g"))
    assert "hunter2" not in repr(runner.kafka)
    assert "hunter2" not in repr(runner.options)


def test_runner_names_and_validation() -> None:
    kafka = KafkaSettings(internal_prefix="dw.")
    r = StageRunner(kafka, SPEC, TOPICS, RunnerOptions(group_id="g", instance_id="i"))
    assert r.changelog_topic == "dw.g.toy.changelog"
    assert r.transactional_id == "g.toy.i"
    assert r.input_topic == "real.in"
    two_inputs = StageSpec("x", ("a", "b"), ("out",), SPEC.factory)
    with pytest.raises(ValueError, match="exactly one input"):
        StageRunner(kafka, two_inputs, {"a": "a", "b": "b", "out": "o"}, RunnerOptions("g"))
    with pytest.raises(ValueError, match="dlq"):
        StageRunner(kafka, SPEC, {"in": "i", "out": "o"}, RunnerOptions("g"))


def test_partition_restore_keeps_latest_in_log_order() -> None:
    res = PartitionRestore()
    for key, value in [
        (b"a", b"1"),
        (b"b", b"1"),
        (OFFSET_MARKER_KEY, encode_marker(7)),
        (b"a", b"2"),  # a's latest write is now after b's
        (b"c", b"1"),
        (b"c", None),  # tombstone: c disappears
        (OFFSET_MARKER_KEY, encode_marker(12)),
    ]:
        res.add(key, value)
    assert list(res.entries.items()) == [(b"b", b"1"), (b"a", b"2")]
    assert res.marker == 12
    assert res.records == 7


def test_markers_and_internal_keys() -> None:
    assert decode_marker(encode_marker(123456789012)) == 123456789012
    assert decode_marker(b"") is None and decode_marker(b"x") is None
    assert is_internal_key(OFFSET_MARKER_KEY)
    assert not is_internal_key(b"acct-1") and not is_internal_key(None)


def test_topic_map_and_spec_loading() -> None:
    assert parse_topic_map(["in=a.b", "out=c=d"]) == {"in": "a.b", "out": "c=d"}
    with pytest.raises(ValueError):
        parse_topic_map(["in"])
    assert load_spec("tests.integration.toy_stage:SPEC") is SPEC
    assert load_spec("tests.integration.toy_stage:make_spec").name == "toy"
    with pytest.raises(TypeError):
        load_spec("tests.integration.toy_stage:CountProcessor.process")
    with pytest.raises(ValueError):
        load_spec("tests.integration.toy_stage")


def test_cli_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--spec",
            "m:a",
            "--group-id",
            "g",
            "--topic",
            "in=x",
            "--topic",
            "out=y",
            "--stop-at-end",
            "--instance-id",
            "i",
        ]  # fmt: skip
    )
    assert args.topic == ["in=x", "out=y"] and args.stop_at_end and args.instance_id == "i"


def test_metrics_snapshot_is_a_copy() -> None:
    m = RunnerMetrics(["flags", "dlq"])
    m.produced["flags"] += 3
    snap = m.snapshot()
    m.produced["flags"] += 1
    assert snap["produced"] == {"flags": 3, "dlq": 0}
    assert m.snapshot()["produced"]["flags"] == 4


# ------------------------------------------------------------------ batch handling with fakes


class FakeMsg:
    def __init__(
        self, partition: int, offset: int, value: bytes | None = None, eof: bool = False
    ) -> None:
        self._p, self._o, self._v = partition, offset, value
        self._err = KafkaError(KafkaError._PARTITION_EOF) if eof else None

    def error(self) -> KafkaError | None:
        return self._err

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return self._v.split(b":")[0] if self._v else None

    def value(self) -> bytes | None:
        return self._v

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (TIMESTAMP_CREATE_TIME, 1000 + self._o)


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.began = 0

    def begin_transaction(self) -> None:
        self.began += 1

    def produce(self, topic: str, value: bytes | None, key: bytes | None, **kw: object) -> None:
        self.sent.append((topic, key, value))


class RecordingProcessor(CountProcessor):
    def __init__(self, partition: int) -> None:
        super().__init__(partition)
        self.seen: list[Record] = []

    def process(self, records: list[Record]) -> list[Record]:
        self.seen.extend(records)
        return super().process(records)


def _runner(procs: dict[int, CountProcessor]) -> tuple[StageRunner, FakeProducer]:
    r = StageRunner(KafkaSettings(), SPEC, TOPICS, RunnerOptions(group_id="g"))
    fake = FakeProducer()
    r._producer = fake  # type: ignore[assignment]
    r._procs = dict(procs)  # type: ignore[arg-type]
    r._next = {p: None for p in procs}
    return r, fake


def test_batch_is_split_by_partition_in_order_and_mapped_to_real_topics() -> None:
    p0, p1 = RecordingProcessor(0), RecordingProcessor(1)
    r, fake = _runner({0: p0, 1: p1})
    r._process(
        [
            FakeMsg(0, 10, b"a:1"),
            FakeMsg(1, 5, b"b:1"),
            FakeMsg(0, 11, b"a:2"),
            FakeMsg(1, 6, b"bad"),
            FakeMsg(0, 12, b"c:1"),
        ]
    )
    assert [(x.offset, x.value) for x in p0.seen] == [(10, b"a:1"), (11, b"a:2"), (12, b"c:1")]
    assert [x.offset for x in p1.seen] == [5, 6]
    # input records carry the real topic they were read from (it goes into DLQ headers)
    assert all(x.topic == "real.in" and x.timestamp_ms == 1000 + x.offset for x in p0.seen)
    assert fake.sent == [
        ("real.out", b"a", b"a:1"),
        ("real.out", b"a", b"a:2"),
        ("real.out", b"c", b"c:1"),
        ("real.out", b"b", b"b:1"),
        ("real.dlq", b"bad", b"bad"),
    ]
    assert fake.began == 1  # one transaction for the whole batch
    assert r._next == {0: 13, 1: 7}
    assert r.metrics.consumed == 5 and r.metrics.produced == {"out": 4, "dlq": 1}
    assert r._dirty and r._processed == {0, 1}


def test_eof_tracking_and_stale_records() -> None:
    p0, p1 = RecordingProcessor(0), RecordingProcessor(1)
    r, _fake = _runner({0: p0, 1: p1})
    r._next[0] = 11  # offset 10 was already processed (e.g. re-delivered after a seek)
    r._process(
        [
            FakeMsg(0, 10, b"a:1"),
            FakeMsg(0, 11, b"a:2"),
            FakeMsg(0, 12, eof=True),  # p0 reached its end after offset 11
            FakeMsg(1, 3, eof=True),  # p1 reached an end...
            FakeMsg(1, 3, b"b:1"),  # ...then a new record arrived
            FakeMsg(2, 0, b"z:1"),  # partition not owned (revoked): dropped
        ]
    )
    assert [x.offset for x in p0.seen] == [11]
    assert r.metrics.stale_dropped == 2
    assert r._eof == {0: True, 1: False}


def test_undeclared_output_topic_is_a_processor_failure() -> None:
    class Rogue(CountProcessor):
        def process(self, records: list[Record]) -> list[Record]:
            return [Record("elsewhere", None, b"x")]

    r, _fake = _runner({0: Rogue(0)})
    with pytest.raises(_ProcessorFailure, match="undeclared topic 'elsewhere'"):
        r._process([FakeMsg(0, 0, b"a:1")])


def test_toy_processor_round_trips_through_its_changes() -> None:
    spec = make_spec()
    a = spec.factory(0)
    a.process([Record("in", b"k", b"k:1"), Record("in", b"k", b"k:2"), Record("in", b"j", b"j:1")])
    changes = a.take_changes()
    assert a.take_changes() == []
    b = spec.factory(0)
    b.restore(changes)
    out_a = a.process([Record("in", b"k", b"k:3")])
    out_b = b.process([Record("in", b"k", b"k:3")])
    assert [x.value for x in out_a] == [x.value for x in out_b] == [b"k:3"]


def test_txn_call_watchdog_catches_calls_that_ignore_their_timeout() -> None:
    opts = RunnerOptions(group_id="g", txn_call_timeout_s=0.05, txn_watchdog_margin_s=0.05)
    r = StageRunner(KafkaSettings(), SPEC, TOPICS, opts)
    release = threading.Event()
    try:
        with pytest.raises(_ProducerHung, match="send_offsets_to_transaction"):
            r._txn_call(lambda: release.wait(30), "send_offsets_to_transaction")
        assert r._producer_hung
    finally:
        release.set()
    assert r._txn_call(lambda: 42, "commit_transaction") == 42

    def failing() -> None:
        raise KafkaException(KafkaError(KafkaError._FAIL, "x", txn_requires_abort=True))

    with pytest.raises(KafkaException) as info:
        r._txn_call(failing, "commit_transaction")
    assert info.value.args[0].txn_requires_abort()


def test_stage_state_sums_the_processors_counters_and_sizes() -> None:
    p0, p1 = RecordingProcessor(0), RecordingProcessor(1)
    p0.counters = {"events": 3, "evicted_cap": 2, "note": "x"}  # type: ignore[attr-defined]
    p1.counters = {"events": 4}  # type: ignore[attr-defined]
    p1.state_size = lambda: {"accounts": 7}  # type: ignore[attr-defined]
    r, _ = _runner({0: p0, 1: p1})
    assert r.stage_state() == {"events": 7, "evicted_cap": 2, "accounts": 7}
