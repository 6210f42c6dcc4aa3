"""The broker-free parts of ``replay --topic`` (consumers.replay_topic and its services): time parsing, offset
ranges, the multi-partition merge order, the live-topic guard, progress output, and the warm-start
hand-over (state taken mid-stream and restored gives exactly the flags of an uninterrupted run).
"""

from __future__ import annotations

import argparse
import io
import random
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from consumers import replay
from consumers.contract.units import HOUR_MS
from consumers.core.account_stage import MODEL_KEY
from consumers.core.config import DetectorConfig
from consumers.core.pipeline import LocalPipeline
from consumers.flag_sink import FlagSink
from consumers.kafka.changelog import OFFSET_MARKER_KEY, PartitionRestore, decode_marker
from consumers.kafka.errors import ReplayError
from consumers.kafka.reader import StreamMerger, resolve_range
from consumers.kafka.topic_replay import DEFAULT_FLAGS_TOPIC_PREFIX
from consumers.kafka.warm_start import WarmStartTarget, latest_entries, warm_start_entries
from consumers.progress import Progress
from consumers.replay_topic import options_from_args
from consumers.times import parse_time
from tests.eventgen import EventGen, dumps_lines, sort_events

# ------------------------------------------------------------------------------ time


@pytest.mark.parametrize(("text", "ms"), [
    ("2026-04-22T06:00:00Z", 1_776_837_600_000),
    ("2026-04-22T06:00:00+00:00", 1_776_837_600_000),
    ("2026-04-22T08:00:00+02:00", 1_776_837_600_000),
    ("2026-04-22T06:00:00", 1_776_837_600_000),       # no zone = UTC
    ("2026-04-22T06:00:00.250Z", 1_776_837_600_250),
    ("2026-04-22", 1_776_816_000_000),
    ("1776837600000", 1_776_837_600_000),
])
def test_parse_time(text: str, ms: int) -> None:
    assert parse_time(text) == ms


@pytest.mark.parametrize("text", ["1776837600", "yesterday", "2026-13-01", ""])
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


def test_epoch_seconds_get_a_hint() -> None:
    with pytest.raises(ValueError, match="1776837600000"):
        parse_time("1776837600")


# ------------------------------------------------------------------------------ ranges


def test_resolve_range() -> None:
    r = resolve_range(3, low=10, high=100, start_lookup=40, end_lookup=70)
    assert (r.partition, r.start, r.end, r.size) == (3, 40, 70, 30)
    # from before the log start (retention): start at the log start
    assert resolve_range(0, 10, 100, 5, 70).start == 10
    # nothing at/after --from: empty range at the end
    r = resolve_range(0, 10, 100, -1, -1)
    assert (r.start, r.end, r.size) == (100, 100, 0)
    # --to after the last message, or latest: the end captured at start
    assert resolve_range(0, 10, 100, 40, -1).end == 100
    assert resolve_range(0, 10, 100, 40, None).end == 100
    # earliest
    assert resolve_range(0, 10, 100, None, 70).start == 10
    # an end lookup beyond the last stable offset is capped
    assert resolve_range(0, 10, 100, 40, 150).end == 100
    # never negative
    assert resolve_range(0, 10, 100, 80, 50).size == 0


# ------------------------------------------------------------------------------ merge order


def _partition_streams(rng: random.Random, n_parts: int, monotone: bool) -> dict[int, list[tuple[int, int, bytes]]]:
    out = {}
    for p in range(n_parts):
        ts = 1000
        msgs = []
        for off in range(rng.randint(0, 60)):
            ts = ts + rng.randint(0, 5) if monotone else rng.randint(900, 1300)
            msgs.append((ts, off, f"{p}:{off}".encode()))
        out[p] = msgs
    return out


def _merge_with_interleaving(streams: dict[int, list[tuple[int, int, bytes]]], rng: random.Random) -> list[tuple[int, int, bytes | None]]:
    """Feed the merger as a fetcher might: random partition, random chunk sizes."""
    m = StreamMerger(streams)
    pos = dict.fromkeys(streams, 0)
    out: list[tuple[int, int, bytes | None]] = []
    open_ = [p for p in streams]
    while open_:
        p = rng.choice(open_)
        k = rng.randint(1, 7)
        for ts, off, v in streams[p][pos[p]:pos[p] + k]:
            m.add(p, ts, off, v)
        pos[p] += k
        if pos[p] >= len(streams[p]):
            m.finish(p)
            open_.remove(p)
        out += m.pop_ready()
    out += m.pop_ready()
    assert m.pending() == 0
    return out


@pytest.mark.parametrize("seed", range(20))
def test_merge_is_timestamp_order_and_independent_of_fetch_interleaving(seed: int) -> None:
    rng = random.Random(seed)
    streams = _partition_streams(rng, rng.randint(1, 4), monotone=True)
    expected = sorted(((ts, p, off, v) for p, msgs in streams.items() for ts, off, v in msgs))
    for k in range(3):
        got = _merge_with_interleaving(streams, random.Random(f"{seed}:{k}"))
        assert got == [(p, off, v) for _, p, off, v in expected]


