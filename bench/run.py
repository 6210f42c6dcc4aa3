"""Run the distillwatch benchmarks and print one table (median of N repeats, plus ratios).

    python bench/run.py                      # day scenario, all events, 3 repeats (~5-10 min)
    python bench/run.py --quick              # 30k events of day, < ~2 min
    python bench/run.py --events 50000 --repeat 5 --json out.json
    python bench/run.py --only validation,core --profile
    python bench/run.py --partitions 1,3     # Kafka part on 1 and on 3 partitions
    python bench/run.py --only latency --latency-rate 5000 --latency-seconds 30
    python bench/run.py --only restore --restore-accounts 200000

Sections: ``validation`` (µs/event per way of validating a RequestEvent), ``core`` (pure
pipeline and per-stage events/s, internal messages per event), ``replay`` (``distillwatch replay
--input`` end to end, start-up apart), ``kafka`` (real broker: produce, the consume ceiling, a
Quix Streams peer, ``detect``), ``latency`` (real broker: request produced → flag visible under
paced load, ``detect`` live) and ``restore`` (the account stage's state: changelog bytes and
memory per account, restoring 1M accounts from a changelog topic). All numbers of one table are
measured in the same run; the machine is shared and noisy, so compare ratios within a run rather
than absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import orjson  # noqa: E402

from bench import common  # noqa: E402

SECTIONS = ("validation", "core", "replay", "kafka", "latency", "restore")
QUICK_EVENTS = 30_000


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--scenario", default="day", help="simulator scenario (smoke, day, week); default day")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--events", type=int, help="first N events of the scenario (default: all; --quick: 30000)")
    p.add_argument("--repeat", type=int, default=3, help="repeats per measurement (the median is shown)")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_EVENTS:,} events, small validation sample, no .gz replay, no threaded detect")
    p.add_argument("--only", help=f"comma-separated sections to run ({', '.join(SECTIONS)})")
    p.add_argument("--skip", help="comma-separated sections to skip")
    p.add_argument("--json", metavar="FILE", help="also write every sample and fact as JSON")
    p.add_argument("--validation-events", type=int, help="validation sample size (default 20000; quick 5000)")
    p.add_argument("--chunk", type=int, default=4096, help="events per LocalPipeline.feed call (as replay)")
    p.add_argument("--gz", action=argparse.BooleanOptionalAction, default=None,
                   help="also replay a .jsonl.gz file (default: on, off with --quick)")
    p.add_argument("--no-subprocess", action="store_true", help="replay: skip the subprocess runs")
    p.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    p.add_argument("--partitions", default="1", help="Kafka: comma-separated partition counts, e.g. 1,3")
    p.add_argument("--threaded", action=argparse.BooleanOptionalAction, default=None,
                   help="Kafka: also run detect with the stages in threads (default on, off with --quick)")
    p.add_argument("--compare-commit-ms", default="",
                   help="Kafka: also run detect with these commit_interval_ms (comma-separated), "
                        "as ratios to the default's")
    p.add_argument("--compare-batch-size", default="",
                   help="Kafka: also run detect with these batch_size (comma-separated), as ratios to the default's")
    p.add_argument("--quix", action=argparse.BooleanOptionalAction, default=True,
                   help="Kafka: also run the Quix Streams peer (needs the bench extra; default on)")
    p.add_argument("--latency-rate", type=float,
                   help="latency: events/s produced (default 2000; see bench/README.md)")
    p.add_argument("--latency-seconds", type=float,
                   help="latency: seconds of paced load per run (default 60; quick 10)")
    p.add_argument("--latency-compare-ms", default="1000",
                   help="latency: also run detect with these commit_interval_ms (comma-separated; "
                        "'' for none); default 1000, the default before issue #13")
    p.add_argument("--latency-repeat", type=int,
                   help="latency: rounds of (defaults, compared settings), alternating (default 2; quick 1)")
    p.add_argument("--restore-accounts", type=int,
                   help="restore: accounts in the changelog (default 1000000; quick 50000)")
    p.add_argument("--restore-chunk", type=int, default=50_000,
                   help="restore: accounts per processor when restoring (default 50000)")
    p.add_argument("--profile", nargs="?", const=100_000, type=int, metavar="N",
                   help="also cProfile LocalPipeline over the first N events (default 100000)")
    p.add_argument("--profile-top", type=int, default=15)
    return p


def selected(args: argparse.Namespace) -> list[str]:
    only = [s.strip() for s in args.only.split(",")] if args.only else list(SECTIONS)
    skip = {s.strip() for s in args.skip.split(",")} if args.skip else set()
    bad = [s for s in (*only, *skip) if s not in SECTIONS]
    if bad:
        raise SystemExit(f"unknown section(s) {bad}; known: {', '.join(SECTIONS)}")
    return [s for s in SECTIONS if s in only and s not in skip]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected sections; returns the whole result (what ``--json`` writes)."""
    sections = selected(args)
    if {"kafka", "latency", "restore"} & set(sections):
        from consumers import logs

        logs.configure("WARNING")  # the Kafka runners log every checkpoint at INFO
    events = args.events if args.events is not None else (QUICK_EVENTS if args.quick else None)
    gz = args.gz if args.gz is not None else not args.quick
    threaded = args.threaded if args.threaded is not None else not args.quick
    vsize = args.validation_events or (5_000 if args.quick else 20_000)
    partitions = [int(x) for x in args.partitions.split(",") if x.strip()]
    t_start = time.perf_counter()
    result: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": common.machine_facts(),
        "args": {k: v for k, v in vars(args).items()},
        "sections": [],
        "skipped": {},
    }
    need = None if events is None else max(events, args.profile or 0)
    log(f"generating {args.scenario} seed {args.seed} ({need or 'all'} events) ...")
    ds_all = common.load_dataset(args.scenario, args.seed, need)
    ds = ds_all if events is None or events >= len(ds_all) else common.Dataset(
        ds_all.scenario, ds_all.seed, ds_all.raw[:events], ds_all.keys[:events], ds_all.ts[:events],
        ds_all.gen_seconds)
    result["dataset"] = {"scenario": ds.scenario, "seed": ds.seed, "events": len(ds),
                         "avg_bytes": round(ds.avg_bytes, 1), "generate_s": round(ds_all.gen_seconds, 2)}
    log(f"{len(ds):,} events, {ds.avg_bytes:.0f} bytes each on average "
        f"(generated in {ds_all.gen_seconds:.1f}s)")
    expected_flags: int | None = None

    def attempt(name: str, fn: Any) -> dict[str, Any] | None:
        """Run one section; a failure is reported and the other sections still run."""
        try:
            sec = fn()
        except Exception as exc:  # noqa: BLE001 - reported in the table and the JSON
            log(f"{name}: FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc()
            result["skipped"][name] = f"FAILED: {type(exc).__name__}: {str(exc)[:500]}"
            return None
        result["sections"].append(sec)
        return sec

    def broker_up(name: str, without: str = "skipped") -> bool:
        """Whether the broker answers; if not, the section says why (and what it does without)."""
        from bench import kafka

        try:
            kafka.check_broker(args.bootstrap_servers)
        except kafka.BrokerUnavailable as exc:
            log(f"{name}: {without}: {exc} (start it with: bash deploy/kafka/broker.sh start)")
            result["skipped"][name] = str(exc)
            return False
        return True

    if "validation" in sections:
        from bench import validation

        log(f"validation: {min(vsize, len(ds)):,} events x {args.repeat} repeats ...")
        attempt("validation", lambda: validation.run(ds.raw, args.repeat, vsize))
    if "core" in sections:
        from bench import core

        log(f"core: LocalPipeline and each stage, {len(ds):,} events x {args.repeat} repeats ...")
        sec = attempt("core", lambda: core.run(ds.raw, args.repeat, args.chunk))
        if sec is not None:
            expected_flags = sec["info"]["flags"]
    if "replay" in sections:
        from bench import replay

        log(f"replay: in process{' and subprocess' if not args.no_subprocess else ''}"
            f"{' (.jsonl and .jsonl.gz)' if gz else ''} x {args.repeat} repeats ...")
        sec = attempt("replay", lambda: replay.run(ds.raw, args.repeat, gz=gz,
                                                   subprocess_runs=not args.no_subprocess))
        if sec is not None and expected_flags is None:
            expected_flags = sec["info"].get("flags")
    if "kafka" in sections:
        from bench import kafka

        if broker_up("kafka"):
            log(f"kafka: partitions {partitions}, {args.repeat} repeats, threaded={threaded} ...")
            attempt("kafka", lambda: kafka.run(ds, args.repeat, partitions, args.bootstrap_servers,
                                               threaded=threaded, quix_peer=args.quix,
                                               compare_commit_ms=[int(x) for x in
                                                                  args.compare_commit_ms.split(",") if x.strip()],
                                               compare_batch_size=[int(x) for x in
                                                                   args.compare_batch_size.split(",") if x.strip()],
                                               expected_flags=expected_flags, log=log))
    if "latency" in sections:
        from bench import kafka, latency

        rate = args.latency_rate or 2_000.0
        seconds = args.latency_seconds or (10.0 if args.quick else 60.0)
        n_lat = int(rate * seconds)
        if broker_up("latency"):
            ds_lat = ds_all if len(ds_all) >= n_lat else common.load_dataset(args.scenario, args.seed, n_lat)
            if len(ds_lat) < n_lat:
                log(f"latency: {args.scenario} has {len(ds_lat):,} events: {len(ds_lat) / rate:.0f}s at "
                    f"{rate:,.0f}/s (use --scenario week for more)")
            ds_lat = common.Dataset(ds_lat.scenario, ds_lat.seed, ds_lat.raw[:n_lat], ds_lat.keys[:n_lat],
                                    ds_lat.ts[:n_lat], ds_lat.gen_seconds)
            variants: list[tuple[str, dict[str, str]]] = [("defaults", {})]
            variants += [(f"commit{c.strip()}", {"DISTILLWATCH_COMMIT_INTERVAL_MS": c.strip()})
                         for c in args.latency_compare_ms.split(",") if c.strip()]
            rounds = args.latency_repeat or (1 if args.quick else 2)
            log(f"latency: {len(ds_lat):,} events at {rate:,.0f}/s, variants "
                f"{[v[0] for v in variants]}, {rounds} round(s) ...")
            attempt("latency", lambda: latency.run(ds_lat, args.bootstrap_servers, rate,
                                                   variants=variants, repeat=rounds, log=log))
    if "restore" in sections:
        from bench import kafka, restore

        n_acc = args.restore_accounts or (50_000 if args.quick else 1_000_000)
        with_broker = broker_up("restore (changelog topic)", "no broker: state sizes and in-memory restore only")
        log(f"restore: {n_acc:,} accounts cloned from the states after {len(ds):,} events ...")
        attempt("restore", lambda: restore.run(ds, args.bootstrap_servers, n_acc,
                                               min(args.restore_chunk, n_acc), broker=with_broker,
                                               log=log))
    if args.profile:
        from bench import core

        n = min(args.profile, len(ds_all))
        log(f"profile: cProfile of LocalPipeline over {n:,} events ...")
        prof = core.profile(ds_all.raw[:n], top=args.profile_top, chunk=args.chunk)
        result["profile"] = {k: v for k, v in prof.items()}
    result["machine"]["loadavg_end"] = common.machine_facts()["loadavg_1_5_15"]
    result["duration_s"] = round(time.perf_counter() - t_start, 1)
    return result


def report(result: dict[str, Any]) -> str:
    """The human-readable report: machine facts, the table, per-section facts, the profile."""
    ds = result["dataset"]
    parts = [
        f"distillwatch benchmarks — {ds['scenario']} seed {ds['seed']}, {ds['events']:,} events "
        f"({ds['avg_bytes']:.0f} B/event), repeat {result['args']['repeat']}, "
        f"run took {result['duration_s']:.0f}s",
        "machine:",
        common.format_facts(result["machine"]),
        "",
        common.format_table([r for sec in result["sections"] for r in sec["rows"]]),
    ]
    for name, why in result["skipped"].items():
        parts.append(f"\n{name}: NOT MEASURED — {why}")
    for sec in result["sections"]:
        if sec["section"] == "kafka":
            for run_ in sec["info"]["runs"]:
                for label in ("sequential", "threaded"):
                    for i, res in enumerate(run_[label]):
                        st = "; ".join(
                            f"{s['stage']} {s['wall_s']:.1f}s (start {s['startup_s'] or 0:.1f}, "
                            f"stream {s['streaming_s'] or 0:.1f}, process {s['process_busy_s']:.1f}, "
                            f"{s['checkpoints']} ckpt)"
                            for s in res["stages"])
                        parts.append(f"kafka P={run_['partitions']} {label} #{i + 1}: {st}")
            parts.append(f"kafka Quix Streams peer: {sec['info']['quix']}")
            parts.append(f"kafka cleanup: {sec['info']['cleanup']}")
        if sec["section"] == "latency":
            i = sec["info"]
            parts.append(f"latency: {i['events']:,} events at {i['rate']:,.0f}/s, {i['repeat']} round(s); "
                         "trigger = first request with ts_ms >= the flag's decided_at_ms; "
                         f"cleanup {i['cleanup']}")
        if sec["section"] == "restore":
            i = sec["info"]
            parts.append(f"restore: {i['templates']:,} template accounts (states after {i['events']:,} "
                         f"events) cloned to {i['accounts']:,}; a new processor (its behaviour model) "
                         f"{i['empty_processor_bytes'] / 1e3:,.0f} KB"
                         + (f"; cleanup {i['cleanup']}" if "cleanup" in i else ""))
    if "profile" in result:
        parts += ["", result["profile"]["text"]]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = run(args)
    print(report(result))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
