"""``distillwatch replay --input FILE`` end to end: reading the file, the three stages, writing flags.

* in process — :func:`consumers.file_replay.replay_file` on a plain ``.jsonl`` (and optionally a
  ``.jsonl.gz``) file, output to a file: events/s without interpreter start-up;
* as a subprocess — ``python -m consumers.cli replay --input FILE --output OUT`` (what the
  ``distillwatch`` console script runs), wall time; its start-up (interpreter, imports, pipeline
  set-up) is measured on a one-event file and reported apart, and the events/s row subtracts the
  median start-up;
* ``python -c pass`` — the interpreter alone, for scale.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import REPO, make_row, rate, set_ratio

SECTION = "replay"


def write_events(raw: Sequence[bytes], path: Path) -> int:
    """Write ``raw`` as JSONL (gzip level 5 for ``.gz``, as the simulator writes); returns bytes."""
    data = b"\n".join(raw) + b"\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wb", compresslevel=5) as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path.stat().st_size


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "consumers.cli", "--log-level", "WARNING", *args]


def _run_sub(cmd: list[str]) -> float:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, env=env, cwd=str(REPO))
    secs = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return secs


def run(raw: Sequence[bytes], repeat: int = 3, gz: bool = False, subprocess_runs: bool = True,
        workdir: str | None = None, cfg: Any = None) -> dict[str, Any]:
    """Measure replay over ``raw``; returns the ``replay`` section."""
    from consumers.core.config import DetectorConfig
    from consumers.file_replay import replay_file

    cfg = cfg or DetectorConfig()
    n = len(raw)
    if not n:
        raise ValueError("no events")
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"events": n, "repeat": repeat}
    with tempfile.TemporaryDirectory(prefix="dw-bench-", dir=workdir) as tmp:
        d = Path(tmp)
        files = [d / "events.jsonl"]
        if gz:
            files.append(d / "events.jsonl.gz")
        for f in files:
            info[f"{f.name}_bytes"] = write_events(raw, f)
        one = d / "one.jsonl"
        write_events(raw[:1], one)
        out = d / "flags.jsonl"

        inproc_rows = []
        for f in files:
            secs: list[float] = []
            counters: dict[str, int] = {}
            for _ in range(repeat):
                err = io.StringIO()
                with contextlib.redirect_stderr(err):
                    t, counters = _timed_replay(replay_file, str(f), str(out), cfg)
                secs.append(t)
            info[f"inproc_{f.name}_counters"] = counters
            row = make_row(SECTION, f"replay_file() in process, {f.name}", [rate(n, t) for t in secs],
                           "events/s", f"{counters.get('flags', 0):,} flags; no interpreter start-up")
            inproc_rows.append(row)
        rows += inproc_rows
        info["flags"] = info[f"inproc_{files[0].name}_counters"].get("flags")

        if subprocess_runs:
            startup = [_run_sub(_cli("replay", "--input", str(one), "--output", str(out)))
                       for _ in range(repeat)]
            bare = [_run_sub([sys.executable, "-c", "pass"]) for _ in range(repeat)]
            st_med = sorted(startup)[len(startup) // 2]
            for f in files:
                wall = [_run_sub(_cli("replay", "--input", str(f), "--output", str(out)))
                        for _ in range(repeat)]
                flags = _count_lines(out)
                w_med = sorted(wall)[len(wall) // 2]
                note = f"wall {w_med:.2f}s minus start-up {st_med:.2f}s; {flags:,} flags"
                if w_med - st_med < 0.25 * w_med:
                    note += "; UNRELIABLE: start-up dominates, use more events"
                rows.append(make_row(
                    SECTION, f"distillwatch replay subprocess, {f.name}",
                    [rate(n, max(w - st_med, 1e-3)) for w in wall], "events/s", note,
                    wall_s=wall, startup_s=st_med))
                rows.append(make_row(
                    SECTION, f"distillwatch replay subprocess incl. start-up, {f.name}",
                    [rate(n, w) for w in wall], "events/s", "what a user waits for"))
                info[f"subprocess_{f.name}_flags"] = flags
            rows.append(make_row(SECTION, "start-up: replay of a 1-event file", startup, "s",
                                 "interpreter + imports + pipeline set-up + 1 event"))
            rows.append(make_row(SECTION, "start-up: python -c pass", bare, "s", "interpreter alone"))
    if inproc_rows:
        for r in rows:
            if r["unit"] == "events/s":
                set_ratio(r, inproc_rows[0], "in process .jsonl")
    return {"section": SECTION, "rows": rows, "info": info}


def _timed_replay(fn: Any, path: str, out: str, cfg: Any) -> tuple[float, dict[str, int]]:
    t0 = time.perf_counter()
    counters = fn(path, out, cfg)
    return time.perf_counter() - t0, counters
