"""``distillwatch evaluate-standard`` (``make eval``): the standard scenarios through ``replay``.

For every (scenario, seed) it simulates the traffic to ``DIR/<scenario>-s<seed>/events.jsonl.gz``
with its labels, runs ``replay`` over the file (the same detector as ``detect``), evaluates the
flags and writes that run's report; then it prints and writes (``DIR/summary.json``,
``DIR/summary.txt``) one table of every run's headline numbers and target checks.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import orjson

DEFAULT_RUNS = ("day:1", "day:2", "week:1", "week:2")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report", default="reports/standard", help="output directory")
    p.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), metavar="SCENARIO:SEED",
                   help=f"default: {' '.join(DEFAULT_RUNS)}")
    p.add_argument("--detector-config", metavar="FILE", help="JSON file of detector settings")
    p.add_argument("--fail-on-targets", action="store_true", help="exit 1 when a target is missed")


def simulate_replay_evaluate(scenario: str, seed: int, out: Path, detector_config: str | None = None,
                             scale: float | None = None, days: float | None = None
                             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Simulate ``scenario`` with ``seed`` into ``out``, replay it through the in-process pipeline,
    evaluate the flags and write the report there; return the metrics and a dict of sizes and
    timings (``events``, ``accounts``, ``simulate_s``, ``replay_s``, ``evaluate_s``,
    ``replay_events_per_s``)."""
    from consumers.config import load_detector_config
    from consumers.evaluate import evaluate, write_report
    from consumers.file_replay import replay_file
    from consumers.io import load_jsonl, read_lines
    from consumers.sim.generator import generate
    from consumers.sim.scenarios import get_scenario
    from consumers.sim.writer import write_events, write_labels

    out.mkdir(parents=True, exist_ok=True)
    events_path, labels_path, flags_path = out / "events.jsonl.gz", out / "labels.jsonl", out / "flags.jsonl"
    t0 = time.monotonic()
    events, labels = generate(get_scenario(scenario, scale=scale, days=days), seed)
    write_labels(labels, labels_path)
    n_events = write_events(events, events_path)
    t_sim = time.monotonic() - t0
    t0 = time.monotonic()
    counts = replay_file(str(events_path), str(flags_path), load_detector_config(detector_config))
    t_replay = time.monotonic() - t0
    t0 = time.monotonic()
    flags = load_jsonl(str(flags_path))
    metrics = evaluate((orjson.loads(x) for chunk in read_lines(str(events_path)) for x in chunk), labels, flags)
    write_report(metrics, out)
    info = {"events": n_events, "accounts": len(labels), "simulate_s": round(t_sim, 1),
            "replay_s": round(t_replay, 1), "evaluate_s": round(time.monotonic() - t0, 1),
            "replay_events_per_s": round(counts["lines"] / max(t_replay, 1e-9))}
    return metrics, info


def evaluate_run(scenario: str, seed: int, out: Path, detector_config: str | None = None) -> dict[str, Any]:
    """Simulate, replay and evaluate one run; return a summary row."""
    metrics, info = simulate_replay_evaluate(scenario, seed, out, detector_config)
    failed = [c for c in metrics["checks"] if c.get("ok") is False]
    return {
        "run": f"{scenario}-s{seed}", "events": info["events"], "accounts": info["accounts"],
        "simulate_s": info["simulate_s"], "replay_s": info["replay_s"],
        "replay_events_per_s": info["replay_events_per_s"],
        "overall": metrics["overall"],
        "groups": {g: {k: m.get(k) for k in ("accounts", "enforced_recall", "fpr", "leakage", "median_delay_h",
                                             "any_flag_rate", "review_queue")}
                   for g, m in metrics["groups"].items()},
        "campaign_purity": metrics["campaign_purity"].get("weighted_mean"),
        "failed_checks": failed,
    }


def _pct(v: Any) -> str:
    return "—" if v is None else f"{v:.1%}"


def summary_table(rows: list[dict[str, Any]]) -> str:
    groups: list[str] = []
    for r in rows:
        for g in r["groups"]:
            if g not in groups:
                groups.append(g)
    head = f"{'group':15s}" + "".join(f"{r['run']:>26s}" for r in rows)
    lines = [head, f"{'':15s}" + "".join(f"{'recall/FPR  leak  delay':>26s}" for _ in rows), "-" * len(head)]
    for g in groups:
        cells = []
        for r in rows:
            m = r["groups"].get(g)
            if m is None:
                cells.append(f"{'':>26s}")
            elif m.get("enforced_recall") is not None:
                d = "—" if m.get("median_delay_h") is None else f"{m['median_delay_h']:.1f}h"
                cells.append(f"{_pct(m['enforced_recall']):>10s} {_pct(m['leakage']):>7s} {d:>7s}")
            else:
                cells.append(f"{_pct(m.get('fpr')):>10s} {'':>7s} {'':>7s}")
        lines.append(f"{g:15s}" + "".join(cells))
    lines.append("-" * len(head))
    lines.append(f"{'precision':15s}" + "".join(f"{_pct(r['overall'].get('precision')):>26s}" for r in rows))
    lines.append(f"{'leakage':15s}" + "".join(f"{_pct(r['overall'].get('leakage')):>26s}" for r in rows))
    lines.append(f"{'purity':15s}" + "".join(f"{_pct(r['campaign_purity']):>26s}" for r in rows))
    lines.append(f"{'replay ev/s':15s}" + "".join(f"{r['replay_events_per_s']:>26,}" for r in rows))
    lines.append(f"{'missed checks':15s}" + "".join(f"{len(r['failed_checks']):>26d}" for r in rows))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    root = Path(args.report)
    rows = []
    for spec in args.runs:
        scenario, _, seed = spec.partition(":")
        print(f"[eval] {scenario} seed {seed or 1} ...", flush=True)
        rows.append(evaluate_run(scenario, int(seed or 1), root / f"{scenario}-s{seed or 1}", args.detector_config))
        r = rows[-1]
        print(f"[eval]   {r['events']:,} events, simulate {r['simulate_s']}s, replay {r['replay_s']}s, "
              f"{len(r['failed_checks'])} missed checks", flush=True)
    table = summary_table(rows)
    print(table)
    for r in rows:
        for c in r["failed_checks"]:
            print(f"  missed in {r['run']}: {c}")
    root.mkdir(parents=True, exist_ok=True)
    (root / "summary.txt").write_text(table + "\n")
    (root / "summary.json").write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    return 1 if args.fail_on_targets and any(r["failed_checks"] for r in rows) else 0
