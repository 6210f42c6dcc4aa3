"""Smoke tests of the benchmark modules (bench/): each runs end to end on a tiny input and returns
well-formed result rows. No timing is asserted — numbers come from ``python bench/run.py``; these
tests only check that the benchmarks measure what they claim (counts, consistency, structure)."""

from __future__ import annotations

import gc
import math
import sys
import types

import orjson
import pytest

from bench import common, core, replay, validation
from bench import kafka as bench_kafka
from bench import run as bench_run

ROW_KEYS = {"section", "case", "unit", "median", "min", "max", "samples", "n", "ratio", "ratio_to", "note"}


@pytest.fixture(scope="module")
def ds() -> common.Dataset:
    return common.load_dataset("smoke", 1, 1200)


def check_rows(section: dict, name: str, repeat: int) -> list[dict]:
    assert section["section"] == name
    rows = section["rows"]
    assert rows, "no rows"
    for r in rows:
        assert ROW_KEYS <= set(r), r
        assert r["section"] == name
        assert r["n"] == len(r["samples"]) >= 1
        assert all(math.isfinite(x) and x >= 0 for x in r["samples"]), r
        assert r["min"] <= r["median"] <= r["max"]
        if r["unit"] in ("events/s", "µs/event"):
            assert r["n"] == repeat and r["median"] > 0, r
    orjson.dumps(section)  # JSON-serialisable as --json writes it
    return rows


def test_dataset_is_the_simulators_stream(ds: common.Dataset) -> None:
    assert len(ds) == 1200 == len(ds.keys) == len(ds.ts)
    first = orjson.loads(ds.raw[0])
    assert first["account_id"].encode() == ds.keys[0] and first["ts_ms"] == ds.ts[0]
    assert ds.ts == sorted(ds.ts)
    assert ds.avg_bytes == sum(map(len, ds.raw)) / len(ds)


def test_rows_ratios_and_table() -> None:
    base = common.make_row("s", "base", [2.0, 4.0, 3.0], "µs/event")
    other = common.make_row("s", "other", [9.0, 6.0, 7.5], "µs/event", "a note")
    common.set_ratio(other, base)
    assert (base["median"], base["min"], base["max"]) == (3.0, 2.0, 4.0)
    assert other["ratio"] == pytest.approx(2.5) and other["ratio_to"] == "base"
    table = common.format_table([base, other])
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["section", "case", "median"]
    assert "2.5x base" in lines[3] and "a note" in lines[3] and "6.00..9.00" in lines[3]
    with pytest.raises(ValueError):
        common.make_row("s", "empty", [], "s")


def test_machine_facts() -> None:
    facts = common.machine_facts()
    assert facts["cpu_count"] >= 1
    assert facts["python"] == sys.version.split()[0]
    for key in ("orjson", "pydantic", "confluent_kafka", "librdkafka"):
        assert facts[key], key


def test_validation_section(ds: common.Dataset) -> None:
    sec = validation.run(ds.raw, repeat=2, max_events=300, block=50)
    rows = check_rows(sec, "validation", 2)
    assert [r["case"] for r in rows] == [name for name, _ in validation.variants()]
    assert rows[0]["case"] == validation.BASELINE and rows[0]["ratio"] == pytest.approx(1.0)
    assert all(r["ratio_to"] == validation.BASELINE for r in rows)
    assert sec["info"]["events"] == 300


def test_typed_dict_variant_follows_the_contract(ds: common.Dataset) -> None:
    from consumers.contract.events import parse_event

    fns = dict(validation.variants())
    td = fns["TypeAdapter(TypedDict).validate_json"]
    raw = ds.raw[0]
    assert td(raw) == parse_event(raw)
    assert td(raw.replace(b'"task_category":"', b'"task_category":"poetry-'))["task_category"] == "other"
    for bad in (b'"schema_version":true', b'"schema_version":2'):
        with pytest.raises(ValueError):
            td(raw.replace(b'"schema_version":1', bad))


def test_sample_spreads_over_the_input() -> None:
    data = [bytes([i]) for i in range(100)]
    assert validation.sample(data, 1000) == data
    s = validation.sample(data, 10)
    assert len(s) == 10 and s[0] == data[0] and s[-1] == data[90]


