"""Checkpoint/restore equivalence: the property the exactly-once Kafka runner relies on.

The runner commits a stage's outputs, its changelog entries (``take_changes()``) and its input
offsets in one transaction. After a crash, a fresh processor is ``restore``d from every changelog
entry committed so far and fed the input from the committed offset. That is only exactly-once if
the restored processor then emits *exactly* what the original would have emitted.

For each processor class and for the whole chain, a stream is fed in batches of random sizes,
with checkpoints (``take_changes``) at random points; at several checkpoints a fresh processor is
restored from the entries taken so far — the raw log, and the log as Kafka compaction leaves it
(latest value per key, tombstones dropped) — and fed the rest (with the original batch
boundaries, and with different ones); its outputs must be byte-identical to the original's from
that point on. A second crash after the first restore is simulated too. Batch boundaries and
checkpoint calls must never change the outputs.

The default configuration is tested on in-order and out-of-order input. The bugs these tests
found in the eviction paths (small TTLs and caps) are fixed; their minimal repros stay at the end
of the file (``test_bug_*``) as regression tests.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import orjson
import pytest

from consumers.core.account_stage import AccountProcessor
from consumers.core.campaign_stage import CampaignProcessor
from consumers.core.config import HOUR_MS, DetectorConfig
from consumers.core.messages import Behaviour, FingerprintSeen
from consumers.core.policy import PolicyProcessor
from consumers.core.stage import Record
from tests.eventgen import scenario, valid_event

Out = tuple[str, bytes | None, bytes, tuple[tuple[str, bytes], ...]]
Entry = tuple[bytes, bytes | None]

CFG = DetectorConfig()
#: small TTLs and caps: every eviction path runs on a two-day stream, and idle accounts freeze
TIGHT = DetectorConfig(account_ttl_ms=6 * HOUR_MS, max_accounts_per_partition=15, freeze_after_ms=2 * HOUR_MS,
                       fingerprint_ttl_ms=6 * HOUR_MS, max_fingerprints_per_partition=200,
                       max_members_per_fingerprint=6, max_fingerprints_per_account=10,
                       tick_ms=10 * 60_000)

MAKERS: dict[str, Callable[[DetectorConfig], Any]] = {
    "account": lambda cfg: AccountProcessor(cfg, 0),
    "campaign": lambda cfg: CampaignProcessor(cfg, 0),
    "policy": lambda cfg: PolicyProcessor(cfg, "test-version", 0),
}
STAGES = tuple(MAKERS)


def ser(records: list[Record]) -> list[Out]:
    return [(r.topic, r.key, r.value, tuple(r.headers or ())) for r in records]


def compacted(entries: list[Entry]) -> list[Entry]:
    """What a compacted changelog may hold: the latest entry per key, in log order, no tombstones."""
    last = {k: i for i, (k, _) in enumerate(entries)}
    return [(k, v) for i, (k, v) in enumerate(entries) if last[k] == i and v is not None]


# --- stage inputs --------------------------------------------------------------------------------

@cache
def stage_inputs(order: str, cfg_name: str) -> dict[str, list[Record]]:
    """The input records of each stage for one eventgen stream (requests, observations, verdicts)."""
    cfg = TIGHT if cfg_name == "tight" else CFG
    ds = scenario(seed=5, n_benign=8, n_org=3, n_hydra=10, days=2)
    rng = random.Random(99)
    reqs = []
    for i, ev in enumerate(ds.events):
        if order == "jittered" and rng.random() < 0.3:
            ev = dict(ev, ts_ms=ev["ts_ms"] - rng.randint(1, 3 * HOUR_MS))
        reqs.append(Record("requests", ev["account_id"].encode(), orjson.dumps(ev), 0, i))
    # junk and duplicates ride along: they must be handled identically after a restore
    reqs.insert(100, Record("requests", b"x", b"{not json", 0, -1))
    reqs.insert(200, reqs[150])
    obs = [r for r in AccountProcessor(cfg).process(reqs) if r.topic == "observations"]
    verdicts = CampaignProcessor(cfg).process(obs)
    return {"account": reqs, "campaign": obs, "policy": verdicts}


# --- harness -------------------------------------------------------------------------------------

def batch_plan(rng: random.Random, start: int, end: int, max_batch: int) -> list[tuple[int, int]]:
    plan, i = [], start
    while i < end:
        j = min(end, i + rng.randint(1, max_batch))
        plan.append((i, j))
        i = j
    return plan


@dataclass
class Recorded:
    """An undisturbed run: outputs per batch, the changelog, and where checkpoints were taken."""

    plan: list[tuple[int, int]]
    outputs: list[list[Out]] = field(default_factory=list)
    log: list[Entry] = field(default_factory=list)
    checkpoints: list[tuple[int, int]] = field(default_factory=list)   # (input index, log length)

    def outputs_from(self, idx: int) -> list[Out]:
        """Outputs of the batches from input index ``idx`` on (``idx`` must be a batch boundary)."""
        assert idx in {a for a, _ in self.plan}
        return [o for (a, _), outs in zip(self.plan, self.outputs, strict=True) if a >= idx for o in outs]

    def all_outputs(self) -> list[Out]:
        return [o for outs in self.outputs for o in outs]


def record(proc: Any, recs: list[Record], plan: list[tuple[int, int]], rng: random.Random,
           p_checkpoint: float = 0.3) -> Recorded:
    run = Recorded(plan)
    for a, b in plan:
        run.outputs.append(ser(proc.process(recs[a:b])))
        if rng.random() < p_checkpoint or b == len(recs):
            run.log += proc.take_changes()
            run.checkpoints.append((b, len(run.log)))
    return run


def feed(proc: Any, recs: list[Record], plan: list[tuple[int, int]]) -> list[Out]:
    return [o for a, b in plan for o in ser(proc.process(recs[a:b]))]


def first_difference(got: list[Out], want: list[Out]) -> str:
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        if g != w:
            return f"output {i}: got {g[2][:160]!r}, want {w[2][:160]!r}"
    return f"lengths {len(got)} vs {len(want)}"


def per_record(proc: Any, recs: list[Record]) -> list[list[Out]]:
    """Outputs of each input record, fed one at a time: the reference for any cut point."""
    return [ser(proc.process([r])) for r in recs]


def check_restore_equivalence(stage: str, cfg: DetectorConfig, recs: list[Record], seed: int,
                              n_cuts: int = 3, max_batch: int = 60) -> None:
    make = MAKERS[stage]
    ref = per_record(make(cfg), recs)

    def want_from(i: int) -> list[Out]:
        return [o for outs in ref[i:] for o in outs]

    rng = random.Random(seed)
    run = record(make(cfg), recs, batch_plan(rng, 0, len(recs), max_batch), rng)
    assert run.all_outputs(), "the stream must produce outputs"
    assert run.all_outputs() == want_from(0), "batching/checkpoints changed the outputs"
    cuts = rng.sample(run.checkpoints[:-1], min(n_cuts, len(run.checkpoints) - 1))
    for cut, n in sorted(cuts):
        want = want_from(cut)
        # 1. the raw log, the original batch boundaries after the cut
        q = make(cfg)
        q.restore(run.log[:n])
        got = feed(q, recs, [(a, b) for a, b in run.plan if a >= cut])
        assert got == want, f"{stage}: restore at {cut}/{len(recs)} from the raw log: " + \
            first_difference(got, want)
        # 2. the compacted log, new batch boundaries, and a second crash on the way
        q = make(cfg)
        q.restore(compacted(run.log[:n]))
        rest = record(q, recs, batch_plan(rng, cut, len(recs), max_batch), rng)
        got = rest.all_outputs()
        assert got == want, f"{stage}: restore at {cut} from the compacted log, new batches: " + \
            first_difference(got, want)
        if len(rest.checkpoints) > 1:
            cut2, n2 = rest.checkpoints[rng.randrange(len(rest.checkpoints) - 1)]
            q2 = make(cfg)
            q2.restore(compacted(run.log[:n]) + rest.log[:n2])
            got2 = feed(q2, recs, batch_plan(rng, cut2, len(recs), max_batch))
            assert got2 == want_from(cut2), f"{stage}: second crash at {cut2}: " + \
                first_difference(got2, want_from(cut2))


def check_batching_irrelevant(stage: str, cfg: DetectorConfig, recs: list[Record]) -> None:
    make = MAKERS[stage]
    one_by_one = feed(make(cfg), recs, [(i, i + 1) for i in range(len(recs))])
    one_batch = feed(make(cfg), recs, [(0, len(recs))])
    rng = random.Random(3)
    with_checkpoints = record(make(cfg), recs, batch_plan(rng, 0, len(recs), 200), rng, 0.5).all_outputs()
    assert one_by_one, "the stream must produce outputs"
    assert one_by_one == one_batch, f"{stage}: one by one vs one batch: " + first_difference(one_by_one, one_batch)
    assert with_checkpoints == one_batch, f"{stage}: random batches + checkpoints: " + \
        first_difference(with_checkpoints, one_batch)


# --- per-stage properties (default configuration) -------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("order", ["ordered", "jittered"])
@pytest.mark.parametrize("stage", STAGES)
def test_restore_equivalence(stage: str, order: str, seed: int) -> None:
    check_restore_equivalence(stage, CFG, stage_inputs(order, "default")[stage], seed)


@pytest.mark.parametrize("order", ["ordered", "jittered"])
@pytest.mark.parametrize("stage", STAGES)
def test_batch_boundaries_do_not_matter(stage: str, order: str) -> None:
    check_batching_irrelevant(stage, CFG, stage_inputs(order, "default")[stage])


@pytest.mark.parametrize("stage", STAGES)
def test_restore_from_nothing_is_a_fresh_processor(stage: str) -> None:
    recs = stage_inputs("ordered", "default")[stage]
    q = MAKERS[stage](CFG)
    q.restore([])
    assert feed(q, recs, [(0, len(recs))]) == feed(MAKERS[stage](CFG), recs, [(0, len(recs))])


@pytest.mark.parametrize("stage", STAGES)
def test_changelog_values_are_bytes(stage: str) -> None:
    """What the runner writes to a Kafka topic: bytes keys, bytes-or-None values."""
    p = MAKERS[stage](CFG)
    recs = stage_inputs("ordered", "default")[stage]
    p.process(recs[:300])
    entries = p.take_changes()
    assert entries
    for k, v in entries:
        assert isinstance(k, bytes) and (v is None or isinstance(v, bytes))
    again = p.take_changes()
    assert set(again) <= set(entries), "nothing new is reported without new input"


# --- the whole chain --------------------------------------------------------------------------------

class Chain:
    """The three processors chained in memory (like LocalPipeline), with checkpoints."""

    def __init__(self, cfg: DetectorConfig):
        self.procs = [MAKERS[s](cfg) for s in STAGES]

    def process(self, recs: list[Record]) -> list[Record]:
        obs = [r for r in self.procs[0].process(recs) if r.topic == "observations"]
        return self.procs[2].process(self.procs[1].process(obs))

    def take_changes(self) -> list[tuple[int, Entry]]:
        return [(i, e) for i, p in enumerate(self.procs) for e in p.take_changes()]

    def restore(self, entries: list[tuple[int, Entry]]) -> None:
        for i, p in enumerate(self.procs):
            p.restore([e for j, e in entries if j == i])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("order", ["ordered", "jittered"])
def test_chain_restore_equivalence(order: str, seed: int) -> None:
    recs = stage_inputs(order, "default")["account"]
    rng = random.Random(seed)
    run = record(Chain(CFG), recs, batch_plan(rng, 0, len(recs), 120), rng)
    flags = run.all_outputs()
    assert any(b'"suspend"' in o[2] or b'"throttle"' in o[2] for o in flags)
    for cut, n in rng.sample(run.checkpoints[:-1], min(3, len(run.checkpoints) - 1)):
        q = Chain(CFG)
        q.restore(run.log[:n])
        got = feed(q, recs, batch_plan(rng, cut, len(recs), 120))
        assert got == run.outputs_from(cut), f"chain restore at {cut}: " + \
            first_difference(got, run.outputs_from(cut))


def test_chain_batch_boundaries_do_not_matter() -> None:
    recs = stage_inputs("ordered", "default")["account"]
    one_batch = feed(Chain(CFG), recs, [(0, len(recs))])
    one_by_one = feed(Chain(CFG), recs, [(i, i + 1) for i in range(len(recs))])
    assert one_batch and one_by_one == one_batch


# --- eviction paths: repros of fixed bugs (regression tests) ------------------------------------------

@pytest.mark.parametrize("stage", STAGES)
def test_restore_equivalence_with_evictions(stage: str) -> None:
    recs = stage_inputs("jittered", "tight")[stage]
    if stage == "account":  # the stream exercises freezing and thawing idle accounts
        ap = AccountProcessor(TIGHT, 0)
        ap.process(recs)
        assert ap.counters["frozen"] > 0 and ap.counters["thawed"] > 0
    check_batching_irrelevant(stage, TIGHT, recs)
    check_restore_equivalence(stage, TIGHT, recs, seed=1, n_cuts=2)


SMALL_LINKS = dict(link_min_units={"prompt": 2, "ip": 2, "pay": 2, "ua": 2, "wave": 2}, campaign_min_size=3)


def obs(fp: str, acct: str, org: str | None, t: int) -> Record:
    return Record("observations", fp.encode(), FingerprintSeen(fp, acct, org, t, t).encode())


def beh(acct: str, w: int) -> Record:
    return Record("verdicts", acct.encode(), Behaviour(
        acct, None, 0.9, [["FRESH_ACCOUNT", 0.1], ["HIGH_VOLUME", 2000.0]], 0.0, w, 0, 10).encode())


def req(acct: str, ts: int, eid: str) -> Record:
    return Record("requests", acct.encode(), orjson.dumps(
        valid_event(account_id=acct, ts_ms=ts, event_id=eid, account_created_ms=0)), 0, 0)


def one_by_one(proc: Any, recs: list[Record]) -> list[Out]:
    return [o for r in recs for o in ser(proc.process([r]))]


def restored_vs_live(make: Callable[[], Any], before: list[list[Record]], after: list[Record]) -> tuple[list[Out], list[Out]]:
    live = make()
    log: list[Entry] = []
    for batch in before:
        live.process(batch)
        log += live.take_changes()
    q = make()
    q.restore(log)
    return one_by_one(q, after), one_by_one(live, after)


def test_bug_campaign_ex_members_counted_after_unqualifying() -> None:
    cfg = DetectorConfig(**SMALL_LINKS, hot_units={"prompt": 100, "ip": 6, "pay": 100, "ua": 100, "wave": 100})
    first = [r for a in ("c0", "c1", "c2", "c3") for r in (obs("pay:P", a, None, 1), obs("ip:X", a, None, 2))]
    first += [obs("ip:X", f"x{i}", f"org{i}", 10 + i) for i in range(8)]      # ip:X turns hot
    after = [obs("pay:P", "d0", None, 30), obs("ua:U", "d0", None, 31), obs("ua:U", "d1", None, 32)]
    got, want = restored_vs_live(lambda: CampaignProcessor(cfg), [first], after)
    assert got == want, first_difference(got, want)


def test_bug_campaign_expired_members_counted() -> None:
    cfg = DetectorConfig(**SMALL_LINKS, fingerprint_ttl_ms=1000)
    first = [r for i, a in enumerate(("c0", "c1", "c2", "c3"))
             for r in (obs("pay:P", a, None, 10 * i), obs("ip:X", a, None, 10 * i + 1))]
    expire = [obs("ip:Z", "z", None, 5000)]
    after = [obs("pay:P", "d0", None, 5001), obs("pay:P", "d1", None, 5002),
             obs("ua:U", "d0", None, 5003), obs("ua:U", "d1", None, 5004)]
    got, want = restored_vs_live(lambda: CampaignProcessor(cfg), [first, expire], after)
    assert got == want, first_difference(got, want)


def test_bug_campaign_expiry_depends_on_batching() -> None:
    cfg = DetectorConfig(**SMALL_LINKS, fingerprint_ttl_ms=1000)
    recs = [obs("pay:G", "a", None, 0), obs("ip:Q", "b", None, 2000), obs("pay:G", "c", None, 2001)]
    assert one_by_one(CampaignProcessor(cfg), recs) == ser(CampaignProcessor(cfg).process(recs))


def test_bug_campaign_restore_loses_lru_order() -> None:
    cfg = DetectorConfig(**SMALL_LINKS, fingerprint_ttl_ms=1000)
    before = [[obs("pay:G", "a", None, 0)], [obs("pay:H", "b", None, 100)], [obs("pay:G", "a", None, 150)]]
    after = [obs("ip:Z", "z", None, 1050), obs("pay:G", "c", None, 1060)]
    got, want = restored_vs_live(lambda: CampaignProcessor(cfg), before, after)
    assert got == want, first_difference(got, want)


def test_bug_policy_cap_depends_on_batching() -> None:
    cfg = DetectorConfig(max_accounts_per_partition=2)
    recs = [beh("a1", 1), beh("a2", 2), beh("a3", 3), beh("a1", 4)]
    make = lambda: PolicyProcessor(cfg, "v")  # noqa: E731
    assert one_by_one(make(), recs) == ser(make().process(recs))


def test_bug_policy_restore_loses_lru_order() -> None:
    cfg = DetectorConfig(max_accounts_per_partition=2)
    before = [[beh("a1", 1), beh("a2", 2)], [beh("a1", 3)]]
    got, want = restored_vs_live(lambda: PolicyProcessor(cfg, "v"), before, [beh("a3", 4), beh("a1", 5)])
    assert got == want, first_difference(got, want)


@pytest.mark.parametrize("before", [
    [("B", 200, "b1"), ("A", 200, "a1")],
    [("A", 100, "a1"), ("B", 200, "b1"), ("A", 150, "a2")],
])
def test_bug_account_restore_loses_lru_order(before: list[tuple[str, int, str]]) -> None:
    cfg = DetectorConfig(max_accounts_per_partition=2)
    got, want = restored_vs_live(lambda: AccountProcessor(cfg), [[req(*x) for x in before]],
                                 [req("C", 300, "c1"), req("A", 301, "a9")])
    assert got == want, first_difference(got, want)
