"""Metrics (Prometheus) and health of the stage runners of one process.

One :class:`Telemetry` per process owns a Prometheus registry; each runner gets a
:class:`StageTelemetry` (:meth:`Telemetry.stage`). :func:`serve` exposes it over HTTP:

* ``/metrics`` — the Prometheus text format;
* ``/healthz`` — liveness: 200 while every runner's loop polled within ``max.poll.interval.ms``
  (a restore counts as polling: a restoring consumer is not dead), else 503;
* ``/readyz`` — readiness: 200 once every runner handled its assignment and restored every
  assigned partition, 503 while one is starting or restoring.

Metrics (names are an interface: a Grafana dashboard and Kubernetes manifests use them)::

    distillwatch_up                                          1 while the process serves
    distillwatch_consumer_lag{stage,topic,partition}         input records not yet processed:
                                                             last stable offset (librdkafka
                                                             statistics, read_committed) - position
    distillwatch_records_in_total{stage}                     input records processed
    distillwatch_records_out_total{stage,topic}              records produced (aborted ones too)
    distillwatch_dlq_records_total{stage,reason}             reason: a bounded token (dlq_reason)
    distillwatch_flags_total{action}                         flags produced, by action
    distillwatch_batch_seconds{stage}                        histogram: process one consumed batch
    distillwatch_checkpoint_seconds{stage}                   histogram: commit one checkpoint
    distillwatch_event_time_lag_seconds{stage,partition}     wall clock - the stage's event-time
                                                             watermark (policy: last record's
                                                             Kafka timestamp)
    distillwatch_state_entries{stage,partition,kind}         processor.state_size()
    distillwatch_restore_remaining_records{stage,partition}  changelog records left to restore
    distillwatch_rebalances_total{stage,kind}                assign / revoke / lost callbacks
    distillwatch_aborted_transactions_total{stage}

Per-partition series exist only for partitions the runner owns (or restores): they disappear on
revoke or loss. The gauges and per-runner counters are read from the runners when scraped
(nothing on the hot path); histograms and the DLQ/flag counters are observed as records go out.
"""

from __future__ import annotations

import enum
import json
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from consumers.contract.events import RequestEvent
from consumers.contract.flags import ACTIONS
from consumers.core.pipeline import DLQ, FLAGS
from consumers.core.stage import Processor, Record, StageSpec
from consumers.kafka.metrics import RunnerMetrics


class ObservedRunner(Protocol):
    """What telemetry reads from a stage runner (:class:`consumers.kafka.runner.StageRunner`)."""

    spec: StageSpec
    input_topic: str
    output_topics: dict[str, str]
    metrics: RunnerMetrics

    @property
    def phase(self) -> enum.Enum: ...

    @property
    def live(self) -> bool: ...

    @property
    def ready(self) -> bool: ...

    def processors(self) -> dict[int, Processor]: ...

    def positions(self) -> dict[int, int | None]: ...

    def last_record_ts(self, partition: int) -> int | None: ...

    def assigned_partitions(self) -> list[int]: ...

    def restoring(self) -> dict[int, int]: ...

__all__ = ["HttpServer", "ObservedRunner", "StageTelemetry", "Telemetry", "dlq_reason", "serve"]

log = structlog.get_logger("distillwatch.kafka.telemetry")

#: seconds; a batch is a few ms to a few s, a checkpoint tens of ms (more while a broker recovers)
BATCH_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CHECKPOINT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_FIELDS = frozenset(RequestEvent.model_fields)
_TS_FIELDS = frozenset({"ts_ms", "account_created_ms"})
_WORD = re.compile(r"[a-z0-9_]+")
_OTHER = "other"


def dlq_reason(reason: str) -> str:
    """A bounded label for a DLQ reason (the ``dlq.error`` header): its first token.

    At most ~30 values: ``not_json``, ``not_utf8``, ``too_large``, ``not_object``,
    ``missing_field``, ``ts_out_of_range``, ``invalid_<RequestEvent field>``, ``other``.

    >>> dlq_reason("not JSON: unexpected character")
    'not_json'
    >>> dlq_reason("account_id: required field missing")
    'missing_field'
    >>> dlq_reason("n_turns: must be an integer >= 1")
    'invalid_n_turns'
    >>> dlq_reason("ts_ms: 3 days ahead of the broker timestamp")
    'ts_out_of_range'
    >>> dlq_reason("too large: 70000 bytes (limit 65536)")
    'too_large'
    >>> dlq_reason("a value nobody expected")
    'other'
    """
    text = reason.strip().lower()
    head, sep, rest = text.partition(":")
    if head.startswith("not json"):
        return "not_json"
    if head.startswith("not utf-8") or head.startswith("not utf8"):
        return "not_utf8"
    if head.startswith("too large"):
        return "too_large"
    if head.startswith("not a json object"):
        return "not_object"
    if sep and "required field missing" in rest:
        return "missing_field"
    field = head.strip()
    if field in _TS_FIELDS or (field.startswith("ts") and "range" in text):
        return "ts_out_of_range"
    if sep and field in _FIELDS:
        return f"invalid_{field}"
    token = _WORD.match(field.replace(" ", "_"))
    if token and token.group(0) in ("ts_out_of_range", "duplicate", "tombstone"):
        return token.group(0)
    return _OTHER


