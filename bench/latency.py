"""End-to-end latency on the real broker: request produced → flag visible to a read_committed reader.

One run per *variant* of detect's settings (the defaults first; a variant is a set of
``DISTILLWATCH_*`` environment overrides, e.g. ``{"DISTILLWATCH_COMMIT_INTERVAL_MS": "1000"}``):

1. a fresh requests topic (``partitions``, ``retention.ms=-1``);
2. ``python -m consumers.cli detect`` as a **subprocess** — all stages in one process, exactly as
   ``distillwatch detect`` runs live (default settings unless the variant overrides some), with
   its HTTP server on a free port; the run starts once ``/readyz`` answers 200;
3. a **reader** thread in this process: a plain ``Consumer`` with ``isolation.level=read_committed``
   assigned to every partition of the flags topic from the beginning, noting the wall time
   (``time.time()``) at which ``consume()`` returned each flag — when it became *visible*;
4. a **paced producer** in a child process (spawned: no librdkafka state is forked): the events,
   in stream order, keyed by account, timestamp ``ts_ms``, at ``rate`` events/s for ``duration``
   seconds (each event is produced when its slot ``start + i / rate`` is due; ``linger.ms`` 5,
   lz4, idempotent), noting the wall time of each ``produce()`` call;
5. after the last event, the run waits until detect has caught up (``/metrics``: every stage has
   consumed what the one before produced, unchanged for ``2 × commit interval + 1 s``), then stops
   detect with SIGTERM.

**What is measured, per flag** (a flag carries ``account_id`` and ``decided_at_ms``, the event
time of the decision: the largest ``ts_ms`` the account stage had processed in the account's
partition when it sent the evidence the decision rests on — see ``shared/CONTRACT.md``):

* **pipeline latency** = visible − produced(*trigger*), where the trigger is the first request in
  stream order with ``ts_ms ≥ decided_at_ms``: the earliest request whose production made the
  decision possible (for a decision on a request's own fingerprints, that request; for one
  taken at an event-time tick, the request that closed the tick). This is what the Kafka layer
  adds: consuming, processing, the three stages' checkpoints (transaction commits), the reader.
* **account latency** = visible − produced(the flagged account's latest request with
  ``ts_ms ≤ decided_at_ms``): the example definition of issue #13. It also contains the event
  time the decision waited for (a behaviour summary waits for the next 30-min tick; evidence from
  *other* accounts may arrive hours of event time after the account's last request), which
  the replayed stream compresses ``rate ÷ events per second of event time`` times — so it says
  more about the scenario than about the pipeline; printed beside, not the target.

Both are printed as p50 / p90 / p99 / max over the flags of the run (flags decided before the
producer started do not exist: the topic is fresh). Also per variant: whether detect kept up
(largest account-stage backlog seen while producing, and how long it took to drain after the
last event), and detect's CPU time per event (``/proc/<pid>/stat``; the cost of the
settings at this rate: more frequent checkpoints cost CPU).

The producer, detect and this process share the machine's cores: at a rate close to what detect
sustains, the latency is that of a saturated consumer — read the backlog column first.
"""

from __future__ import annotations

import array
import bisect
import contextlib
import multiprocessing
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from bench.common import REPO, Dataset, make_row

