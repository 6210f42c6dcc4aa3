"""Shadow comparison of the flags of two runs (what ``distillwatch diff`` reports).

Per account, a run's *decision* is its latest flag (a later flag supersedes an earlier one);
``A`` is the baseline, ``B`` the candidate. :func:`compare` counts accounts newly flagged / no
longer flagged, escalated / de-escalated (review < throttle < suspend), campaign changed, newly /
no longer enforced (throttle or suspend), and how much the detection time moved. Pure: flags in,
a JSON-ready dict out (reading runs: :func:`consumers.kafka.reader.load_flags`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from consumers.contract.flags import ACTION_RANK, ENFORCING_ACTIONS
from consumers.contract.units import HOUR_MS

#: histogram of detection-time changes: (label, upper bound in ms, exclusive), last is +inf
BUCKETS: tuple[tuple[str, float], ...] = (
    ("<= -24h", -24 * HOUR_MS + 1),
    ("-24h..-6h", -6 * HOUR_MS + 1),
    ("-6h..-1h", -HOUR_MS + 1),
    ("-1h..0", 0),
    ("0", 1),
    ("0..+1h", HOUR_MS),
    ("+1h..+6h", 6 * HOUR_MS),
    ("+6h..+24h", 24 * HOUR_MS),
    (">= +24h", math.inf),
)
CATEGORIES = ("newly_flagged", "no_longer_flagged", "escalated", "de_escalated", "campaign_changed",
              "newly_enforced", "no_longer_enforced")
TITLES = {"newly_flagged": "newly flagged", "no_longer_flagged": "no longer flagged",
          "escalated": "escalated", "de_escalated": "de-escalated",
          "campaign_changed": "campaign changed", "newly_enforced": "newly enforced",
          "no_longer_enforced": "no longer enforced"}


# ------------------------------------------------------------------------------ analysis


@dataclass
class History:
    """One account's flags in one run, in order."""

    account_id: str
    org_id: str | None = None
    action: str = "review"                  # latest
    campaign_id: str | None = None          # latest
    score: float | None = None              # latest
    first_ms: int | None = None             # decided_at_ms of the first flag
    first_enforce_ms: int | None = None     # ... of the first throttle/suspend
    flag_ids: list[str] = field(default_factory=list)

    @property
    def enforced(self) -> bool:
        """Some flag of the account was enforcing (throttle or suspend)."""
        return self.first_enforce_ms is not None


def histories(flags: Iterable[dict[str, Any]], since_ms: int | None = None,
              until_ms: int | None = None, stats: dict[str, int] | None = None,
              ) -> dict[str, History]:
    """Per account, its flags in order (optionally only those decided in ``[since, until)``).

    Flags without an ``account_id``, with an unknown ``action`` or without an integer
    ``decided_at_ms`` are skipped and counted in ``stats["invalid"]``.
    """
    stats = stats if stats is not None else {}
    stats.setdefault("invalid", 0)
    out: dict[str, History] = {}
    for f in flags:
        acct, action, t = f.get("account_id"), f.get("action"), f.get("decided_at_ms")
        if not isinstance(acct, str) or action not in ACTION_RANK or not isinstance(t, int):
            stats["invalid"] += 1
            continue
        if (since_ms is not None and t < since_ms) or (until_ms is not None and t >= until_ms):
            continue
        h = out.get(acct)
        if h is None:
            h = out[acct] = History(acct, f.get("org_id"), first_ms=t)
        h.action, h.campaign_id, h.score = action, f.get("campaign_id"), f.get("score")
        if action in ENFORCING_ACTIONS and h.first_enforce_ms is None:
            h.first_enforce_ms = t
        h.flag_ids.append(str(f.get("flag_id")))
    return out