def test_core_section_counts_are_consistent(ds: common.Dataset) -> None:
    gc_before = gc.get_threshold()
    sec = core.run(ds.raw, repeat=2, chunk=256, checkpoint_every=500)
    assert gc.get_threshold() == gc_before  # the GC variant restores the process's thresholds
    assert sec["info"]["checkpoints"] == math.ceil(len(ds) / 512)  # every 2 chunks + the last
    rows = {r["case"]: r for r in check_rows(sec, "core", 2)}
    info = sec["info"]
    n = len(ds)
    acc = info["counters"]["account"]
    assert acc["events"] + acc["duplicates"] + acc["invalid"] == n
    assert info["flags_per_repeat"][0] == info["flags_per_repeat"][1] == info["flags"]  # deterministic
    # the stages fed one after the other (with checkpoints) give the pipeline's flags
    assert info["stage_chain_flags_per_repeat"] == info["flags_per_repeat"]
    assert sum(info["observation_kinds"].values()) == info["observations"] > 0
    assert sum(info["verdict_kinds"].values()) == info["verdicts"] > 0
    # every behaviour summary the account stage sends is relayed by the campaign stage
    assert info["observation_kinds"]["beh"] == info["verdict_kinds"]["beh"]
    assert info["counters"]["campaign"]["observations"] == info["observation_kinds"].get("fp", 0)
    assert rows["observations/event"]["median"] == pytest.approx(info["observations"] / n)
    assert rows["verdicts/event"]["median"] == pytest.approx(info["verdicts"] / n)
    assert rows["flags/event"]["median"] == pytest.approx(info["flags"] / n)
    assert rows["LocalPipeline (3 stages, in memory)"]["ratio"] is None
    assert rows["account stage alone"]["ratio_to"] == "LocalPipeline"
    assert rows[f"LocalPipeline, gc.set_threshold{core.GC_THRESHOLD}"]["ratio_to"] == "LocalPipeline"
    # the state the stages hold: as many accounts as the account stage saw, some memory each
    mem = info["memory"]
    assert mem["accounts"] == len({orjson.loads(v)["account_id"] for v in ds.raw}) > 0
    assert mem["fingerprints"] >= mem["singles"] > 0
    assert rows["state after the input (tracemalloc + native), per account"]["median"] == pytest.approx(
        mem["bytes"] / mem["accounts"]) and mem["bytes"] > 1000 * mem["accounts"]


def test_core_profile(ds: common.Dataset) -> None:
    prof = core.profile(ds.raw[:400], top=5)
    assert prof["events"] == 400 and len(prof["top"]) == 5
    tt = [e["tottime_s"] for e in prof["top"]]
    assert tt == sorted(tt, reverse=True) and prof["total_tottime"] >= sum(tt)
    assert prof["text"].startswith("cProfile of LocalPipeline over 400 events")
    assert len(prof["text"].splitlines()) == 2 + 5


def test_replay_section_in_process(ds: common.Dataset, tmp_path) -> None:
    sec = replay.run(ds.raw[:600], repeat=1, gz=True, subprocess_runs=False, workdir=str(tmp_path))
    rows = check_rows(sec, "replay", 1)
    assert [r["case"] for r in rows] == ["replay_file() in process, events.jsonl",
                                         "replay_file() in process, events.jsonl.gz"]
    info = sec["info"]
    plain, gz = info["inproc_events.jsonl_counters"], info["inproc_events.jsonl.gz_counters"]
    assert plain == gz and plain["lines"] == 600
    assert info["events.jsonl.gz_bytes"] < info["events.jsonl_bytes"]
    assert list(tmp_path.iterdir()) == []  # the temporary files are removed


def test_replay_subprocess_failure_is_reported() -> None:
    with pytest.raises(RuntimeError, match="failed"):
        replay._run_sub([sys.executable, "-c", "import sys; sys.exit(3)"])
    cmd = replay._cli("replay", "--input", "x")
    assert cmd[:3] == [sys.executable, "-m", "consumers.cli"] and cmd[-3:] == ["replay", "--input", "x"]


def test_timed_processor_records_calls() -> None:
    from consumers.core.stage import StageSpec

    class Proc:
        restored = None
        extra = "delegated"

        def process(self, records):
            return [r * 2 for r in records]

        def take_changes(self):
            return [(b"k", b"v")]

        def restore(self, entries):
            self.restored = list(entries)

    runner = types.SimpleNamespace(spec=StageSpec("s", ("in",), ("out",), lambda p: Proc()))
    clock = bench_kafka.instrument(runner)
    proc = runner.spec.factory(0)
    assert clock.first is None
    assert proc.process([1, 2]) == [2, 4]
    assert proc.process([3]) == [6]
    assert proc.take_changes() == [(b"k", b"v")]
    proc.restore([(b"a", None)])
    assert proc.restored == [(b"a", None)] and proc.extra == "delegated"
    assert clock.calls == 2 and clock.first <= clock.last and clock.busy >= 0
    assert runner.spec.name == "s" and runner.spec.inputs == ("in",)


