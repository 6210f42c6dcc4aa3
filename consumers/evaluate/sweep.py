"""``distillwatch evaluate-sweep``: the detector over the adversary space, seed by seed.

    distillwatch evaluate-sweep --seeds 1 2 3 [--report DIR] [--detector-config F]
                                [--scale X] [--days D] [--jobs N]

For every seed it simulates the ``sweep`` scenario (campaigns drawn from the space of evasion
dimensions, honest look-alikes included) into ``DIR/sweep-s<seed>/``, replays it through the
in-process pipeline (the machinery of ``evaluate-standard``), evaluates the flags and writes that
seed's report; then it pools the seeds and prints the per-dimension table (every bucket of every
dimension, honest personas) and writes ``DIR/summary.txt`` and ``DIR/summary.json`` (the pooled
table and each seed's). Tuning seeds are 1-3; held-out seeds 101-103 are for checking a change
tuned on the others, never for tuning.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from consumers.config import GC_THRESHOLD

TUNING_SEEDS = (1, 2, 3)
HELD_OUT_SEEDS = (101, 102, 103)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``distillwatch evaluate-sweep``."""
    p.add_argument("--seeds", nargs="+", type=int, default=list(TUNING_SEEDS),
                   help="sweep seeds (default: the tuning seeds 1 2 3; held-out: 101 102 103)")
    p.add_argument("--report", default="reports/sweep", help="output directory (default reports/sweep)")
    p.add_argument("--detector-config", metavar="FILE", help="JSON file of detector settings")
    p.add_argument("--scale", type=float, help="multiply account counts (and campaign sizes)")
    p.add_argument("--days", type=float, help="override the sweep's duration (default 2.5)")
    p.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes (default 1)")


def run_seed(seed: int, root: str, detector_config: str | None, scale: float | None,
             days: float | None) -> dict[str, Any]:
    """Simulate, replay and evaluate one sweep seed; return its summary (with the dimensions)."""
    import gc

    from consumers.evaluate.standard import simulate_replay_evaluate

    gc.set_threshold(*GC_THRESHOLD)  # as the CLI does for the detector (worker processes too)
    metrics, info = simulate_replay_evaluate("sweep", seed, Path(root) / f"sweep-s{seed}", detector_config,
                                             scale=scale, days=days)
    dm = metrics["dimensions"]
    return {"seed": seed, **info, "campaigns": len(dm["campaign_dims"]) if dm else 0,
            "attack_accounts": metrics["overall"]["attack_accounts"], "overall": metrics["overall"],
            "dimensions": dm}


def run(args: argparse.Namespace) -> int:
    """Run every seed, print and write the pooled table."""
    from consumers.evaluate.dimensions import dimension_table, pool

    root = Path(args.report)
    root.mkdir(parents=True, exist_ok=True)
    jobs = max(1, min(args.jobs, len(args.seeds)))
    call = (str(root), args.detector_config, args.scale, args.days)
    if jobs == 1:
        rows = []
        for seed in args.seeds:
            print(f"[sweep] seed {seed} ...", flush=True)
            rows.append(run_seed(seed, *call))
            _progress(rows[-1])
    else:
        with ProcessPoolExecutor(jobs) as ex:
            rows = list(ex.map(run_seed, args.seeds, *([c] * len(args.seeds) for c in call)))
        for r in rows:
            _progress(r)
    pooled = pool([(f"s{r['seed']}", r["dimensions"]) for r in rows if r["dimensions"]])
    seeds = " ".join(str(r["seed"]) for r in rows)
    table = (f"sweep seeds {seeds}: {sum(r['campaigns'] for r in rows)} campaigns, "
             f"{sum(r['attack_accounts'] for r in rows):,} attack accounts, "
             f"{sum(r['accounts'] for r in rows):,} accounts, {sum(r['events'] for r in rows):,} events\n\n"
             + dimension_table(pooled))
    print(table)
    (root / "summary.txt").write_text(table + "\n")
    slim = [{k: v for k, v in r.items() if k != "dimensions"}
            | {"dimensions": {k: v for k, v in (r["dimensions"] or {}).items() if k not in ("records",)}}
            for r in rows]
    pooled_out = {k: v for k, v in pooled.items() if k not in ("records", "campaign_dims")}
    (root / "summary.json").write_bytes(orjson.dumps({"seeds": [r["seed"] for r in rows], "pooled": pooled_out,
                                                      "per_seed": slim}, option=orjson.OPT_INDENT_2))
    print(f"\nper-seed reports: {root}/sweep-s<seed>/index.html · summary: {root}/summary.json")
    return 0


def _progress(r: dict[str, Any]) -> None:
    print(f"[sweep]   seed {r['seed']}: {r['campaigns']} campaigns, {r['attack_accounts']:,} attack of "
          f"{r['accounts']:,} accounts, {r['events']:,} events; simulate {r['simulate_s']}s, replay "
          f"{r['replay_s']}s, evaluate {r['evaluate_s']}s", flush=True)
