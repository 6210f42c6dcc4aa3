"""Pure-core throughput: the three stages in memory, no file, no broker.

* ``LocalPipeline`` — what ``replay --input`` runs, fed the raw messages in chunks
  (``chunk``, 4096 like :func:`consumers.io.read_lines`), events/s over the whole input; and the
  same with ``gc.set_threshold(50_000, 20, 100)`` (the core keeps a large heap of account and
  fingerprint state, which CPython's default thresholds make the cyclic GC traverse often);
* each stage alone — ``AccountProcessor`` fed the request records, ``CampaignProcessor`` fed the
  account stage's observations, ``PolicyProcessor`` fed the campaign stage's verdicts (the
  outputs of the previous stage in the same repeat, chunk by chunk as ``LocalPipeline`` does).
  A stage's rate is given in *pipeline events* per second (input events ÷ the stage's time: what
  the stage would sustain for the pipeline) and in its own input records per second;
* ``take_changes`` — what the Kafka runner adds per checkpoint: the account stage's run also
  calls ``take_changes()`` after every ``checkpoint_every`` events (≈ one ``commit_interval_ms``
  of traffic), timed apart, so the cost of serialising the changed state is visible;
* messages per event on the internal topics (observations and verdicts, by kind) and their size;
* the state the three stages hold after the input (:func:`memory`: tracemalloc, a pass of its own,
  plus the native prompt memory, which tracemalloc does not see), in all and per account.

:func:`profile` runs cProfile over ``LocalPipeline`` and returns the top functions by tottime.
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import time
import tracemalloc
from collections.abc import Sequence
from typing import Any

from bench.common import chunked, make_row, rate, set_ratio
from consumers.config import GC_THRESHOLD  # measured beside CPython's default (700, 10, 10)

SECTION = "core"


def _request_records(raw: Sequence[bytes], chunk: int) -> list[list[Any]]:
    from consumers.core.stage import Record

    out = []
    for start in range(0, len(raw), chunk):
        out.append([Record(topic="requests", key=None, value=v, partition=0, offset=start + i)
                    for i, v in enumerate(raw[start:start + chunk])])
    return out


def _kind(value: bytes) -> str:
    # stage outputs are orjson dicts whose first key is "k": b'{"k":"fp",...' / b'{"k":"beh",...'
    return value[6:value.index(b'"', 6)].decode() if value.startswith(b'{"k":"') else "?"


def _time_pipeline(pipe: Any, chunks: list[list[bytes]]) -> tuple[float, int, dict[str, Any]]:
    """Feed every chunk through a fresh ``LocalPipeline``: seconds, flags, its counters."""
    n_flags = 0
    t0 = time.perf_counter()
    for c in chunks:
        n_flags += len(pipe.feed(c))
    return time.perf_counter() - t0, n_flags, pipe.counters()


def _tally(chunks: list[list[Any]]) -> tuple[dict[str, int], int]:
    """Messages per kind and their bytes (key + value) over a stage's output chunks."""
    kinds: dict[str, int] = {}
    size = 0
    for chunk_recs in chunks:
        for r in chunk_recs:
            k = _kind(r.value)
            kinds[k] = kinds.get(k, 0) + 1
            size += len(r.value) + len(r.key or b"")
    return kinds, size


def memory(raw: Sequence[bytes], chunk: int = 4096, cfg: Any = None) -> dict[str, Any]:
    """The state ``LocalPipeline`` holds after ``raw``: tracemalloc over a pass of its own (the
    behaviour model's imports made before measuring), with the accounts and fingerprints held."""
    from consumers.core.account_stage import AccountProcessor
    from consumers.core.config import DetectorConfig
    from consumers.core.pipeline import LocalPipeline

    cfg = cfg or DetectorConfig()
    AccountProcessor(cfg, 0)  # river and scipy (~56 MB): not state
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        pipe = LocalPipeline(cfg)
        for c in chunked(raw, chunk):
            pipe.feed(c)
        gc.collect()
        total = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    total += pipe.account.native_bytes()  # the native heap: outside tracemalloc's view
    camp = pipe.campaign.state_size()
    return {"bytes": total, "accounts": len(pipe.account.accounts),
            "fingerprints": camp["groups"] + camp["singles"], "singles": camp["singles"]}