class StageTelemetry:
    """The metrics of one stage runner (created by :meth:`Telemetry.stage`)."""

    def __init__(self, telemetry: Telemetry, runner: ObservedRunner) -> None:
        self.telemetry = telemetry
        self.runner = runner
        stage = runner.spec.name
        self.stage = stage
        self._batch = telemetry.batch_seconds.labels(stage=stage)
        self._checkpoint = telemetry.checkpoint_seconds.labels(stage=stage)
        self._aborted = telemetry.aborted_transactions.labels(stage=stage)
        self._rebalances = {k: telemetry.rebalances.labels(stage=stage, kind=k)
                            for k in ("assign", "revoke", "lost")}
        self._dlq_children: dict[str, Any] = {}
        self._watch = {DLQ, FLAGS} & set(runner.spec.outputs)
        self.last_stable: dict[int, int] = {}  # partition -> last stable offset (statistics)
        self.low: dict[int, int] = {}

    # -- observed by the runner ----------------------------------------------------------------

    def batch_done(self, seconds: float) -> None:
        self._batch.observe(seconds)

    def checkpoint_done(self, seconds: float) -> None:
        self._checkpoint.observe(seconds)

    def aborted(self) -> None:
        self._aborted.inc()

    def rebalanced(self, kind: str, _partitions: int) -> None:
        self._rebalances[kind].inc()

    def partitions_dropped(self, parts: Iterable[int]) -> None:
        for p in parts:
            self.last_stable.pop(p, None)
            self.low.pop(p, None)

    def outputs(self, outs: Sequence[Record]) -> None:
        """Count DLQ records by reason and flags by action."""
        watch = self._watch
        if not watch:
            return
        for rec in outs:
            if rec.topic not in watch:
                continue
            if rec.topic == DLQ:
                raw = dict(rec.headers or []).get("dlq.error", b"")
                self._dlq(dlq_reason(raw.decode("utf-8", "replace")))
            else:
                try:
                    action = orjson.loads(rec.value).get("action")
                except (orjson.JSONDecodeError, AttributeError):
                    action = None
                self.telemetry.flags.labels(action=action if action in ACTIONS else _OTHER).inc()

    def _dlq(self, reason: str) -> None:
        child = self._dlq_children.get(reason)
        if child is None:
            child = self._dlq_children[reason] = self.telemetry.dlq_records.labels(
                stage=self.stage, reason=reason)
        child.inc()

    def on_statistics(self, stats_json: str) -> None:
        """librdkafka ``stats_cb``: keep the last stable offset of each input partition."""
        try:
            stats = json.loads(stats_json)
            parts = stats["topics"][self.runner.input_topic]["partitions"]
        except (ValueError, KeyError, TypeError):
            return
        for pid, part in parts.items():
            p = int(pid)
            if p < 0:
                continue
            ls = part.get("ls_offset", -1)
            if ls is not None and ls >= 0:
                self.last_stable[p] = ls
            lo = part.get("lo_offset", -1)
            if lo is not None and lo >= 0:
                self.low[p] = lo

    # -- read when scraped ---------------------------------------------------------------------

    def lag(self) -> dict[int, int]:
        """Partition -> input records not processed yet (partitions with statistics only)."""
        positions = self.runner.positions()
        out: dict[int, int] = {}
        for p in self.runner.assigned_partitions():
            ls = self.last_stable.get(p)
            if ls is None:
                continue
            pos = positions.get(p)
            if pos is None:
                pos = self.low.get(p, 0)
            out[p] = max(0, ls - pos)
        return out


