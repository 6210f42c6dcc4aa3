"""The exactly-once, checkpointed Kafka runner of one stage (Kafka Streams EOS-v2 design).

A :class:`StageRunner` consumes the stage's single input topic in a consumer group, feeds each
input partition's records, in order, to that partition's :class:`~consumers.core.stage.Processor`,
and produces what the processor emits through one transactional producer. Every
``commit_interval_ms`` (and before partitions are given up or the process stops) it
*checkpoints*: in the open transaction it writes each processor's state changes to the stage's
compacted changelog topic (partition ``p`` of the changelog = input partition ``p``), adds the
consumed offsets (``send_offsets_to_transaction``) and commits. Outputs, state and input
progress therefore become durable together, or not at all.

Delivery guarantee (for enforcement teams and other subscribers)
-----------------------------------------------------------------
* **Read with ``isolation.level=read_committed``.** A read_committed subscriber of an output
  topic (flags, DLQ, internal topics) sees every output record exactly once: records of a
  transaction become visible all together when it commits, and records of aborted transactions
  are never delivered. Within one key (one output partition) records appear in the order the
  stage emitted them.
* **Latency.** Outputs become visible at the next checkpoint, i.e. up to ``commit_interval_ms``
  (default 1 s) plus the commit round trip after the input arrived.
* **Crashes, restarts, rebalances, broker restarts.** If a runner dies (SIGKILL, OOM, node loss)
  its open transaction is aborted (when the same ``instance_id`` restarts, at once; otherwise when
  the broker's transaction timeout expires, ``transaction_timeout_ms``, default 60 s). The new
  owner of each partition restores the processor state from the changelog as of the last commit
  and resumes from the committed offset. Work since the last checkpoint is redone, but its
  outputs are produced only once from the point of view of read_committed subscribers. Network
  blips and broker restarts are retried; a transaction that cannot complete is aborted and the
  runner resumes from its last checkpoint. (A librdkafka bug can leave a transactional call
  blocked after a broker restart; a watchdog then replaces the producer — same transactional id,
  so the old one is fenced — and resumes from the last checkpoint: a stall of about 20 s, no
  loss, no duplicates.)
* **read_uncommitted subscribers** (the Kafka default for many clients!) also see records of
  aborted transactions — i.e. possible duplicates and records that were never "decided". Do not
  act on them.
* **What "exactly once" covers:** Kafka to Kafka only — consuming the input, the stage's state,
  and producing the outputs. It does **not** cover side effects outside Kafka: a processor must
  not call external services (those calls could be repeated after a crash), and a subscriber that
  acts on a flag (suspends an account) must itself be idempotent — flags carry a deterministic
  ``flag_id`` for that. Records that were *produced* into the input topic twice by an upstream
  producer are two records to the stage (de-duplicating by ``event_id`` is the stage's business).
* **A transaction older than ``transaction_timeout_ms``** (processing stalled) is aborted by the
  broker; librdkafka reports that as "fenced". The runner recognises it by the transaction's age,
  replaces its producer and resumes from the last checkpoint.
* **Fatal errors** (a producer fenced by another live instance with the same ``instance_id``, a
  fatal librdkafka error, an exception raised by a processor = a bug) abort the open transaction
  and raise :class:`FatalRunnerError`; the process exits non-zero and the orchestrator restarts
  it. Nothing committed is lost and nothing uncommitted becomes visible.
* **Offsets belong to the changelog.** Restore trusts the group's committed offsets and the
  stage's changelog together: resetting the group's offsets (or letting them expire:
  ``offsets.retention.minutes``, 7 days for an empty group) without deleting the changelog
  re-reads input into existing state. The runner logs a warning when it detects this.

Failure policy for processor exceptions: an exception from ``process``/``take_changes``/``restore``
is a bug in the stage, never data (bad input must go to the DLQ as a record). The runner aborts
the open transaction (nothing of it becomes visible) and raises :class:`FatalRunnerError`.

Run a stage from a shell (dev/tests)::

    python -m consumers.kafka.runner --spec package.module:attr --bootstrap-servers S \\
        --group-id G --topic logical=real [--topic ...] [--stop-at-end] [--instance-id ID]
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from consumers.config import KafkaSettings
from consumers.core.stage import Processor, Record, StageSpec
from consumers.kafka.admin import changelog_spec, ensure_topics, partitions_of
from consumers.kafka.changelog import (
    OFFSET_MARKER_KEY,
    RestoreInterrupted,
    encode_marker,
    read_changelog,
)
from consumers.kafka.errors import FatalRunnerError, TopicError
from consumers.kafka.metrics import RunnerMetrics

__all__ = [
    "FatalRunnerError",
    "RunnerOptions",
    "StageRunner",
    "consumer_config",
    "default_instance_id",
    "main",
    "producer_config",
    "run_all",
]

log = structlog.get_logger("distillwatch.kafka.runner")

_EOF = KafkaError._PARTITION_EOF
# What librdkafka reports when the coordinator bumped our epoch (fencing or transaction timeout).
_FENCING_CODES = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)
# committed() reports these without librdkafka's retriable flag; they are transient.
_RETRIABLE_OFFSET_FETCH = frozenset(
    {
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._WAIT_COORD,
        KafkaError.UNSTABLE_OFFSET_COMMIT,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.REQUEST_TIMED_OUT,
    }
)


def default_instance_id() -> str:
    """``<hostname>-<pid>``: unique per process. Use a *stable* id (pod name) in production."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(slots=True)