SECTION = "latency"
#: the producer's settings: a gateway that sends promptly
PRODUCER = {"linger.ms": 5, "compression.type": "lz4", "enable.idempotence": True,
            "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1024 * 1024}


# ----------------------------------------------------------------------------- the latencies


def percentile(sorted_xs: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of an ascending sequence, nearest rank (``q=0.99`` of 100 values
    is the 99th smallest)."""
    if not sorted_xs:
        raise ValueError("no values")
    k = max(0, min(len(sorted_xs) - 1, int(-(-q * len(sorted_xs) // 1)) - 1))
    return sorted_xs[k]


def latencies(flags: Sequence[tuple[float, bytes]], ts: Sequence[int], accounts: Sequence[str],
              produced_at: Sequence[float]) -> dict[str, Any]:
    """Per-flag latencies (seconds) from the visible flags and the produced requests.

    ``flags``: ``(visible wall time, flag JSON)``; ``ts``, ``accounts``, ``produced_at``: per
    request in produce (stream) order, ``ts`` ascending. Returns ``{"pipeline": [...],
    "account": [...], "unmatched": n}`` (each list ascending); a flag whose ``decided_at_ms`` is
    beyond every produced request's ``ts_ms`` or whose account sent nothing before it is
    unmatched (it cannot happen with a correct detector).
    """
    n = len(produced_at)
    ts = ts[:n]
    per_account: dict[str, tuple[list[int], list[float]]] = {}
    for t, a, p in zip(ts, accounts, produced_at, strict=False):
        e = per_account.get(a)
        if e is None:
            per_account[a] = e = ([], [])
        e[0].append(t)
        e[1].append(p)
    pipeline: list[float] = []
    account: list[float] = []
    unmatched = 0
    for visible, raw in flags:
        f = orjson.loads(raw)
        d = f["decided_at_ms"]
        i = bisect.bisect_left(ts, d)
        acct = per_account.get(f["account_id"])
        j = bisect.bisect_right(acct[0], d) - 1 if acct else -1
        if i >= n or j < 0:
            unmatched += 1
            continue
        pipeline.append(visible - produced_at[i])
        account.append(visible - acct[1][j])  # type: ignore[index]
    return {"pipeline": sorted(pipeline), "account": sorted(account), "unmatched": unmatched}


def summary(xs: Sequence[float]) -> dict[str, float]:
    """p50 / p90 / p99 / max of ascending ``xs`` (seconds)."""
    return {"p50": percentile(xs, 0.5), "p90": percentile(xs, 0.9), "p99": percentile(xs, 0.99),
            "max": xs[-1], "n": len(xs)}


# ----------------------------------------------------------------------------- the producer


def _paced_producer(bootstrap: str, topic: str, data_path: str, out_path: str, rate: float,
                    go: Any) -> None:
    """Child process: produce the pickled ``(keys, values, ts)`` at ``rate`` events/s once ``go``
    is set; write the wall time of every ``produce()`` call (array of doubles) to ``out_path``."""
    from confluent_kafka import Producer

    with open(data_path, "rb") as f:
        keys, values, tss = pickle.load(f)
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER})
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    stamps = array.array("d")
    produce, poll, now = producer.produce, producer.poll, time.time
    go.wait()
    t0 = now()
    n = len(values)
    i = 0
    while i < n:
        due = min(n, int((now() - t0) * rate) + 1)
        while i < due:
            try:
                produce(topic, values[i], keys[i], timestamp=tss[i], on_delivery=on_delivery)
            except BufferError:
                poll(0.01)
                continue
            stamps.append(now())
            i += 1
        poll(0)
        slack = t0 + i / rate - now()
        if slack > 0:
            time.sleep(min(slack, 0.002))
    producer.flush(120)
    if errors:
        raise RuntimeError(f"paced producer: {len(errors)} delivery errors, first: {errors[0]}")
    with open(out_path, "wb") as f:
        f.write(stamps.tobytes())


# ----------------------------------------------------------------------------- detect, the reader


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - localhost
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except OSError:
        return 0, b""


def parse_metrics(text: bytes) -> dict[str, float]:
    """``{"in:<stage>": n, "out:<stage>:<topic>": n}`` from detect's ``/metrics``."""
    out: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line.startswith("distillwatch_records_in_total{"):
            labels, value = line[len("distillwatch_records_in_total{"):].rsplit("} ", 1)
            out["in:" + _label(labels, "stage")] = float(value)
        elif line.startswith("distillwatch_records_out_total{"):
            labels, value = line[len("distillwatch_records_out_total{"):].rsplit("} ", 1)
            out[f"out:{_label(labels, 'stage')}:{_label(labels, 'topic')}"] = float(value)
    return out


def _label(labels: str, name: str) -> str:
    for part in labels.split(","):
        k, _, v = part.partition("=")
        if k.strip() == name:
            return v.strip().strip('"')
    return ""


def caught_up(m: dict[str, float], n_events: int) -> bool:
    """Every stage consumed what the stage before it produced (and the account stage all events)."""
    obs = sum(v for k, v in m.items() if k.startswith("out:account:") and "observations" in k)
    ver = sum(v for k, v in m.items() if k.startswith("out:campaign:") and "verdicts" in k)
    return (m.get("in:account", 0) >= n_events and m.get("in:campaign", 0) >= obs
            and m.get("in:policy", 0) >= ver)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children (Linux ``/proc``)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class FlagReader:
    """read_committed reader of the flags topic noting when each flag became visible."""

    def __init__(self, bootstrap: str, topic: str, partitions: int):
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.flags: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-flag-reader", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap,
                      "group.id": f"dw-bench-latency-{uuid.uuid4().hex[:12]}",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest",
                      "isolation.level": "read_committed", "fetch.wait.max.ms": 50})
        try:
            c.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(self.partitions)])
            while not self._stop.is_set():
                msgs = c.consume(1000, 0.05)
                now = time.time()
                for m in msgs:
                    if m.error() is None:
                        self.flags.append((now, m.value()))
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc
        finally:
            c.close()