def _stage(name: str, wall: float) -> dict:
    return {"stage": name, "wall_s": wall, "streaming_s": wall / 2, "process_busy_s": wall / 4,
            "startup_s": 0.1, "shutdown_s": 0.1, "checkpoints": 1}


def test_kafka_rows_from_results() -> None:
    raw = {"nothing": [{"seconds": 1.0, "streaming_seconds": 0.5}],
           "orjson.loads": [{"seconds": 2.0, "streaming_seconds": 1.5}],
           "parse_event": [{"seconds": 4.0, "streaming_seconds": 3.5}],
           "detect": [{"seconds": 1.25, "streaming_seconds": 1.0}],
           "observations": [{"seconds": 3.0, "streaming_seconds": 2.5, "messages": 2500}]}
    seq = [{"stages": [_stage("account", 5.0), _stage("campaign", 3.0), _stage("policy", 2.0)], "flags": 7,
            "cpu_s": 2.0}]
    thr = [{"stages": [_stage(s, 6.0) for s in bench_kafka.STAGES], "wall_s": 6.0, "flags": 7,
            "timed_out": False}]
    peer = [{"seconds": 10.0, "streaming_seconds": 8.0}]
    rows = {r["case"]: r for r in bench_kafka._rows_for(1, 1000, raw, seq, thr, 7, peer, 5000)}
    ceiling = "P=1 consume ceiling (batch 10k, large fetches)"
    assert rows[f"{ceiling}, does nothing"]["median"] == 1000
    assert rows[f"{ceiling}, + parse_event of each value"]["ratio"] == pytest.approx(0.25)
    assert rows["P=1 consume as detect's runners (batch 5,000, default fetches), does nothing"]["ratio"] == \
        pytest.approx(0.8)
    quix = rows["P=1 Quix Streams peer: at-least-once, per-account 1 h tumbling count/sum/max"]
    assert quix["median"] == pytest.approx(100) and quix["ratio"] == pytest.approx(0.2)  # ÷ 500 ev/s
    acc = rows["P=1 detect --stage account (stop-at-end)"]
    whole = rows["P=1 detect --stop-at-end, 3 stages in turn"]
    # the account stage against the Quix peer; every other detect row against consume + orjson
    assert acc["median"] == pytest.approx(200) and acc["ratio"] == pytest.approx(2.0)
    assert acc["ratio_to"] == "Quix peer" and "0.40x consume+orjson" in acc["note"]
    assert whole["median"] == pytest.approx(100) and whole["ratio"] == pytest.approx(0.2)
    assert whole["ratio_to"] == "consume+orjson" and whole["flags_match_replay"] is True
    assert whole["note"].endswith("= replay ✓; CPU 2000 µs/event")
    # the internal records: 2.5 per request; requests (2 s) and observations (3 s) read in 5 s
    obs = rows["P=1 internal observations (account → campaign stage): consume ceiling + orjson.loads"]
    assert obs["median"] == pytest.approx(2500 / 3) and obs["note"] == "2.50 per request"
    floor = rows["P=1 requests + their observations, consume ceiling + orjson.loads (the topology's floor, "
                 "no detection)"]
    assert floor["median"] == pytest.approx(200) and floor["ratio"] == pytest.approx(0.4)
    threads = rows["P=1 detect (threads, run_all) until caught up"]
    assert threads["median"] == pytest.approx(1000 / 6) and threads["ratio"] == pytest.approx(1 / 3)
    bad = {r["case"]: r for r in bench_kafka._rows_for(1, 1000, raw, seq, [], expected_flags=8)}
    assert bad["P=1 detect --stop-at-end, 3 stages in turn"]["flags_match_replay"] is False
    assert "P=1 detect (threads, run_all) until caught up" not in bad
    # without the peer the account stage is compared with the ceiling too
    assert bad["P=1 detect --stage account (stop-at-end)"]["ratio"] == pytest.approx(0.4)
    assert not any("Quix" in case for case in bad)
    # detect at another commit interval: a ratio to the default's row of the same kind
    alt = {"commit_interval_ms=250": {"seq": [{"stages": [_stage("account", 2.5), _stage("campaign", 1.5),
                                                          _stage("policy", 1.0)], "flags": 7}], "thr": []}}
    arow, crow = bench_kafka._commit_rows(1, 1000, list(rows.values()), "commit 100 ms", alt, 7)
    assert crow["case"] == "P=1 detect --stop-at-end, 3 stages in turn, commit_interval_ms=250"
    assert crow["median"] == pytest.approx(200) and crow["ratio"] == pytest.approx(2.0)
    assert crow["ratio_to"] == "commit 100 ms" and "= replay ✓" in crow["note"]
    # and the account stage of those runs, against the account stage at the defaults
    assert arow["case"] == "P=1 detect --stage account (stop-at-end), commit_interval_ms=250"
    assert arow["median"] == pytest.approx(400) and arow["ratio"] == pytest.approx(400 / acc["median"])


