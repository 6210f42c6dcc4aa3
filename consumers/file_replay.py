"""Replay of a JSONL(.gz) file of RequestEvent v1 through the in-memory pipeline, no broker (the
service behind ``distillwatch replay --input``).

Runs the same three stages as ``detect`` (:class:`consumers.core.pipeline.LocalPipeline`), in
file order, and writes Flag v1 JSONL. Malformed lines are counted and reported on standard error
(line number and reason), never fatal. Deterministic: the same file and configuration give the
same flags, byte for byte.
"""

from __future__ import annotations

import os
import sys
import time

from consumers.core.config import DetectorConfig
from consumers.core.pipeline import LocalPipeline
from consumers.io import output, read_numbered

__all__ = ["replay_file"]

MAX_REPORTED_ERRORS = 20


def replay_file(path: str, out_path: str | None, cfg: DetectorConfig) -> dict[str, int]:
    """Replay a file; return counters. Malformed lines are reported on stderr."""
    if path != "-" and not os.path.exists(path):
        # before --output is opened: a typo must not truncate the flags of an earlier run
        raise FileNotFoundError(2, "no such file", path)
    pipe = LocalPipeline(cfg)
    n_lines = n_flags = 0
    reported = 0
    t0 = time.perf_counter()
    with output(out_path) as out:
        for numbers, lines in read_numbered(path):
            flags = pipe.feed(lines, source=path, offsets=numbers)
            for r in pipe.dead_letters:
                if reported < MAX_REPORTED_ERRORS:
                    h = dict(r.headers or [])
                    line_no = int(h["dlq.offset"])
                    print(f"replay: line {line_no}: {h['dlq.error'].decode()}", file=sys.stderr)
                    reported += 1
            pipe.dead_letters.clear()
            n_lines += len(lines)
            if flags:
                out.write(b"\n".join(flags) + b"\n")
                n_flags += len(flags)
    c = pipe.counters()["account"]
    secs = time.perf_counter() - t0
    if c["invalid"] > reported:
        print(f"replay: ... {c['invalid'] - reported} more malformed lines", file=sys.stderr)
    print(
        f"replay: {n_lines} lines, {c['events']} events, {c['invalid']} malformed, "
        f"{c['duplicates']} duplicates, {n_flags} flags in {secs:.1f}s "
        f"({n_lines / max(secs, 1e-9):,.0f} lines/s)",
        file=sys.stderr,
    )
    return {"lines": n_lines, "events": c["events"], "invalid": c["invalid"],
            "duplicates": c["duplicates"], "flags": n_flags}