# ----------------------------------------------------------------------------- one run


def run_variant(ds: Dataset, bootstrap: str, prefix: str, name: str, env: dict[str, str],
                rate: float, partitions: int, data_path: str,
                log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """One live run of detect under paced load with the settings ``env``; see the module doc."""
    from consumers.config import DetectSettings, KafkaSettings
    from consumers.kafka.admin import TopicSpec, ensure_topics

    tag = f"{prefix}{name}."
    requests, flags_topic, group = f"{tag}requests", f"{tag}flags", f"dwb-lat-{name}-{uuid.uuid4().hex[:6]}"
    ensure_topics(KafkaSettings(bootstrap_servers=bootstrap),
                  [TopicSpec(requests, partitions, config={"retention.ms": "-1"})])
    port = _free_port()
    child_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    commit_ms = int(env.get("DISTILLWATCH_COMMIT_INTERVAL_MS") or DetectSettings().commit_interval_ms)
    log_path = data_path + f".{name}.detect.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed in the finally below
    detect = subprocess.Popen(
        [sys.executable, "-m", "consumers.cli", "--log-level", "WARNING", "detect",
         "--bootstrap-servers", bootstrap, "--requests-topic", requests, "--flags-topic", flags_topic,
         "--dlq-topic", f"{tag}dlq", "--group-id", group, "--internal-prefix", tag,
         "--http-port", str(port), "--http-host", "127.0.0.1"],
        cwd=str(REPO), env=child_env, stdout=log_file, stderr=subprocess.STDOUT)
    out_path = data_path + f".{name}.stamps"
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    prod = ctx.Process(target=_paced_producer, args=(bootstrap, requests, data_path, out_path, rate, go),
                       name="bench-paced-producer", daemon=True)
    reader = FlagReader(bootstrap, flags_topic, partitions)
    base = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {"variant": name, "env": env, "commit_interval_ms": commit_ms,
                              "group": group, "rate": rate}
    try:
        prod.start()
        deadline = time.time() + 120
        while _http(base + "/readyz")[0] != 200:
            if detect.poll() is not None:
                log_file.flush()
                raise RuntimeError(f"detect exited {detect.returncode}: "
                                   f"{open(log_path, 'rb').read().decode(errors='replace')[-2000:]}")
            if time.time() > deadline:
                raise TimeoutError("detect not ready in 120 s")
            time.sleep(0.2)
        reader.start()
        time.sleep(1.0)  # the reader has its assignment before the first flag can exist
        n = len(ds)
        cpu0 = _cpu_seconds(detect.pid)
        t_start = time.time()
        go.set()
        log(f"latency[{name}]: producing {n:,} events at {rate:,.0f}/s ...")
        max_backlog = 0.0
        while prod.is_alive():
            prod.join(1.0)
            m = parse_metrics(_http(base + "/metrics")[1])
            sent = min(n, (time.time() - t_start) * rate)
            max_backlog = max(max_backlog, sent - m.get("in:account", 0))
        if prod.exitcode != 0:
            raise RuntimeError(f"paced producer exited {prod.exitcode}")
        t_produced = time.time()
        stable_for = 2 * commit_ms / 1000 + 1.0
        last, since = None, time.time()
        while True:
            m = parse_metrics(_http(base + "/metrics")[1])
            if caught_up(m, n):
                if m != last:
                    last, since = m, time.time()
                elif time.time() - since >= stable_for:
                    break
            if time.time() - t_produced > 600:
                raise TimeoutError(f"detect did not catch up in 600 s: {m}")
            time.sleep(0.2)
        t_caught = since
        cpu1 = _cpu_seconds(detect.pid)
        produced_at = array.array("d")
        with open(out_path, "rb") as f:
            produced_at.frombytes(f.read())
        result.update({
            "events": n,
            "produce_s": produced_at[-1] - produced_at[0],
            "achieved_rate": n / max(1e-9, produced_at[-1] - produced_at[0]),
            "max_backlog_events": max_backlog,
            "drain_s": max(0.0, t_caught - t_produced),
            "detect_cpu_s": cpu1 - cpu0,
            "cpu_us_per_event": (cpu1 - cpu0) / n * 1e6,
            "metrics": last,
        })
    finally:
        reader.stop()
        if prod.is_alive():
            prod.kill()
        if detect.poll() is None:
            detect.send_signal(signal.SIGTERM)
            try:
                detect.wait(60)
            except subprocess.TimeoutExpired:
                detect.kill()
                detect.wait()
        log_file.close()
        for path in (out_path, log_path):
            with contextlib.suppress(OSError):
                os.unlink(path)
    if reader.error is not None:
        raise reader.error
    accounts = [k.decode() for k in ds.keys]
    lat = latencies(reader.flags, ds.ts, accounts, produced_at)
    result["flags"] = len(reader.flags)
    result["unmatched"] = lat["unmatched"]
    result["pipeline"] = summary(lat["pipeline"]) if lat["pipeline"] else None
    result["account"] = summary(lat["account"]) if lat["account"] else None
    return result


def run(ds: Dataset, bootstrap: str = "127.0.0.1:9092", rate: float = 20_000.0,
        partitions: int = 1, variants: Sequence[tuple[str, dict[str, str]]] = (("defaults", {}),),
        repeat: int = 1, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """The ``latency`` section: :func:`run_variant` for every variant, ``repeat`` rounds with the
    variants alternating (A B A B...: load bursts of the shared machine hit all alike); a row's
    samples are its variant's per-round values."""
    from bench.kafka import check_broker, cleanup

    check_broker(bootstrap)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    prefix = f"dw-bench.{run_id}.lat."
    runs: list[dict[str, Any]] = []
    tmp = tempfile.mkdtemp(prefix="dw-bench-latency-")
    data_path = os.path.join(tmp, "events.pickle")
    with open(data_path, "wb") as f:
        pickle.dump((ds.keys, ds.raw, ds.ts), f, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        for rnd in range(repeat):
            for name, env in variants:
                res = run_variant(ds, bootstrap, prefix, f"{name}-{rnd}", env, rate, partitions,
                                  data_path, log)
                res["variant"], res["round"] = name, rnd
                res.pop("pipeline_samples", None)
                runs.append(res)
                log(f"latency[{name} #{rnd + 1}]: {res['flags']} flags; pipeline "
                    + (f"p50 {res['pipeline']['p50']:.2f}s p99 {res['pipeline']['p99']:.2f}s"
                       if res["pipeline"] else "no flags")
                    + f"; backlog max {res['max_backlog_events']:,.0f} events")
    finally:
        groups = [f"{r['group']}.{s}" for r in runs for s in ("account", "campaign", "policy")]
        info_cleanup = cleanup(bootstrap, prefix, groups)
        with contextlib.suppress(OSError):
            os.unlink(data_path)
            os.rmdir(tmp)
    rows: list[dict[str, Any]] = []
    for name, _env in variants:
        rows += rows_for([r for r in runs if r["variant"] == name])
    return {"section": SECTION, "rows": rows,
            "info": {"events": len(ds), "rate": rate, "partitions": partitions, "repeat": repeat,
                     "runs": runs, "cleanup": info_cleanup}}


def rows_for(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of one variant (one sample per round): p50 and p99 of both latencies, and detect's
    CPU time per event; notes: flags, p90/max, the backlog (did detect keep up?)."""
    if not results:
        return []
    name = results[0]["variant"]
    ci = results[0]["commit_interval_ms"]
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    backlog = med([r["max_backlog_events"] for r in results])
    drain = med([r["drain_s"] for r in results])
    achieved = med([r["achieved_rate"] for r in results])
    kept = (f"{achieved:,.0f} ev/s produced; detect backlog max {backlog:,.0f} events "
            f"({backlog / max(achieved, 1):.1f}s), drained {drain:.1f}s after the last")
    tag = f"{name} (commit {ci} ms)"
    rows = []
    for what, label in (("pipeline", "trigger request produced → flag visible"),
                        ("account", "account's latest request produced → flag visible")):
        ok = [r for r in results if r[what] is not None]
        if not ok:
            continue
        flags = "/".join(sorted({str(r["flags"]) for r in ok}))
        for q in ("p50", "p99"):
            note = (f"{flags} flags; p90 {med([r[what]['p90'] for r in ok]):.2f}s, max "
                    f"{med([r[what]['max'] for r in ok]):.2f}s" if q == "p50" else kept)
            rows.append(make_row(SECTION, f"{tag}: {label}, {q}", [r[what][q] for r in ok], "s", note))
    rows.append(make_row(SECTION, f"{tag}: detect CPU per event", [r["cpu_us_per_event"] for r in results],
                         "µs/event", "user+system CPU of the detect process while producing and draining"))
    return rows
