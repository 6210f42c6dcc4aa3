"""Quality per bucket of each evasion dimension (labels with ``dims``: the ``sweep`` scenario).

Each attack account's label may carry ``dims``, its campaign's drawn point of the adversary
space (:mod:`consumers.sim.sweep`). :func:`dimension_metrics` groups the attack accounts by the
bucket of every dimension and reports, per bucket: campaigns, accounts, enforced recall, recall
within 24 h of the account's first request, leakage (requests served before the account's
enforcing flag / all its requests) and the median delay (first request → enforcing flag, hours).

Targets (per campaign, from its size and evasion count): campaigns of ≥ 20 accounts with ≤ 2
evasions: recall ≥ 95%, leakage ≤ 10%; with 3+ evasions: recall ≥ 80%, leakage ≤ 25%; campaigns
of fewer than 20 accounts: ≥ 80% enforced within 24 h (recall target 80%, no leakage target). A
bucket's target is the account-weighted (recall) or request-weighted (leakage) mean of its
accounts' targets; ≤24h recall ≥ 80% and median delay ≤ 24 h apply to every bucket. Each cell gets
a grade 0-3: 0 meets the target, 1 misses by ≤ 10 points (delay ≤ 2x), 2 by ≤ 30 points (≤ 4x),
3 by more (or never enforced).

The per-account records (``records``) and per-campaign dims (``campaign_dims``) are kept in the
result so that several runs can be pooled (``evaluate-sweep``): :func:`pool` merges them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

TARGETS = {
    "small_size": 20,  # campaigns below this size: the 24 h target only
    "few_evasions": 2,  # ... at most this many evasions: the strict targets
    "recall_few": 0.95, "leakage_few": 0.10,
    "recall_many": 0.80, "leakage_many": 0.25,
    "recall_small": 0.80,
    "recall_24h": 0.80,
    "delay_h": 24.0,
}


def _numeric(edges: tuple[tuple[float, str], ...], last: str) -> Callable[[Any], str]:
    """A bucketer: the name of the first edge the value is below, else ``last``."""
    def bucket(v: Any) -> str:
        for edge, name in edges:
            if v < edge:
                return name
        return last
    bucket.order = [n for _, n in edges] + [last]  # type: ignore[attr-defined]
    return bucket


def _category(*order: str) -> Callable[[Any], str]:
    def bucket(v: Any) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        return str(v)
    bucket.order = list(order)  # type: ignore[attr-defined]
    return bucket


#: (label key, title, bucketer) in display order; buckets in each bucketer's ``order``
DIMENSIONS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("size", "campaign size", _numeric(((10, "1–9"), (20, "10–19"), (50, "20–49"), (200, "50–199")), "200+")),
    ("age_days", "account age", _numeric(((14, "fresh"), (90, "<90d"), (365, "<1y")), "≥1y")),
    ("creation", "creation", _category("wave", "spread", "bought")),
    ("paraphrase_bits", "paraphrase bits", _numeric(((4, "0–3"), (9, "4–8"), (13, "9–12")), "13–16")),
    ("network", "network", _category("proxy_pool", "residential_proxy", "cloud", "home")),
    ("client", "client", _category("rare", "popular_sdk")),
    ("payment", "payment", _category("shared_pool", "pairs", "own", "none")),
    ("schedule", "schedule", _category("24/7", "shared_slots", "human")),
    ("ramp", "ramp", _category("none", "slow")),
    ("blend", "honest blend", _numeric(((1e-9, "none"), (0.3, "<30%"), (0.5, "30–50%")), "50–70%")),
    ("capability", "capability", _category("coding_agentic", "reasoning_math", "mixed")),
    ("concentration", "concentration", _numeric(((0.7, "50–69%"), (0.85, "70–84%")), "85%+")),
    ("elicitation", "elicitation", _category("moderate", "high", "extreme")),
    ("rate_per_day", "requests/day", _numeric(((15, "5–14"), (30, "15–29"), (100, "30–99")), "100+")),
    ("model_hop", "model hop", _category("no", "yes")),
    ("evasions", "evasions", _numeric(((2, "0–1"), (3, "2"), (4, "3"), (6, "4–5")), "6+")),
)


def campaign_targets(size: int, evasions: int) -> tuple[float, float | None]:
    """(recall target, leakage target or None) of a campaign."""
    t = TARGETS
    if size < t["small_size"]:
        return t["recall_small"], None
    if evasions <= t["few_evasions"]:
        return t["recall_few"], t["leakage_few"]
    return t["recall_many"], t["leakage_many"]


def _grade(value: float | None, target: float | None, higher_is_better: bool) -> int | None:
    if target is None:
        return None
    if value is None:
        return 3
    gap = (target - value) if higher_is_better else (value - target)
    eps = 1e-9  # 0.8 - 0.5 is 0.30000000000000004
    return 0 if gap <= eps else 1 if gap <= 0.10 + eps else 2 if gap <= 0.30 + eps else 3


def _delay_grade(value: float | None, target: float) -> int:
    if value is None:
        return 3
    r = value / target
    return 0 if r <= 1 else 1 if r <= 2 else 2 if r <= 4 else 3


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def _cell(bucket: str, recs: list[list[Any]], campaign_dims: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The metrics of one bucket from its accounts' records."""
    accounts = len(recs)
    enforced = sum(1 for r in recs if r[3])
    within = sum(1 for r in recs if r[4] is not None and r[4] <= TARGETS["delay_h"])
    requests = sum(r[1] for r in recs)
    leaked = sum(r[2] for r in recs)
    delays = [r[4] for r in recs if r[4] is not None]
    t_rec = t_leak = 0.0
    leak_w = 0
    for r in recs:
        d = campaign_dims[r[0]]
        rt, lt = campaign_targets(d["size"], d["evasions"])
        t_rec += rt
        if lt is not None:
            t_leak += lt * r[1]
            leak_w += r[1]
    recall = enforced / accounts if accounts else None
    recall_24h = within / accounts if accounts else None
    leakage = leaked / requests if requests else None
    median = _median(delays)
    target = {
        "recall": t_rec / accounts if accounts else None,
        "recall_24h": TARGETS["recall_24h"],
        "leakage": t_leak / leak_w if leak_w else None,
        "median_delay_h": TARGETS["delay_h"],
    }
    grade = {
        "recall": _grade(recall, target["recall"], True),
        "recall_24h": _grade(recall_24h, target["recall_24h"], True),
        "leakage": _grade(leakage, target["leakage"], False),
        "median_delay_h": _delay_grade(median, TARGETS["delay_h"]),
    }
    return {
        "bucket": bucket, "campaigns": len({r[0] for r in recs}), "accounts": accounts,
        "enforced": enforced, "recall": recall, "recall_24h": recall_24h,
        "requests": requests, "leaked_requests": leaked, "leakage": leakage,
        "median_delay_h": median, "target": target, "grade": grade,
        "ok": all(g in (None, 0) for g in grade.values()),
    }