@pytest.mark.parametrize("seed", range(10))
def test_merge_keeps_partition_order_when_timestamps_go_backwards(seed: int) -> None:
    rng = random.Random(seed)
    streams = _partition_streams(rng, 3, monotone=False)
    runs = [_merge_with_interleaving(streams, random.Random(f"{seed}:{k}")) for k in range(3)]
    assert runs[0] == runs[1] == runs[2]          # deterministic
    for p in streams:                              # each partition in offset order
        assert [off for q, off, _ in runs[0] if q == p] == list(range(len(streams[p])))


def test_merge_waits_for_every_open_partition() -> None:
    m = StreamMerger([0, 1, 2])
    m.add(0, 10, 0, b"a")
    m.add(1, 20, 0, b"b")
    assert m.pop_ready() == []                     # partition 2 might still send ts < 10
    m.finish(2)
    assert m.pop_ready() == [(0, 0, b"a")]         # now 0 is starved again: b must wait
    m.finish(0)
    assert m.pop_ready() == [(1, 0, b"b")]


# ------------------------------------------------------------------------------ options and the live-topic guard


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    replay.add_arguments(p)  # includes the --topic options (add_topic_arguments)
    return p.parse_args(list(argv))


BASE = ("--topic", "llm.requests", "--from", "2026-04-22T06:00:00Z")


def test_default_output_is_a_replay_topic_named_after_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISTILLWATCH_FLAGS_TOPIC", raising=False)
    o = options_from_args(parse(*BASE, "--run-id", "r1", "--to", "1776880800000"))
    assert o.flags_topic == DEFAULT_FLAGS_TOPIC_PREFIX + "r1"
    assert (o.from_ms, o.to_ms) == (1_776_837_600_000, 1_776_880_800_000)
    assert o.group_id == "distillwatch-replay.r1"
    assert o.live_flags_topic == "distillation.flags"
    # --output alone: a file, no topic
    assert options_from_args(parse(*BASE, "--output", "f.jsonl")).flags_topic is None
    # generated run ids differ
    a, b = (options_from_args(parse(*BASE)).run_id for _ in range(2))
    assert a != b


def test_live_flags_topic_is_refused_without_the_explicit_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILLWATCH_FLAGS_TOPIC", "prod.flags")
    for topic in ("prod.flags", "distillation.flags"):
        with pytest.raises(ReplayError, match="live flags topic") as e:
            options_from_args(parse(*BASE, "--flags-topic", topic))
        assert e.value.exit_code == 2
    with pytest.raises(ReplayError, match="live flags topic"):
        options_from_args(parse(*BASE, "--flags-topic", "x", "--live-flags-topic", "x"))
    o = options_from_args(parse(*BASE, "--to-live-flags"))
    assert o.flags_topic == "prod.flags" and o.to_live
    o = options_from_args(parse(*BASE, "--to-live-flags", "--flags-topic", "prod.flags"))
    assert o.flags_topic == "prod.flags"
    with pytest.raises(ReplayError, match="do not combine"):
        options_from_args(parse(*BASE, "--to-live-flags", "--flags-topic", "other"))
    with pytest.raises(ReplayError, match="requests topic"):
        options_from_args(parse(*BASE, "--flags-topic", "llm.requests"))


@pytest.mark.parametrize(("extra", "message"), [
    ((), "--from TIME is required"),
    (("--from", "1776837600"), "epoch seconds"),
    (("--from", "2026-04-22T06:00:00Z", "--to", "2026-04-22T05:00:00Z"), "must be after"),
    (("--from", "earliest", "--run-id", "a/b"), "--run-id"),
    (("--from", "earliest", "--partitions", "0,x"), "--partitions"),
    (("--from", "earliest", "--warm-start-group", "g", "--partitions", "0"), "every partition"),
])
def test_bad_requests_are_refused(extra: tuple[str, ...], message: str) -> None:
    with pytest.raises(ReplayError, match=message):
        options_from_args(parse("--topic", "t", *extra))


def test_earliest_and_latest() -> None:
    o = options_from_args(parse("--topic", "t", "--from", "earliest", "--to", "latest"))
    assert o.from_ms is None and o.to_ms is None


# ------------------------------------------------------------------------------ progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal() -> None:
    s = Tty()
    p = Progress(1000, "auto", stream=s)
    assert p.mode == "bar"
    p.update(250, 3, force=True)
    p.close(1000, 7)
    out = s.getvalue()
    assert out.startswith("\r") and out.endswith("\n")
    assert " 25.0% [#######" in out and "250/1,000 msgs" in out and "ETA" in out
    assert "100.0%" in out and "flags 7" in out


def test_progress_logs_when_not_a_terminal() -> None:
    s = io.StringIO()
    p = Progress(1000, "auto", stream=s)
    assert p.mode == "log"
    with capture_logs() as logs:
        p.update(500, 1, force=True)
        p.update(600, 1)                  # within the interval: no line
        p.close(1000, 2)
    lines = [x for x in logs if x["event"] == "replay_progress"]
    assert [x["done"] for x in lines] == [500, 1000]
    assert lines[0]["total"] == 1000 and lines[0]["pct"] == 50.0 and "eta_s" in lines[0]
    assert s.getvalue() == ""