class RunnerOptions:
    """How a :class:`StageRunner` runs.

    ``instance_id`` should be stable across restarts of the same replica (a StatefulSet pod
    name): the transactional id is ``{group_id}.{stage}.{instance_id}``, so a restarted replica
    fences its predecessor and aborts its open transaction at once instead of after
    ``transaction_timeout_ms``. ``static_membership`` additionally sets ``group.instance.id``
    (KIP-345): a restart within ``session_timeout_ms`` gets its partitions back without a
    rebalance, but a stopped member keeps its partitions until the session times out.
    ``stop_at_end`` (demo, tests, replay) stops once every assigned input partition reached its
    end and everything is committed. ``txn_call_timeout_s`` is passed to librdkafka's
    transactional calls; a call still blocked ``txn_watchdog_margin_s`` later is treated as hung
    (librdkafka issues #5456/#5511: ``send_offsets_to_transaction`` can ignore its timeout after a
    broker restart): the producer is replaced and the runner resumes from the last checkpoint.
    ``restore_settle_timeout_s`` (default ``transaction_timeout_ms`` + 10 s) bounds how long a
    restore waits for the changelog to catch up with the committed offset (see
    :mod:`consumers.kafka.changelog`); it is only reached after an operator reset the group's
    offsets. ``fault_hook`` is for tests only: called with a point name (``"batch"``,
    ``"checkpoint"``, ``"commit"``) and may raise to simulate failures.
    """

    group_id: str
    instance_id: str = field(default_factory=default_instance_id)
    commit_interval_ms: int = 1000
    batch_size: int = 2000
    poll_timeout_s: float = 0.1
    transaction_timeout_ms: int = 60000
    stop_at_end: bool = False
    changelog_topic: str | None = None
    create_changelog: bool = True
    changelog_replication_factor: int = -1
    static_membership: bool = False
    session_timeout_ms: int = 45000
    restore_settle_timeout_s: float | None = None
    progress_interval_s: float = 10.0
    linger_ms: int = 10
    max_consecutive_aborts: int = 5
    shutdown_retry_s: float = 30.0
    txn_call_timeout_s: float = 10.0
    txn_watchdog_margin_s: float = 10.0
    max_producer_replacements: int = 3
    consumer_overrides: dict[str, Any] = field(default_factory=dict)
    producer_overrides: dict[str, Any] = field(default_factory=dict)
    fault_hook: Callable[[str], None] | None = None


def consumer_config(
    kafka: KafkaSettings, spec: StageSpec, options: RunnerOptions
) -> dict[str, Any]:
    """librdkafka settings of the stage's group consumer (contains secrets: never log it)."""
    conf = kafka.client_config()
    conf.update(
        {
            "group.id": options.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.partition.eof": True,
            "session.timeout.ms": options.session_timeout_ms,
        }
    )
    if options.static_membership:
        conf["group.instance.id"] = f"{spec.name}.{options.instance_id}"
    conf.update(options.consumer_overrides)
    return conf


def producer_config(
    kafka: KafkaSettings, spec: StageSpec, options: RunnerOptions
) -> dict[str, Any]:
    """librdkafka settings of the stage's transactional producer (contains secrets: never log it)."""
    conf = kafka.client_config()
    conf.update(
        {
            "transactional.id": f"{options.group_id}.{spec.name}.{options.instance_id}",
            "enable.idempotence": True,
            "transaction.timeout.ms": options.transaction_timeout_ms,
            "linger.ms": options.linger_ms,
            "batch.num.messages": 10000,
            "compression.type": "lz4",
            # Same key -> partition mapping as the Java clients (and Kafka Streams).
            "partitioner": "murmur2_random",
        }
    )
    conf.update(options.producer_overrides)
    return conf


class _ProcessorFailure(Exception):
    """A processor raised: a bug in the stage (wrapped to tell it apart from Kafka errors)."""


class _ProducerHung(FatalRunnerError):
    """A transactional producer call did not return within its watchdog deadline."""


def _kafka_error(exc: KafkaException) -> KafkaError | None:
    err = exc.args[0] if exc.args else None
    return err if isinstance(err, KafkaError) else None


