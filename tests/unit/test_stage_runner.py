"""The stage runner without a broker: batch handling with fake messages and a fake producer,
the transactional producer's watchdog, names and validation."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError, KafkaException
from pydantic import SecretStr

from consumers.config import KafkaSettings
from consumers.core.stage import Record, StageSpec
from consumers.kafka.checkpoint import TxnStatus
from consumers.kafka.errors import ProcessorFailure
from consumers.kafka.metrics import RunnerMetrics
from consumers.kafka.runner import RunnerOptions, StageRunner
from consumers.kafka.transactional import ProducerHung, TransactionalProducer
from tests.integration.toy_stage import SPEC, CountProcessor, make_spec

TOPICS = {"in": "real.in", "out": "real.out", "dlq": "real.dlq"}


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


def test_metrics_snapshot_is_a_copy() -> None:
    m = RunnerMetrics(["flags", "dlq"])
    m.produced["flags"] += 3
    snap = m.snapshot()
    m.produced["flags"] += 1
    assert snap["produced"] == {"flags": 3, "dlq": 0}
    assert m.snapshot()["produced"]["flags"] == 4


def test_secrets_stay_out_of_the_runner_reprs() -> None:
    kafka = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u",
                          sasl_password=SecretStr("hunter2"))
    runner = StageRunner(kafka, SPEC, TOPICS, RunnerOptions(group_id="g"))
    assert "hunter2" not in repr(runner.kafka)
    assert "hunter2" not in repr(runner.options)


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

    try_produce = produce


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
    r.checkpoint = r._new_checkpoint()
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
    assert r.checkpoint is not None
    assert r.checkpoint.status is TxnStatus.OPEN and r.checkpoint.processed == {0, 1}


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
    with pytest.raises(ProcessorFailure, match="undeclared topic 'elsewhere'"):
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
    tp = TransactionalProducer({"transactional.id": "t"}, name="toy", call_timeout_s=0.05,
                               watchdog_margin_s=0.05, shutdown_retry_s=1.0,
                               should_stop=lambda: False, on_full=lambda: None, log=None)
    release = threading.Event()
    try:
        with pytest.raises(ProducerHung, match="send_offsets_to_transaction"):
            tp._watched(lambda: release.wait(30), "send_offsets_to_transaction")
        assert tp.hung
    finally:
        release.set()
    assert tp._watched(lambda: 42, "commit_transaction") == 42

    def failing() -> None:
        raise KafkaException(KafkaError(KafkaError._FAIL, "x", txn_requires_abort=True))

    with pytest.raises(KafkaException) as info:
        tp._watched(failing, "commit_transaction")
    assert info.value.args[0].txn_requires_abort()


def test_stage_state_sums_the_processors_counters_and_sizes() -> None:
    p0, p1 = RecordingProcessor(0), RecordingProcessor(1)
    p0.counters = {"events": 3, "evicted_cap": 2, "note": "x"}  # type: ignore[attr-defined]
    p1.counters = {"events": 4}  # type: ignore[attr-defined]
    p1.state_size = lambda: {"accounts": 7}  # type: ignore[attr-defined]
    r, _ = _runner({0: p0, 1: p1})
    assert r.stage_state() == {"events": 7, "evicted_cap": 2, "accounts": 7}


class FakeConsumer:
    """Hands out prepared batches; ``consume`` returns the next one (or nothing)."""

    def __init__(self, batches: list[list[FakeMsg]]) -> None:
        self.batches = batches

    def consume(self, n: int, timeout: float) -> list[FakeMsg]:
        return self.batches.pop(0) if self.batches else []

    def consumer_group_metadata(self) -> object:
        return object()


class CommittingProducer(FakeProducer):
    def __init__(self) -> None:
        super().__init__()
        self.commits = 0

    def poll(self, timeout: float) -> int:
        return 0

    def send_offsets_to_transaction(self, offsets: object, metadata: object) -> None:
        pass

    def commit_transaction(self, before: object = None) -> None:
        self.commits += 1


def test_a_runner_behind_checkpoints_at_the_catch_up_interval() -> None:
    """While ``consume`` returns full batches (more is waiting) a checkpoint waits for
    ``catchup_commit_interval_ms``; a partial batch (caught up) commits at ``commit_interval_ms``."""
    full = [FakeMsg(0, i, b"a:%d" % i) for i in range(4)]
    r = StageRunner(KafkaSettings(), SPEC, TOPICS,
                    RunnerOptions(group_id="g", batch_size=4, commit_interval_ms=10,
                                  catchup_commit_interval_ms=60_000))
    fake = CommittingProducer()
    r._producer = fake  # type: ignore[assignment]
    r.checkpoint = r._new_checkpoint()
    r._procs = {0: CountProcessor(0)}  # type: ignore[dict-item]
    r._next = {0: None}
    r._consumer = FakeConsumer([full, [FakeMsg(0, 4 + i, b"b:%d" % i) for i in range(4)],
                                [FakeMsg(0, 8, b"c:1")]])  # type: ignore[assignment]
    r.checkpoint.created_at -= 1.0  # older than commit_interval_ms, younger than the catch-up interval
    r._step()
    r._step()
    assert fake.commits == 0 and r.metrics.consumed == 8  # behind: no checkpoint yet
    r._step()
    assert fake.commits == 1 and r.metrics.checkpoints == 1  # a partial batch: caught up
    assert r._interval_ms(4) == 60_000 and r._interval_ms(3) == 10
    r.options.catchup_commit_interval_ms = 5  # never shorter than commit_interval_ms
    assert r._interval_ms(4) == 10
