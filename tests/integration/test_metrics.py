"""Metrics and health of ``distillwatch detect`` on the real broker.

* ``/metrics`` while it detects: the account stage's ``distillwatch_consumer_lag`` is > 0, then
  every stage's lag reaches 0 once the flags are out; records in/out, flags and batch histograms
  are there; ``/healthz`` answers 200.
* ``/readyz`` is 503 until the runners have their partitions restored, then 200 — also after a
  restart that restores the state from the changelogs.
* Debian's ``prometheus`` scraping a running ``detect``: ``distillwatch_consumer_lag`` read back
  through Prometheus's HTTP API is > 0 at some point and falls to 0 as the detector catches up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumers.config import KafkaSettings
from consumers.sim.generator import generate
from consumers.sim.writer import produce_events
from tests.kafka_helpers import TopicSpec, consume_all, create_topics

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kafka(bootstrap: str, prefix: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap, requests_topic=prefix + "requests",
                         flags_topic=prefix + "flags", dlq_topic=prefix + "dlq",
                         group_id=prefix.rstrip("."), internal_prefix=prefix)


def _produce_smoke(kafka: KafkaSettings, seed: int = 1) -> int:
    """The simulator's ``smoke`` scenario (~40k events): a few seconds of detection."""
    create_topics(kafka.bootstrap_servers, [TopicSpec(kafka.requests_topic, partitions=1,
                                                      config={"retention.ms": "-1"})],
                  exist_ok=True)
    events, _ = generate("smoke", seed)
    return produce_events(list(events), kafka.requests_topic, kafka, event_timestamps=True)


class Detect:
    """``distillwatch detect`` in a subprocess with its HTTP server on a free port."""

    def __init__(self, kafka: KafkaSettings, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "consumers.cli", "--log-level", "INFO", "detect",
               "--bootstrap-servers", kafka.bootstrap_servers,
               "--requests-topic", kafka.requests_topic, "--flags-topic", kafka.flags_topic,
               "--dlq-topic", kafka.dlq_topic, "--group-id", kafka.group_id,
               "--internal-prefix", kafka.internal_prefix, "--instance-id", "metrics-0",
               "--commit-interval-ms", "300", "--batch-size", "200",
               "--http-port", str(self.port), "--http-host", "127.0.0.1"]
        env = dict(os.environ, DISTILLWATCH_STATISTICS_INTERVAL_MS="200")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, b""

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        code, body = self.get("/metrics")
        if code != 200:
            return {}
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for fam in text_string_to_metric_families(body.decode()):
            for s in fam.samples:
                out.setdefault(s.name, []).append((s.labels, s.value))
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(90)
        finally:
            self._log.close()

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{") and f'"{name}"' in line:
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                if e.get("event") == name:
                    out.append(e)
        return out


@pytest.fixture
def detect_procs() -> Iterator[list[Detect]]:
    procs: list[Detect] = []
    yield procs
    for d in procs:
        if d.alive():
            d.proc.kill()
            d.proc.wait(30)


def wait_for(what: str, cond: Callable[[], bool], timeout: float, d: Detect | None = None,
             every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if d is not None and not d.alive():
            raise AssertionError(f"detect exited while waiting for {what}:\n{d.tail()}")
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f":\n{d.tail()}" if d is not None else ""))


def _lag(m: dict[str, list[tuple[dict[str, str], float]]], stage: str) -> float | None:
    vals = [v for labels, v in m.get("distillwatch_consumer_lag", []) if labels["stage"] == stage]
    return max(vals) if vals else None


