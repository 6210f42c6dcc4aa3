"""Metrics and health without a broker: a fake runner behind Telemetry and its HTTP server."""

from __future__ import annotations

import enum
import json
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from consumers.core.stage import Record, StageSpec
from consumers.kafka.metrics import RunnerMetrics
from consumers.kafka.telemetry import Telemetry, dlq_reason, serve


class Phase(enum.Enum):
    RUNNING = "running"


class Proc:
    watermark = 1_000_000

    def state_size(self) -> dict[str, int]:
        return {"accounts": 3}


class FakeRunner:
    def __init__(self) -> None:
        self.spec = StageSpec("account", ("requests",), ("observations", "dlq"), lambda p: Proc())
        self.input_topic = "in.t"
        self.output_topics = {"observations": "obs.t", "dlq": "dlq.t"}
        self.metrics = RunnerMetrics(self.spec.outputs)
        self.phase = Phase.RUNNING
        self.live = True
        self.ready = False
        self.parts: dict[int, Any] = {0: Proc(), 1: Proc()}
        self.restore_left: dict[int, int] = {}

    def processors(self) -> dict[int, Any]:
        return dict(self.parts)

    def positions(self) -> dict[int, int | None]:
        return {0: 40, 1: None}

    def last_record_ts(self, partition: int) -> int | None:
        return None

    def assigned_partitions(self) -> list[int]:
        return sorted(self.parts)

    def restoring(self) -> dict[int, int]:
        return dict(self.restore_left)


def _scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _code(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_metrics_health_and_partition_series() -> None:
    t = Telemetry()
    runner = FakeRunner()
    st = t.stage(runner)  # type: ignore[arg-type]
    stats = {"topics": {"in.t": {"partitions": {
        "0": {"ls_offset": 100, "lo_offset": 0}, "1": {"ls_offset": 7, "lo_offset": 2},
        "-1": {"ls_offset": -1}}}}}
    st.on_statistics(json.dumps(stats))
    runner.metrics.consumed = 40
    runner.metrics.produced["observations"] = 12
    st.outputs([Record("dlq", None, b"x", headers=[("dlq.error", b"not JSON: x")]),
                Record("dlq", None, b"y", headers=[("dlq.error", b"n_turns: must be >= 1")]),
                Record("observations", b"k", b"v")])
    st.batch_done(0.01)
    st.rebalanced("assign", 2)
    runner.restore_left = {1: 5}
    with capture_logs() as logs:  # (an earlier CLI test may have pointed structlog at a closed file)
        server = serve(t, 0, "127.0.0.1")
    assert logs[0]["event"] == "http_serving" and logs[0]["url"] == server.url
    try:
        m = _scrape(server.url)
        lag = {lb["partition"]: v for lb, v in m["distillwatch_consumer_lag"]}
        assert lag == {"0": 60.0, "1": 5.0}  # ls - position; no position yet: ls - low
        assert m["distillwatch_records_in_total"] == [({"stage": "account"}, 40.0)]
        assert ({"stage": "account", "topic": "obs.t"}, 12.0) in m["distillwatch_records_out_total"]
        dlq = {lb["reason"]: v for lb, v in m["distillwatch_dlq_records_total"]}
        assert dlq == {"not_json": 1.0, "invalid_n_turns": 1.0}
        assert {(lb["partition"], lb["kind"]) for lb, _ in m["distillwatch_state_entries"]} == {
            ("0", "accounts"), ("1", "accounts")}
        assert m["distillwatch_restore_remaining_records"] == [({"stage": "account", "partition": "1"}, 5.0)]
        assert m["distillwatch_up"] == [({}, 1.0)]
        assert _code(server.url + "/healthz") == 200
        assert _code(server.url + "/readyz") == 503  # restoring
        runner.ready = True
        assert _code(server.url + "/readyz") == 200
        runner.live = False
        assert _code(server.url + "/healthz") == 503
        # a revoked partition's series disappear
        del runner.parts[1]
        st.partitions_dropped([1])
        runner.restore_left = {}
        m = _scrape(server.url)
        assert {lb["partition"] for lb, _ in m["distillwatch_consumer_lag"]} == {"0"}
        assert "distillwatch_restore_remaining_records" not in m
        assert _code(server.url + "/nope") == 404
    finally:
        server.close()


def test_dlq_reasons_are_a_bounded_set() -> None:
    reasons = {dlq_reason(f"{f}: must be whatever {i}") for i, f in enumerate(["x"] * 50)}
    assert reasons == {"other"}
    assert dlq_reason("ts_ms: 3 days ahead of the broker timestamp") == "ts_out_of_range"
    assert dlq_reason("account_created_ms: after ts_ms") == "ts_out_of_range"
    assert dlq_reason("not a JSON object") == "not_object"
