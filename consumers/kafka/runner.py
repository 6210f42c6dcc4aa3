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
  (default 100 ms, as Kafka Streams under exactly-once) plus the commit round trip after the
  input arrived; a flag crosses three stages (``bench/latency.py`` measures it end to end). A
  runner that is behind (its last ``consume`` returned a full batch) checkpoints every
  ``catchup_commit_interval_ms`` (default 1 s) instead, as its outputs wait for the backlog anyway.
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

How the runner is split: the checkpoint (one transaction's work and its named steps, with an
explicit status) is :mod:`consumers.kafka.checkpoint`; the transactional producer and its
watchdog :mod:`consumers.kafka.transactional`; client configurations :mod:`consumers.kafka.clients`;
names :mod:`consumers.kafka.naming`; batches, committed offsets and restore
:mod:`consumers.kafka.partitions`; metrics and health :mod:`consumers.kafka.telemetry`. Run any
stage from a shell with ``distillwatch run-stage`` (:mod:`consumers.run_stage`).
"""

from __future__ import annotations

import enum
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from consumers.config import KafkaSettings
from consumers.core.stage import Processor, StageSpec
from consumers.kafka.admin import admin_client, changelog_spec, ensure_topics, topic_partitions
from consumers.kafka.changelog import RestoreInterrupted
from consumers.kafka.checkpoint import Checkpoint, TxnStatus
from consumers.kafka.clients import RunnerOptions, consumer_config, kafka_error, producer_config
from consumers.kafka.errors import FatalRunnerError, ProcessorFailure, TopicError
from consumers.kafka.metrics import RunnerMetrics
from consumers.kafka.naming import changelog_topic, transactional_id
from consumers.kafka.partitions import committed_offsets, restore_processors, split_batch
from consumers.kafka.telemetry import StageTelemetry, Telemetry
from consumers.kafka.transactional import ProducerHung, TransactionalProducer

__all__ = [
    "FatalRunnerError",
    "RunnerOptions",
    "RunnerPhase",
    "StageRunner",
    "run_all",
]

log = structlog.get_logger("distillwatch.kafka.runner")

# What librdkafka reports when the coordinator bumped our epoch (fencing or transaction timeout).
_FENCING_CODES = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)
_DEFAULT_MAX_POLL_INTERVAL_MS = 300_000  # librdkafka's default max.poll.interval.ms


class RunnerPhase(enum.Enum):
    """The runner's life: ``NEW`` → ``RUNNING`` (consuming) → ``CLOSING`` (leaving the group:
    rebalance callbacks then only hand partitions back) → ``STOPPED``."""

    NEW = "new"
    RUNNING = "running"
    CLOSING = "closing"
    STOPPED = "stopped"


class StageRunner:
    """Runs one stage exactly-once against Kafka. See the module docstring for the guarantee.

    ``topics`` maps the stage's logical topic names (``spec.inputs`` and ``spec.outputs``) to real
    topic names. Call :meth:`run` (blocks; returns normally after :meth:`stop`, SIGTERM/SIGINT or
    ``stop_at_end``; raises :class:`FatalRunnerError` otherwise).

    The work since the last commit is :attr:`checkpoint` (:class:`~consumers.kafka.checkpoint.
    Checkpoint`); its status says what may happen next. ``ABORTED`` means the processors hold
    uncommitted state: the loop rewinds (restores from the changelog, seeks back) before it
    processes anything else.
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
        self.changelog_topic = options.changelog_topic or changelog_topic(
            kafka, options.group_id, spec.name
        )
        self.transactional_id = transactional_id(options.group_id, spec.name, options.instance_id)
        self.metrics = RunnerMetrics(spec.outputs)
        self.telemetry: StageTelemetry = (options.telemetry or Telemetry()).stage(self)
        self.phase = RunnerPhase.NEW
        self.checkpoint: Checkpoint | None = None
        self._log = log.bind(stage=spec.name, group=options.group_id, instance=options.instance_id)
        self._stop = threading.Event()
        self._consumer: Consumer | None = None
        self._producer: TransactionalProducer | None = None
        self._procs: dict[int, Processor] = {}
        self._next: dict[int, int | None] = {}  # next input offset per owned partition
        self._eof: dict[int, bool] = {}
        self._end_seen: dict[int, int] = {}  # position at the last end-of-partition event
        self._last_ts: dict[int, int] = {}  # Kafka timestamp of the last record processed
        self._restoring: dict[int, int] = {}  # partition -> changelog records left to read
        self._assignment_handled = False
        self._pending_exc: BaseException | None = None
        self._client_fatal: KafkaError | None = None  # from librdkafka's error callback
        self._consecutive_aborts = 0
        self._consecutive_replacements = 0
        self._error_log_at: dict[int, float] = {}
        self.last_poll = time.monotonic()
        self.max_poll_interval_s = _DEFAULT_MAX_POLL_INTERVAL_MS / 1000

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

    def processors(self) -> dict[int, Processor]:
        """A copy of partition -> processor (for metrics; read from any thread)."""
        return dict(self._procs)

    def positions(self) -> dict[int, int | None]:
        """Per owned partition, how far the input was read: the next offset to process, or the
        position at the last end of partition when that is further (past transaction markers)."""
        out: dict[int, int | None] = {}
        for p, nxt in list(self._next.items()):
            end = self._end_seen.get(p)
            out[p] = end if end is not None and (nxt is None or end > nxt) else nxt
        return out

    def last_record_ts(self, partition: int) -> int | None:
        return self._last_ts.get(partition)

    def restoring(self) -> dict[int, int]:
        """Partition -> changelog records left to read, for partitions being restored."""
        return dict(self._restoring)

    @property
    def live(self) -> bool:
        """Not stuck: when running, the loop polled within ``max.poll.interval.ms`` (a restore
        counts as polling: a restoring consumer is not dead)."""
        if self.phase is not RunnerPhase.RUNNING:
            return True
        return time.monotonic() - self.last_poll <= self.max_poll_interval_s

    @property
    def ready(self) -> bool:
        """Running with its first assignment handled and no partition being restored (or done:
        a runner that stopped has nothing left to restore)."""
        if self.phase is RunnerPhase.STOPPED:
            return True
        return (self.phase is RunnerPhase.RUNNING and self._assignment_handled
                and not self._restoring)

    def run(self) -> None:
        """Consume, process, produce and checkpoint until stopped.

        Installs SIGTERM/SIGINT handlers when called from the main thread (restored on return).
        Returns normally after a clean stop (everything processed is committed, the group is
        left). Raises :class:`FatalRunnerError` when it must not go on.
        """
        if self.phase is not RunnerPhase.NEW:
            raise RuntimeError("StageRunner.run() can be called once")
        self.phase = RunnerPhase.RUNNING
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
        except ProcessorFailure as exc:
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
            self.phase = RunnerPhase.STOPPED
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
        cl = self.changelog_topic
        admin = admin_client(self.kafka)  # one client (each new one costs a connection, ~0.08 s)
        have = topic_partitions(self.kafka, [self.input_topic, *self.output_topics.values(), cl], admin=admin)
        n_in = have[self.input_topic]
        if n_in is None:
            raise TopicError(f"stage {self.spec.name!r}: input topic {self.input_topic!r} missing")
        absent = [t for t in self.output_topics.values() if have[t] is None]
        if absent:
            raise TopicError(f"stage {self.spec.name!r}: output topics missing: {absent}")
        n_cl = have[cl]
        if self.options.create_changelog and (n_cl is None or n_cl < n_in):
            # absent: created; too few partitions: ensure_topics raises TopicError
            ensure_topics(self.kafka, [changelog_spec(cl, n_in, self.options.changelog_replication_factor)],
                          admin=admin)
        elif n_cl is None or n_cl < n_in:
            raise TopicError(f"changelog {cl!r} has {n_cl} partitions, input {self.input_topic!r} has {n_in}")

    def _start(self) -> None:
        self._check_topics()
        self._new_producer()
        self.checkpoint = self._new_checkpoint()
        cconf = consumer_config(self.kafka, self.spec.name, self.options)
        cconf["error_cb"] = self._on_client_error
        if self.options.statistics_interval_ms > 0:
            cconf["statistics.interval.ms"] = self.options.statistics_interval_ms
            cconf["stats_cb"] = self.telemetry.on_statistics
        self.max_poll_interval_s = (
            int(cconf.get("max.poll.interval.ms", _DEFAULT_MAX_POLL_INTERVAL_MS)) / 1000
        )
        self._consumer = Consumer(cconf)
        self._consumer.subscribe(
            [self.input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self.last_poll = time.monotonic()
        self._log.info(
            "runner_started",
            input=self.input_topic,
            outputs=self.output_topics,
            changelog=self.changelog_topic,
            transactional_id=self.transactional_id,
        )

    def _shutdown(self) -> None:
        self._log.info("runner_stopping")
        self._commit_or_rewind("shutdown")
        self._raise_pending()
        self.phase = RunnerPhase.CLOSING
        assert self._consumer is not None and self._producer is not None
        self._consumer.close()  # revokes (nothing left to commit) and leaves the group
        self._raise_pending()
        self._producer.flush(10)

    def _fail_cleanup(self) -> None:
        """Best effort after a fatal error: abort the open transaction, leave the group."""
        self.phase = RunnerPhase.CLOSING
        self._stop.set()
        cp = self.checkpoint
        if (self._producer is not None and cp is not None and cp.txn_open
                and self._client_fatal is None):
            self._producer.abort_quietly(10)
            cp.abandon()
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception:  # noqa: BLE001
                pass

    # ------------------------------------------------------------------ the loop

    def _raise_pending(self) -> None:
        if self._client_fatal is not None and self._txn_timed_out(self._client_fatal):
            err, self._client_fatal = self._client_fatal, None
            # abandons the checkpoint: the loop rewinds before processing again
            self._replace_producer(KafkaException(err), "transaction timed out at the coordinator")
        if self._pending_exc is not None:
            exc, self._pending_exc = self._pending_exc, None
            raise exc
        if self._client_fatal is not None:
            raise FatalRunnerError(
                f"stage {self.spec.name!r}: fatal Kafka client error: {self._client_fatal}"
            )

    def _raise_if_client_fatal(self) -> None:
        """Called while the producer's queue is full: stop waiting on a fatal client error."""
        if self._client_fatal is not None:
            self._raise_pending()

    def _step(self) -> None:
        consumer = self._consumer
        assert consumer is not None and self._producer is not None
        msgs = consumer.consume(self.options.batch_size, self.options.poll_timeout_s)
        self.last_poll = time.monotonic()
        self._raise_pending()
        cp = self.checkpoint
        assert cp is not None
        if cp.status is TxnStatus.ABORTED:
            self._rewind("transaction aborted")
            return
        try:
            if msgs:
                if self.options.fault_hook is not None:
                    self.options.fault_hook("batch")
                t0 = time.monotonic()
                self._process(msgs)
                self.telemetry.batch_done(time.monotonic() - t0)
            self._producer.poll(0)
            cp = self.checkpoint
            assert cp is not None
            if cp.dirty and cp.age_s() * 1000 >= self._interval_ms(len(msgs)):
                self._commit("interval")
            if (
                self.options.stop_at_end
                and self._procs
                and not self._stop.is_set()
                and all(self._eof.get(p, False) for p in self._procs)
            ):
                self._commit("end")
                if self.checkpoint is None or self.checkpoint.status is not TxnStatus.ABORTED:
                    self._log.info("input_exhausted", partitions=sorted(self._procs))
                    self._stop.set()
        except KafkaException as exc:
            self._handle_kafka_exception(exc)
        except ProducerHung as exc:
            self._replace_producer(exc)
            self._rewind(f"producer replaced: {exc}")

    def _interval_ms(self, n_msgs: int) -> int:
        """How old the open checkpoint may get: ``commit_interval_ms``; while the runner is behind
        (the last ``consume`` returned a full batch: more is waiting) ``catchup_commit_interval_ms``
        if that is longer. Catching up, each checkpoint costs a broker round trip and rewrites the
        state of every account the batch changed, and its outputs' latency is the backlog anyway;
        under steady load batches are not full and outputs stay ``commit_interval_ms`` behind."""
        o = self.options
        if n_msgs >= o.batch_size:
            return max(o.commit_interval_ms, o.catchup_commit_interval_ms)
        return o.commit_interval_ms

    def _process(self, msgs: list[Message]) -> None:
        by_part, eof_at = split_batch(msgs, self.input_topic, self._consumer_error)
        eof = self._eof
        procs = self._procs
        for p in by_part:
            if p in procs:
                eof[p] = False
        if eof_at:
            for p, end in eof_at.items():
                recs = by_part.get(p)
                if p in procs:
                    self._end_seen[p] = end
                    if not recs or recs[-1].offset < end:
                        eof[p] = True
        cp = self.checkpoint
        assert cp is not None
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
                raise ProcessorFailure(
                    f"stage {self.spec.name!r}: processor of partition {p} raised "
                    f"{type(exc).__name__}: {exc} (offsets {recs[0].offset}..{recs[-1].offset})"
                ) from exc
            cp.mark_processed(p)
            last = recs[-1]
            self._next[p] = last.offset + 1
            if last.timestamp_ms is not None:
                self._last_ts[p] = last.timestamp_ms
            self.metrics.consumed += len(recs)
            if outs:
                cp.emit(outs, self.metrics.produced)
                self.telemetry.outputs(outs)

    # ------------------------------------------------------------------ checkpoints

    def _new_checkpoint(self) -> Checkpoint:
        assert self._producer is not None
        return Checkpoint(self._producer, stage=self.spec.name, input_topic=self.input_topic,
                          changelog_topic=self.changelog_topic, output_topics=self.output_topics)

    def _commit(self, reason: str) -> None:
        """Commit the current checkpoint (if it did any work) and start the next one."""
        consumer = self._consumer
        cp = self.checkpoint
        assert consumer is not None and cp is not None
        summary = cp.commit(self._procs, self._next, consumer.consumer_group_metadata,
                            self.options.fault_hook)
        if summary is None:
            return
        self.checkpoint = self._new_checkpoint()
        self._consecutive_aborts = 0
        self._consecutive_replacements = 0
        m = self.metrics
        m.checkpoints += 1
        m.changelog_records += summary.changelog_records
        m.last_checkpoint_ms = summary.seconds * 1000
        self.telemetry.checkpoint_done(summary.seconds)
        if reason != "interval":
            self._log.info(
                "checkpoint",
                reason=reason,
                partitions=summary.partitions,
                changelog_records=summary.changelog_records,
                ms=round(m.last_checkpoint_ms, 1),
            )

    def _commit_or_rewind(self, reason: str) -> None:
        try:
            self._commit(reason)
        except KafkaException as exc:
            self._handle_kafka_exception(exc)

    def _new_producer(self) -> None:
        """Create the transactional producer and initialise transactions (fences predecessors).

        The current checkpoint (if any) keeps the old producer: it is finished (aborted) and the
        rewind that must follow starts a new checkpoint with the new producer."""
        o = self.options
        pconf = producer_config(self.kafka, self.spec.name, o)
        pconf["error_cb"] = self._on_client_error
        self._producer = TransactionalProducer(
            pconf, name=self.spec.name, call_timeout_s=o.txn_call_timeout_s,
            watchdog_margin_s=o.txn_watchdog_margin_s, shutdown_retry_s=o.shutdown_retry_s,
            should_stop=self._stop.is_set, on_full=self._raise_if_client_fatal, log=self._log)
        self._producer.init_transactions()

    def _txn_timed_out(self, err: KafkaError | None) -> bool:
        """True when ``err`` is the epoch bump of *our* transaction timing out at the coordinator.

        librdkafka reports a transaction the coordinator aborted on ``transaction.timeout.ms`` as
        a fatal "fenced" error. When our open transaction is older than that timeout, that is the
        cause (recoverable: new producer, rewind); otherwise another instance with the same
        transactional id fenced us (fatal).
        """
        if err is None or err.code() not in _FENCING_CODES or self.checkpoint is None:
            return False
        age_ms = self.checkpoint.txn_age_ms()
        return age_ms is not None and age_ms >= self.options.transaction_timeout_ms

    def _replace_producer(
        self,
        cause: BaseException,
        why: str = "transactional call hung (librdkafka #5456/#5511)",
    ) -> None:
        """Give up the producer: a new one with the same transactional id fences it and aborts its
        open transaction. The checkpoint is abandoned: the loop rewinds before processing again."""
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
        if self.checkpoint is not None:
            self.checkpoint.abandon()
        try:
            self._new_producer()
        except ProducerHung as exc:
            raise FatalRunnerError(
                f"stage {self.spec.name!r}: new producer hung too: {exc}"
            ) from exc

    def _handle_kafka_exception(self, exc: KafkaException) -> None:
        err = kafka_error(exc)
        if err is not None and err.fatal() and self._txn_timed_out(err):
            self._client_fatal = None
            self._replace_producer(exc, "transaction timed out at the coordinator")
            self._rewind(f"transaction timed out: {err}")
            return
        if err is not None and err.fatal():
            self._client_fatal = err
            raise FatalRunnerError(f"stage {self.spec.name!r}: fatal Kafka error: {err}") from exc
        self._abort_transaction(str(err) if err is not None else str(exc))
        self._rewind(f"transaction aborted: {err}")

    def _abort_transaction(self, reason: str) -> None:
        """Abort the checkpoint's transaction (if open); its outputs never become visible."""
        self._consecutive_aborts += 1
        self.metrics.aborts += 1
        self.telemetry.aborted()
        self._log.warning("transaction_abort", reason=reason, consecutive=self._consecutive_aborts)
        if self._consecutive_aborts > self.options.max_consecutive_aborts:
            raise FatalRunnerError(
                f"stage {self.spec.name!r}: {self._consecutive_aborts} transactions aborted in a "
                f"row without a successful commit; last reason: {reason}"
            )
        cp = self.checkpoint
        assert cp is not None
        try:
            cp.abort()
        except ProducerHung as hung:
            self._replace_producer(hung)  # the new producer's init aborts the transaction
        except KafkaException as exc:
            err = kafka_error(exc)
            if self._txn_timed_out(err):
                self._client_fatal = None
                # The coordinator already aborted it; a new producer starts clean.
                self._replace_producer(exc, "transaction timed out at the coordinator")
                return
            if err is not None:
                self._client_fatal = err
            raise FatalRunnerError(
                f"stage {self.spec.name!r}: abort_transaction failed: {exc}"
            ) from exc

    def _rewind(self, reason: str) -> None:
        """After an abort: rebuild every owned processor from the changelog and seek back."""
        self.checkpoint = self._new_checkpoint()
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
        self.checkpoint = self._new_checkpoint()

    # ------------------------------------------------------------------ partitions

    def _committed(self, parts: Sequence[int]) -> dict[int, int | None]:
        consumer = self._consumer
        assert consumer is not None
        return committed_offsets(consumer, self.input_topic, parts, should_stop=self._stop.is_set,
                                 on_wait=self._waiting_for_offsets)

    def _waiting_for_offsets(self, parts: Sequence[int], waited_s: float, error: str) -> None:
        # A previous owner's transaction is still pending (it crashed with offsets sent): the
        # broker answers once it commits or times out. Waiting on the broker is not being stuck.
        self.last_poll = time.monotonic()
        self._log.warning("waiting_for_stable_offsets", partitions=list(parts),
                          waited_s=round(waited_s, 1), error=error)

    def _restore_progress(self, remaining: dict[int, int]) -> None:
        """Called by the changelog reader while it restores (a restoring runner is alive)."""
        self._restoring = dict(remaining)
        self.last_poll = time.monotonic()

    def _restore(self, committed: dict[int, int | None]) -> None:
        t0 = time.monotonic()
        settle = self.options.restore_settle_timeout_s
        if settle is None:
            settle = self.options.transaction_timeout_ms / 1000 + 10
        self._restoring = dict.fromkeys(committed, 0)
        try:
            procs, results = restore_processors(
                self.kafka, self.spec, self.changelog_topic, committed,
                group_id=self.options.group_id, settle_timeout_s=settle,
                should_stop=self._stop.is_set, on_progress=self._restore_progress)
        finally:
            self._restoring = {}
        for p, proc in procs.items():
            self._procs[p] = proc
            self._next[p] = committed[p]
            self._eof[p] = False
        records = sum(r.records for r in results.values())
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
            self._end_seen.pop(p, None)
            self._last_ts.pop(p, None)
            if self.checkpoint is not None:
                self.checkpoint.forget(p)
        self.telemetry.partitions_dropped(parts)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            parts = sorted(tp.partition for tp in partitions if tp.topic == self.input_topic)
            self.metrics.assigned += len(parts)
            self.telemetry.rebalanced("assign", len(parts))
            if (self.phase is not RunnerPhase.RUNNING or self._pending_exc is not None
                    or not parts):
                consumer.incremental_assign(partitions)
                self._assignment_handled = True
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
            self._assignment_handled = True
        except BaseException as exc:  # surfaced by the loop after consume() returns
            self._pending_exc = exc
            try:
                consumer.incremental_assign(partitions)
            except Exception:  # noqa: BLE001
                pass

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        parts = sorted(tp.partition for tp in partitions if tp.topic == self.input_topic)
        closing = self.phase is not RunnerPhase.RUNNING
        try:
            self.metrics.revoked += len(parts)
            self.telemetry.rebalanced("revoke", len(parts))
            if not closing:
                self._log.info("partitions_revoked", partitions=parts)
            cp = self.checkpoint
            if not closing and self._pending_exc is None and cp is not None and cp.dirty:
                try:
                    self._commit("revoke")
                except KafkaException as exc:
                    err = kafka_error(exc)
                    if err is not None and err.fatal():
                        self._client_fatal = err
                    else:
                        # leaves the checkpoint ABORTED: the loop rewinds
                        self._abort_transaction(f"checkpoint on revoke failed: {err}")
                except ProducerHung as hung:
                    self._replace_producer(hung)  # checkpoint abandoned: the loop rewinds
        except BaseException as exc:
            self._pending_exc = exc
        finally:
            self._drop(parts)
            try:
                consumer.incremental_unassign(partitions)
            except Exception as exc:  # noqa: BLE001
                if self._pending_exc is None and not closing:
                    self._pending_exc = exc

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        parts = sorted(tp.partition for tp in partitions if tp.topic == self.input_topic)
        try:
            self.metrics.lost += len(parts)
            self.telemetry.rebalanced("lost", len(parts))
            self._log.warning("partitions_lost", partitions=parts)
            cp = self.checkpoint
            if self.phase is RunnerPhase.RUNNING and cp is not None and cp.dirty:
                # Another member may own these already: our open work must not commit (the
                # checkpoint ends ABORTED: the loop rewinds).
                self._abort_transaction("partitions lost")
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
            self._client_fatal = err
            self._log.error("kafka_fatal_error", error=str(err))
            return
        now = time.monotonic()
        code = err.code()
        if now - self._error_log_at.get(code, 0.0) >= 5.0:  # at most one line per code per 5 s
            self._error_log_at[code] = now
            self._log.warning("kafka_client_error", error=str(err))

    def _consumer_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._client_fatal = err
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