def test_ceiling_uses_large_fetches() -> None:
    c = bench_kafka.CEILING_CONSUMER
    assert c["fetch.max.bytes"] > 50 * 1024 * 1024 and c["max.partition.fetch.bytes"] > 1024 * 1024
    assert c["queued.max.messages.kbytes"] > 65536 and bench_kafka.CEILING_BATCH == 10_000


def test_quix_peer_is_optional(monkeypatch) -> None:
    from bench import quix

    monkeypatch.setitem(sys.modules, "quixstreams", None)  # import fails as if not installed
    assert quix.available() is None
    assert "pip install -e '.[bench]'" in quix.REQUIREMENT


def test_latency_percentiles_and_matching() -> None:
    from bench import latency

    xs = [float(i) for i in range(1, 101)]
    assert latency.percentile(xs, 0.5) == 50 and latency.percentile(xs, 0.99) == 99
    assert latency.percentile(xs, 1.0) == 100 and latency.percentile([3.0], 0.99) == 3.0
    with pytest.raises(ValueError):
        latency.percentile([], 0.5)
    # requests in stream order: (ts_ms, account, produced at wall time)
    ts = [1000, 2000, 3000, 4000, 5000]
    accounts = ["a", "b", "a", "b", "a"]
    produced = [10.0, 11.0, 12.0, 13.0, 14.0]

    def flag(account: str, decided: int) -> bytes:
        return orjson.dumps({"account_id": account, "decided_at_ms": decided})

    flags = [(12.5, flag("a", 3000)),   # decided on a's own request: trigger = account's latest
             (14.0, flag("a", 3500)),   # between requests: trigger = 4000 (b's), a's latest = 3000
             (20.0, flag("b", 9000)),   # after every produced request: unmatched
             (13.0, flag("c", 1000))]   # an account that sent nothing: unmatched
    lat = latency.latencies(flags, ts, accounts, produced)
    assert lat["pipeline"] == [pytest.approx(0.5), pytest.approx(1.0)]
    assert lat["account"] == [pytest.approx(0.5), pytest.approx(2.0)]
    assert lat["unmatched"] == 2
    # only the requests actually produced count (a producer that stopped early)
    assert latency.latencies([(12.5, flag("a", 3000))], ts, accounts, produced[:2])["unmatched"] == 1
    s = latency.summary([0.1, 0.2, 0.3, 5.0])
    assert (s["p50"], s["p99"], s["max"], s["n"]) == (0.2, 5.0, 5.0, 4)


def test_latency_metrics_and_rows() -> None:
    from bench import latency

    text = (b'# HELP distillwatch_records_in_total Input records processed\n'
            b'distillwatch_records_in_total{stage="account"} 100.0\n'
            b'distillwatch_records_in_total{stage="campaign"} 40.0\n'
            b'distillwatch_records_in_total{stage="policy"} 9.0\n'
            b'distillwatch_records_out_total{stage="account",topic="observations"} 40.0\n'
            b'distillwatch_records_out_total{stage="account",topic="dlq"} 2.0\n'
            b'distillwatch_records_out_total{stage="campaign",topic="verdicts"} 10.0\n')
    m = latency.parse_metrics(text)
    assert m["in:account"] == 100 and m["out:account:observations"] == 40
    assert not latency.caught_up(m, 100)           # the policy stage has 1 verdict to go
    assert latency.caught_up({**m, "in:policy": 10.0}, 100)
    assert not latency.caught_up({**m, "in:policy": 10.0}, 101)

    def res(p50: float, p99: float, rnd: int) -> dict:
        s = {"p50": p50, "p90": p99, "p99": p99, "max": p99, "n": 5}
        return {"variant": "defaults", "commit_interval_ms": 100, "round": rnd, "flags": 5,
                "pipeline": s, "account": s, "max_backlog_events": 50.0, "drain_s": 0.5,
                "achieved_rate": 1000.0, "cpu_us_per_event": 100.0 + rnd}

    rows = {r["case"]: r for r in latency.rows_for([res(0.4, 1.5, 0), res(0.6, 2.5, 1)])}
    p99 = rows["defaults (commit 100 ms): trigger request produced → flag visible, p99"]
    assert p99["samples"] == [1.5, 2.5] and p99["median"] == 2.0 and p99["unit"] == "s"
    assert "backlog max 50 events (0.1s)" in p99["note"]
    assert rows["defaults (commit 100 ms): detect CPU per event"]["median"] == pytest.approx(100.5)
    assert latency.rows_for([]) == []