class _RunnerCollector(Collector):
    """Reads the runners' gauges and counters at scrape time."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily("distillwatch_consumer_lag",
                                "Input records not yet processed (last stable offset - position)",
                                labels=["stage", "topic", "partition"])
        rin = CounterMetricFamily("distillwatch_records_in", "Input records processed",
                                  labels=["stage"])
        rout = CounterMetricFamily("distillwatch_records_out",
                                   "Records produced (records of aborted transactions included)",
                                   labels=["stage", "topic"])
        et = GaugeMetricFamily("distillwatch_event_time_lag_seconds",
                               "Wall clock minus the stage's event-time watermark",
                               labels=["stage", "partition"])
        state = GaugeMetricFamily("distillwatch_state_entries", "Entries of the processor's state",
                                  labels=["stage", "partition", "kind"])
        restore = GaugeMetricFamily("distillwatch_restore_remaining_records",
                                    "Changelog records left to restore", labels=["stage", "partition"])
        now_s = time.time()
        for st in self.telemetry.stages():
            r = st.runner
            stage = r.spec.name
            for p, n in sorted(st.lag().items()):
                lag.add_metric([stage, r.input_topic, str(p)], n)
            rin.add_metric([stage], r.metrics.consumed)
            for logical, n in r.metrics.produced.items():
                rout.add_metric([stage, r.output_topics.get(logical, logical)], n)
            for p, proc in sorted(r.processors().items()):
                wm = getattr(proc, "watermark", None) or r.last_record_ts(p)
                if wm:
                    et.add_metric([stage, str(p)], max(0.0, now_s - wm / 1000))
                size = getattr(proc, "state_size", None)
                if callable(size):
                    for kind, n in size().items():
                        state.add_metric([stage, str(p), str(kind)], n)
            for p, n in sorted(r.restoring().items()):
                restore.add_metric([stage, str(p)], n)
        yield from (lag, rin, rout, et, state, restore)


class Telemetry:
    """The metrics registry and health of the runners of one process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        reg = self.registry
        self.batch_seconds = Histogram("distillwatch_batch_seconds",
                                       "Seconds to process one consumed batch", ["stage"],
                                       registry=reg, buckets=BATCH_BUCKETS)
        self.checkpoint_seconds = Histogram("distillwatch_checkpoint_seconds",
                                            "Seconds to commit one checkpoint", ["stage"],
                                            registry=reg, buckets=CHECKPOINT_BUCKETS)
        self.dlq_records = Counter("distillwatch_dlq_records", "Records sent to the DLQ",
                                   ["stage", "reason"], registry=reg)
        self.flags = Counter("distillwatch_flags", "Flags produced", ["action"], registry=reg)
        self.rebalances = Counter("distillwatch_rebalances", "Rebalance callbacks",
                                  ["stage", "kind"], registry=reg)
        self.aborted_transactions = Counter("distillwatch_aborted_transactions",
                                            "Transactions aborted", ["stage"], registry=reg)
        self.up = Gauge("distillwatch_up", "1 while the process serves", registry=reg)
        self.up.set(1)
        reg.register(_RunnerCollector(self))
        self._stages: list[StageTelemetry] = []
        self._lock = threading.Lock()

    def stage(self, runner: ObservedRunner) -> StageTelemetry:
        st = StageTelemetry(self, runner)
        with self._lock:
            self._stages.append(st)
        return st

    def stages(self) -> list[StageTelemetry]:
        with self._lock:
            return list(self._stages)

    def health(self) -> dict[str, Any]:
        """``{"live": bool, "ready": bool, "stages": {stage: {...}}}`` over every runner."""
        stages = {}
        for st in self.stages():
            r = st.runner
            stages[st.stage] = {"phase": r.phase.value, "live": r.live, "ready": r.ready,
                                "partitions": r.assigned_partitions(),
                                "restoring": sorted(r.restoring())}
        return {"live": all(s["live"] for s in stages.values()),
                "ready": bool(stages) and all(s["ready"] for s in stages.values()),
                "stages": stages}

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Handler(BaseHTTPRequestHandler):
    telemetry: Telemetry

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, self.telemetry.exposition(), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            h = self.telemetry.health()
            ok = h["live"] if path == "/healthz" else h["ready"]
            self._send(200 if ok else 503, orjson.dumps(h), "application/json")
        else:
            self._send(404, b"not found: /metrics, /healthz, /readyz\n", "text/plain")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - scrapes are not news
        return


class HttpServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` in a daemon thread (see :func:`serve`)."""

    def __init__(self, telemetry: Telemetry, host: str, port: int) -> None:
        handler = type("Handler", (_Handler,), {"telemetry": telemetry})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-metrics",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(telemetry: Telemetry, port: int, host: str = "0.0.0.0") -> HttpServer:
    """Serve ``telemetry`` on ``host:port`` (port 0: a free port; see :attr:`HttpServer.port`)."""
    server = HttpServer(telemetry, host, port)
    log.info("http_serving", url=server.url, endpoints=["/metrics", "/healthz", "/readyz"])
    return server
