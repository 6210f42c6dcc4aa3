"""``distillwatch demo``: the whole product, end to end, on a local broker.

1. starts (or reuses) the local Kafka broker (``deploy/kafka/broker.sh start``) unless
   ``--bootstrap-servers`` points at one;
2. creates fresh topics for this run (``demo.<run>.llm.requests`` ...), so demos never mix;
3. simulates a day of traffic with a hydra-style campaign and the other attack families among
   honest personas, writes the ground-truth labels, and produces the events to Kafka;
4. runs the detector — the three stages, exactly once, on Kafka — until the input is consumed,
   printing where its metrics and health endpoints are (``--http-port``, default 9400);
5. reads the flags back (read_committed), prints the flagged accounts and the quality against
   the ground truth, and writes the HTML report.
"""

from __future__ import annotations

import argparse
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from consumers import logs
from consumers.config import DetectSettings, KafkaSettings
from consumers.contract.flags import ACTION_RANK
from consumers.core.config import DetectorConfig
from consumers.evaluate import evaluate, headline_table, write_report
from consumers.kafka.admin import TopicSpec, ensure_topics
from consumers.kafka.deployment import build_runners, ensure_pipeline_topics
from consumers.kafka.naming import STAGES, pipeline_topics
from consumers.kafka.reader import read_flags_topic
from consumers.kafka.telemetry import HttpServer, Telemetry, serve
from consumers.sim.generator import generate
from consumers.sim.writer import produce_events, write_events, write_labels

REPO = Path(__file__).resolve().parents[1]
BROKER_SCRIPT = REPO / "deploy" / "kafka" / "broker.sh"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap-servers", help="use this broker instead of starting the local one")
    p.add_argument("--scenario", default="day", help="simulator scenario (default: day)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--partitions", type=int, default=1, help="partitions of the demo topics")
    p.add_argument("--out", default="reports/demo", help="directory for events, labels, flags and the report")
    p.add_argument("--show", type=int, default=15, help="flagged accounts to print")
    p.add_argument("--http-port", type=int, default=None,
                   help="serve the detector's /metrics, /healthz, /readyz here while it runs "
                        "(default $DISTILLWATCH_HTTP_PORT or 9400; a free port if that is taken; 0 = off)")


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def ensure_broker(bootstrap: str | None) -> str:
    if bootstrap:
        return bootstrap
    if not BROKER_SCRIPT.exists():
        raise SystemExit("demo: deploy/kafka/broker.sh not found — run from a checkout or pass --bootstrap-servers")
    say("starting (or reusing) the local Kafka broker on 127.0.0.1:9092 ...")
    r = subprocess.run(["bash", str(BROKER_SCRIPT), "start"], text=True, capture_output=True)
    for line in (r.stdout + r.stderr).strip().splitlines()[-3:]:
        say("  " + line)
    if r.returncode != 0:
        raise SystemExit(f"demo: the broker did not start (exit {r.returncode})")
    return "127.0.0.1:9092"


def start_metrics(telemetry: Telemetry, port: int) -> HttpServer | None:
    """Serve metrics on 127.0.0.1:``port``, or on a free port when it is taken (a demo must run)."""
    if port == 0:
        return None
    try:
        return serve(telemetry, port, "127.0.0.1")
    except OSError:
        return serve(telemetry, 0, "127.0.0.1")


def _fmt_flag(f: dict[str, Any], label: dict[str, Any] | None) -> str:
    truth = f"{label['label']}/{label['group']}" if label else "?"
    codes = ",".join(r["code"] for r in f["reasons"][:4])
    camp = f["campaign_id"] or "-"
    return f"  {f['account_id'][:22]:22s} {f['action']:8s} {f['score']:.2f}  {camp:17s} {truth:24s} {codes}"


