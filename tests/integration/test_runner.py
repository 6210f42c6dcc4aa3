"""The exactly-once stage runner against a real broker, with the toy counting stage.

The toy stage (``tests/integration/toy_stage.py``) emits ``key:count`` for every ``key:n`` input,
so an undisturbed run is known in advance: per key, the outputs ``key:1 .. key:n`` exactly once and
in order, and a changelog whose latest value per key is ``n``. Every test — plain, restarted,
SIGKILLed at random points, rebalanced, aborted — is checked against exactly that, reading the
outputs with ``read_committed``.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from consumers.config import KafkaSettings
from consumers.kafka.changelog import is_internal_key
from consumers.kafka.errors import FatalRunnerError
from consumers.kafka.runner import RunnerOptions, StageRunner, run_all
from tests.integration.toy_stage import SPEC, SPEC_NO_BOOM
from tests.kafka_helpers import (
    TopicSpec,
    consume_all,
    create_topics,
    end_offsets,
    produce,
    run_own_broker,
    topic_config,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------- helpers


class Topics:
    """Real topic names of one test (unique prefix) and the toy stage's topic map."""

    def __init__(self, prefix: str, partitions: int) -> None:
        self.prefix = prefix
        self.partitions = partitions
        self.input = f"{prefix}in"
        self.out = f"{prefix}out"
        self.dlq = f"{prefix}dlq"
        self.group = f"{prefix}group"
        self.changelog = f"{prefix}toy.changelog"

    def create(self, bootstrap: str) -> None:
        create_topics(
            bootstrap,
            [
                TopicSpec(self.input, self.partitions),
                TopicSpec(self.out, self.partitions),
                TopicSpec(self.dlq, 1),
            ],
        )

    @property
    def mapping(self) -> dict[str, str]:
        return {"in": self.input, "out": self.out, "dlq": self.dlq}

    def cli_args(self) -> list[str]:
        return [
            "--group-id", self.group,
            "--changelog-topic", self.changelog,
            "--topic", f"in={self.input}",
            "--topic", f"out={self.out}",
            "--topic", f"dlq={self.dlq}",
        ]  # fmt: skip


def make_input(n: int, n_keys: int, seed: int, bad_every: int = 0) -> list[tuple[str, str]]:
    """``n`` messages ``(key, "key:i")`` over ``n_keys`` keys in a seeded random order."""
    rng = random.Random(seed)
    counts: collections.Counter[str] = collections.Counter()
    msgs: list[tuple[str, str]] = []
    for i in range(n):
        key = f"k{rng.randrange(n_keys):03d}"
        if bad_every and i % bad_every == bad_every - 1:
            msgs.append((key, "bad"))
            continue
        counts[key] += 1
        msgs.append((key, f"{key}:{counts[key]}"))
    return msgs


def expected_counts(msgs: list[tuple[str, str]]) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for key, value in msgs:
        if value not in ("bad", "boom"):
            counts[key] += 1
    return dict(counts)