def dimension_metrics(records: list[list[Any]], campaign_dims: dict[str, dict[str, Any]],
                      honest: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-dimension quality.

    ``records``: one ``[campaign, requests, leaked, enforced, delay_h]`` per attack account with
    dims (``delay_h`` None unless enforced after a first request); ``campaign_dims``: campaign ->
    its dims (with ``size`` and ``evasions``); ``honest``: the per-persona rows to carry along.
    """
    dims_out = []
    for key, title, bucketer in DIMENSIONS:
        by: dict[str, list[list[Any]]] = {}
        for r in records:
            v = campaign_dims[r[0]].get(key)
            if v is not None:
                by.setdefault(bucketer(v), []).append(r)
        if not by:
            continue
        order: list[str] = bucketer.order  # type: ignore[attr-defined]
        names = [b for b in order if b in by] + sorted(set(by) - set(order))
        dims_out.append({"key": key, "title": title,
                         "buckets": [_cell(b, by[b], campaign_dims) for b in names]})
    campaigns = []
    per_campaign: dict[str, list[list[Any]]] = {}
    for r in records:
        per_campaign.setdefault(r[0], []).append(r)
    for camp, recs in sorted(per_campaign.items()):
        c = _cell(camp, recs, campaign_dims)
        d = campaign_dims[camp]
        campaigns.append({"campaign": camp, "size": d["size"], "evasions": d["evasions"],
                          "accounts": c["accounts"], "recall": c["recall"], "recall_24h": c["recall_24h"],
                          "leakage": c["leakage"], "median_delay_h": c["median_delay_h"], "ok": c["ok"],
                          "dims": d})
    total = _cell("all", records, campaign_dims) if records else None
    return {"targets": TARGETS, "overall": total, "dimensions": dims_out, "campaigns": campaigns,
            "honest": honest, "records": records, "campaign_dims": campaign_dims}


def honest_rows(group_metrics: dict[str, dict[str, Any]], personas: Iterable[str]) -> list[dict[str, Any]]:
    """Per benign persona: accounts, enforced and flagged-at-all counts and shares."""
    rows = []
    for p in personas:
        g = group_metrics[p]
        rows.append({"persona": p, "accounts": g["accounts"], "enforced": g["enforced"],
                     "enforced_share": g["fpr"], "flagged": g["any_flagged"],
                     "flagged_share": g["any_flag_rate"]})
    return rows


def pool(runs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Pool the per-dimension results of several runs (``(run name, dimensions)``): campaigns
    are kept apart by run, honest rows are summed per persona."""
    records: list[list[Any]] = []
    dims: dict[str, dict[str, Any]] = {}
    honest: dict[str, dict[str, Any]] = {}
    for name, dm in runs:
        for r in dm["records"]:
            records.append([f"{name}:{r[0]}", *r[1:]])
        for camp, d in dm["campaign_dims"].items():
            dims[f"{name}:{camp}"] = d
        for h in dm["honest"]:
            acc = honest.setdefault(h["persona"], {"persona": h["persona"], "accounts": 0,
                                                   "enforced": 0, "flagged": 0})
            for k in ("accounts", "enforced", "flagged"):
                acc[k] += h[k]
    rows = [{**h, "enforced_share": h["enforced"] / h["accounts"] if h["accounts"] else None,
             "flagged_share": h["flagged"] / h["accounts"] if h["accounts"] else None}
            for h in honest.values()]
    return dimension_metrics(records, dims, rows)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _h(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


_MARK = {None: " ", 0: " ", 1: "~", 2: "!", 3: "!!"}


def dimension_table(dm: dict[str, Any]) -> str:
    """Fixed-width text: one row per dimension bucket, then the honest personas. A mark after a
    value: ``~`` misses its target by ≤ 10 points (delay ≤ 2x), ``!`` by ≤ 30, ``!!`` by more."""
    head = (f"{'dimension':16s}{'bucket':18s}{'camps':>6s}{'accts':>7s}{'recall':>10s}{'≤24h':>10s}"
            f"{'leakage':>10s}{'delay p50 h':>13s}")
    lines = [head, "-" * len(head)]

    def row(title: str, c: dict[str, Any]) -> str:
        g = c["grade"]
        return (f"{title:16s}{c['bucket']:18s}{c['campaigns']:>6d}{c['accounts']:>7d}"
                f"{_pct(c['recall']):>8s}{_MARK[g['recall']]:2s}{_pct(c['recall_24h']):>8s}{_MARK[g['recall_24h']]:2s}"
                f"{_pct(c['leakage']):>8s}{_MARK[g['leakage']]:2s}{_h(c['median_delay_h']):>11s}"
                f"{_MARK[g['median_delay_h']]:2s}").rstrip()

    if dm.get("overall"):
        lines.append(row("all attack", dm["overall"]))
    for d in dm["dimensions"]:
        lines.append("")
        for i, c in enumerate(d["buckets"]):
            lines.append(row(d["title"] if i == 0 else "", c))
    lines.append("")
    lines.append(f"{'honest persona':34s}{'accts':>7s}{'enforced':>10s}{'flagged':>10s}")
    lines.append("-" * len(head))
    for h in dm["honest"]:
        lines.append(f"{h['persona']:34s}{h['accounts']:>7d}{_pct(h['enforced_share']):>10s}"
                     f"{_pct(h['flagged_share']):>10s}")
    lines.append("marks: ~ misses the target by ≤10 points (delay ≤2x 24 h), ! by ≤30 (≤4x), !! by more")
    return "\n".join(lines)
