"""Event time that no single event can break (CONTRACT.md: producers' clocks can be wrong).

A stream of good events (eventgen) with *poison timestamps* mixed in — an event from the year
2100, one from 1970, one before its own account was created, one a week late — must give the
same flags, byte for byte, as the good stream alone: each poison goes to the DLQ with reason
``ts_out_of_range`` and never moves the clock. With broker timestamps (live consumption) the
reference for "ahead" is the record's own broker timestamp.
"""

from __future__ import annotations

import orjson
import pytest

from consumers.core.account_stage import AccountProcessor
from consumers.core.config import DAY_MS, DetectorConfig
from consumers.core.pipeline import LocalPipeline
from consumers.core.stage import Record
from tests.eventgen import scenario

CFG = DetectorConfig()
DATASET = scenario(seed=3, n_benign=6, n_org=3, n_hydra=12, days=1)
GOOD = DATASET.lines()
YEAR_2100 = 4_102_444_800_000
YEAR_1970 = 86_400_000


def _poison(template: bytes, **fields: int) -> bytes:
    ev = orjson.loads(template)
    ev.update(fields)
    ev["event_id"] = "poison-" + "-".join(f"{k}{v}" for k, v in fields.items())
    return orjson.dumps(ev)


def _flags(lines: list[bytes]) -> tuple[list[bytes], LocalPipeline]:
    pipe = LocalPipeline(CFG)
    return pipe.feed(lines), pipe


def test_the_good_stream_is_interesting() -> None:
    flags, _ = _flags(GOOD)
    assert {"throttle", "suspend"} & {orjson.loads(f)["action"] for f in flags}


@pytest.mark.parametrize("where", [1, len(GOOD) // 3, len(GOOD) - 1])
def test_poison_timestamps_change_no_flag(where: int) -> None:
    good_flags, _ = _flags(GOOD)
    victim = GOOD[where]
    created = orjson.loads(victim)["account_created_ms"]
    ts = orjson.loads(GOOD[where - 1])["ts_ms"]
    poisons = [
        _poison(victim, ts_ms=YEAR_2100),                                   # far future
        _poison(victim, ts_ms=YEAR_1970, account_created_ms=0),             # far past
        _poison(victim, ts_ms=created - 1),                                 # before creation
        _poison(victim, ts_ms=ts - CFG.allowed_lateness_ms - 1),            # too late
        _poison(victim, ts_ms=ts + CFG.max_stream_jump_ms + 60_000),        # a day ahead
    ]
    stream = GOOD[:where] + poisons + GOOD[where:]
    flags, pipe = _flags(stream)
    assert flags == good_flags
    assert pipe.counters()["account"]["ts_out_of_range"] == len(poisons)
    assert [d.value for d in pipe.dead_letters] == poisons
    assert all(dict(d.headers or [])["dlq.error"].startswith(b"ts_out_of_range") for d in pipe.dead_letters)


def _records(lines: list[bytes], broker_ts: list[int | None]) -> list[Record]:
    return [Record("llm.requests", None, v, 0, i, None, t) for i, (v, t) in enumerate(zip(lines, broker_ts, strict=True))]


def test_live_reference_is_the_broker_timestamp() -> None:
    """Live: an event more than max_clock_skew_ms ahead of its record's broker timestamp is out of
    range even when it is close to the stream (a quiet partition's next event may be hours on)."""
    lines = GOOD[:50]
    ts = [orjson.loads(x)["ts_ms"] for x in lines]
    proc = AccountProcessor(CFG)
    ahead = _poison(lines[10], ts_ms=ts[9] + CFG.max_clock_skew_ms + 1000)
    recs = _records(lines[:10] + [ahead] + lines[10:], ts[:10] + [ts[9]] + ts[10:])
    out = proc.process(recs)
    dlq = [r for r in out if r.topic == "dlq"]
    assert [r.value for r in dlq] == [ahead]
    assert dict(dlq[0].headers or [])["dlq.error"].startswith(b"ts_out_of_range: ts_ms is 901 s ahead of the record's broker timestamp")
    assert proc.watermark == max(ts)


def test_a_quiet_partition_is_not_out_of_range() -> None:
    """Live: hours without traffic, then events whose broker timestamps are as late: processed."""
    lines = GOOD[:20]
    later = [_poison(x, ts_ms=orjson.loads(x)["ts_ms"] + 10 * 3_600_000) for x in GOOD[20:25]]
    ts = [orjson.loads(x)["ts_ms"] for x in lines + later]
    out = AccountProcessor(CFG).process(_records(lines + later, ts))
    assert not [r for r in out if r.topic == "dlq"]


def test_far_future_without_broker_timestamp_never_moves_the_watermark() -> None:
    proc = AccountProcessor(CFG)
    proc.process(_records(GOOD[:30], [None] * 30))
    wm = proc.watermark
    out = proc.process(_records([_poison(GOOD[30], ts_ms=wm + 2 * DAY_MS)], [None]))
    assert [r.topic for r in out] == ["dlq"] and proc.watermark == wm
