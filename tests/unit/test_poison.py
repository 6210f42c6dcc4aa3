"""Poison messages, re-deliveries and disorder never change what the detector decides.

A stream of good events (eventgen: benign accounts, an org, a small hydra campaign) is
interleaved with bad messages — malformed, truncated, oversized, wrongly typed, out of range,
missing fields — and with re-deliveries of good events (same ``event_id``, within the dedup
window). Properties (hypothesis):

* every bad message yields exactly one DLQ record, in order, with its bytes and a reason;
* every re-delivery is dropped (the ``duplicates`` counter) and changes nothing;
* the flags are byte-identical to the flags of the good-only stream, however it is batched.

Out-of-order events (``ts_ms`` decreasing within the allowed lateness) are processed; events
before their account's creation or later than the allowed lateness go to the DLQ; far-future
clocks are tested in ``test_clock.py``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.contract.events import InvalidEvent, parse_event
from consumers.core.config import DetectorConfig
from consumers.core.pipeline import LocalPipeline
from tests.eventgen import Dataset, scenario, valid_event

CFG = DetectorConfig()
DATASET: Dataset = scenario(seed=2, n_benign=6, n_org=3, n_hydra=10, days=1)
GOOD: list[bytes] = DATASET.lines()


def _run(lines: list[bytes], batches: list[int] | None = None) -> tuple[list[bytes], LocalPipeline]:
    pipe = LocalPipeline(CFG)
    flags: list[bytes] = []
    i = 0
    sizes = iter(batches or [])
    while i < len(lines):
        n = next(sizes, len(lines))
        flags += pipe.feed(lines[i:i + n])
        i += n
    return flags, pipe


GOOD_FLAGS, _GOOD_PIPE = _run(GOOD)


def test_good_stream_is_interesting() -> None:
    """The properties below mean something only if the good stream produces enforcing flags."""
    actions = {orjson.loads(f)["action"] for f in GOOD_FLAGS}
    assert {"throttle", "suspend"} & actions
    assert _GOOD_PIPE.counters()["account"]["events"] == len(GOOD)


# --- bad messages ------------------------------------------------------------------------------

WRONG_TYPES: dict[str, list[Any]] = {
    "schema_version": ["1", None, True, 2, 0],
    "event_id": [7, None, "", "e" * 65, ["e"]],
    "ts_ms": ["1", -1, 1.5, None, True, 2**63],
    "account_id": [None, 3, "", "a" * 129, {"a": 1}],
    "org_id": [5, ["org"], True],
    "account_created_ms": [-1, "0", 0.5],
    "input_tokens": [-1, "10", None, False],
    "output_tokens": [-3, 2.5],
    "latency_ms": [-1, None],
    "status": ["200", 200.5, None, 2**63],
    "client_ip_prefix": ["", None, 10, "x" * 65],
    "asn": [-1, "AS1", 1.5],
    "country": ["Deutschland", "D", 49, "1A"],
    "user_agent": ["u" * 513, 12],
    "prompt_simhash": ["xyz", "0123456789abcdeg", 12345, None, "0123456789abcdef0"],
    "task_category": [None, 3, ["coding"]],
    "reasoning_elicitation": [1.5, -0.1, "0.5", None, True],
    "tool_use": [1, "true", None],
    "n_turns": [0, -1, 1.0, None],
}


@st.composite
def bad_messages(draw: st.DrawFn) -> bytes:
    """A message that is not a valid RequestEvent v1."""
    kind = draw(st.sampled_from(("malformed", "truncated", "oversized", "wrong", "missing", "array",
                                 "padded", "non_utf8")))
    if kind == "malformed":
        return draw(st.sampled_from([b"", b"{", b"}", b"not json", b"\xff\xfe\xfd", b"null", b"42",
                                     b'{"a":', b"\x00" * 10]) | st.binary(min_size=1, max_size=40)
                    .filter(lambda b: b.lstrip()[:1] not in (b"{",)))
    good = draw(st.sampled_from(GOOD))
    if kind == "truncated":
        return good[: draw(st.integers(1, len(good) - 1))]
    if kind == "array":
        return b"[" + good + b"]"
    if kind == "non_utf8":  # an invalid UTF-8 byte inside a string value of a good event
        i = good.index(b'"account_id":"') + len(b'"account_id":"')
        return good[:i] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])) + good[i:]
    if kind == "padded":  # a good event made oversized by an unknown field
        return good[:-1] + b',"padding":"' + b"p" * draw(st.sampled_from([70_000, 2_000_000])) + b'"}'

    ev = orjson.loads(good)
    if kind == "oversized":
        field = draw(st.sampled_from(("user_agent", "event_id", "account_id", "client_ip_prefix")))
        ev[field] = "z" * draw(st.sampled_from([600, 5_000, 300_000]))
    elif kind == "missing":
        del ev[draw(st.sampled_from(sorted(WRONG_TYPES)))]
    else:
        field = draw(st.sampled_from(sorted(WRONG_TYPES)))
        ev[field] = draw(st.sampled_from(WRONG_TYPES[field]))
    return orjson.dumps(ev)


def _per_account_positions() -> tuple[list[str], dict[str, list[int]]]:
    accts = [orjson.loads(x)["account_id"] for x in GOOD]
    pos: dict[str, list[int]] = defaultdict(list)
    for i, a in enumerate(accts):
        pos[a].append(i)
    return accts, pos


ACCTS, POSITIONS = _per_account_positions()


@st.composite
def duplicates(draw: st.DrawFn) -> tuple[int, int]:
    """(index of a good event, index after which its re-delivery is inserted), within the window.

    The account must have fewer than ``dedup_window`` newer events between the two.
    """
    i = draw(st.integers(0, len(GOOD) - 1))
    mine = POSITIONS[ACCTS[i]]
    k = mine.index(i)
    limit_k = min(len(mine) - 1, k + CFG.dedup_window - 2)
    j = mine[draw(st.integers(k, limit_k))]            # after this event of the same account ...
    nxt = mine[limit_k + 1] if limit_k + 1 < len(mine) else len(GOOD)
    return i, draw(st.integers(j, nxt - 1))            # ... and before the window has moved on


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(
    bad=st.lists(st.tuples(st.integers(0, len(GOOD)), bad_messages()), max_size=25),
    dups=st.lists(duplicates(), max_size=25),
    batches=st.lists(st.integers(1, 300), max_size=30),
)
def test_poison_and_duplicates_do_not_change_flags(
    bad: list[tuple[int, bytes]], dups: list[tuple[int, int]], batches: list[int]
) -> None:
    for _, msg in bad:
        with pytest.raises(InvalidEvent):
            parse_event(msg)            # sanity: the generator only makes bad messages
    inserts: dict[int, list[tuple[str, bytes]]] = defaultdict(list)   # after good index
    for pos, msg in bad:
        inserts[pos - 1].append(("bad", msg))
    for src, after in dups:
        inserts[after].append(("dup", GOOD[src]))
    stream: list[bytes] = []
    expected_dlq: list[bytes] = []

    def emit(items: list[tuple[str, bytes]]) -> None:
        for kind, msg in items:
            stream.append(msg)
            if kind == "bad":
                expected_dlq.append(msg)

    emit(inserts.get(-1, []))
    for i, line in enumerate(GOOD):
        stream.append(line)
        emit(inserts.get(i, []))

    flags, pipe = _run(stream, batches)

    c = pipe.counters()["account"]
    assert c["invalid"] == len(bad)
    assert c["duplicates"] == len(dups)
    assert c["events"] == len(GOOD)
    assert [r.value for r in pipe.dead_letters] == expected_dlq
    for r in pipe.dead_letters:
        h = dict(r.headers or [])
        assert h["dlq.error"] and h["dlq.topic"] == b"requests"
        assert stream[int(h["dlq.offset"])] == r.value      # the offset points at the message
    assert flags == GOOD_FLAGS


def test_redelivery_long_after_is_processed_again() -> None:
    """Control for the dedup: memory is bounded, an id far older than the window is forgotten."""
    from tests.eventgen import EventGen

    lines = [orjson.dumps(e) for e in EventGen(4).scraper(per_day=20 * CFG.dedup_window)]
    gap = 4 * CFG.dedup_window
    stream = lines[: gap + 1] + [lines[0], lines[1]] + lines[gap + 1:]
    _, pipe = _run(stream)
    assert pipe.counters()["account"]["duplicates"] == 0
    assert pipe.counters()["account"]["events"] == len(lines) + 2
    # ... while the same re-deliveries within the window are dropped
    stream = lines[:10] + [lines[0], lines[1]] + lines[10:]
    _, pipe = _run(stream)
    assert pipe.counters()["account"]["duplicates"] == 2


def test_immediate_redelivery_of_every_event() -> None:
    stream = [x for line in GOOD for x in (line, line)]
    flags, pipe = _run(stream, [97] * 100)
    assert pipe.counters()["account"]["duplicates"] == len(GOOD)
    assert flags == GOOD_FLAGS


def test_every_line_bad_mixed_in() -> None:
    """One bad message after every good one: still the same flags, and one DLQ record each."""
    bad = [b'{"schema_version":1}', b"{", b"[]"]
    stream = [x for i, line in enumerate(GOOD) for x in (line, bad[i % 3])]
    flags, pipe = _run(stream)
    assert len(pipe.dead_letters) == len(GOOD)
    assert flags == GOOD_FLAGS


# --- disorder ----------------------------------------------------------------------------------

def _jittered(seed: int, max_back_ms: int) -> list[bytes]:
    import random

    rng = random.Random(seed)
    out = []
    for line in GOOD:
        ev = orjson.loads(line)
        if rng.random() < 0.3:
            ev["ts_ms"] = max(0, ev["ts_ms"] - rng.randint(1, max_back_ms))
        out.append(orjson.dumps(ev))
    return out


def _expected_out_of_range(stream: list[bytes]) -> int:
    """Events the clock rules reject (see ``AccountProcessor._clock_check``), computed independently:
    before the account's creation, or further behind the running maximum than the allowed lateness."""
    wm, bad = 0, 0
    for line in stream:
        ev = orjson.loads(line)
        ts = ev["ts_ms"]
        if ts < ev["account_created_ms"] or (wm and ts < wm - CFG.allowed_lateness_ms):
            bad += 1
            continue
        wm = max(wm, ts)
    return bad


