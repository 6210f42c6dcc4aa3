"""On the real broker, in one run: produce the scenario, the consume ceiling, a Quix peer, detect.

For each requested partition count ``P``:

1. **produce** the data set to a fresh ``<prefix>p<P>.requests`` topic (``retention.ms=-1``:
   message timestamps are the events' ``ts_ms``, months in the past), keyed by ``account_id``,
   with the simulator's producer settings (lz4, ``linger.ms`` 20, idempotent);
2. **consume ceiling** — a plain ``Consumer`` (``read_committed``, ``assign`` at the beginning, no
   group join) with the best settings for throughput (:data:`CEILING_CONSUMER`: large fetches, a
   deep local queue; ``consume(num_messages=10000)``) reading the whole topic doing nothing per
   message, then ``orjson.loads`` of each value (the ceiling of any Python consumer that looks at
   the values), then ``parse_event``; and, for comparison, doing nothing with the consumer
   settings and batch size of detect's runners;
3. **Quix Streams peer** (:mod:`bench.quix`, when ``quixstreams`` is installed) — at-least-once,
   a per-account hourly tumbling window (count, sum, max) over the same topic;
4. **detect, sequential** — what ``distillwatch detect --stop-at-end`` does: ``ensure_pipeline_topics``
   then :func:`consumers.kafka.deployment.build_runners` and each stage's ``run()`` one after the other
   (account, campaign, policy) with the default ``DetectSettings``. The account stage alone and the
   whole pipeline are reported, in events/s of the requests topic, by wall time (``run()`` call to
   return: start-up, group join, restore, processing, final commit, close) and *streaming* (first
   to last ``process`` call);
5. **detect, threaded** (optional) — what ``distillwatch detect`` runs live: the three stages in
   threads of one process (:func:`consumers.kafka.runner.run_all`), stopped once every stage has
   consumed everything the stage before it produced; wall time from start to all runners stopped.

Each repeat uses a fresh group id (so fresh internal topics and changelogs). Ratios (issue #13's
targets): every detect row ÷ the consume + ``orjson.loads`` ceiling, and the account stage ÷ the
Quix peer. With one partition the number of flags must equal file replay's (checked when
``expected_flags`` is given). Every topic whose name holds the run's prefix (Quix's changelog
topics included) and every consumer group of the run is deleted at the end, even on failure.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from bench.common import Dataset, make_row, rate, set_ratio

SECTION = "kafka"
STAGES = ("account", "campaign", "policy")

#: consumer settings of the ceiling: fetch up to 64 MiB per request and 16 MiB per partition, and
#: let librdkafka queue up to 256 MiB / 1M messages ahead of ``consume()``, so the Python loop never
#: waits for the broker (librdkafka's defaults: 50 MiB, 1 MiB, 64 MiB, 100k)
CEILING_CONSUMER: dict[str, Any] = {
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 16 * 1024 * 1024,
    "queued.max.messages.kbytes": 256 * 1024,
    "queued.min.messages": 1_000_000,
}
#: ``consume(num_messages=...)`` of the ceiling
CEILING_BATCH = 10_000
#: the ceiling's variants: (name, what is done with each value)
CEILING_VARIANTS = ("nothing", "orjson.loads", "parse_event")
#: the ratio base of every detect row
CEILING_BASE = "orjson.loads"


class BrokerUnavailable(RuntimeError):
    """No broker answered on the bootstrap servers."""


# ----------------------------------------------------------------------------- instrumentation


@dataclasses.dataclass
class StageClock:
    """Times of a stage's processor calls (all partitions of the runner together)."""

    first: float | None = None
    last: float | None = None
    busy: float = 0.0
    changes: float = 0.0
    calls: int = 0