def _quantile(sorted_vals: list[int], q: float) -> float | None:
    """Linear interpolation between closest ranks (``q`` in [0, 1])."""
    if not sorted_vals:
        return None
    pos = q * (len(sorted_vals) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def shift_stats(deltas: list[int]) -> dict[str, Any]:
    """Summary of detection-time changes in ms (B minus A; negative = B earlier).

    >>> s = shift_stats([-3_600_000, 0, 0, 7_200_000])
    >>> s["accounts"], s["earlier"], s["same"], s["later"], s["median_ms"]
    (4, 1, 2, 1, 0.0)
    """
    vals = sorted(deltas)
    hist = []
    i = 0
    for label, upper in BUCKETS:
        n = 0
        while i < len(vals) and vals[i] < upper:
            n += 1
            i += 1
        hist.append({"bucket": label, "count": n})
    return {
        "accounts": len(vals),
        "earlier": sum(1 for d in vals if d < 0),
        "same": sum(1 for d in vals if d == 0),
        "later": sum(1 for d in vals if d > 0),
        "median_ms": _quantile(vals, 0.5),
        "mean_ms": (sum(vals) / len(vals)) if vals else None,
        "p10_ms": _quantile(vals, 0.1),
        "p25_ms": _quantile(vals, 0.25),
        "p75_ms": _quantile(vals, 0.75),
        "p90_ms": _quantile(vals, 0.9),
        "min_ms": vals[0] if vals else None,
        "max_ms": vals[-1] if vals else None,
        "histogram": hist,
    }


def _row(acct: str, a: History | None, b: History | None) -> dict[str, Any]:
    return {
        "account_id": acct,
        "org_id": b.org_id if b is not None else (a.org_id if a is not None else None),
        "a_action": a.action if a else None, "b_action": b.action if b else None,
        "a_campaign": a.campaign_id if a else None, "b_campaign": b.campaign_id if b else None,
        "a_first_enforce_ms": a.first_enforce_ms if a else None,
        "b_first_enforce_ms": b.first_enforce_ms if b else None,
        "a_first_ms": a.first_ms if a else None, "b_first_ms": b.first_ms if b else None,
    }


def _side(name: str, flags: int, hs: dict[str, History], raw: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "flags": flags, "accounts": len(hs),
            "enforced": sum(1 for h in hs.values() if h.enforced),
            "detector_versions": sorted({str(f.get("detector_version")) for f in raw
                                         if f.get("detector_version") is not None})}


def compare(a_flags: Iterable[dict[str, Any]], b_flags: Iterable[dict[str, Any]], *,
            name_a: str = "A", name_b: str = "B", since_ms: int | None = None,
            until_ms: int | None = None) -> dict[str, Any]:
    """Compare two runs' flags (A = baseline, B = candidate); see the module docstring.

    Returns a JSON-ready dict: ``a``/``b`` (sizes), ``counts`` per category, ``accounts`` (the
    rows of each category, sorted by account), ``detection_time`` (first enforcing decision,
    accounts enforced in both), ``first_flag_time`` (first flag of any action, accounts flagged
    in both), ``identical`` and ``changed``.
    """
    a_raw, b_raw = list(a_flags), list(b_flags)
    sa: dict[str, int] = {}
    sb: dict[str, int] = {}
    ha = histories(a_raw, since_ms, until_ms, sa)
    hb = histories(b_raw, since_ms, until_ms, sb)
    rows: dict[str, list[dict[str, Any]]] = {c: [] for c in CATEGORIES}
    enforce_deltas: list[int] = []
    first_deltas: list[int] = []
    both = unchanged = 0
    for acct in sorted(ha.keys() | hb.keys()):
        a, b = ha.get(acct), hb.get(acct)
        row = _row(acct, a, b)
        if a is None:
            rows["newly_flagged"].append(row)
        elif b is None:
            rows["no_longer_flagged"].append(row)
        else:
            both += 1
            ra, rb = ACTION_RANK[a.action], ACTION_RANK[b.action]
            if rb > ra:
                rows["escalated"].append(row)
            elif rb < ra:
                rows["de_escalated"].append(row)
            if a.campaign_id != b.campaign_id:
                rows["campaign_changed"].append(row)
            if ra == rb and a.campaign_id == b.campaign_id:
                unchanged += 1
            assert a.first_ms is not None and b.first_ms is not None
            first_deltas.append(b.first_ms - a.first_ms)
            if a.first_enforce_ms is not None and b.first_enforce_ms is not None:
                enforce_deltas.append(b.first_enforce_ms - a.first_enforce_ms)
        a_enf = a is not None and a.enforced
        b_enf = b is not None and b.enforced
        if b_enf and not a_enf:
            rows["newly_enforced"].append(row)
        elif a_enf and not b_enf:
            rows["no_longer_enforced"].append(row)
    identical = ({k: h.flag_ids for k, h in ha.items()} == {k: h.flag_ids for k, h in hb.items()})
    det = shift_stats(enforce_deltas)
    first = shift_stats(first_deltas)
    counts = {c: len(rows[c]) for c in CATEGORIES}
    counts.update({"flagged_both": both, "unchanged": unchanged,
                   "enforced_both": det["accounts"]})
    changed = (any(counts[c] for c in CATEGORIES) or det["earlier"] > 0 or det["later"] > 0
               or first["earlier"] > 0 or first["later"] > 0)
    return {
        "a": _side(name_a, len(a_raw), ha, a_raw) | {"invalid": sa["invalid"]},
        "b": _side(name_b, len(b_raw), hb, b_raw) | {"invalid": sb["invalid"]},
        "window": {"since_ms": since_ms, "until_ms": until_ms},
        "identical": identical,
        "changed": changed,
        "counts": counts,
        "detection_time": det,
        "first_flag_time": first,
        "accounts": rows,
    }


# ------------------------------------------------------------------------------ rendering


def _h(ms: float | None) -> str:
    """Milliseconds as signed hours (``+1.50 h``), ``-`` for None."""
    if ms is None:
        return "-"
    return f"{ms / HOUR_MS:+.2f} h"


def render_text(res: dict[str, Any], show: int = 20) -> str:
    """The human-readable report of :func:`compare` (``show`` accounts listed per category)."""
    a, b, c = res["a"], res["b"], res["counts"]
    lines = [
        "shadow diff",
        f"  A (baseline):  {a['name']}: {a['flags']:,} flags, {a['accounts']:,} accounts, "
        f"{a['enforced']:,} enforced, detector {', '.join(a['detector_versions']) or '-'}",
        f"  B (candidate): {b['name']}: {b['flags']:,} flags, {b['accounts']:,} accounts, "
        f"{b['enforced']:,} enforced, detector {', '.join(b['detector_versions']) or '-'}",
    ]
    w = res.get("window") or {}
    if w.get("since_ms") is not None or w.get("until_ms") is not None:
        lines.append(f"  window: decided_at_ms in [{w.get('since_ms')}, {w.get('until_ms')})")
    lines.append("  identical flags: " + ("yes" if res["identical"] else "no"))
    lines.append("")
    table = [
        ("flagged in both", c["flagged_both"]),
        ("  unchanged (same action and campaign)", c["unchanged"]),
        ("  escalated", c["escalated"]),
        ("  de-escalated", c["de_escalated"]),
        ("  campaign changed", c["campaign_changed"]),
        ("newly flagged (B only)", c["newly_flagged"]),
        ("no longer flagged (A only)", c["no_longer_flagged"]),
        ("newly enforced (throttle/suspend in B only)", c["newly_enforced"]),
        ("no longer enforced (in A only)", c["no_longer_enforced"]),
    ]
    width = max(len(k) for k, _ in table)
    lines += [f"  {k:<{width}}  {v:>7,}" for k, v in table]
    for title, key in (("detection time (first throttle/suspend), accounts enforced in both",
                        "detection_time"),
                       ("first flag time (any action), accounts flagged in both", "first_flag_time")):
        d = res[key]
        lines.append("")
        lines.append(f"  {title}: {d['accounts']:,}")
        if d["accounts"]:
            lines.append(f"    B earlier {d['earlier']:,}, same {d['same']:,}, later {d['later']:,}; "
                         f"median {_h(d['median_ms'])}, mean {_h(d['mean_ms'])}, "
                         f"p10 {_h(d['p10_ms'])}, p90 {_h(d['p90_ms'])}, "
                         f"min {_h(d['min_ms'])}, max {_h(d['max_ms'])}")
            if key == "detection_time":
                lines.append("    " + "  ".join(f"{x['bucket']}: {x['count']}"
                                               for x in d["histogram"] if x["count"]))
    for cat in CATEGORIES:
        rows = res["accounts"][cat]
        if not rows or show <= 0:
            continue
        lines.append("")
        lines.append(f"  {TITLES[cat]} ({len(rows):,}"
                     + (f", first {show}" if len(rows) > show else "") + "):")
        for r in rows[:show]:
            lines.append(f"    {r['account_id']:<36} {r['a_action'] or '-':>8} -> {r['b_action'] or '-':<8}"
                         f" campaign {r['a_campaign'] or '-'} -> {r['b_campaign'] or '-'}")
    return "\n".join(lines)
