"""Run the distillwatch benchmarks and print one table (median of N repeats, plus ratios).

    python bench/run.py                      # day scenario, all events, 3 repeats (~5-10 min)
    python bench/run.py --quick              # 30k events of day, < ~2 min
    python bench/run.py --events 50000 --repeat 5 --json out.json
    python bench/run.py --only validation,core --profile
    python bench/run.py --partitions 1,3     # Kafka part on 1 and on 3 partitions

Sections: ``validation`` (µs/event per way of validating a RequestEvent), ``core`` (pure
pipeline and per-stage events/s, internal messages per event), ``replay`` (``distillwatch replay
--input`` end to end, start-up apart) and ``kafka`` (real broker: produce, raw consume ceiling,
``detect``). All numbers of one table are measured in the same run; the machine is shared and
noisy, so compare ratios within a run rather than absolute numbers across runs.
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

SECTIONS = ("validation", "core", "replay", "kafka")
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
    p.add_argument("--quix", action=argparse.BooleanOptionalAction, default=True,
                   help="Kafka: also run the Quix Streams peer (needs the bench extra; default on)")
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
    if "kafka" in sections:
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

        try:
            kafka.check_broker(args.bootstrap_servers)
        except kafka.BrokerUnavailable as exc:
            log(f"kafka: skipped: {exc} (start it with: bash deploy/kafka/broker.sh start)")
            result["skipped"]["kafka"] = str(exc)
        else:
            log(f"kafka: partitions {partitions}, {args.repeat} repeats, threaded={threaded} ...")
            attempt("kafka", lambda: kafka.run(ds, args.repeat, partitions, args.bootstrap_servers,
                                               threaded=threaded, quix_peer=args.quix,
                                               compare_commit_ms=[int(x) for x in
                                                                  args.compare_commit_ms.split(",") if x.strip()],
                                               expected_flags=expected_flags, log=log))
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