def run(args: argparse.Namespace) -> int:
    if args.log_level.upper() == "INFO":
        logs.configure("WARNING", args.log_format)  # the demo narrates; runners only warn
    t_start = time.monotonic()
    bootstrap = ensure_broker(args.bootstrap_servers)
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
    prefix = f"demo.{run_id}."
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap,
        requests_topic=prefix + "llm.requests",
        flags_topic=prefix + "distillation.flags",
        dlq_topic=prefix + "llm.requests.dlq",
        group_id="demo",
        internal_prefix=prefix,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # --- 1. topics --------------------------------------------------------------------------
    say(f"creating topics {kafka.requests_topic}, {kafka.flags_topic}, {kafka.dlq_topic} "
        f"({args.partitions} partition(s)) and the detector's internal topics")
    # the simulated events carry their own (past) event times: keep them whatever their age
    ensure_topics(kafka, [TopicSpec(kafka.requests_topic, args.partitions, config={"retention.ms": "-1"})])
    ensure_pipeline_topics(kafka)

    # --- 2. traffic ---------------------------------------------------------------------------
    say(f"simulating scenario '{args.scenario}' (seed {args.seed}): honest personas + attack campaigns")
    events_iter, labels = generate(args.scenario, args.seed)
    n_attack = sum(1 for lab in labels if lab["label"] == "attack")
    fam = Counter(lab["group"] for lab in labels if lab["label"] == "attack")
    say(f"  {len(labels)} accounts, {n_attack} of them attack accounts: "
        + ", ".join(f"{k} {v}" for k, v in sorted(fam.items())))
    events_path = out / "events.jsonl.gz"
    labels_path = out / "labels.jsonl"
    write_labels(labels, labels_path)
    events = list(events_iter)
    write_events(events, events_path)
    t0 = time.monotonic()
    n = produce_events(events, kafka.requests_topic, kafka, event_timestamps=True)
    say(f"  produced {n:,} events to {kafka.requests_topic} in {time.monotonic() - t0:.1f}s "
        f"(events: {events_path}, labels: {labels_path})")

    # --- 3. detection ---------------------------------------------------------------------------
    cfg = DetectorConfig()
    ds = DetectSettings(commit_interval_ms=1000, batch_size=5000)
    if args.http_port is not None:
        ds = ds.model_copy(update={"http_port": args.http_port})
    say("running the detector on Kafka: account stage -> campaign stage -> policy stage "
        "(exactly-once transactions, state in compacted changelogs)")
    telemetry = Telemetry()
    server = start_metrics(telemetry, ds.http_port)
    if server is not None:
        say(f"  metrics: {server.url}/metrics (health: {server.url}/healthz, {server.url}/readyz)")
    topics = pipeline_topics(kafka)
    t0 = time.monotonic()
    runners = build_runners(kafka, cfg, ds, STAGES, stop_at_end=True, progress_interval_s=3600.0,
                            telemetry=telemetry)
    for runner in runners:
        ts = time.monotonic()
        runner.run()
        m = runner.metrics.snapshot()
        produced = ", ".join(f"{v:,} {k}" for k, v in m.get("produced", {}).items())
        say(f"  {runner.spec.name:8s} stage: consumed {m.get('consumed', 0):,} from "
            f"{topics[runner.spec.inputs[0]]}, produced {produced} in {time.monotonic() - ts:.1f}s")
    secs = time.monotonic() - t0
    if server is not None:
        server.close()
    say(f"  detection took {secs:.1f}s ({n / max(secs, 1e-9):,.0f} events/s through all three stages)")

    # --- 4. results -----------------------------------------------------------------------------
    flags = read_flags_topic(kafka.flags_topic, bootstrap)
    with open(out / "flags.jsonl", "wb") as f:
        for fl in flags:
            f.write(orjson.dumps(fl) + b"\n")
    latest: dict[str, dict[str, Any]] = {}
    for fl in flags:
        latest[fl["account_id"]] = fl
    by_label = {lab["account_id"]: lab for lab in labels}
    actions = Counter(fl["action"] for fl in latest.values())
    say(f"{len(flags):,} flags for {len(latest):,} accounts read back from {kafka.flags_topic} "
        f"(read_committed): " + ", ".join(f"{k} {v}" for k, v in sorted(actions.items())))
    order = sorted(latest.values(), key=lambda f: (-ACTION_RANK[f["action"]],
                                                   -f["score"], f["account_id"]))
    print(f"\n  {'account':22s} {'action':8s} score  {'campaign':17s} {'truth':24s} reasons")
    for fl in order[: args.show]:
        print(_fmt_flag(fl, by_label.get(fl["account_id"])))
    if len(order) > args.show:
        print(f"  ... {len(order) - args.show} more in {out / 'flags.jsonl'}")
    # the worst mistakes, if any
    fps = [fl for fl in order if fl["action"] != "review"
           and by_label.get(fl["account_id"], {}).get("label") == "benign"]
    if fps:
        print("\n  enforced benign accounts (false positives):")
        for fl in fps[:5]:
            print(_fmt_flag(fl, by_label.get(fl["account_id"])))

    say("quality against the ground truth (enforcing = throttle or suspend):")
    metrics = evaluate(events, labels, flags)  # the events produced above, still in memory
    print()
    print(headline_table(metrics))
    paths = write_report(metrics, out)
    print()
    say(f"report: {paths[1] if isinstance(paths, tuple | list) else paths} — open it in a browser")
    say(f"done in {time.monotonic() - t_start:.0f}s. Topics are kept under prefix '{prefix}'.")
    return 0