class _TimedProcessor:
    """A processor proxy that records when ``process`` runs and how long it takes."""

    def __init__(self, proc: Any, clock: StageClock):
        self._proc = proc
        self._clock = clock

    def process(self, records: list[Any]) -> list[Any]:
        c = self._clock
        t0 = time.perf_counter()
        if c.first is None:
            c.first = t0
        out = self._proc.process(records)
        c.last = time.perf_counter()
        c.busy += c.last - t0
        c.calls += 1
        return out

    def take_changes(self) -> list[tuple[bytes, bytes | None]]:
        t0 = time.perf_counter()
        out = self._proc.take_changes()
        self._clock.changes += time.perf_counter() - t0
        return out

    def restore(self, entries: Any) -> None:
        self._proc.restore(entries)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._proc, name)


def instrument(runner: Any) -> StageClock:
    """Wrap the processors ``runner`` will build so their calls are timed."""
    clock = StageClock()
    factory = runner.spec.factory
    runner.spec = dataclasses.replace(runner.spec, factory=lambda p: _TimedProcessor(factory(p), clock))
    return clock


# ----------------------------------------------------------------------------- broker helpers


def _admin(bootstrap: str) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap})


def check_broker(bootstrap: str, timeout: float = 5.0) -> None:
    """Raise :class:`BrokerUnavailable` unless a broker answers within ``timeout``."""
    from confluent_kafka import KafkaException

    try:
        _admin(bootstrap).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(f"no Kafka broker on {bootstrap}: {exc}") from exc


def produce_dataset(bootstrap: str, topic: str, ds: Dataset, timeout: float = 300.0) -> float:
    """Produce every event (key account_id, timestamp ts_ms) with the simulator's producer;
    returns seconds to the last ack. The values are serialised beforehand, so this times
    producing only."""
    from consumers.config import KafkaSettings
    from consumers.sim.writer import produce_raw

    t0 = time.perf_counter()
    n = produce_raw(zip(ds.keys, ds.raw, ds.ts, strict=True), topic,
                    KafkaSettings(bootstrap_servers=bootstrap), flush_timeout=timeout)
    secs = time.perf_counter() - t0
    if n != len(ds):
        raise RuntimeError(f"produce to {topic}: {n} of {len(ds)} delivered")
    return secs