def test_detect_metrics_lag_and_readiness(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path,
                                          detect_procs: list[Detect]) -> None:
    kafka = _kafka(kafka_bootstrap, topic_prefix)
    n = _produce_smoke(kafka)
    d = Detect(kafka, tmp_path / "detect-1.log")
    detect_procs.append(d)
    ready_codes: list[int] = []
    wait_for("the HTTP server", lambda: d.get("/healthz")[0] in (200, 503), 60, d, every=0.02)
    ready_codes.append(d.get("/readyz")[0])
    max_lag = 0.0
    seen: dict[str, list[tuple[dict[str, str], float]]] = {}

    def account_lag_positive() -> bool:
        nonlocal max_lag, seen
        seen = d.metrics()
        lag = _lag(seen, "account")
        max_lag = max(max_lag, lag or 0.0)
        return max_lag > 0

    wait_for("account-stage lag > 0", account_lag_positive, 60, d, every=0.05)
    assert d.get("/healthz")[0] == 200

    last: list[tuple[float, ...]] = []

    def caught_up() -> bool:
        # lag 0 on every stage, and nothing moved for two scrapes in a row (lag comes from
        # librdkafka statistics every 200 ms: a single zero may predate the last records)
        nonlocal seen
        seen = d.metrics()
        lags = [_lag(seen, s) for s in ("account", "campaign", "policy")]
        moved = tuple(v for _, v in seen.get("distillwatch_records_in_total", []))
        moved += tuple(v for _, v in seen.get("distillwatch_flags_total", []))
        ok = all(x == 0 for x in lags) and sum(moved) > 0 and d.get("/readyz")[0] == 200
        last.append(moved if ok else ())
        return ok and len(last) >= 3 and last[-1] == last[-2] == last[-3]

    wait_for("every stage's lag at 0", caught_up, 180, d, every=0.5)
    m = seen
    assert {labels["stage"]: v for labels, v in m["distillwatch_records_in_total"]}["account"] == n
    outs = {(labels["stage"], labels["topic"]): v for labels, v in m["distillwatch_records_out_total"]}
    assert outs[("policy", kafka.flags_topic)] == sum(v for _, v in m["distillwatch_flags_total"])
    assert set(labels["action"] for labels, _ in m["distillwatch_flags_total"]) <= {
        "review", "throttle", "suspend"}
    assert any(v > 0 for labels, v in m["distillwatch_batch_seconds_count"]
               if labels["stage"] == "account")
    assert any(v > 0 for _, v in m["distillwatch_checkpoint_seconds_count"])
    assert m["distillwatch_up"] == [({}, 1.0)]
    kinds = {labels["kind"] for labels, _ in m["distillwatch_state_entries"]}
    assert "accounts" in kinds
    assert all(v >= 0 for _, v in m["distillwatch_event_time_lag_seconds"])
    assert ("account", "assign") in {(lb["stage"], lb["kind"]) for lb, v in
                                      m["distillwatch_rebalances_total"] if v > 0}
    flags_read = consume_all(kafka_bootstrap, kafka.flags_topic)
    assert len(flags_read) == outs[("policy", kafka.flags_topic)]
    assert 503 in ready_codes  # not ready before the partitions were assigned and restored
    assert d.stop() == 0

    # restart: the state comes back from the changelogs; /readyz turns 200 once it has
    d2 = Detect(kafka, tmp_path / "detect-2.log")
    detect_procs.append(d2)
    codes: list[int] = []

    def ready() -> bool:
        code = d2.get("/readyz")[0]
        if code:
            codes.append(code)
        return code == 200

    wait_for("ready after the restore", ready, 120, d2, every=0.02)
    assert codes[0] == 503 and codes[-1] == 200, codes
    restored = d2.events("restored")
    assert restored and sum(e["records"] for e in restored) > 0, d2.tail()
    m2 = d2.metrics()
    assert not m2.get("distillwatch_restore_remaining_records")  # only while restoring
    assert d2.get("/healthz")[0] == 200
    assert d2.stop() == 0


# ------------------------------------------------------------------ Prometheus


def _prometheus_query(base: str, query: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """Start our own Prometheus (free port, own config and TSDB dir) scraping 127.0.0.1:PORT."""
    if not os.path.exists(PROMETHEUS):
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed but CI is set (.ci/run installs it)")
        pytest.skip("prometheus binary not found (apt-get install prometheus); CI installs it")
    procs: list[subprocess.Popen[bytes]] = []

    def start(target_port: int) -> str:
        port = free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(
            "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\n"
            "scrape_configs:\n  - job_name: distillwatch\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n")
        log = open(tmp_path / "prometheus.log", "ab")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path))
        return f"http://127.0.0.1:{port}"

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def test_prometheus_scrapes_detect_and_sees_the_lag_fall(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, detect_procs: list[Detect],
        prometheus: Callable[[int], str]) -> None:
    kafka = _kafka(kafka_bootstrap, topic_prefix)
    create_topics(kafka_bootstrap, [TopicSpec(kafka.requests_topic, partitions=1,
                                              config={"retention.ms": "-1"})])
    d = Detect(kafka, tmp_path / "detect.log")
    detect_procs.append(d)
    base = prometheus(d.port)

    def scraped() -> bool:
        try:
            return any(r["value"][1] == "1" for r in _prometheus_query(base, 'up{job="distillwatch"}'))
        except (OSError, ValueError):
            return False

    wait_for("Prometheus scraping detect", scraped, 90, d, every=0.25)
    wait_for("detect ready", lambda: d.get("/readyz")[0] == 200, 60, d)
    _produce_smoke(kafka)  # a burst: the account stage falls behind, then catches up
    query = 'max(distillwatch_consumer_lag{stage="account"})'

    def lag_seen() -> bool:
        res = _prometheus_query(base, 'max(max_over_time(distillwatch_consumer_lag{stage="account"}[10m]))')
        return bool(res) and float(res[0]["value"][1]) > 0

    wait_for("Prometheus sees lag > 0", lag_seen, 120, d, every=0.25)

    def caught_up() -> bool:
        res = _prometheus_query(base, query)
        return bool(res) and float(res[0]["value"][1]) == 0

    wait_for("Prometheus sees the lag fall to 0", caught_up, 180, d, every=0.5)
    assert d.stop() == 0