class StageRunner:
    """Runs one stage exactly-once against Kafka. See the module docstring for the guarantee.

    ``topics`` maps the stage's logical topic names (``spec.inputs`` and ``spec.outputs``) to real
    topic names. Call :meth:`run` (blocks; returns normally after :meth:`stop`, SIGTERM/SIGINT or
    ``stop_at_end``; raises :class:`FatalRunnerError` otherwise).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        spec: StageSpec,
        topics: dict[str, str],
        options: RunnerOptions,
    ) -> None:
        if len(spec.inputs) != 1:
            raise ValueError(f"stage {spec.name!r}: the runner supports exactly one input topic")
        missing = [n for n in (*spec.inputs, *spec.outputs) if n not in topics]
        if missing:
            raise ValueError(f"stage {spec.name!r}: no real topic name for {missing}")
        self.kafka = kafka
        self.spec = spec
        self.options = options
        self.input_name = spec.inputs[0]
        self.input_topic = topics[self.input_name]
        self.output_topics = {name: topics[name] for name in spec.outputs}
        self.changelog_topic = options.changelog_topic or kafka.internal_topic(
            f"{options.group_id}.{spec.name}.changelog"
        )
        self.transactional_id = f"{options.group_id}.{spec.name}.{options.instance_id}"
        self.metrics = RunnerMetrics(spec.outputs)
        self._log = log.bind(stage=spec.name, group=options.group_id, instance=options.instance_id)
        self._stop = threading.Event()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._procs: dict[int, Processor] = {}
        self._next: dict[int, int | None] = {}  # next input offset per owned partition
        self._eof: dict[int, bool] = {}
        self._processed: set[int] = set()  # partitions processed in the open transaction
        self._txn_open = False
        self._dirty = False  # processed records since the last commit
        self._rewind_needed = False
        self._pending_exc: BaseException | None = None
        self._fatal_error: KafkaError | None = None
        self._closing = False
        self._consecutive_aborts = 0
        self._consecutive_replacements = 0
        self._producer_hung = False
        self._txn_started_at: float | None = None
        self._last_checkpoint = time.monotonic()
        self._error_log_at: dict[int, float] = {}
        self._ran = False

    # ------------------------------------------------------------------ public API

    def stop(self) -> None:
        """Ask the loop to finish the current batch, checkpoint and return (thread-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stage_state(self) -> dict[str, int]:
        """The processors' own counters (events, DLQ'd, evictions at the memory caps...) and state
        sizes, summed over the owned partitions — how a flood of ids shows up in the logs."""
        total: dict[str, int] = {}
        for proc in list(self._procs.values()):
            extra = getattr(proc, "state_size", None)
            for src in (getattr(proc, "counters", None) or {}, extra() if callable(extra) else {}):
                for k, v in src.items():
                    if isinstance(v, int):
                        total[k] = total.get(k, 0) + v
        return total

    def assigned_partitions(self) -> list[int]:
        """Input partitions this runner currently owns (has a restored processor for)."""
        return sorted(self._procs)

    def run(self) -> None:
        """Consume, process, produce and checkpoint until stopped.

        Installs SIGTERM/SIGINT handlers when called from the main thread (restored on return).
        Returns normally after a clean stop (everything processed is committed, the group is
        left). Raises :class:`FatalRunnerError` when it must not go on.
        """
        if self._ran:
            raise RuntimeError("StageRunner.run() can be called once")
        self._ran = True
        previous = self._install_signals()
        try:
            self._start()
            last_progress = time.monotonic()
            while not self._stop.is_set():
                self._step()
                now = time.monotonic()
                if now - last_progress >= self.options.progress_interval_s:
                    last_progress = now
                    self._log.info("progress", **self.metrics.snapshot(), stage_state=self.stage_state())
            self._shutdown()
        except _ProcessorFailure as exc:
            self._fail_cleanup()
            raise FatalRunnerError(str(exc)) from exc.__cause__
        except FatalRunnerError:
            self._fail_cleanup()
            raise
        except KafkaException as exc:
            self._fail_cleanup()
            raise FatalRunnerError(f"stage {self.spec.name!r}: Kafka error: {exc}") from exc
        except BaseException:
            self._fail_cleanup()
            raise
        finally:
            self._restore_signals(previous)
            self._log.info("runner_exit", **self.metrics.snapshot(), stage_state=self.stage_state())

    # ------------------------------------------------------------------ lifecycle

    def _install_signals(self) -> dict[int, Any] | None:
        if threading.current_thread() is not threading.main_thread():
            return None
        previous: dict[int, Any] = {}

        def handler(signum: int, _frame: Any) -> None:
            self._stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
        return previous

    @staticmethod
    def _restore_signals(previous: dict[int, Any] | None) -> None:
        if previous:
            for sig, h in previous.items():
                signal.signal(sig, h)

    def _check_topics(self) -> None:
        n_in = partitions_of(self.kafka, self.input_topic)
        if n_in is None:
            raise TopicError(f"stage {self.spec.name!r}: input topic {self.input_topic!r} missing")
        absent = [t for t in self.output_topics.values() if partitions_of(self.kafka, t) is None]
        if absent:
            raise TopicError(f"stage {self.spec.name!r}: output topics missing: {absent}")
        if self.options.create_changelog:
            ensure_topics(
                self.kafka,
                [
                    changelog_spec(
                        self.changelog_topic, n_in, self.options.changelog_replication_factor
                    )
                ],
            )
        else:
            n_cl = partitions_of(self.kafka, self.changelog_topic)
            if n_cl is None or n_cl < n_in:
                raise TopicError(
                    f"changelog {self.changelog_topic!r} has {n_cl} partitions, "
                    f"input {self.input_topic!r} has {n_in}"
                )

    def _start(self) -> None:
        self._check_topics()
        self._new_producer()
        cconf = consumer_config(self.kafka, self.spec, self.options)
        cconf["error_cb"] = self._on_client_error
        self._consumer = Consumer(cconf)
        self._consumer.subscribe(
            [self.input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._last_checkpoint = time.monotonic()
        self._log.info(
            "runner_started",
            input=self.input_topic,
            outputs=self.output_topics,
            changelog=self.changelog_topic,
            transactional_id=self.transactional_id,
        )

    def _shutdown(self) -> None:
        self._log.info("runner_stopping")
        self._checkpoint_or_rewind("shutdown")
        self._raise_pending()
        self._closing = True
        assert self._consumer is not None and self._producer is not None
        self._consumer.close()  # revokes (nothing left to commit) and leaves the group
        self._raise_pending()
        if not self._producer_hung:
            self._producer.flush(10)

    def _fail_cleanup(self) -> None:
        """Best effort after a fatal error: abort the open transaction, leave the group."""
        self._closing = True
        self._stop.set()
        if (
            self._producer is not None
            and self._txn_open
            and self._fatal_error is None
            and not self._producer_hung
        ):
            try:
                self._producer.abort_transaction(10)
            except Exception:  # noqa: BLE001 - already failing; the broker aborts it on timeout
                pass
            self._txn_open = False
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception:  # noqa: BLE001
                pass

    # ------------------------------------------------------------------ the loop

    def _raise_pending(self) -> None:
        if self._fatal_error is not None and self._txn_timed_out(self._fatal_error):
            err, self._fatal_error = self._fatal_error, None
            self._replace_producer(KafkaException(err), "transaction timed out at the coordinator")
            self._rewind_needed = True
        if self._pending_exc is not None:
            exc, self._pending_exc = self._pending_exc, None
            raise exc
        if self._fatal_error is not None:
            raise FatalRunnerError(
                f"stage {self.spec.name!r}: fatal Kafka client error: {self._fatal_error}"
            )

    def _step(self) -> None:
        consumer = self._consumer
        assert consumer is not None and self._producer is not None
        msgs = consumer.consume(self.options.batch_size, self.options.poll_timeout_s)
        self._raise_pending()
        if self._rewind_needed:
            self._rewind("transaction aborted during rebalance")
            return
        try:
            if msgs:
                if self.options.fault_hook is not None:
                    self.options.fault_hook("batch")
                self._process(msgs)
            self._producer.poll(0)
            now = time.monotonic()
            if (
                self._dirty
                and (now - self._last_checkpoint) * 1000 >= self.options.commit_interval_ms
            ):
                self._checkpoint("interval")
            if (
                self.options.stop_at_end
                and self._procs
                and not self._stop.is_set()
                and all(self._eof.get(p, False) for p in self._procs)
            ):
                self._checkpoint("end")
                if not self._rewind_needed:
                    self._log.info("input_exhausted", partitions=sorted(self._procs))
                    self._stop.set()
        except KafkaException as exc:
            self._handle_kafka_exception(exc)
        except _ProducerHung as exc:
            self._replace_producer(exc)
            self._rewind(f"producer replaced: {exc}")

    def _process(self, msgs: list[Message]) -> None:
        in_name = self.input_topic  # the real name: processors put it in DLQ headers
        by_part: dict[int, list[Record]] = {}
        eof_at: dict[int, int] | None = None
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == _EOF:
                    if eof_at is None:
                        eof_at = {}
                    eof_at[m.partition()] = m.offset()  # type: ignore[index,assignment]  # set on EOF events
                else:
                    self._consumer_error(err)
                continue
            # a message without error always has partition and offset; keep the hot loop cast-free
            p: int = m.partition()  # type: ignore[assignment]
            recs = by_part.get(p)
            if recs is None:
                recs = by_part[p] = []
            ts_type, ts = m.timestamp()
            recs.append(
                Record(
                    in_name,
                    m.key(),
                    m.value(),  # type: ignore[arg-type]  # None (a tombstone) goes to the DLQ
                    p,
                    m.offset(),  # type: ignore[arg-type]
                    m.headers(),  # type: ignore[arg-type]
                    ts if ts_type != TIMESTAMP_NOT_AVAILABLE else None,
                )
            )
        eof = self._eof
        procs = self._procs
        for p in by_part:
            if p in procs:
                eof[p] = False
        if eof_at:
            for p, end in eof_at.items():
                recs = by_part.get(p)
                if p in procs and (not recs or recs[-1].offset < end):
                    eof[p] = True
        for p, recs in by_part.items():
            proc = procs.get(p)
            if proc is None:  # fetched before a revoke/rewind: never processed, not committed
                self.metrics.stale_dropped += len(recs)
                continue
            nxt = self._next.get(p)
            if nxt is not None and recs[0].offset < nxt:
                recs = [r for r in recs if r.offset >= nxt]
                self.metrics.stale_dropped += len(by_part[p]) - len(recs)
                if not recs:
                    continue
            try:
                outs = proc.process(recs)
            except Exception as exc:
                raise _ProcessorFailure(
                    f"stage {self.spec.name!r}: processor of partition {p} raised "
                    f"{type(exc).__name__}: {exc} (offsets {recs[0].offset}..{recs[-1].offset})"
                ) from exc
            self._dirty = True
            self._processed.add(p)
            self._next[p] = recs[-1].offset + 1
            self.metrics.consumed += len(recs)
            if outs:
                self._emit(outs)

    def _begin(self) -> None:
        if not self._txn_open:
            assert self._producer is not None
            self._producer.begin_transaction()
            self._txn_open = True
            self._txn_started_at = time.monotonic()

    def _emit(self, outs: list[Record]) -> None:
        self._begin()
        producer = self._producer
        assert producer is not None
        produce = producer.produce
        topics = self.output_topics
        counts = self.metrics.produced
        for rec in outs:
            try:
                topic = topics[rec.topic]
            except KeyError:
                raise _ProcessorFailure(
                    f"stage {self.spec.name!r} emitted to undeclared topic {rec.topic!r} "
                    f"(declared: {sorted(topics)})"
                ) from None
            try:
                produce(topic, rec.value, rec.key, headers=rec.headers)  # type: ignore[arg-type]
            except BufferError:
                self._produce_blocking(topic, rec.value, rec.key, headers=rec.headers)
            counts[rec.topic] += 1

    def _produce_blocking(self, topic: str, value: Any, key: Any, **kwargs: Any) -> None:
        """Produce, polling for delivery reports while the local queue is full."""
        producer = self._producer
        assert producer is not None
        while True:
            producer.poll(0.05)
            try:
                producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:
                if self._fatal_error is not None:
                    self._raise_pending()

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint(self, reason: str) -> None:
        """Commit outputs + state changes + offsets of the open transaction (if any work)."""
        if not self._dirty:
            return
        t0 = time.monotonic()
        producer = self._producer
        consumer = self._consumer
        assert producer is not None and consumer is not None
        hook = self.options.fault_hook
        if hook is not None:
            hook("checkpoint")
        self._begin()
        changelog = self.changelog_topic
        offsets: list[TopicPartition] = []
        n_changes = 0
        for p, proc in self._procs.items():
            try:
                changes = proc.take_changes()
            except Exception as exc:
                raise _ProcessorFailure(
                    f"stage {self.spec.name!r}: take_changes() of partition {p} raised "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            for key, value in changes:
                try:
                    producer.produce(changelog, value, key, partition=p)
                except BufferError:
                    self._produce_blocking(changelog, value, key, partition=p)
            n_changes += len(changes)
            nxt = self._next.get(p)
            if nxt is not None and (changes or p in self._processed):
                marker = encode_marker(nxt)
                try:
                    producer.produce(changelog, marker, OFFSET_MARKER_KEY, partition=p)
                except BufferError:
                    self._produce_blocking(changelog, marker, OFFSET_MARKER_KEY, partition=p)
                n_changes += 1
                offsets.append(TopicPartition(self.input_topic, p, nxt))
        timeout = self.options.txn_call_timeout_s
        if offsets:
            group_metadata = consumer.consumer_group_metadata()
            self._retrying(
                lambda: producer.send_offsets_to_transaction(offsets, group_metadata, timeout),
                "send_offsets_to_transaction",
            )

        def commit() -> None:
            if hook is not None:
                hook("commit")
            producer.commit_transaction(timeout)

        self._retrying(commit, "commit_transaction")
        self._txn_open = False
        self._txn_started_at = None
        self._dirty = False
        self._processed.clear()
        self._consecutive_aborts = 0
        self._consecutive_replacements = 0
        now = time.monotonic()
        self._last_checkpoint = now
        m = self.metrics
        m.checkpoints += 1
        m.changelog_records += n_changes
        m.last_checkpoint_ms = (now - t0) * 1000
        if reason != "interval":
            self._log.info(
                "checkpoint",
                reason=reason,
                partitions=len(offsets),
                changelog_records=n_changes,
                ms=round(m.last_checkpoint_ms, 1),
            )

    def _checkpoint_or_rewind(self, reason: str) -> None:
        try:
            self._checkpoint(reason)
        except KafkaException as exc:
            self._handle_kafka_exception(exc)

    def _retrying(self, fn: Callable[[], Any], what: str) -> Any:
        """Call ``fn``, retrying retriable Kafka errors with backoff (forever unless stopping)."""
        delay = 0.1
        start = time.monotonic()
        while True:
            try:
                return self._txn_call(fn, what)
            except KafkaException as exc:
                err = _kafka_error(exc)
                if err is None or err.fatal() or err.txn_requires_abort() or not err.retriable():
                    raise
                waited = time.monotonic() - start
                if self._stop.is_set() and waited > self.options.shutdown_retry_s:
                    raise FatalRunnerError(
                        f"stage {self.spec.name!r}: {what} still failing after {waited:.0f}s "
                        f"while stopping: {err}"
                    ) from exc
                self._log.warning("kafka_retry", op=what, error=str(err), waited_s=round(waited, 1))
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                if self._producer is not None:
                    self._producer.poll(0)

    def _txn_call(self, fn: Callable[[], Any], what: str) -> Any:
        """Run a blocking transactional producer call under a watchdog.

        librdkafka may ignore the timeout of a transactional call (issues #5456, #5511: seen here
        with ``send_offsets_to_transaction`` after a broker restart). The call runs in a helper
        thread; if it has not returned ``txn_call_timeout_s + txn_watchdog_margin_s`` later,
        :class:`_ProducerHung` is raised and the producer must be replaced. The stuck thread
        keeps the only reference to the old producer, so it is never destroyed from here.
        """
        outcome: list[tuple[bool, Any]] = []
        done = threading.Event()

        def target() -> None:
            try:
                outcome.append((True, fn()))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                outcome.append((False, exc))
            finally:
                done.set()

        threading.Thread(target=target, name=f"kafka-{what}", daemon=True).start()
        deadline = self.options.txn_call_timeout_s + self.options.txn_watchdog_margin_s
        if not done.wait(deadline):
            self._producer_hung = True
            raise _ProducerHung(
                f"stage {self.spec.name!r}: {what} did not return within {deadline:.0f}s"
            )
        ok, value = outcome[0]
        if ok:
            return value
        raise value

    def _new_producer(self) -> None:
        """Create the transactional producer and initialise transactions (fences predecessors)."""
        pconf = producer_config(self.kafka, self.spec, self.options)
        pconf["error_cb"] = self._on_client_error
        producer = Producer(pconf)
        self._producer = producer
        self._producer_hung = False
        self._txn_open = False
        self._txn_started_at = None
        timeout = self.options.txn_call_timeout_s
        self._retrying(lambda: producer.init_transactions(timeout), "init_transactions")

    def _txn_timed_out(self, err: KafkaError | None) -> bool:
        """True when ``err`` is the epoch bump of *our* transaction timing out at the coordinator.

        librdkafka reports a transaction the coordinator aborted on ``transaction.timeout.ms`` as
        a fatal "fenced" error. When our open transaction is older than that timeout, that is the
        cause (recoverable: new producer, rewind); otherwise another instance with the same
        transactional id fenced us (fatal).
        """
        if err is None or err.code() not in _FENCING_CODES or self._txn_started_at is None:
            return False
        age_ms = (time.monotonic() - self._txn_started_at) * 1000
        return age_ms >= self.options.transaction_timeout_ms

    def _replace_producer(
        self,
        cause: BaseException,
        why: str = "transactional call hung (librdkafka #5456/#5511)",
    ) -> None:
        """Give up the producer: a new one with the same transactional id fences it and aborts its
        open transaction. The caller must rewind (or flag a rewind)."""
        self._consecutive_replacements += 1
        self.metrics.producer_replacements += 1
        self._log.error(
            "producer_replaced",
            reason=str(cause),
            why=why,
            consecutive=self._consecutive_replacements,
        )
        if self._consecutive_replacements > self.options.max_producer_replacements:
            raise FatalRunnerError(
                f"stage {self.spec.name!r}: producer hung {self._consecutive_replacements} times "
                f"in a row: {cause}"
            ) from cause
        self._dirty = False
        self._processed.clear()
        try:
            self._new_producer()
        except _ProducerHung as exc:
            raise FatalRunnerError(
                f"stage {self.spec.name!r}: new producer hung too: {exc}"
            ) from exc

    def _handle_kafka_exception(self, exc: KafkaException) -> None:
        err = _kafka_error(exc)
        if err is not None and err.fatal() and self._txn_timed_out(err):
            self._fatal_error = None
            self._replace_producer(exc, "transaction timed out at the coordinator")
            self._rewind(f"transaction timed out: {err}")
            return
        if err is not None and err.fatal():
            self._fatal_error = err
            raise FatalRunnerError(f"stage {self.spec.name!r}: fatal Kafka error: {err}") from exc
        self._abort_transaction(str(err) if err is not None else str(exc))
        self._rewind(f"transaction aborted: {err}")

    def _abort_transaction(self, reason: str) -> None:
        """Abort the open transaction (if any); its outputs never become visible."""
        self._consecutive_aborts += 1
        self.metrics.aborts += 1
        self._log.warning("transaction_abort", reason=reason, consecutive=self._consecutive_aborts)
        if self._consecutive_aborts > self.options.max_consecutive_aborts:
            raise FatalRunnerError(
                f"stage {self.spec.name!r}: {self._consecutive_aborts} transactions aborted in a "
                f"row without a successful commit; last reason: {reason}"
            )
        if self._txn_open:
            producer = self._producer
            assert producer is not None
            try:
                self._retrying(
                    lambda: producer.abort_transaction(self.options.txn_call_timeout_s),
                    "abort_transaction",
                )
            except _ProducerHung as hung:
                self._replace_producer(hung)  # the new producer's init aborts the transaction
            except KafkaException as exc:
                err = _kafka_error(exc)
                if self._txn_timed_out(err):
                    self._fatal_error = None
                    # The coordinator already aborted it; a new producer starts clean.
                    self._replace_producer(exc, "transaction timed out at the coordinator")
                    return
                if err is not None:
                    self._fatal_error = err
                raise FatalRunnerError(
                    f"stage {self.spec.name!r}: abort_transaction failed: {exc}"
                ) from exc
            self._txn_open = False
            self._txn_started_at = None
        self._dirty = False
        self._processed.clear()

    def _rewind(self, reason: str) -> None:
        """After an abort: rebuild every owned processor from the changelog and seek back."""
        self._rewind_needed = False
        parts = sorted(self._procs)
        self._drop(parts)
        if not parts:
            return
        self._log.warning("rewind", reason=reason, partitions=parts)
        try:
            committed = self._committed(parts)
            self._restore(committed)
        except RestoreInterrupted:
            return  # stopping: nothing was processed past the last commit
        consumer = self._consumer
        assert consumer is not None
        for p in parts:
            off = committed[p]
            consumer.seek(
                TopicPartition(self.input_topic, p, off if off is not None else OFFSET_BEGINNING)
            )
        self._last_checkpoint = time.monotonic()

    # ------------------------------------------------------------------ partitions

    def _committed(self, parts: Sequence[int]) -> dict[int, int | None]:
        """Stable committed offsets (read_committed consumers wait for pending transactions)."""
        consumer = self._consumer
        assert consumer is not None
        tps = [TopicPartition(self.input_topic, p) for p in parts]
        start = time.monotonic()
        while True:
            try:
                res = consumer.committed(tps, timeout=10)
                break
            except KafkaException as exc:
                err = _kafka_error(exc)
                if (
                    err is None
                    or err.fatal()
                    or not (err.retriable() or err.code() in _RETRIABLE_OFFSET_FETCH)
                ):
                    raise
                if self._stop.is_set():
                    raise RestoreInterrupted("stop requested while fetching offsets") from exc
                # A previous owner's transaction is still pending (it crashed with offsets sent):
                # the broker answers once it commits or times out.
                self._log.warning(
                    "waiting_for_stable_offsets",
                    partitions=list(parts),
                    waited_s=round(time.monotonic() - start, 1),
                    error=str(err),
                )
        out: dict[int, int | None] = {}
        for tp in res:
            if tp.error is not None:
                raise FatalRunnerError(
                    f"committed offset of {tp.topic}[{tp.partition}]: {tp.error}"
                )
            out[tp.partition] = tp.offset if tp.offset >= 0 else None
        return out

    def _restore(self, committed: dict[int, int | None]) -> None:
        t0 = time.monotonic()
        settle = self.options.restore_settle_timeout_s
        if settle is None:
            settle = self.options.transaction_timeout_ms / 1000 + 10
        results = read_changelog(
            self.kafka,
            self.changelog_topic,
            committed,
            group_id=self.options.group_id,
            settle_timeout_s=settle,
            should_stop=self._stop.is_set,
        )
        records = 0
        for p, res in sorted(results.items()):
            proc = self.spec.factory(p)
            try:
                if res.entries:
                    proc.restore(list(res.entries.items()))
            except Exception as exc:
                raise _ProcessorFailure(
                    f"stage {self.spec.name!r}: restore() of partition {p} raised "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            self._procs[p] = proc
            self._next[p] = committed[p]
            self._eof[p] = False
            records += res.records
        seconds = time.monotonic() - t0
        self.metrics.restored_records += records
        self.metrics.restore_seconds += seconds
        self._log.info(
            "restored",
            partitions=sorted(results),
            records=records,
            keys=sum(len(r.entries) for r in results.values()),
            seconds=round(seconds, 3),
            committed={p: o for p, o in sorted(committed.items())},
        )

    def _drop(self, parts: Sequence[int]) -> None:
        for p in parts:
            self._procs.pop(p, None)
            self._next.pop(p, None)
            self._eof.pop(p, None)
            self._processed.discard(p)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            parts = sorted(tp.partition for tp in partitions if tp.topic == self.input_topic)
            self.metrics.assigned += len(parts)
            if self._closing or self._pending_exc is not None or not parts:
                consumer.incremental_assign(partitions)
                return
            self._log.info("partitions_assigned", partitions=parts)
            try:
                committed = self._committed(parts)
                self._restore(committed)
            except RestoreInterrupted:
                committed = dict.fromkeys(parts)  # stopping: assigned but never processed
            consumer.incremental_assign(
                [
                    TopicPartition(
                        self.input_topic,
                        p,
                        c if (c := committed[p]) is not None else OFFSET_INVALID,
                    )
                    for p in parts
                ]
            )
        except BaseException as exc:  # surfaced by the loop after consume() returns
            self._pending_exc = exc
            try:
                consumer.incremental_assign(partitions)
            except Exception:  # noqa: BLE001
                pass

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        parts = sorted(tp.partition for tp in partitions if tp.topic == self.input_topic)
        try:
            self.metrics.revoked += len(parts)
            if not self._closing:
                self._log.info("partitions_revoked", partitions=parts)
            if not self._closing and self._pending_exc is None and self._dirty:
                try:
                    self._checkpoint("revoke")
                except KafkaException as exc:
                    err = _kafka_error(exc)
                    if err is not None and err.fatal():
                        self._fatal_error = err
                    else:
                        self._abort_transaction(f"checkpoint on revoke failed: {err}")
                        self._rewind_needed = True
                except _ProducerHung as hung:
                    self._replace_producer(hung)
                    self._rewind_needed = True
        except BaseException as exc:
            self._pending_exc = exc
        finally:
            self._drop(parts)
            try:
                consumer.incremental_unassign(partitions)
            except Exception as exc:  # noqa: BLE001
                if self._pending_exc is None and not self._closing:
                    self._pending_exc = exc

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        parts = sorted(tp.partition for tp in partitions if tp.topic == self.input_topic)
        try:
            self.metrics.lost += len(parts)
            self._log.warning("partitions_lost", partitions=parts)
            if not self._closing and (self._dirty or self._txn_open):
                # Another member may own these already: our open work must not commit.
                self._abort_transaction("partitions lost")
                self._rewind_needed = True
        except BaseException as exc:
            self._pending_exc = exc
        finally:
            self._drop(parts)
            try:
                consumer.incremental_unassign(partitions)
            except Exception:  # noqa: BLE001
                pass

    # ------------------------------------------------------------------ client errors

    def _on_client_error(self, err: KafkaError) -> None:
        """librdkafka ``error_cb`` (background errors: broker down, fatal producer errors)."""
        if err.fatal():
            self._fatal_error = err
            self._log.error("kafka_fatal_error", error=str(err))
            return
        now = time.monotonic()
        code = err.code()
        if now - self._error_log_at.get(code, 0.0) >= 5.0:  # at most one line per code per 5 s
            self._error_log_at[code] = now
            self._log.warning("kafka_client_error", error=str(err))

    def _consumer_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal_error = err
            raise FatalRunnerError(f"stage {self.spec.name!r}: fatal consumer error: {err}")
        self._on_client_error(err)


def run_all(runners: Sequence[StageRunner]) -> None:
    """Run several stage runners in threads of one process until all stop.

    SIGTERM/SIGINT (when called from the main thread) stop every runner; when one runner fails the
    others are stopped too and the first :class:`FatalRunnerError` is re-raised.
    """
    errors: list[BaseException] = []

    def target(r: StageRunner) -> None:
        try:
            r.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)
            for other in runners:
                other.stop()

    threads = [
        threading.Thread(target=target, args=(r,), name=f"stage-{r.spec.name}", daemon=True)
        for r in runners
    ]
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def handler(signum: int, _frame: Any) -> None:
            for r in runners:
                r.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    finally:
        for signum, h in previous.items():
            signal.signal(signum, h)
    if errors:
        raise errors[0]


# ---------------------------------------------------------------------- dev entry point


def load_spec(ref: str) -> StageSpec:
    """Import ``package.module:attr``; ``attr`` is a StageSpec or a callable returning one."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--spec must look like package.module:attr, not {ref!r}")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, StageSpec) and callable(obj):
        obj = obj()
    if not isinstance(obj, StageSpec):
        raise TypeError(f"{ref} is not a StageSpec")
    return obj


def parse_topic_map(items: Sequence[str]) -> dict[str, str]:
    """``["logical=real", ...]`` -> ``{"logical": "real"}``."""
    out: dict[str, str] = {}
    for item in items:
        logical, sep, real = item.partition("=")
        if not sep or not logical or not real:
            raise ValueError(f"--topic must look like logical=real, not {item!r}")
        out[logical] = real
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the dev entry point (``python -m consumers.kafka.runner``)."""
    parser.add_argument("--spec", required=True, help="package.module:attr of a StageSpec")
    parser.add_argument("--bootstrap-servers", default=None)
    parser.add_argument("--group-id", required=True)
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="LOGICAL=REAL",
        help="map a logical topic of the stage to a real topic (repeat)",
    )
    parser.add_argument("--instance-id", default=None)
    parser.add_argument("--static-membership", action="store_true")
    parser.add_argument("--session-timeout-ms", type=int, default=45000)
    parser.add_argument("--commit-interval-ms", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--transaction-timeout-ms", type=int, default=60000)
    parser.add_argument("--changelog-topic", default=None)
    parser.add_argument("--stop-at-end", action="store_true")
    parser.add_argument("--progress-interval-s", type=float, default=10.0)
    parser.add_argument("--txn-call-timeout-s", type=float, default=10.0)
    parser.add_argument("--txn-watchdog-margin-s", type=float, default=10.0)


def configure_logging() -> None:
    """JSON lines on stderr (used by the dev entry point only)."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one stage until stopped. Exit codes: 0 clean stop, 2 fatal runner error, 1 other."""
    parser = argparse.ArgumentParser(prog="python -m consumers.kafka.runner", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging()
    kafka = KafkaSettings()
    if args.bootstrap_servers:
        kafka = kafka.model_copy(update={"bootstrap_servers": args.bootstrap_servers})
    spec = load_spec(args.spec)
    options = RunnerOptions(
        group_id=args.group_id,
        instance_id=args.instance_id or default_instance_id(),
        static_membership=args.static_membership,
        session_timeout_ms=args.session_timeout_ms,
        commit_interval_ms=args.commit_interval_ms,
        batch_size=args.batch_size,
        transaction_timeout_ms=args.transaction_timeout_ms,
        changelog_topic=args.changelog_topic,
        stop_at_end=args.stop_at_end,
        progress_interval_s=args.progress_interval_s,
        txn_call_timeout_s=args.txn_call_timeout_s,
        txn_watchdog_margin_s=args.txn_watchdog_margin_s,
    )
    runner = StageRunner(kafka, spec, parse_topic_map(args.topic), options)
    try:
        runner.run()
    except FatalRunnerError as exc:
        log.error("runner_fatal", stage=spec.name, error=str(exc), exit_code=2)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