def assert_outputs_exactly_once(bootstrap: str, topic: str, counts: dict[str, int]) -> None:
    """read_committed outputs == an undisturbed run: per key ``key:1..key:n`` once, in order."""
    records = consume_all(bootstrap, topic, isolation="read_committed")
    per_key: dict[bytes, list[bytes]] = collections.defaultdict(list)
    partitions: dict[bytes, set[int]] = collections.defaultdict(set)
    for rec in records:  # sorted by (partition, offset): per key that is emission order
        assert rec.key is not None
        per_key[rec.key].append(rec.value)
        partitions[rec.key].add(rec.partition)
    assert sorted(per_key) == sorted(k.encode() for k in counts), "keys differ"
    for key, n in counts.items():
        got = per_key[key.encode()]
        want = [f"{key}:{i}".encode() for i in range(1, n + 1)]
        assert got == want, f"key {key}: {len(got)} outputs, first difference at " + str(
            next(
                (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                min(len(got), len(want)),
            )
        )
        assert len(partitions[key.encode()]) == 1, f"key {key} on several output partitions"
    assert len(records) == sum(counts.values())


def changelog_state(bootstrap: str, topic: str) -> dict[str, int]:
    """Latest value per key of the changelog (read_committed), internal keys excluded."""
    state: dict[str, int] = {}
    for rec in consume_all(bootstrap, topic, isolation="read_committed"):
        if is_internal_key(rec.key):
            continue
        assert rec.key is not None
        if rec.value is None:
            state.pop(rec.key.decode(), None)
        else:
            state[rec.key.decode()] = int(rec.value)
    return state


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        res = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        return {tp.partition: tp.offset for tp in res}
    finally:
        c.close()


def options(topics: Topics, **kw: object) -> RunnerOptions:
    kw.setdefault("commit_interval_ms", 200)
    # these tests inject faults at checkpoints: one per interval even while the runner is behind
    kw.setdefault("catchup_commit_interval_ms", 0)
    kw.setdefault("stop_at_end", True)
    kw.setdefault("progress_interval_s", 5.0)
    return RunnerOptions(group_id=topics.group, changelog_topic=topics.changelog, **kw)  # type: ignore[arg-type]


def settings(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap)


class Proc:
    """A runner subprocess (``distillwatch run-stage``) logging to a file.

    Every instance is registered in :data:`_LIVE`; the autouse fixture :func:`_reap` kills any
    still running when a test ends, so a failing test never leaves runners behind.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        log_dir: Path,
        name: str,
        *extra: str,
        spec: str = "tests.integration.toy_stage:SPEC",
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait()/kill()
        cmd = [
            sys.executable, "-m", "consumers.cli", "run-stage",
            "--spec", spec,
            "--bootstrap-servers", bootstrap,
            "--commit-interval-ms", "200",
            "--batch-size", "200",
            "--session-timeout-ms", "10000",
            *topics.cli_args(),
            *extra,
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        self.popen = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        _LIVE.append(self)

    def kill(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(30)
        self._log.close()

    def terminate(self, timeout: float = 60) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 60) -> int:
        try:
            rc = self.popen.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            self.popen.kill()
            self.popen.wait(10)
            raise AssertionError(
                f"{self.name} did not exit within {timeout}s:\n{self.tail()}"
            ) from exc
        finally:
            self._log.close()
        return rc

    def events(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


_LIVE: list[Proc] = []


@pytest.fixture(autouse=True)
def _reap():
    """Kill runner subprocesses a test left running (only when it failed before stopping them)."""
    yield
    while _LIVE:
        proc = _LIVE.pop()
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait(30)
        if not proc._log.closed:
            proc._log.close()


def produce_slowly(
    bootstrap: str, topic: str, msgs: list[tuple[str, str]], chunks: int, pause_s: float
) -> threading.Thread:
    """Produce ``msgs`` in ``chunks`` pieces with a pause between them, in a thread."""
    size = -(-len(msgs) // chunks)

    def target() -> None:
        for i in range(0, len(msgs), size):
            produce(bootstrap, topic, msgs[i : i + size])
            time.sleep(pause_s)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


def wait_until_committed_to_end(bootstrap: str, topics: Topics, timeout: float) -> None:
    """Poll until the group's committed offsets reach the input's end offsets."""
    ends = {p: hi for p, (_lo, hi) in end_offsets(bootstrap, topics.input).items()}
    deadline = time.monotonic() + timeout
    while True:
        got = committed_offsets(bootstrap, topics.group, topics.input, topics.partitions)
        if all(got.get(p, -1) >= end for p, end in ends.items()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"group did not commit to the end: {got} vs {ends}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def private_broker(tmp_path_factory: pytest.TempPathFactory):
    """A broker of this module only (it gets restarted), on ``$DISTILLWATCH_TEST_PRIVATE_PORT``
    (default 29092, controller port + 1), with its data in a temporary directory."""
    port = int(os.environ.get("DISTILLWATCH_TEST_PRIVATE_PORT", "29092"))
    with run_own_broker(port, tmp_path_factory.mktemp("kafka-private-data")) as b:
        yield b


# ------------------------------------------------------------------------------------- tests


def test_basic_outputs_dlq_and_changelog(kafka_bootstrap: str, topic_prefix: str) -> None:
    topics = Topics(topic_prefix, 3)
    topics.create(kafka_bootstrap)
    msgs = make_input(3000, 40, seed=1, bad_every=97)
    produce(kafka_bootstrap, topics.input, msgs)
    counts = expected_counts(msgs)

    runner = StageRunner(settings(kafka_bootstrap), SPEC, topics.mapping, options(topics))
    runner.run()

    assert_outputs_exactly_once(kafka_bootstrap, topics.out, counts)
    dlq = consume_all(kafka_bootstrap, topics.dlq)
    assert len(dlq) == sum(1 for _k, v in msgs if v == "bad")
    assert all(r.value == b"bad" and dict(r.headers).get("dlq.error") for r in dlq)
    assert changelog_state(kafka_bootstrap, topics.changelog) == counts
    snap = runner.metrics.snapshot()
    assert snap["consumed"] == len(msgs)
    assert snap["produced"] == {"out": sum(counts.values()), "dlq": len(dlq)}
    assert snap["checkpoints"] >= 1 and snap["aborts"] == 0
    # The changelog is compacted and has one partition per input partition.
    config = topic_config(kafka_bootstrap, topics.changelog)
    assert config["cleanup.policy"] == "compact" and config["segment.ms"] == "3600000"
    assert sorted(end_offsets(kafka_bootstrap, topics.changelog)) == [0, 1, 2]


def test_restart_continues_from_restored_state(kafka_bootstrap: str, topic_prefix: str) -> None:
    topics = Topics(topic_prefix, 3)
    topics.create(kafka_bootstrap)
    msgs = make_input(4000, 30, seed=2)
    half = len(msgs) // 2
    kafka = settings(kafka_bootstrap)

    produce(kafka_bootstrap, topics.input, msgs[:half])
    first = StageRunner(kafka, SPEC, topics.mapping, options(topics, instance_id="first"))
    first.run()
    assert first.metrics.consumed == half
    assert changelog_state(kafka_bootstrap, topics.changelog) == expected_counts(msgs[:half])

    produce(kafka_bootstrap, topics.input, msgs[half:])
    second = StageRunner(kafka, SPEC, topics.mapping, options(topics, instance_id="second"))
    second.run()
    assert second.metrics.consumed == len(msgs) - half  # resumed at the committed offsets
    assert second.metrics.restored_records > 0  # counts came back from the changelog

    counts = expected_counts(msgs)
    assert_outputs_exactly_once(kafka_bootstrap, topics.out, counts)
    assert changelog_state(kafka_bootstrap, topics.changelog) == counts


def test_sigkill_at_random_points(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    topics = Topics(topic_prefix, 3)
    topics.create(kafka_bootstrap)
    msgs = make_input(12000, 50, seed=3, bad_every=251)
    rng = random.Random(3)
    producer = produce_slowly(kafka_bootstrap, topics.input, msgs, chunks=40, pause_s=0.3)
    # Same instance id on every restart: the new transactional producer fences the killed one
    # and aborts its open transaction; static membership gives the partitions straight back.
    same = ("--instance-id", "crash", "--static-membership")
    kills = 0
    while producer.is_alive() or kills < 4:
        proc = Proc(kafka_bootstrap, topics, tmp_path, f"run{kills}", *same)
        time.sleep(rng.uniform(1.0, 3.5))
        assert proc.popen.poll() is None, f"runner exited early:\n{proc.tail()}"
        proc.kill()
        kills += 1
    producer.join()
    final = Proc(kafka_bootstrap, topics, tmp_path, "final", *same, "--stop-at-end")
    assert final.wait(120) == 0, final.tail()

    counts = expected_counts(msgs)
    assert_outputs_exactly_once(kafka_bootstrap, topics.out, counts)
    dlq = consume_all(kafka_bootstrap, topics.dlq)
    assert len(dlq) == sum(1 for _k, v in msgs if v == "bad")
    assert changelog_state(kafka_bootstrap, topics.changelog) == counts
    # The final run really resumed (it did not redo everything) and restored state.
    exit_event = [e for e in final.events() if e.get("event") == "runner_exit"][-1]
    assert exit_event["consumed"] < len(msgs)
    assert exit_event["restored_records"] > 0


def test_rebalance_join_and_leave(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    topics = Topics(topic_prefix, 6)
    topics.create(kafka_bootstrap)
    msgs = make_input(15000, 60, seed=4, bad_every=199)
    producer = produce_slowly(kafka_bootstrap, topics.input, msgs, chunks=60, pause_s=0.3)

    def restored(p: Proc) -> list[dict]:
        return [e for e in p.events() if e.get("event") == "restored" and e["partitions"]]

    def wait_for(what: str, cond, timeout: float = 60) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.2)

    a = Proc(kafka_bootstrap, topics, tmp_path, "a", "--instance-id", "a")
    b = Proc(kafka_bootstrap, topics, tmp_path, "b", "--instance-id", "b")
    wait_for("a and b to own partitions", lambda: restored(a) and restored(b))
    c = Proc(kafka_bootstrap, topics, tmp_path, "c", "--instance-id", "c")  # joins mid-stream
    wait_for("c to own partitions", lambda: restored(c))
    assert producer.is_alive(), "input ended before the rebalances: make it longer"
    assert a.terminate() == 0, a.tail()  # leaves mid-stream (checkpoint, leave group)
    producer.join()
    wait_until_committed_to_end(kafka_bootstrap, topics, timeout=90)
    assert b.terminate() == 0, b.tail()
    assert c.terminate() == 0, c.tail()

    counts = expected_counts(msgs)
    assert_outputs_exactly_once(kafka_bootstrap, topics.out, counts)
    assert len(consume_all(kafka_bootstrap, topics.dlq)) == sum(1 for _k, v in msgs if v == "bad")
    assert changelog_state(kafka_bootstrap, topics.changelog) == counts

    # The scenario really happened: c took over partitions with state, and a's partitions moved
    # (with their state) to b and c after a left.
    assert any(e["records"] > 0 for e in restored(c)), "c restored no state from the changelog"
    a_exit = [e for e in a.events() if e.get("event") == "runner_exit"][-1]
    assert a_exit["partitions_assigned"] > 0
    assert a_exit["partitions_revoked"] == a_exit["partitions_assigned"]
    taken_over = [e for e in restored(b) + restored(c) if e["timestamp"] > a_exit["timestamp"]]
    assert taken_over and sum(e["records"] for e in taken_over) > 0


def test_processor_exception_aborts_and_is_fatal(kafka_bootstrap: str, topic_prefix: str) -> None:
    topics = Topics(topic_prefix, 1)
    topics.create(kafka_bootstrap)
    kafka = settings(kafka_bootstrap)
    good1 = make_input(20, 3, seed=5)
    produce(kafka_bootstrap, topics.input, good1)
    StageRunner(kafka, SPEC, topics.mapping, options(topics)).run()
    assert len(consume_all(kafka_bootstrap, topics.out)) == 20

    # 30 more good records, then a record that makes the processor raise, all in one open
    # transaction (long commit interval, small batches).
    counts1 = expected_counts(good1)
    more: list[tuple[str, str]] = []
    counter = collections.Counter(counts1)
    for i in range(30):
        key = f"k{i % 3:03d}"
        counter[key] += 1
        more.append((key, f"{key}:{counter[key]}"))
    produce(kafka_bootstrap, topics.input, [*more, ("k000", "boom"), ("k001", "k001:x")])

    runner = StageRunner(
        kafka, SPEC, topics.mapping, options(topics, batch_size=5, commit_interval_ms=600_000)
    )
    # Flush before each batch so the open transaction's outputs are really in the log.
    runner.options.fault_hook = lambda point: (
        runner._producer.flush(10) if point == "batch" else None
    )
    with pytest.raises(FatalRunnerError, match="boom"):
        runner.run()

    committed = consume_all(kafka_bootstrap, topics.out, isolation="read_committed")
    uncommitted = consume_all(kafka_bootstrap, topics.out, isolation="read_uncommitted")
    assert len(committed) == 20  # nothing of the aborted transaction is visible
    assert len(uncommitted) == 20 + 30  # ...although its 30 outputs were written
    assert committed_offsets(kafka_bootstrap, topics.group, topics.input, 1) == {0: 20}
    assert changelog_state(kafka_bootstrap, topics.changelog) == counts1

    # The fixed stage resumes from the last commit: every output exactly once.
    StageRunner(kafka, SPEC_NO_BOOM, topics.mapping, options(topics)).run()
    final = expected_counts([*good1, *more, ("k001", "k001:x")])
    assert_outputs_exactly_once(kafka_bootstrap, topics.out, final)
    assert [r.value for r in consume_all(kafka_bootstrap, topics.dlq)] == [b"boom"]


def test_abortable_commit_error_rewinds(kafka_bootstrap: str, topic_prefix: str) -> None:
    """A commit that fails with an abortable error: abort, restore, seek back, carry on."""
    topics = Topics(topic_prefix, 3)
    topics.create(kafka_bootstrap)
    msgs = make_input(3000, 25, seed=6, bad_every=101)
    produce(kafka_bootstrap, topics.input, msgs)

    runner = StageRunner(
        settings(kafka_bootstrap),
        SPEC,
        topics.mapping,
        options(topics, batch_size=100, commit_interval_ms=0),
    )
    calls = collections.Counter()

    def hook(point: str) -> None:
        if point != "commit":
            return
        calls["commit"] += 1
        n = calls["commit"]
        if n in (3, 7):  # abortable: the whole open transaction must vanish
            runner._producer.flush(10)
            raise KafkaException(
                KafkaError(KafkaError._FAIL, "injected abortable", txn_requires_abort=True)
            )
        if n == 5:  # retriable: the same commit is retried
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "injected", retriable=True))

    runner.options.fault_hook = hook
    runner.run()

    counts = expected_counts(msgs)
    assert_outputs_exactly_once(kafka_bootstrap, topics.out, counts)
    assert changelog_state(kafka_bootstrap, topics.changelog) == counts
    assert runner.metrics.aborts == 2
    assert runner.metrics.restored_records > 0  # the rewind restored state from the changelog
    uncommitted = consume_all(kafka_bootstrap, topics.out, isolation="read_uncommitted")
    assert len(uncommitted) > sum(counts.values())  # aborted outputs exist, hidden from readers


def test_missing_output_topic_is_a_clear_error(kafka_bootstrap: str, topic_prefix: str) -> None:
    topics = Topics(topic_prefix, 1)
    create_topics(kafka_bootstrap, [TopicSpec(topics.input, 1), TopicSpec(topics.out, 1)])
    runner = StageRunner(settings(kafka_bootstrap), SPEC, topics.mapping, options(topics))
    with pytest.raises(FatalRunnerError, match="dlq"):
        runner.run()


def test_changelog_with_too_few_partitions_is_rejected(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topics = Topics(topic_prefix, 3)
    topics.create(kafka_bootstrap)
    create_topics(kafka_bootstrap, [TopicSpec(topics.changelog, 2, compacted=True)])
    runner = StageRunner(settings(kafka_bootstrap), SPEC, topics.mapping, options(topics))
    with pytest.raises(FatalRunnerError, match="2 partitions but 3"):
        runner.run()


def test_broker_restart_mid_stream(private_broker, topic_prefix: str, tmp_path: Path) -> None:
    """The only broker restarts while the runner is busy: it reconnects (or replaces a hung
    producer, see RunnerOptions) and the outputs stay exactly-once."""
    bootstrap, restart_broker = private_broker
    topics = Topics(topic_prefix, 3)
    topics.create(bootstrap)
    msgs = make_input(9000, 40, seed=7, bad_every=211)
    producer = produce_slowly(bootstrap, topics.input, msgs[:4500], chunks=15, pause_s=0.2)
    runner = Proc(
        bootstrap, topics, tmp_path, "runner", "--instance-id", "r",
        "--txn-call-timeout-s", "5", "--txn-watchdog-margin-s", "5",
    )  # fmt: skip
    producer.join()
    time.sleep(1)
    restart_broker()
    assert runner.popen.poll() is None, runner.tail()
    produce(bootstrap, topics.input, msgs[4500:])
    wait_until_committed_to_end(bootstrap, topics, timeout=150)
    assert runner.terminate() == 0, runner.tail()

    counts = expected_counts(msgs)
    assert_outputs_exactly_once(bootstrap, topics.out, counts)
    assert len(consume_all(bootstrap, topics.dlq)) == sum(1 for _k, v in msgs if v == "bad")
    assert changelog_state(bootstrap, topics.changelog) == counts


def test_transaction_timeout_resumes_from_checkpoint(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The coordinator aborts a transaction that outlived transaction.timeout.ms (librdkafka then
    reports the producer as fenced): the runner replaces its producer and rewinds."""
    topics = Topics(topic_prefix, 3)
    topics.create(kafka_bootstrap)
    msgs = make_input(3000, 20, seed=8)
    produce(kafka_bootstrap, topics.input, msgs)
    runner = StageRunner(
        settings(kafka_bootstrap),
        SPEC,
        topics.mapping,
        options(topics, batch_size=500, commit_interval_ms=600_000, transaction_timeout_ms=2000),
    )
    batches = collections.Counter()

    def hook(point: str) -> None:
        if point == "batch":
            batches["n"] += 1
            if batches["n"] == 3:  # two batches of outputs are in the open transaction
                runner._producer.flush(10)
                # The broker looks for expired transactions every 10 s (its default).
                time.sleep(2 + 10 + 3)

    runner.options.fault_hook = hook
    runner.run()

    counts = expected_counts(msgs)
    assert_outputs_exactly_once(kafka_bootstrap, topics.out, counts)
    assert changelog_state(kafka_bootstrap, topics.changelog) == counts
    assert runner.metrics.producer_replacements == 1
    uncommitted = consume_all(kafka_bootstrap, topics.out, isolation="read_uncommitted")
    assert len(uncommitted) > sum(counts.values())


def test_fenced_by_same_instance_id_is_fatal(kafka_bootstrap: str, topic_prefix: str) -> None:
    """A second replica with the same instance id fences the first: the first stops with
    FatalRunnerError (restart it with its own id); the survivor finishes exactly-once."""
    topics = Topics(topic_prefix, 3)
    topics.create(kafka_bootstrap)
    msgs = make_input(6000, 30, seed=9)
    producer = produce_slowly(kafka_bootstrap, topics.input, msgs, chunks=20, pause_s=0.3)
    kafka = settings(kafka_bootstrap)
    first = StageRunner(
        kafka, SPEC, topics.mapping, options(topics, instance_id="dup", stop_at_end=False)
    )
    second = StageRunner(
        kafka, SPEC, topics.mapping, options(topics, instance_id="dup", stop_at_end=False)
    )
    errors: dict[str, BaseException] = {}

    def run(name: str, r: StageRunner) -> None:
        try:
            r.run()
        except BaseException as exc:  # noqa: BLE001 - inspected below
            errors[name] = exc

    t1 = threading.Thread(target=run, args=("first", first))
    t1.start()
    time.sleep(2.5)
    t2 = threading.Thread(target=run, args=("second", second))
    t2.start()
    t1.join(60)
    assert not t1.is_alive()
    assert isinstance(errors.get("first"), FatalRunnerError), errors
    assert "fenced" in str(errors["first"]).lower()
    producer.join()
    wait_until_committed_to_end(kafka_bootstrap, topics, timeout=90)
    second.stop()
    t2.join(60)
    assert not t2.is_alive() and "second" not in errors, errors
    assert_outputs_exactly_once(kafka_bootstrap, topics.out, expected_counts(msgs))


def test_run_all_runs_stages_side_by_side(kafka_bootstrap: str, topic_prefix: str) -> None:
    """Two stages in one process (threads): both finish; a failing one stops the others."""
    a, b = Topics(topic_prefix + "a.", 2), Topics(topic_prefix + "b.", 2)
    a.create(kafka_bootstrap)
    b.create(kafka_bootstrap)
    msgs_a, msgs_b = make_input(1500, 10, seed=10), make_input(1000, 7, seed=11)
    produce(kafka_bootstrap, a.input, msgs_a)
    produce(kafka_bootstrap, b.input, msgs_b)
    kafka = settings(kafka_bootstrap)
    run_all(
        [
            StageRunner(kafka, SPEC, a.mapping, options(a)),
            StageRunner(kafka, SPEC, b.mapping, options(b)),
        ]
    )
    assert_outputs_exactly_once(kafka_bootstrap, a.out, expected_counts(msgs_a))
    assert_outputs_exactly_once(kafka_bootstrap, b.out, expected_counts(msgs_b))

    broken = dict(b.mapping, dlq=f"{topic_prefix}missing")
    healthy = StageRunner(kafka, SPEC, a.mapping, options(a, stop_at_end=False))
    with pytest.raises(FatalRunnerError, match="missing"):
        run_all([healthy, StageRunner(kafka, SPEC, broken, options(b))])
    assert healthy.stopping