def test_restore_section_without_broker(ds: common.Dataset) -> None:
    from bench import restore

    sec = restore.run(common.Dataset(ds.scenario, ds.seed, ds.raw[:600], ds.keys[:600], ds.ts[:600], 0.0),
                      accounts=2500, chunk=1000, broker=False)
    rows = {r["case"]: r for r in check_rows(sec, "restore", 1)}
    info = sec["info"]
    assert info["restore"]["accounts"] == 2500 and info["restore"]["chunks"] == 3
    assert 0 < info["templates"] <= len(set(ds.keys[:600]))
    assert rows["changelog bytes per account (key + value)"]["median"] == pytest.approx(info["bytes_per_account"])
    assert rows["memory per restored account (tracemalloc + native)"]["median"] > 100
    assert rows["memory per active account (tracemalloc + native, after processing)"]["median"] > 100
    restore_row = "AccountProcessor.restore of 1M accounts (measured on 2,500, scaled ×400)"
    assert rows[restore_row]["median"] == pytest.approx(info["restore"]["seconds"] * 400)
    assert not any("changelog read" in case for case in rows)  # no broker, no topic


def test_restore_clones_are_distinct_accounts(ds: common.Dataset) -> None:
    from bench import restore
    from consumers.core.account_stage import AccountProcessor
    from consumers.core.config import DetectorConfig

    t = restore.templates(common.Dataset(ds.scenario, ds.seed, ds.raw[:300], ds.keys[:300], ds.ts[:300], 0.0))
    template = next(iter(t.accounts))
    ids = {restore.clone_id(template, i) for i in range(5000)}
    assert len(ids) == 5000 and {len(i) for i in ids} == {len(template)}
    entries = dict(restore.cloned_entries(t, 700))
    assert len({k for k in entries}) == 700 * len(t.accounts[template])
    assert not any(template in k for k in list(entries)[len(t.accounts):])  # ids replaced
    proc = AccountProcessor(DetectorConfig(), 0)
    proc.restore(list(entries.items()) + [(k, v) for k, v in t.other])
    assert proc.state_size()["accounts"] == 700
    # chunks hold whole accounts and the stage's other entries
    parts = list(restore.account_chunks(entries | dict(t.other), t, 300))
    assert [n for _, n in parts] == [300, 300, 100]
    assert all(len(p) == n * len(t.accounts[template]) + len(t.other) for p, n in parts)


def test_sections_selection() -> None:
    parse = bench_run.build_parser().parse_args
    assert bench_run.selected(parse([])) == list(bench_run.SECTIONS)
    assert bench_run.selected(parse(["--only", "core,kafka", "--skip", "kafka"])) == ["core"]
    with pytest.raises(SystemExit):
        bench_run.selected(parse(["--only", "nope"]))


def test_run_entry_point_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert bench_run.main(["--scenario", "smoke", "--events", "500", "--repeat", "1",
                           "--only", "validation,core", "--validation-events", "200",
                           "--profile", "300", "--profile-top", "3", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    res = orjson.loads(out.read_bytes())
    assert [s["section"] for s in res["sections"]] == ["validation", "core"]
    assert res["dataset"]["events"] == 500 and res["profile"]["events"] == 300
    assert res["machine"]["cpu_count"] >= 1
    for sec in res["sections"]:
        for r in sec["rows"]:
            assert r["case"] in printed
    assert "librdkafka" in printed and "cProfile of LocalPipeline over 300 events" in printed


def test_a_failing_section_does_not_stop_the_others(tmp_path, monkeypatch, capsys) -> None:
    def broken(*_a, **_k):
        raise RuntimeError("boom")

    monkeypatch.setattr(core, "run", broken)
    out = tmp_path / "bench.json"
    assert bench_run.main(["--scenario", "smoke", "--events", "300", "--repeat", "1",
                           "--only", "core,validation", "--validation-events", "100",
                           "--json", str(out)]) == 0
    res = orjson.loads(out.read_bytes())
    assert [s["section"] for s in res["sections"]] == ["validation"]
    assert res["skipped"] == {"core": "FAILED: RuntimeError: boom"}
    assert "core: NOT MEASURED — FAILED: RuntimeError: boom" in capsys.readouterr().out