@pytest.mark.parametrize(("seed", "max_back_ms"), [(1, 60_000), (2, 3_600_000), (3, 3 * 86_400_000)])
def test_out_of_order_events_processed(seed: int, max_back_ms: int) -> None:
    """Events out of order within the allowed lateness are processed; those before their account's
    creation or later than the allowed lateness go to the DLQ (ts_out_of_range), nothing else."""
    stream = _jittered(seed, max_back_ms)
    ts = [orjson.loads(x)["ts_ms"] for x in stream]
    assert any(b < a for a, b in zip(ts, ts[1:], strict=False)), "the stream must be out of order"
    flags, pipe = _run(stream)
    c = pipe.counters()["account"]
    rejected = _expected_out_of_range(stream)
    if max_back_ms > CFG.allowed_lateness_ms:
        assert rejected > 0, "the test must exercise the lateness rule"
    assert c["ts_out_of_range"] == rejected
    assert c["events"] == len(GOOD) - rejected and c["invalid"] == 0 and c["duplicates"] == 0
    assert len(pipe.dead_letters) == rejected
    assert all(dict(d.headers or [])["dlq.error"].startswith(b"ts_out_of_range") for d in pipe.dead_letters)
    decoded = [orjson.loads(f) for f in flags]
    hydra = DATASET.accounts("hydra")
    enforced = {f["account_id"] for f in decoded if f["action"] in ("throttle", "suspend")}
    assert enforced & hydra, "the campaign is still found"
    mx = max(ts)
    assert all(f["decided_at_ms"] <= mx for f in decoded)
    again, _ = _run(stream, [13] * 1000)
    assert again == flags


def test_event_before_the_creation_of_its_account() -> None:
    """CONTRACT.md: a ts_ms before the account's own account_created_ms is out of range (DLQ);
    a late event further behind the watermark than the allowed lateness too; the rest is processed."""
    evs = [valid_event(event_id="a", ts_ms=0, account_created_ms=10**12),
           valid_event(event_id="b", ts_ms=10**12, account_created_ms=0),
           valid_event(event_id="c", ts_ms=5, account_created_ms=0),
           valid_event(event_id="d", ts_ms=10**12 - CFG.allowed_lateness_ms, account_created_ms=0)]
    pipe = LocalPipeline(CFG)
    pipe.feed([orjson.dumps(e) for e in evs])
    assert pipe.counters()["account"]["events"] == 2
    reasons = [dict(d.headers or [])["dlq.error"] for d in pipe.dead_letters]
    assert reasons == [b"ts_out_of_range: ts_ms is before account_created_ms",
                       b"ts_out_of_range: ts_ms is 999999999 s behind the watermark"]