def raw_consume(bootstrap: str, topic: str, partitions: int, expected: int,
                decode: Callable[[bytes], Any] | None = None, batch: int = CEILING_BATCH,
                timeout: float = 300.0, settings: dict[str, Any] | None = None) -> dict[str, float]:
    """Read the whole topic with a plain consumer; ``decode`` is applied to every value.

    ``settings`` are extra consumer settings (:data:`CEILING_CONSUMER` for the ceiling; none for
    librdkafka's defaults, as detect's runners use them).

    Returns ``{"seconds", "streaming_seconds", "messages"}``: ``seconds`` from ``assign`` to the
    end of every partition, ``streaming_seconds`` from the first batch with messages.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"dw-bench-raw-{uuid.uuid4().hex[:12]}",  # never joined nor committed
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        **(settings or {}),
    })
    eof_code = KafkaError._PARTITION_EOF
    n = 0
    eof: set[int] = set()
    first: float | None = None
    try:
        t0 = time.perf_counter()
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        deadline = t0 + timeout
        while len(eof) < partitions or n < expected:
            msgs = consumer.consume(num_messages=batch, timeout=0.5)
            if msgs and first is None:
                first = time.perf_counter()
            for m in msgs:
                err = m.error()
                if err is None:
                    n += 1
                    if decode is not None:
                        decode(m.value())
                elif err.code() == eof_code:
                    eof.add(m.partition())
                else:
                    raise RuntimeError(f"raw consume of {topic}: {err}")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"raw consume of {topic}: {n}/{expected} messages in {timeout}s")
        t1 = time.perf_counter()
    finally:
        consumer.close()
    if n != expected:
        raise RuntimeError(f"raw consume of {topic}: {n} messages, expected {expected}")
    return {"seconds": t1 - t0, "streaming_seconds": t1 - (first or t0), "messages": n}


def _prepare(bootstrap: str, topic: str, prefix: str, group: str, cfg: Any,
             stop_at_end: bool, overrides: dict[str, Any] | None = None
             ) -> tuple[list[Any], list[StageClock], float]:
    """The pipeline's topics and the three stages' runners (instrumented), as ``detect`` builds
    them; returns the runners, their clocks and the seconds the topic set-up took."""
    from consumers.config import DetectSettings, KafkaSettings
    from consumers.kafka.deployment import build_runners, ensure_pipeline_topics

    kafka = KafkaSettings(bootstrap_servers=bootstrap, requests_topic=topic,
                          flags_topic=f"{prefix}{group}.flags", dlq_topic=f"{prefix}{group}.dlq",
                          internal_prefix=prefix, group_id=group)
    t0 = time.perf_counter()
    ensure_pipeline_topics(kafka)
    setup = time.perf_counter() - t0
    ds = DetectSettings(**(overrides or {}))
    runners = build_runners(kafka, cfg, ds, STAGES, stop_at_end=stop_at_end,
                            progress_interval_s=3600.0)
    return runners, [instrument(r) for r in runners], setup


def _stage_result(r: Any, clock: StageClock, t_start: float, t_end: float) -> dict[str, Any]:
    snap = r.metrics.snapshot()
    return {
        "stage": r.spec.name,
        "wall_s": t_end - t_start,
        "startup_s": (clock.first - t_start) if clock.first is not None else None,
        "streaming_s": (clock.last - clock.first) if clock.first is not None and clock.last else None,
        "shutdown_s": (t_end - clock.last) if clock.last is not None else None,
        "process_busy_s": clock.busy,
        "take_changes_s": clock.changes,
        "process_calls": clock.calls,
        "consumed": snap["consumed"],
        "produced": snap["produced"],
        "checkpoints": snap["checkpoints"],
        "changelog_records": snap["changelog_records"],
        "aborts": snap["aborts"],
    }


def _run_to_end(runner: Any, timeout: float) -> bool:
    """``runner.run()`` in a worker thread (so Ctrl-C reaches us, not the runner's handler);
    stops it after ``timeout`` seconds. Returns True when it had to be stopped."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            runner.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    th = threading.Thread(target=target, name=f"bench-{runner.spec.name}", daemon=True)
    deadline = time.perf_counter() + timeout
    timed_out = False
    th.start()
    try:
        while th.is_alive():
            th.join(0.05)
            if not timed_out and time.perf_counter() > deadline:
                timed_out = True
                runner.stop()
    except BaseException:
        runner.stop()
        th.join(60)
        raise
    if errors:
        raise errors[0]
    return timed_out


def detect_sequential(bootstrap: str, topic: str, prefix: str, group: str, cfg: Any,
                      timeout: float, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``detect --stop-at-end``: topics, runners, then each stage's ``run()`` in pipeline order
    (``overrides``: ``DetectSettings`` fields other than the defaults, e.g. ``batch_size``)."""
    runners, clocks, setup = _prepare(bootstrap, topic, prefix, group, cfg, stop_at_end=True,
                                      overrides=overrides)
    stages = []
    cpu0 = time.process_time()
    for r, clock in zip(runners, clocks, strict=True):
        t_start = time.perf_counter()
        timed_out = _run_to_end(r, timeout)
        t_end = time.perf_counter()
        res = _stage_result(r, clock, t_start, t_end)
        res["timed_out"] = timed_out
        stages.append(res)
    return {"group": group, "setup_s": setup, "stages": stages,
            "observations_topic": runners[0].output_topics.get("observations"),
            "flags": runners[-1].metrics.produced.get("flags", 0),
            "wall_s": sum(s["wall_s"] for s in stages), "cpu_s": time.process_time() - cpu0}


def detect_threaded(bootstrap: str, topic: str, prefix: str, group: str, cfg: Any, n_events: int,
                    timeout: float, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``detect`` (all stages in threads, :func:`run_all`) until every stage caught up, then stop."""
    from consumers.kafka.runner import run_all

    runners, clocks, setup = _prepare(bootstrap, topic, prefix, group, cfg, stop_at_end=False,
                                      overrides=overrides)
    acc, camp, pol = runners
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_all(runners)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    th = threading.Thread(target=target, name="bench-detect", daemon=True)
    t_start = time.perf_counter()
    cpu0 = time.process_time()
    th.start()
    caught_up = None
    seen: tuple[int, ...] | None = None
    try:
        while th.is_alive():
            am, cm, pm = acc.metrics, camp.metrics, pol.metrics
            snap = (am.consumed, am.produced["observations"], cm.consumed, cm.produced["verdicts"],
                    pm.consumed, am.aborts + cm.aborts + pm.aborts)
            done = (snap[0] >= n_events and snap[2] >= snap[1] and snap[4] >= snap[3]
                    and not snap[5])
            # the runner counts a batch as consumed just before producing its outputs: only a
            # snapshot that stays the same for 0.1 s means every stage has caught up
            if done and snap == seen:
                caught_up = time.perf_counter()
                break
            seen = snap if done else None
            if time.perf_counter() - t_start > timeout:
                break
            time.sleep(0.1 if done else 0.02)
    finally:  # also on Ctrl-C: stop the runners (they commit and leave their groups)
        for r in runners:
            r.stop()
        th.join(120)
    t_end = time.perf_counter()
    cpu_s = time.process_time() - cpu0
    if errors:
        raise errors[0]
    stages = [_stage_result(r, c, t_start, t_end) for r, c in zip(runners, clocks, strict=True)]
    return {"group": group, "setup_s": setup, "stages": stages, "wall_s": t_end - t_start, "cpu_s": cpu_s,
            "caught_up_s": (caught_up - t_start) if caught_up else None,
            "timed_out": caught_up is None, "flags": pol.metrics.produced.get("flags", 0)}


def cleanup(bootstrap: str, prefix: str, groups: Sequence[str]) -> dict[str, Any]:
    """Delete every topic whose name holds ``prefix`` and the given consumer groups (best effort)."""
    admin = _admin(bootstrap)
    # Quix names its changelog topics changelog__<group>--<topic>--<store>: the prefix is inside
    topics = sorted(t for t in admin.list_topics(timeout=10).topics if prefix in t)
    deleted, failed = 0, []
    if topics:
        for name, fut in admin.delete_topics(topics, operation_timeout=30).items():
            try:
                fut.result(60)
                deleted += 1
            except Exception as exc:  # noqa: BLE001 - reported
                failed.append(f"{name}: {exc}")
    groups_deleted = 0
    if groups:
        try:
            for _g, fut in admin.delete_consumer_groups(list(groups), request_timeout=30).items():
                try:
                    fut.result(60)
                    groups_deleted += 1
                except Exception:  # noqa: BLE001 - e.g. a group that never committed
                    pass
        except Exception:  # noqa: BLE001
            pass
    return {"topics_deleted": deleted, "topics_failed": failed, "groups_deleted": groups_deleted}


# ----------------------------------------------------------------------------- the section


def run(ds: Dataset, repeat: int = 3, partitions: Sequence[int] = (1,),
        bootstrap: str = "127.0.0.1:9092", threaded: bool = True, quix_peer: bool = True,
        expected_flags: int | None = None, cfg: Any = None, timeout: float | None = None,
        compare_commit_ms: Sequence[int] = (), compare_batch_size: Sequence[int] = (),
        log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """All Kafka measurements for each partition count in ``partitions``; the ``kafka`` section.

    ``quix_peer``: also run the Quix Streams peer (skipped, with a note in ``info["quix"]``, when
    quixstreams is not installed). ``compare_commit_ms`` / ``compare_batch_size``: also run
    detect (sequential, and threaded when ``threaded``) with each of these ``commit_interval_ms``
    / ``batch_size`` in every repeat, right after the default's run: the throughput of a
    checkpoint cadence, of a batch size.
    """
    from bench import quix
    from consumers.config import GC_THRESHOLD, DetectSettings, KafkaSettings
    from consumers.contract.events import parse_event
    from consumers.core.config import DetectorConfig
    from consumers.kafka.admin import TopicSpec, ensure_topics

    cfg = cfg or DetectorConfig()
    detect_batch = DetectSettings().batch_size
    default_commit = DetectSettings().commit_interval_ms
    compare = ([(f"commit_interval_ms={c}", {"commit_interval_ms": c}) for c in compare_commit_ms
                if c != default_commit]
               + [(f"batch_size={b}", {"batch_size": b}) for b in compare_batch_size if b != detect_batch])
    defaults = f"commit {default_commit} ms, batch {detect_batch:,}"
    check_broker(bootstrap)
    n = len(ds)
    if not n:
        raise ValueError("no events")
    timeout = timeout or max(120.0, n / 500.0)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    prefix = f"dw-bench.{run_id}."
    groups: list[str] = []
    rows: list[dict[str, Any]] = []
    quix_version = quix.available() if quix_peer else None
    info: dict[str, Any] = {"events": n, "repeat": repeat, "prefix": prefix, "bootstrap": bootstrap,
                            "partitions": list(partitions), "runs": [],
                            "ceiling_consumer": CEILING_CONSUMER, "ceiling_batch": CEILING_BATCH,
                            "detect_batch": detect_batch,
                            "quix": (f"quixstreams {quix_version}" if quix_version else
                                     "not requested" if not quix_peer else
                                     f"skipped: quixstreams is not installed; {quix.REQUIREMENT}")}
    if quix_peer and not quix_version:
        log(f"kafka: Quix Streams peer skipped: quixstreams is not installed ({quix.REQUIREMENT})")
    decoders: dict[str, Callable[[bytes], Any] | None] = {
        "nothing": None, "orjson.loads": orjson.loads, "parse_event": parse_event}
    # every measurement of the section runs with the GC thresholds `distillwatch` sets (the
    # ceilings, the peer and detect alike): detect's stages run here as in its process
    saved_gc = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    info["gc_threshold"] = list(GC_THRESHOLD)
    try:
        for P in partitions:
            topic = f"{prefix}p{P}.requests"
            ensure_topics(KafkaSettings(bootstrap_servers=bootstrap),
                          [TopicSpec(topic, P, config={"retention.ms": "-1"})])
            log(f"kafka: producing {n:,} events to {topic} ({P} partition(s))")
            t_prod = produce_dataset(bootstrap, topic, ds)
            rows.append(make_row(SECTION, f"P={P} produce (lz4, idempotent, ts=ts_ms)", [rate(n, t_prod)],
                                 "events/s", f"{t_prod:.2f}s to the last ack"))
            raw: dict[str, list[dict[str, float]]] = {
                name: [] for name in (*CEILING_VARIANTS, "detect", "observations")}
            peer: list[dict[str, float]] = []
            seq: list[dict[str, Any]] = []
            thr: list[dict[str, Any]] = []
            alt: dict[str, dict[str, list[dict[str, Any]]]] = {c: {"seq": [], "thr": []} for c, _ in compare}
            for rep in range(repeat):
                for name in CEILING_VARIANTS:
                    raw[name].append(raw_consume(bootstrap, topic, P, n, decoders[name], CEILING_BATCH,
                                                 settings=CEILING_CONSUMER))
                raw["detect"].append(raw_consume(bootstrap, topic, P, n, None, detect_batch))
                log(f"kafka: P={P} repeat {rep + 1}/{repeat}: ceiling "
                    f"{n / raw['nothing'][-1]['seconds']:,.0f} ev/s, + orjson "
                    f"{n / raw['orjson.loads'][-1]['seconds']:,.0f} ev/s")
                if quix_version:
                    group = f"{prefix}quix-p{P}-{rep}"
                    groups.append(group)
                    try:
                        peer.append(quix.run_peer(bootstrap, topic, group, n, timeout))
                    except Exception as exc:  # noqa: BLE001 - the peer is a yardstick: detect still runs
                        info["quix"] += f"; repeat {rep + 1} FAILED: {type(exc).__name__}: {str(exc)[:200]}"
                        log(f"kafka: P={P} repeat {rep + 1}/{repeat}: Quix peer FAILED: {exc}")
                    else:
                        log(f"kafka: P={P} repeat {rep + 1}/{repeat}: Quix peer "
                            f"{n / peer[-1]['seconds']:,.0f} ev/s")
                log(f"kafka: P={P} repeat {rep + 1}/{repeat}: detect (sequential) ...")
                group = f"dwb-{run_id}-p{P}-s{rep}"
                groups += [f"{group}.{s}" for s in STAGES]
                seq.append(detect_sequential(bootstrap, topic, prefix, group, cfg, timeout))
                log(f"kafka: P={P} repeat {rep + 1}/{repeat}: detect sequential {n / seq[-1]['wall_s']:,.0f} ev/s"
                    + ("; detect (threaded) ..." if threaded else ""))
                # the internal records the account stage wrote, read as the ceiling reads requests
                obs_topic, produced = seq[-1]["observations_topic"], seq[-1]["stages"][0]["produced"]
                if obs_topic and produced.get("observations"):
                    raw["observations"].append(raw_consume(bootstrap, obs_topic, P, produced["observations"],
                                                           orjson.loads, CEILING_BATCH,
                                                           settings=CEILING_CONSUMER))
                if threaded:
                    group = f"dwb-{run_id}-p{P}-t{rep}"
                    groups += [f"{group}.{s}" for s in STAGES]
                    thr.append(detect_threaded(bootstrap, topic, prefix, group, cfg, n, timeout))
                for v, (c, over) in enumerate(compare):
                    log(f"kafka: P={P} repeat {rep + 1}/{repeat}: detect with {c} ...")
                    group = f"dwb-{run_id}-p{P}-v{v}-s{rep}"
                    groups += [f"{group}.{s}" for s in STAGES]
                    alt[c]["seq"].append(detect_sequential(bootstrap, topic, prefix, group, cfg, timeout, over))
                    if threaded:
                        group = f"dwb-{run_id}-p{P}-v{v}-t{rep}"
                        groups += [f"{group}.{s}" for s in STAGES]
                        alt[c]["thr"].append(detect_threaded(bootstrap, topic, prefix, group, cfg, n,
                                                             timeout, over))
            info["runs"].append({"partitions": P, "produce_s": t_prod, "raw": raw, "quix": peer,
                                 "sequential": seq, "threaded": thr, "default_commit_ms": default_commit,
                                 "other_commits": {str(c): v for c, v in alt.items()}})
            rows += _rows_for(P, n, raw, seq, thr, expected_flags if P == 1 else None, peer,
                              detect_batch)
            rows += _commit_rows(P, n, rows, defaults, alt, expected_flags if P == 1 else None)
    finally:
        gc.set_threshold(*saved_gc)
        info["cleanup"] = cleanup(bootstrap, prefix, groups)
    return {"section": SECTION, "rows": rows, "info": info}


def _commit_rows(P: int, n: int, rows: list[dict[str, Any]], defaults: str,
                 alt: dict[str, dict[str, list[dict[str, Any]]]],
                 expected_flags: int | None) -> list[dict[str, Any]]:
    """Detect's rows at other settings (``alt``: label such as ``batch_size=5000`` -> runs), each
    as a ratio to the same row at the defaults (``defaults``: how the ratio names them)."""
    by_case = {r["case"]: r for r in rows}
    out = []
    for c, res in alt.items():
        if res["seq"]:
            accs = [s["wall_s"] for r in res["seq"] for s in r["stages"] if s["stage"] == "account"]
            row = make_row(SECTION, f"P={P} detect --stage account (stop-at-end), {c}",
                           [rate(n, w) for w in accs], "events/s", "the sequential runs' account stage")
            base = by_case.get(f"P={P} detect --stage account (stop-at-end)")
            if base is not None:
                set_ratio(row, base, defaults)
            out.append(row)
        for kind, label, base_case in (
                ("seq", "detect --stop-at-end, 3 stages in turn", f"P={P} detect --stop-at-end, 3 stages in turn"),
                ("thr", "detect (threads, run_all) until caught up", f"P={P} detect (threads, run_all) until caught up")):
            results = res[kind]
            if not results:
                continue
            walls = ([sum(s["wall_s"] for s in r["stages"]) for r in results] if kind == "seq"
                     else [r["wall_s"] for r in results])
            ckpts = _median([sum(s["checkpoints"] for s in r["stages"]) for r in results])
            flags = sorted({r["flags"] for r in results})
            note = f"{ckpts:.0f} checkpoints; flags {'/'.join(map(str, flags))}"
            if expected_flags is not None:
                note += " = replay ✓" if flags == [expected_flags] else f" ≠ replay {expected_flags} ✗"
            note += _cpu_note(results, n)
            row = make_row(SECTION, f"P={P} {label}, {c}", [rate(n, w) for w in walls],
                           "events/s", note)
            if base_case in by_case:
                set_ratio(row, by_case[base_case], defaults)
            out.append(row)
    return out


def _cpu_note(results: Sequence[dict[str, Any]], n: int) -> str:
    """``; CPU x µs/event``: this process's CPU time (all threads, librdkafka's included) per
    event, median over repeats — less sensitive than wall time to other jobs on the machine."""
    cpu = [r["cpu_s"] for r in results if r.get("cpu_s") is not None]
    return f"; CPU {_median(cpu) / n * 1e6:.0f} µs/event" if cpu else ""


def _median(xs: Sequence[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def _rows_for(P: int, n: int, raw: dict[str, list[dict[str, float]]], seq: list[dict[str, Any]],
              thr: list[dict[str, Any]], expected_flags: int | None,
              peer: list[dict[str, float]] | None = None, detect_batch: int = 0) -> list[dict[str, Any]]:
    """The rows of one partition count. Ratios: the ceiling rows ÷ the ceiling doing nothing;
    the Quix peer and every detect row ÷ the consume + ``orjson.loads`` ceiling — except the
    account stage, ÷ the Quix peer when there is one (its ratio to the ceiling is in its note)."""
    rows = []
    tag = f"P={P}"
    ceiling = {}
    for name in CEILING_VARIANTS:
        runs = raw[name]
        what = "does nothing" if name == "nothing" else f"+ {name} of each value"
        stream = _median([rate(n, r["streaming_seconds"]) for r in runs])
        ceiling[name] = make_row(
            SECTION, f"{tag} consume ceiling (batch {CEILING_BATCH // 1000}k, large fetches), {what}",
            [rate(n, r["seconds"]) for r in runs], "events/s", f"streaming {stream:,.0f} ev/s")
        rows.append(ceiling[name])
    for r in rows:
        set_ratio(r, ceiling["nothing"], "ceiling")
    if raw.get("detect"):
        runs = raw["detect"]
        stream = _median([rate(n, r["streaming_seconds"]) for r in runs])
        row = make_row(SECTION, f"{tag} consume as detect's runners (batch {detect_batch:,}, default fetches), "
                       "does nothing", [rate(n, r["seconds"]) for r in runs], "events/s",
                       f"streaming {stream:,.0f} ev/s")
        set_ratio(row, ceiling["nothing"], "ceiling")
        rows.append(row)
    base = ceiling[CEILING_BASE]
    base_label = "consume+orjson"
    base_stream = _median([rate(n, r["streaming_seconds"]) for r in raw[CEILING_BASE]])

    if raw.get("observations"):
        # the floor of the three-stage topology in Python: every request is consumed and decoded
        # once, and so is each internal observation it causes — before any detection work,
        # producing or checkpointing
        runs = raw["observations"]
        per_req = _median([r["messages"] for r in runs]) / n
        t_obs = _median([r["seconds"] for r in runs])
        obs = make_row(SECTION, f"{tag} internal observations (account → campaign stage): consume ceiling "
                       "+ orjson.loads", [rate(int(r["messages"]), r["seconds"]) for r in runs], "records/s",
                       f"{per_req:.2f} per request")
        floor = make_row(SECTION, f"{tag} requests + their observations, consume ceiling + orjson.loads "
                         "(the topology's floor, no detection)",
                         [rate(n, r["seconds"] + t_obs) for r in raw[CEILING_BASE]], "events/s")
        set_ratio(floor, base, base_label)
        rows += [obs, floor]

    quix_row = None
    if peer:
        stream = _median([rate(n, r["streaming_seconds"]) for r in peer])
        quix_row = make_row(SECTION, f"{tag} Quix Streams peer: at-least-once, per-account 1 h tumbling "
                            "count/sum/max", [rate(n, r["seconds"]) for r in peer], "events/s",
                            f"streaming {stream:,.0f} ev/s")
        set_ratio(quix_row, base, base_label)
        rows.append(quix_row)

    def stage_rows(label: str, results: list[dict[str, Any]], which: Sequence[str]) -> dict[str, Any]:
        walls = [sum(s["wall_s"] for s in res["stages"] if s["stage"] in which) for res in results]
        streams = [sum(s["streaming_s"] or 0.0 for s in res["stages"] if s["stage"] in which)
                   for res in results]
        busy = [sum(s["process_busy_s"] for s in res["stages"] if s["stage"] in which) for res in results]
        stream = rate(n, _median(streams))
        note = (f"streaming {stream:,.0f} ev/s = {stream / base_stream:.2f}x {base_label} streaming; "
                f"in process() {_median(busy):.2f}s of {_median(walls):.2f}s wall")
        return make_row(SECTION, label, [rate(n, w) for w in walls], "events/s", note)

    acc = stage_rows(f"{tag} detect --stage account (stop-at-end)", seq, ("account",))
    whole = stage_rows(f"{tag} detect --stop-at-end, 3 stages in turn", seq, STAGES)
    flags = sorted({res["flags"] for res in seq})
    whole["note"] += f"; flags {'/'.join(map(str, flags))}"
    if expected_flags is not None:
        whole["note"] += " = replay ✓" if flags == [expected_flags] else f" ≠ replay {expected_flags} ✗"
        whole["flags_match_replay"] = flags == [expected_flags]
    whole["note"] += _cpu_note(seq, n)
    set_ratio(whole, base, base_label)
    if quix_row is not None:
        set_ratio(acc, quix_row, "Quix peer")
        acc["note"] += f"; {acc['median'] / base['median']:.2f}x {base_label}"
    else:
        set_ratio(acc, base, base_label)
    rows += [acc, whole]
    if thr:
        walls = [res["wall_s"] for res in thr]
        busy = [sum(s["process_busy_s"] for s in res["stages"]) for res in thr]
        tflags = sorted({res["flags"] for res in thr})
        note = f"in process() {_median(busy):.2f}s (3 threads); flags {'/'.join(map(str, tflags))}"
        if expected_flags is not None:
            note += " = replay ✓" if tflags == [expected_flags] else f" ≠ replay {expected_flags} ✗"
        if any(res["timed_out"] for res in thr):
            note += "; TIMED OUT"
        note += _cpu_note(thr, n)
        row = make_row(SECTION, f"{tag} detect (threads, run_all) until caught up", [rate(n, w) for w in walls],
                       "events/s", note)
        set_ratio(row, base, base_label)
        rows.append(row)
    return rows
