"""Shared pieces of the benchmarks: the data set, result rows, machine facts and the table.

Every benchmark module returns a *section*: ``{"section": name, "rows": [...], "info": {...}}``.
A row is one measured quantity::

    {"section": "core", "case": "LocalPipeline (3 stages)", "unit": "events/s",
     "median": 31377.0, "min": ..., "max": ..., "samples": [...], "n": 3,
     "ratio": 1.0, "ratio_to": "LocalPipeline", "note": "..."}

``samples`` are the per-repeat values (one per repeat, measured in this run), ``median`` their
median; ``ratio`` (optional) is ``median / median of the row named in ratio_to``. Rows without a
spread (counts such as messages per event) have a single sample.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------- data set


@dataclass
class Dataset:
    """Simulated events as the gateway would send them: orjson bytes, in stream order.

    ``keys`` (``account_id`` as UTF-8, the Kafka key) and ``ts`` (``ts_ms``, the Kafka message
    timestamp) are kept beside ``raw`` so producing needs no decoding.
    """

    scenario: str
    seed: int
    raw: list[bytes]
    keys: list[bytes]
    ts: list[int]
    gen_seconds: float

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def avg_bytes(self) -> float:
        return sum(map(len, self.raw)) / max(1, len(self.raw))


def load_dataset(scenario: str = "day", seed: int = 1, max_events: int | None = None) -> Dataset:
    """The first ``max_events`` events (all when ``None``) of ``scenario`` with ``seed``."""
    from consumers.sim.generator import generate

    t0 = time.perf_counter()
    events, _labels = generate(scenario, seed, max_events)
    dumps = orjson.dumps
    raw: list[bytes] = []
    keys: list[bytes] = []
    ts: list[int] = []
    for ev in events:
        raw.append(dumps(ev))
        keys.append(ev["account_id"].encode())
        ts.append(ev["ts_ms"])
    return Dataset(scenario, seed, raw, keys, ts, time.perf_counter() - t0)


def chunked(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """``items`` cut into consecutive slices of ``size`` (the last may be shorter)."""
    return [items[i:i + size] for i in range(0, len(items), size)]


# --------------------------------------------------------------------------------- rows


def make_row(section: str, case: str, samples: Iterable[float], unit: str, note: str = "",
             **extra: Any) -> dict[str, Any]:
    """A result row from per-repeat samples (median, min, max; no ratio yet)."""
    s = [float(x) for x in samples]
    if not s:
        raise ValueError(f"{section}/{case}: no samples")
    row: dict[str, Any] = {
        "section": section,
        "case": case,
        "unit": unit,
        "median": statistics.median(s),
        "min": min(s),
        "max": max(s),
        "samples": s,
        "n": len(s),
        "ratio": None,
        "ratio_to": None,
        "note": note,
    }
    row.update(extra)
    return row


def set_ratio(row: dict[str, Any], base: dict[str, Any], label: str | None = None) -> None:
    """``row["ratio"] = row median / base median`` (labelled with the base case)."""
    if base["median"]:
        row["ratio"] = row["median"] / base["median"]
        row["ratio_to"] = label or base["case"]


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else math.inf


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """``(seconds, result)`` of one call."""
    t0 = time.perf_counter()
    res = fn(*args, **kwargs)
    return time.perf_counter() - t0, res


# --------------------------------------------------------------------------------- machine


def _pkg_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - not installed
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _git_rev() -> str | None:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{rev}{'+dirty' if dirty else ''}" if rev else None
    except Exception:  # noqa: BLE001 - no git
        return None


def machine_facts() -> dict[str, Any]:
    """What the numbers were measured on (printed with every result table)."""
    facts: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "python_impl": platform.python_implementation(),
        "platform": platform.platform(),
        "orjson": _pkg_version("orjson"),
        "pydantic": _pkg_version("pydantic"),
        "pydantic_core": _pkg_version("pydantic-core"),
        "river": _pkg_version("river"),
        "distillwatch": _pkg_version("distillwatch"),
        "git": _git_rev(),
    }
    try:
        import confluent_kafka

        v = confluent_kafka.version()  # a str in 2.16, a (str, int) tuple in older releases
        facts["confluent_kafka"] = v if isinstance(v, str) else v[0]
        facts["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        facts["confluent_kafka"] = facts["librdkafka"] = None
    return facts


# --------------------------------------------------------------------------------- table


def fmt_value(v: float, unit: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if math.isinf(v):
        return "inf"
    if unit in ("events/s", "msgs/s", "records/s", "lines/s"):
        return f"{v:,.0f}"
    if unit == "µs/event":
        return f"{v:.2f}"
    if unit in ("s", "ms"):
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    if unit.startswith("msgs/") or unit.startswith("bytes"):
        return f"{v:.3f}" if v < 10 else f"{v:,.0f}"
    return f"{v:.4g}"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a fixed-width text table (median, spread over repeats, ratio, note)."""
    header = ("section", "case", "median", "unit", "min..max", "n", "ratio", "note")
    lines: list[tuple[str, ...]] = [header]
    for r in rows:
        spread = "" if r["n"] < 2 else f"{fmt_value(r['min'], r['unit'])}..{fmt_value(r['max'], r['unit'])}"
        ratio = "" if r.get("ratio") is None else f"{r['ratio']:.3g}x {r['ratio_to']}"
        lines.append((r["section"], r["case"], fmt_value(r["median"], r["unit"]), r["unit"], spread,
                      str(r["n"]), ratio, r.get("note", "")))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    out = []
    for i, line in enumerate(lines):
        cells = [line[j].rjust(widths[j]) if j in (2, 4, 5) else line[j].ljust(widths[j])
                 for j in range(len(header) - 1)]
        out.append("  ".join(cells) + "  " + line[-1])
        if i == 0:
            out.append("-" * (sum(widths) + 2 * (len(widths))) + "-" * 4)
    return "\n".join(s.rstrip() for s in out)


def format_facts(facts: dict[str, Any]) -> str:
    return "\n".join(f"  {k:<16} {v}" for k, v in facts.items())
