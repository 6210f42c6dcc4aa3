"""The checkpoint's steps and transaction status, with a fake transactional producer."""

from __future__ import annotations

from typing import Any

import pytest

from consumers.core.stage import Record
from consumers.kafka.changelog import OFFSET_MARKER_KEY, encode_marker
from consumers.kafka.checkpoint import Checkpoint, CheckpointStateError, TxnStatus
from consumers.kafka.errors import ProcessorFailure
from tests.integration.toy_stage import CountProcessor


class FakeTxnProducer:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []
        self.offsets: list[Any] = []
        self.fail_commit = False

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def produce(self, topic: str, value: bytes | None, key: bytes | None, **kw: Any) -> None:
        self.sent.append((topic, key, value, kw.get("partition")))

    try_produce = produce

    def send_offsets_to_transaction(self, offsets: list[Any], _meta: Any) -> None:
        self.calls.append("offsets")
        self.offsets = offsets

    def commit_transaction(self, before: Any = None) -> None:
        if before is not None:
            before()
        if self.fail_commit:
            raise RuntimeError("commit failed")
        self.calls.append("commit")

    def abort_transaction(self) -> None:
        self.calls.append("abort")


def _checkpoint() -> tuple[Checkpoint, FakeTxnProducer]:
    fake = FakeTxnProducer()
    cp = Checkpoint(fake, stage="toy", input_topic="in.t", changelog_topic="cl.t",  # type: ignore[arg-type]
                    output_topics={"out": "out.t", "dlq": "dlq.t"})
    return cp, fake


def test_commit_runs_its_steps_in_order() -> None:
    cp, fake = _checkpoint()
    assert cp.status is TxnStatus.EMPTY and not cp.dirty
    assert cp.commit({}, {}, lambda: None) is None  # nothing processed: nothing to commit
    proc = CountProcessor(0)
    outs = proc.process([Record("in.t", b"a", b"a:1", 0, 41)])
    cp.mark_processed(0)
    assert cp.status is TxnStatus.PROCESSED and fake.calls == []  # begun lazily
    counts = {"out": 0, "dlq": 0}
    cp.emit(outs, counts)
    assert cp.status is TxnStatus.OPEN and counts == {"out": 1, "dlq": 0}
    hooks: list[str] = []
    summary = cp.commit({0: proc}, {0: 42}, lambda: "meta", hooks.append)
    assert summary is not None and summary.partitions == 1 and summary.changelog_records == 2
    assert fake.calls == ["begin", "offsets", "commit"]
    assert hooks == ["checkpoint", "commit"]
    assert fake.sent[1:] == [("cl.t", b"a", b"1", 0), ("cl.t", OFFSET_MARKER_KEY, encode_marker(42), 0)]
    assert [(tp.topic, tp.partition, tp.offset) for tp in fake.offsets] == [("in.t", 0, 42)]
    assert cp.status is TxnStatus.COMMITTED and cp.status.finished
    with pytest.raises(CheckpointStateError):
        cp.mark_processed(0)  # a finished checkpoint takes no more work


def test_a_failed_commit_stays_open_until_aborted() -> None:
    cp, fake = _checkpoint()
    proc = CountProcessor(0)
    proc.process([Record("in.t", b"a", b"a:1", 0, 0)])
    cp.mark_processed(0)
    fake.fail_commit = True
    with pytest.raises(RuntimeError):
        cp.commit({0: proc}, {0: 1}, lambda: None)
    assert cp.status is TxnStatus.OPEN and cp.txn_age_ms() is not None
    cp.abort()
    assert cp.status is TxnStatus.ABORTED and fake.calls[-1] == "abort"
    assert cp.txn_age_ms() is None and not cp.dirty
    with pytest.raises(CheckpointStateError):
        cp.begin()


def test_abort_without_a_transaction_calls_nothing() -> None:
    cp, fake = _checkpoint()
    cp.mark_processed(3)
    cp.abort()
    assert cp.status is TxnStatus.ABORTED and fake.calls == []
    cp2, _ = _checkpoint()
    cp2.begin()
    cp2.abandon()  # the producer was replaced: its successor aborted the transaction
    assert cp2.status is TxnStatus.ABORTED and cp2.txn_started_at is None


def test_undeclared_output_and_failing_take_changes_are_processor_failures() -> None:
    cp, _ = _checkpoint()
    with pytest.raises(ProcessorFailure, match="undeclared topic 'elsewhere'"):
        cp.emit([Record("elsewhere", None, b"x")], {"out": 0, "dlq": 0})

    class Broken(CountProcessor):
        def take_changes(self) -> list[tuple[bytes, bytes | None]]:
            raise KeyError("x")

    cp2, _ = _checkpoint()
    cp2.mark_processed(0)
    with pytest.raises(ProcessorFailure, match="take_changes"):
        cp2.commit({0: Broken(0)}, {0: 1}, lambda: None)


def test_emit_waits_for_room_when_the_local_queue_is_full() -> None:
    """The client's produce raising BufferError (queue full) sends the record through the
    blocking produce instead: every output produced exactly once, in order."""
    cp, fake = _checkpoint()
    full = iter([False, True, True, False])

    def try_produce(topic: str, value: bytes | None, key: bytes | None, **kw: Any) -> None:
        if next(full):
            raise BufferError("Local: Queue full")
        fake.produce(topic, value, key, **kw)

    fake.try_produce = try_produce  # type: ignore[method-assign]
    outs = [Record("out", f"k{i}".encode(), f"v{i}".encode()) for i in range(4)]
    counts = {"out": 0, "dlq": 0}
    cp.emit(outs, counts)
    assert [(t, k, v) for t, k, v, _ in fake.sent] == [("out.t", f"k{i}".encode(), f"v{i}".encode()) for i in range(4)]
    assert counts == {"out": 4, "dlq": 0}