# ------------------------------------------------------------------------------ output file


def test_flag_sink_renames_on_commit_and_leaves_nothing_on_discard(tmp_path: Path) -> None:
    out = tmp_path / "flags.jsonl"
    s = FlagSink(str(out), spool=True)
    s.write([b'{"a":1}', b'{"a":2}'])
    assert not out.exists() and (tmp_path / "flags.jsonl.partial").exists()
    assert list(s.spooled()) == [b'{"a":1}', b'{"a":2}']
    s.commit()
    assert out.read_bytes() == b'{"a":1}\n{"a":2}\n' and s.count == 2
    s2 = FlagSink(str(tmp_path / "other.jsonl"), spool=False)
    s2.write([b'{"a":1}'])
    s2.discard()
    assert list(tmp_path.iterdir()) == [out]


# ------------------------------------------------------------------------------ warm start


def _events() -> tuple[list[bytes], int]:
    g = EventGen(5)
    ev = sort_events(g.benign(30, 3) + g.org(6, 3) + g.hydra(25, 3)
                     + g.hydra(20, 1, name="late", start_offset_ms=40 * HOUR_MS)
                     + g.scraper(days=1, start_offset_ms=50 * HOUR_MS))
    mid = sum(1 for e in ev if e["ts_ms"] < g.start_ms + 36 * HOUR_MS)
    return dumps_lines(ev), mid


def _target(scope: str, partitions: int = 1) -> WarmStartTarget:
    stages = ("account", "campaign", "policy") if scope == "full" else ("account",)
    return WarmStartTarget(
        group="G", scope=scope, stage_groups={s: f"G.{s}" for s in stages},
        inputs={"account": "req", "campaign": "obs", "policy": "ver"},
        changelogs={s: f"G.{s}.changelog" for s in stages},
        partitions={s: (partitions if s == "account" else 1) for s in stages})


def _restore(entries: list[tuple[bytes, bytes]]) -> PartitionRestore:
    """What the runner's restore makes of a changelog partition holding ``entries``."""
    r = PartitionRestore()
    for k, v in entries:
        r.add(k, v)
    return r


def test_full_warm_start_continues_exactly_like_an_uninterrupted_run() -> None:
    cfg = DetectorConfig()
    lines, mid = _events()
    whole = LocalPipeline(cfg)
    first = whole.feed(lines[:mid])
    rest = whole.feed(lines[mid:])
    assert first and rest                          # flags on both sides of the hand-over

    replayed = LocalPipeline(cfg, changelog=True)
    assert replayed.feed(lines[:mid]) == first
    target = _target("full")
    records, offsets = warm_start_entries(replayed, target, {0: 7000},
                                          {"campaign": {0: 0}, "policy": {0: 0}})
    assert offsets == {"G.account": [("req", 0, 7000)], "G.campaign": [("obs", 0, 0)],
                       "G.policy": [("ver", 0, 0)]}
    live = LocalPipeline(cfg)
    for stage, proc in (("account", live.account), ("campaign", live.campaign), ("policy", live.policy)):
        r = _restore(records[(target.changelogs[stage], 0)])
        assert r.marker == (7000 if stage == "account" else 0)
        assert records[(target.changelogs[stage], 0)][-1][0] == OFFSET_MARKER_KEY
        proc.restore(list(r.entries.items()))
    assert live.feed(lines[mid:]) == rest


def test_model_warm_start_copies_only_the_model_to_every_partition() -> None:
    cfg = DetectorConfig()
    lines, mid = _events()
    pipe = LocalPipeline(cfg, changelog=True)
    pipe.feed(lines[:mid])
    model = pipe.account.model.dumps()
    target = _target("model", partitions=3)
    records, offsets = warm_start_entries(pipe, target, {0: 10, 1: 20, 2: 30}, {})
    assert offsets == {"G.account": [("req", 0, 10), ("req", 1, 20), ("req", 2, 30)]}
    assert sorted(records) == [("G.account.changelog", p) for p in range(3)]
    for p, off in ((0, 10), (1, 20), (2, 30)):
        r = _restore(records[("G.account.changelog", p)])
        assert r.marker == off and decode_marker(str(off).encode()) == off
        assert list(r.entries) == [MODEL_KEY] and r.entries[MODEL_KEY] == model


def test_model_warm_start_refuses_an_untrained_model() -> None:
    pipe = LocalPipeline(DetectorConfig(), changelog=True)
    pipe.feed(_events()[0][:5])
    with pytest.raises(ReplayError, match="learned nothing"):
        warm_start_entries(pipe, _target("model"), {0: 5}, {})


def test_latest_entries_is_what_a_fresh_restore_sees() -> None:
    changes = [(b"a", b"1"), (b"b", b"1"), (b"a", None), (b"c", b"1"), (b"b", b"2"), (b"d", None)]
    assert latest_entries(changes) == [(b"c", b"1"), (b"b", b"2")]
    assert latest_entries(changes) == list(_restore([(k, v) for k, v in changes]).entries.items())