def run(raw: Sequence[bytes], repeat: int = 3, chunk: int = 4096, checkpoint_every: int = 20_000,
        cfg: Any = None, gc_threshold: tuple[int, int, int] | None = GC_THRESHOLD) -> dict[str, Any]:
    """Measure the pipeline and each stage over ``raw``; returns the ``core`` section."""
    from consumers.core.account_stage import AccountProcessor
    from consumers.core.campaign_stage import CampaignProcessor
    from consumers.core.config import DetectorConfig
    from consumers.core.pipeline import LocalPipeline
    from consumers.core.policy import PolicyProcessor

    cfg = cfg or DetectorConfig()
    n = len(raw)
    if not n:
        raise ValueError("no events")
    chunks = chunked(raw, chunk)
    req = _request_records(raw, chunk)
    t_pipe: list[float] = []
    t_pipe_gc: list[float] = []
    t_acc: list[float] = []
    t_camp: list[float] = []
    t_pol: list[float] = []
    t_acc_ckpt: list[float] = []
    flags_per_rep: list[int] = []
    stage_flags_per_rep: list[int] = []
    counters: dict[str, Any] = {}
    obs_chunks: list[list[Any]] = []
    ver_chunks: list[list[Any]] = []
    n_dlq = n_changes = changes_bytes = n_ckpt = 0
    for rep in range(repeat):
        # --- the whole in-memory pipeline, as replay runs it
        seconds, n_flags, pipe_counters = _time_pipeline(LocalPipeline(cfg), chunks)
        t_pipe.append(seconds)
        flags_per_rep.append(n_flags)
        if rep == 0:
            counters = pipe_counters

        # --- the same with a larger GC generation-0 threshold (fewer collections of a big heap)
        if gc_threshold:
            saved = gc.get_threshold()
            gc.set_threshold(*gc_threshold)
            try:
                seconds, n_flags_gc, _ = _time_pipeline(LocalPipeline(cfg), chunks)
                t_pipe_gc.append(seconds)
            finally:
                gc.set_threshold(*saved)
            if n_flags_gc != n_flags:
                raise AssertionError(f"GC settings changed the flags: {n_flags_gc} != {n_flags}")

        # --- stage by stage, each fed the previous stage's outputs; the account stage is also
        # asked for its changelog entries every `checkpoint_every` events, as the Kafka runner
        # does at each checkpoint (timed apart: it changes nothing the stage computes)
        acc = AccountProcessor(cfg, 0)
        acc_out = []
        t_process = t_changes = 0.0
        since = 0
        n_changes = changes_bytes = n_ckpt = 0
        for i, recs in enumerate(req):
            t0 = time.perf_counter()
            acc_out.append(acc.process(recs))
            t_process += time.perf_counter() - t0
            since += len(recs)
            if since >= checkpoint_every or i == len(req) - 1:
                t0 = time.perf_counter()
                ch = acc.take_changes()
                t_changes += time.perf_counter() - t0
                n_ckpt += 1
                n_changes += len(ch)
                changes_bytes += sum(len(k) + len(v or b"") for k, v in ch)
                since = 0
        t_acc.append(t_process)
        t_acc_ckpt.append(t_process + t_changes)
        obs_chunks = [[r for r in outs if r.topic != "dlq"] for outs in acc_out]
        n_dlq = sum(len(outs) for outs in acc_out) - sum(map(len, obs_chunks))
        del acc, acc_out

        camp = CampaignProcessor(cfg, 0)
        t0 = time.perf_counter()
        ver_chunks = [camp.process(obs) for obs in obs_chunks]
        t_camp.append(time.perf_counter() - t0)
        del camp

        pol = PolicyProcessor(cfg, "bench", 0)
        stage_flags = 0
        t0 = time.perf_counter()
        for ver in ver_chunks:
            stage_flags += len(pol.process(ver))
        t_pol.append(time.perf_counter() - t0)
        stage_flags_per_rep.append(stage_flags)
        del pol

    n_obs = sum(map(len, obs_chunks))
    n_ver = sum(map(len, ver_chunks))
    obs_kinds, obs_bytes = _tally(obs_chunks)
    ver_kinds, ver_bytes = _tally(ver_chunks)
    n_flags = flags_per_rep[0]

    pipe_row = make_row(SECTION, "LocalPipeline (3 stages, in memory)", [rate(n, t) for t in t_pipe],
                        "events/s", f"{n:,} events, {n_flags:,} flags")
    stage_sum = [a + c + p for a, c, p in zip(t_acc, t_camp, t_pol, strict=True)]
    med = sorted(stage_sum)[len(stage_sum) // 2]
    rows = [pipe_row]
    if t_pipe_gc:
        rows.append(make_row(SECTION, f"LocalPipeline, gc.set_threshold{gc_threshold}",
                             [rate(n, t) for t in t_pipe_gc], "events/s",
                             f"CPython default {gc.get_threshold()}; same flags"))
    for name, ts, n_in, what in (
        ("account stage alone", t_acc, n, "requests"),
        ("campaign stage alone", t_camp, n_obs, "observations"),
        ("policy stage alone", t_pol, n_ver, "verdicts"),
    ):
        share = sorted(ts)[len(ts) // 2] / med if med else 0.0
        in_rate = sorted(rate(n_in, t) for t in ts)[len(ts) // 2]
        rows.append(make_row(SECTION, name, [rate(n, t) for t in ts], "events/s",
                             f"{share:.0%} of stage time; {n_in:,} {what} in = {in_rate:,.0f} {what}/s"))
    rows.append(make_row(SECTION, "sum of the 3 stages alone", [rate(n, t) for t in stage_sum], "events/s",
                         "same work as LocalPipeline minus its Record building"))
    rows.append(make_row(
        SECTION, f"account stage + take_changes every {checkpoint_every:,} ev",
        [rate(n, t) for t in t_acc_ckpt], "events/s",
        f"{n_ckpt} checkpoints, {n_changes:,} changelog entries, "
        f"{changes_bytes / n:,.0f} changelog bytes/event"))
    for r in rows[1:]:
        set_ratio(r, pipe_row, "LocalPipeline")
    per = [
        ("observations/event", n_obs, " + ".join(f"{k} {v / n:.3f}" for k, v in sorted(obs_kinds.items())),
         obs_bytes),
        ("verdicts/event", n_ver, " + ".join(f"{k} {v / n:.3f}" for k, v in sorted(ver_kinds.items())),
         ver_bytes),
        ("flags/event", n_flags, f"{n_flags:,} flags", 0),
    ]
    for name, count, note, nbytes in per:
        if nbytes:
            note += f"; {nbytes / max(count, 1):.0f} bytes/msg (key+value)"
        rows.append(make_row(SECTION, name, [count / n], "msgs/event", note))
    mem = memory(raw, chunk, cfg)
    rows.append(make_row(SECTION, "state after the input (tracemalloc + native), per account",
                         [mem["bytes"] / max(1, mem["accounts"])], "bytes/account",
                         f"{mem['bytes'] / 1e6:,.1f} MB for {mem['accounts']:,} accounts, all three stages; "
                         f"the campaign stage holds {mem['fingerprints']:,} fingerprints "
                         f"({mem['singles']:,} shown by one account)"))
    return {
        "section": SECTION,
        "rows": rows,
        "info": {
            "events": n,
            "chunk": chunk,
            "repeat": repeat,
            "flags": n_flags,
            "flags_per_repeat": flags_per_rep,
            "stage_chain_flags_per_repeat": stage_flags_per_rep,
            "observations": n_obs,
            "observation_kinds": obs_kinds,
            "verdicts": n_ver,
            "verdict_kinds": ver_kinds,
            "dlq": n_dlq,
            "counters": counters,
            "changelog_entries_account": n_changes,
            "memory": mem,
            "checkpoints": n_ckpt,
        },
    }


def profile(raw: Sequence[bytes], top: int = 15, chunk: int = 4096, cfg: Any = None
            ) -> dict[str, Any]:
    """cProfile of ``LocalPipeline`` over ``raw``: the ``top`` functions by tottime.

    Returns ``{"events", "seconds", "total_tottime", "top": [{function, ncalls, tottime, ...}],
    "text"}``; ``text`` is a ready-to-print table (per-event µs = tottime ÷ events).
    """
    from consumers.core.config import DetectorConfig
    from consumers.core.pipeline import LocalPipeline

    cfg = cfg or DetectorConfig()
    n = len(raw)
    chunks = chunked(raw, chunk)
    pipe = LocalPipeline(cfg)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for c in chunks:
        pipe.feed(c)
    prof.disable()
    secs = time.perf_counter() - t0
    st = pstats.Stats(prof, stream=io.StringIO())
    entries = []
    total = 0.0
    for (file, line, func), (cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        total += tt
        entries.append((tt, ct, nc, cc, _short(file, line, func)))
    entries.sort(key=lambda e: e[0], reverse=True)
    top_rows = [{"function": name, "ncalls": nc, "primitive_calls": cc, "tottime_s": tt,
                 "cumtime_s": ct, "share": tt / total if total else 0.0,
                 "tottime_us_per_event": tt / n * 1e6, "calls_per_event": nc / n}
                for tt, ct, nc, cc, name in entries[:top]]
    lines = [f"cProfile of LocalPipeline over {n:,} events: {secs:.2f}s wall under the profiler, "
             f"{total:.2f}s total tottime ({total / n * 1e6:.1f} µs/event)",
             f"{'tottime s':>9} {'share':>6} {'µs/ev':>6} {'calls/ev':>8} {'cumtime s':>9}  function"]
    for e in top_rows:
        lines.append(f"{e['tottime_s']:9.3f} {e['share']:6.1%} {e['tottime_us_per_event']:6.2f} "
                     f"{e['calls_per_event']:8.2f} {e['cumtime_s']:9.3f}  {e['function']}")
    return {"events": n, "seconds": secs, "total_tottime": total, "top": top_rows, "text": "\n".join(lines)}


def _short(file: str, line: int, func: str) -> str:
    if file == "~":
        return func  # a builtin: "<built-in method ...>"
    marker = "/consumers/"
    i = file.rfind(marker)
    if i >= 0:
        file = "consumers/" + file[i + len(marker):]
    else:
        parts = file.split("/site-packages/")
        file = parts[-1] if len(parts) > 1 else file.rsplit("/", 2)[-1]
    return f"{file}:{line}({func})"
