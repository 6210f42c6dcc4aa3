"""The stage runner's transactional producer: librdkafka's transactional calls under a watchdog,
with retries of retriable errors, and the one blocking produce (:func:`~consumers.kafka.writer.
produce_blocking`).

librdkafka may ignore the timeout of a transactional call (issues #5456, #5511: seen here with
``send_offsets_to_transaction`` after a broker restart). Every transactional call therefore runs
in a helper thread; if it has not returned ``call_timeout_s + watchdog_margin_s`` later,
:class:`ProducerHung` is raised and the producer must be replaced (a new producer with the same
transactional id fences the old one and aborts its open transaction). The stuck thread keeps the
only reference to the old producer, so it is never destroyed from here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException, Producer, TopicPartition

from consumers.kafka.clients import kafka_error
from consumers.kafka.errors import FatalRunnerError
from consumers.kafka.writer import produce_blocking

__all__ = ["ProducerHung", "TransactionalProducer"]


class ProducerHung(FatalRunnerError):
    """A transactional producer call did not return within its watchdog deadline."""


class TransactionalProducer:
    """One transactional producer of a stage runner (``name`` is the stage, for messages).

    ``should_stop()`` true means the runner is stopping: retriable errors are then retried for at
    most ``shutdown_retry_s``. ``on_full()`` is called while the local queue is full (the runner
    raises a pending fatal error there).
    """

    def __init__(self, conf: dict[str, Any], *, name: str, call_timeout_s: float,
                 watchdog_margin_s: float, shutdown_retry_s: float,
                 should_stop: Callable[[], bool], on_full: Callable[[], None], log: Any) -> None:
        self.name = name
        self.call_timeout_s = call_timeout_s
        self.watchdog_margin_s = watchdog_margin_s
        self.shutdown_retry_s = shutdown_retry_s
        self._should_stop = should_stop
        self._on_full = on_full
        self._log = log
        self.producer = Producer(conf)
        #: the client's own produce, for the hot path (one call per output record): raises
        #: ``BufferError`` while the local queue is full — then :meth:`produce` waits
        self.try_produce: Callable[..., None] = self.producer.produce
        self.hung = False

    # ------------------------------------------------------------------ calls

    def init_transactions(self) -> None:
        """Initialise transactions: fences predecessors and aborts their open transaction."""
        t = self.call_timeout_s
        self._retrying(lambda: self.producer.init_transactions(t), "init_transactions")

    def begin_transaction(self) -> None:
        self.producer.begin_transaction()

    def produce(self, topic: str, value: bytes | None, key: bytes | None, **kwargs: Any) -> None:
        """Produce, waiting while the local queue is full."""
        produce_blocking(self.producer, topic, value, key, on_full=self._on_full, **kwargs)

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        t = self.call_timeout_s
        self._retrying(
            lambda: self.producer.send_offsets_to_transaction(offsets, group_metadata, t),
            "send_offsets_to_transaction",
        )

    def commit_transaction(self, before: Callable[[], None] | None = None) -> None:
        """Commit (``before()`` runs first on every attempt: the tests' fault hook)."""
        t = self.call_timeout_s

        def commit() -> None:
            if before is not None:
                before()
            self.producer.commit_transaction(t)

        self._retrying(commit, "commit_transaction")

    def abort_transaction(self) -> None:
        t = self.call_timeout_s
        self._retrying(lambda: self.producer.abort_transaction(t), "abort_transaction")

    def poll(self, timeout: float = 0) -> None:
        self.producer.poll(timeout)

    def flush(self, timeout: float) -> None:
        if not self.hung:
            self.producer.flush(timeout)

    def abort_quietly(self, timeout: float = 10) -> None:
        """Best effort while failing: the broker aborts the transaction on timeout anyway."""
        if self.hung:
            return
        try:
            self.producer.abort_transaction(timeout)
        except Exception:  # noqa: BLE001 - already failing
            pass

    # ------------------------------------------------------------------ machinery

    def _retrying(self, fn: Callable[[], Any], what: str) -> Any:
        """Call ``fn``, retrying retriable Kafka errors with backoff (forever unless stopping)."""
        delay = 0.1
        start = time.monotonic()
        while True:
            try:
                return self._watched(fn, what)
            except KafkaException as exc:
                err = kafka_error(exc)
                if err is None or err.fatal() or err.txn_requires_abort() or not err.retriable():
                    raise
                waited = time.monotonic() - start
                if self._should_stop() and waited > self.shutdown_retry_s:
                    raise FatalRunnerError(
                        f"stage {self.name!r}: {what} still failing after {waited:.0f}s "
                        f"while stopping: {err}"
                    ) from exc
                self._log.warning("kafka_retry", op=what, error=str(err), waited_s=round(waited, 1))
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                self.producer.poll(0)

    def _watched(self, fn: Callable[[], Any], what: str) -> Any:
        """Run one blocking transactional call under the watchdog (see the module docstring)."""
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
        deadline = self.call_timeout_s + self.watchdog_margin_s
        if not done.wait(deadline):
            self.hung = True
            raise ProducerHung(f"stage {self.name!r}: {what} did not return within {deadline:.0f}s")
        ok, value = outcome[0]
        if ok:
            return value
        raise value
