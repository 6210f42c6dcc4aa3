"""The three stages of the pure core, alone and chained by :class:`LocalPipeline`, on eventgen data.

What the detector must do (CONTRACT.md, THREATS.md): enforce on the hydra campaign with one
campaign id; never enforce on an organisation's own sharing nor on unrelated honest accounts;
throttle the naive heavy scraper without a campaign; flag again only on escalation or campaign
change; deterministic flag ids; ``decided_at_ms`` from event time. Plus unit checks of the
behaviour model, the campaign stage's hot-fingerprint rule and the DLQ record format.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import orjson
import pytest

from consumers.contract.flags import ACTION_RANK, flag_id_for
from consumers.contract.flags import ENFORCING_ACTIONS as ENFORCING
from consumers.core.account_stage import AccountProcessor, dlq_record
from consumers.core.campaign_stage import CampaignProcessor
from consumers.core.config import DAY_MS, DetectorConfig
from consumers.core.features import FEATURE_NAMES, AccountState
from consumers.core.messages import Behaviour, FingerprintSeen
from consumers.core.models.behaviour import BehaviourModel
from consumers.core.pipeline import LocalPipeline
from consumers.core.prompt_keys import prompt_keys
from consumers.core.stage import Record
from tests.eventgen import EventGen, dumps_lines, scenario, sort_events, valid_event


def run(lines: list[bytes], cfg: DetectorConfig | None = None) -> list[dict[str, Any]]:
    return [orjson.loads(f) for f in LocalPipeline(cfg or DetectorConfig()).feed(lines)]


def by_account(flags: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in flags:
        out[f["account_id"]].append(f)
    return out


@pytest.fixture(scope="module")
def world() -> tuple[Any, list[bytes], list[bytes]]:
    """(dataset, its lines, the flags of one run over them)."""
    ds = scenario(seed=0, n_benign=30, n_org=8, n_hydra=30, scraper=False, days=3)
    lines = ds.lines()
    return ds, lines, LocalPipeline(DetectorConfig()).feed(lines)


# --- outcomes on the scenario ------------------------------------------------------------------

def test_campaign_accounts_enforced_with_one_campaign_id(world: Any) -> None:
    ds, _, raw = world
    flags = by_account([orjson.loads(f) for f in raw])
    hydra = ds.accounts("hydra")
    assert len(hydra) == 30
    last = {a: flags[a][-1] for a in hydra if a in flags}
    assert set(last) == hydra, f"hydra accounts never flagged: {sorted(hydra - set(last))}"
    assert all(f["action"] in ENFORCING for f in last.values()), {a: f["action"] for a, f in last.items()}
    cids = {f["campaign_id"] for f in last.values()}
    assert len(cids) == 1 and None not in cids, cids
    cid = cids.pop()
    for f in last.values():
        assert DetectorConfig().campaign_min_size <= f["campaign_size"] <= len(hydra)
        assert any(r["code"] == "CAMPAIGN_MEMBER" and r["value"] == f["campaign_size"] for r in f["reasons"])
    # the campaign id is never given to an account outside the campaign
    for a, fl in flags.items():
        if a not in hydra:
            assert all(f["campaign_id"] != cid for f in fl), a


def test_org_sharing_is_not_evidence(world: Any) -> None:
    ds, _, raw = world
    flags = by_account([orjson.loads(f) for f in raw])
    for a in ds.accounts("org"):
        for f in flags.get(a, []):
            assert f["action"] not in ENFORCING, f
            assert f["campaign_id"] is None, f
            assert not any(r["code"].startswith("SHARED_") for r in f["reasons"]), f


def test_org_control_without_org_id_is_linked() -> None:
    """Control for the test above: the same traffic without its org_id, each account paying with a
    card of its own, is shared evidence; with the org's one card and no org_id it is not — the
    accounts of one payer are related on purpose (a developer's fleet, a household)."""
    g = EventGen(1)
    # an extraction-like profile, so that what decides is whether the sharing counts as evidence
    org = [dict(e, task_category="coding", reasoning_elicitation=0.9) for e in g.org(8, 3)]
    background = g.benign(10, 3)
    with_org = run(dumps_lines(sort_events(org + background)))
    one_payer = run(dumps_lines(sort_events([dict(e, org_id=None) for e in org] + background)))
    stripped = run(dumps_lines(sort_events(
        [dict(e, org_id=None, payment_fingerprint="card-" + e["account_id"]) for e in org] + background)))
    org_accounts = {e["account_id"] for e in org}
    assert not [f for f in with_org if f["account_id"] in org_accounts]
    assert not [f for f in one_payer if f["account_id"] in org_accounts]
    linked = {f["account_id"] for f in stripped if f["account_id"] in org_accounts and f["campaign_id"]}
    assert len(linked) >= 5


def test_benign_accounts_not_enforced(world: Any) -> None:
    ds, _, raw = world
    benign = ds.accounts("benign")
    assert len(benign) == 30
    for f in map(orjson.loads, raw):
        if f["account_id"] in benign:
            assert f["action"] not in ENFORCING, f
            assert f["campaign_id"] is None, f


def test_heavy_scraper_throttled_without_campaign() -> None:
    g = EventGen(7)
    events = sort_events(g.scraper(per_day=3000, days=1) + g.benign(10, 1))
    flags = by_account(run(dumps_lines(events)))
    sc = flags.get("scraper-0001")
    assert sc, "the scraper was never flagged"
    assert ACTION_RANK[sc[-1]["action"]] >= ACTION_RANK["throttle"]
    assert all(f["campaign_id"] is None and f["campaign_size"] is None for f in sc)
    codes = {r["code"] for f in sc for r in f["reasons"]}
    assert {"FRESH_ACCOUNT", "HIGH_VOLUME"} <= codes
    for a, fl in flags.items():
        if a != "scraper-0001":
            assert all(f["action"] not in ENFORCING for f in fl)


def test_light_fresh_account_alone_not_enforced() -> None:
    """Control for the scraper: the same account at a light volume is not enforced."""
    g = EventGen(7)
    flags = run(dumps_lines(sort_events(g.scraper(per_day=40, days=2))))
    assert all(f["action"] not in ENFORCING for f in flags)


# --- flag stream properties ----------------------------------------------------------------------

def test_flags_only_on_escalation_or_campaign_change(world: Any) -> None:
    _, _, raw = world
    flags = by_account([orjson.loads(f) for f in raw])
    assert sum(map(len, flags.values())) > len(flags), "some account must be flagged more than once"
    for a, fl in flags.items():
        for prev, cur in zip(fl, fl[1:], strict=False):
            assert (prev["action"], prev["campaign_id"]) != (cur["action"], cur["campaign_id"]), (a, cur)
            assert ACTION_RANK[cur["action"]] >= ACTION_RANK[prev["action"]], "actions never step down"


def test_flag_ids_deterministic(world: Any) -> None:
    _, lines, raw = world
    again = LocalPipeline(DetectorConfig()).feed(lines)
    assert again == raw
    ids = [orjson.loads(f)["flag_id"] for f in raw]
    assert len(set(ids)) == len(ids)
    for f in map(orjson.loads, raw):
        assert f["flag_id"] == flag_id_for(f["account_id"], f["action"], f["campaign_id"],
                                           f["decided_at_ms"], f["detector_version"])


def test_flag_ids_depend_on_input() -> None:
    a = flag_id_for("acct", "suspend", "cmp-1", 10, "v")
    assert a != flag_id_for("acct", "throttle", "cmp-1", 10, "v")
    assert a != flag_id_for("acct", "suspend", None, 10, "v")
    assert a != flag_id_for("acct", "suspend", "cmp-1", 11, "v")
    assert a != flag_id_for("acct2", "suspend", "cmp-1", 10, "v")


def test_decided_at_is_event_time(world: Any) -> None:
    ds, lines, raw = world
    rng = random.Random(11)
    pipe = LocalPipeline(DetectorConfig())
    seen_max = 0
    last_decided: dict[str, int] = {}
    out: list[bytes] = []
    i = 0
    while i < len(lines):
        n = rng.randint(1, 400)
        chunk = ds.events[i:i + n]
        seen_max = max([seen_max] + [e["ts_ms"] for e in chunk])
        for f in map(orjson.loads, pipe.feed(lines[i:i + n])):
            assert f["decided_at_ms"] <= seen_max
            assert f["decided_at_ms"] >= last_decided.get(f["account_id"], 0)
            assert f["window_start_ms"] <= f["decided_at_ms"]
            last_decided[f["account_id"]] = f["decided_at_ms"]
            out.append(orjson.dumps(f))
        i += n
    assert out == raw, "batching of the input must not change the flags"


# --- the behaviour model -------------------------------------------------------------------------

def test_behaviour_model_ranks_outlier_above_inliers() -> None:
    rng = random.Random(5)

    def inlier() -> list[float]:
        return [min(1.0, max(0.0, rng.gauss(0.3, 0.05))) for _ in FEATURE_NAMES]

    m = BehaviourModel(len(FEATURE_NAMES), seed=3)
    assert m.quantile_one(inlier()) == 0.0, "untrained model gives quantile 0"
    for _ in range(400):
        m.learn_one(inlier())
    inliers = [inlier() for _ in range(50)]
    outlier = [0.95] * len(FEATURE_NAMES)
    assert m.score_one(outlier) > max(m.score_one(v) for v in inliers)
    assert m.quantile_one(outlier) > max(m.quantile_one(v) for v in inliers[:10])
    assert m.quantile_one(outlier) >= 0.95
    m2 = BehaviourModel.loads(m.dumps())
    assert [m2.score_one(v) for v in inliers + [outlier]] == [m.score_one(v) for v in inliers + [outlier]]
    assert m2.quantile_one(outlier) == m.quantile_one(outlier)


def test_account_state_roundtrip_and_feature_range() -> None:
    rng = random.Random(2)
    st = AccountState.new("o", created_ms=0, ts_ms=DAY_MS)
    for i in range(300):
        st.update({"ts_ms": DAY_MS + i * 60_000 + rng.randint(0, 30_000),
                   "task_category": rng.choice(("coding", "chat", "math")),
                   "reasoning_elicitation": rng.random(), "tool_use": rng.random() < 0.5,
                   "input_tokens": rng.randint(0, 5000), "output_tokens": rng.randint(0, 5000),
                   "model": "m"})
    f = st.features()
    assert len(f) == len(FEATURE_NAMES)
    assert all(0.0 <= x <= 1.0 for x in f)
    rt = AccountState.from_list(orjson.loads(orjson.dumps(st.to_list())))
    assert rt.features() == f and rt.to_list() == st.to_list()


def test_prompt_keys_near_duplicates_share_a_key() -> None:
    rng = random.Random(9)
    for _ in range(300):
        v = rng.getrandbits(64)
        w = v
        for b in rng.sample(range(64), 2):
            w ^= 1 << b
        assert set(prompt_keys(f"{v:016x}")) & set(prompt_keys(f"{w:016x}"))
    unrelated = sum(bool(set(prompt_keys(f"{rng.getrandbits(64):016x}")) & set(prompt_keys(f"{rng.getrandbits(64):016x}")))
                    for _ in range(300))
    assert unrelated == 0


# --- the campaign stage ----------------------------------------------------------------------------

def obs(fp: str, acct: str, org: str | None, t: int, n: int | None = None) -> Record:
    """A fingerprint observation as the account stage sends it (``n``: the account's request)."""
    return Record(topic="observations", key=fp.encode(), value=FingerprintSeen(fp, acct, org, t, t, n or 0).encode())


def latest_links(out: list[Record]) -> dict[str, dict[str, Any]]:
    last: dict[str, dict[str, Any]] = {}
    for r in out:
        m = orjson.loads(r.value)
        if m["k"] == "link":
            last[m["a"]] = m
    return last


SMALL = dict(link_min_units={"prompt": 2, "ip": 2, "pay": 2, "ua": 2, "wave": 2}, campaign_min_size=3)


@pytest.mark.parametrize("hot_ip", [6, 10_000])
def test_hot_fingerprint_stops_being_evidence(hot_ip: int) -> None:
    cfg = DetectorConfig(**SMALL, hot_units={"prompt": 100, "ip": hot_ip, "pay": 100, "ua": 100, "wave": 100})
    cp = CampaignProcessor(cfg)
    out: list[Record] = []
    t = 1_000
    campaign = [f"c{i}" for i in range(4)]
    for a in campaign:
        out += cp.process([obs("pay:P", a, None, t), obs("ip:X", a, None, t + 1)])
        t += 10
    before = latest_links(out)
    assert all(before[a]["cid"] is not None and set(before[a]["kinds"]) == {"ip", "pay"} for a in campaign)
    for i in range(8):   # unrelated organisations behind the same prefix (a big cloud NAT)
        out += cp.process([obs("ip:X", f"x{i}", f"org-{i}", t)])
        t += 10
    after = latest_links(out)
    if hot_ip == 6:
        assert cp.counters["hot_groups"] == 1
        for a in campaign:
            assert "ip" not in after[a]["kinds"] and after[a]["cid"] is None, after[a]
        assert all("ip" not in after[x]["kinds"] for x in after if x.startswith("x"))
    else:   # control: below the hot threshold the prefix stays evidence
        assert cp.counters["hot_groups"] == 0
        assert all(after[a]["cid"] is not None for a in campaign)


def test_sharing_inside_one_org_is_not_evidence() -> None:
    cp = CampaignProcessor(DetectorConfig(**SMALL))
    recs = []
    for i in range(12):
        for fp in ("pay:corp", "ip:10.0.0.0/24", "p0:00000001", "ua:corp/1"):
            recs.append(obs(fp, f"emp{i}", "org-acme", 1000 + i))
    out = cp.process(recs)
    assert [orjson.loads(r.value) for r in out] == []
    # control: the same accounts with no org are linked into a campaign
    cp2 = CampaignProcessor(DetectorConfig(**SMALL))
    out2 = cp2.process([Record(r.topic, r.key, r.value.replace(b'"org-acme"', b"null")) for r in recs])
    assert any(m["cid"] for m in latest_links(out2).values())


def test_behaviour_summaries_relayed_unchanged() -> None:
    cp = CampaignProcessor(DetectorConfig())
    v = Behaviour("acct", None, 0.4, [], 0.0, 5, 1, 9).encode()
    out = cp.process([Record("observations", b"acct", v)])
    assert [(r.topic, r.key, r.value) for r in out] == [("verdicts", b"acct", v)]


# --- the DLQ ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "field"), [
    (b"not json at all", None),
    (b"\xff\xfe", "not UTF-8"),
    (orjson.dumps(valid_event(ts_ms=-5)), "ts_ms"),
    (orjson.dumps(valid_event(country="Germany")), "country"),
    (orjson.dumps(valid_event(user_agent="u" * 600)), "user_agent"),
    (orjson.dumps(valid_event(user_agent="u" * 1_000_000)), "too large"),
    (b"x" * 1_000_000, "too large"),
])
@pytest.mark.parametrize("key", [b"acct-1", None])
def test_dlq_record_format(value: bytes, field: str | None, key: bytes | None) -> None:
    ap = AccountProcessor(DetectorConfig())
    good = Record("llm.requests", b"acct-1", orjson.dumps(valid_event()), partition=3, offset=40)
    bad = Record("llm.requests", key, value, partition=3, offset=41)
    out = ap.process([good, bad])
    dlq = [r for r in out if r.topic == "dlq"]
    assert len(dlq) == 1 and ap.counters["invalid"] == 1 and ap.counters["events"] == 1
    r = dlq[0]
    assert r.key == key and r.value == value
    h = dict(r.headers or [])
    assert [k for k, _ in r.headers or []] == ["dlq.error", "dlq.topic", "dlq.partition", "dlq.offset"]
    assert h["dlq.topic"] == b"llm.requests" and h["dlq.partition"] == b"3" and h["dlq.offset"] == b"41"
    assert 0 < len(h["dlq.error"]) <= 1000
    if field:
        assert h["dlq.error"].startswith(field.encode() + b":")
    else:
        assert h["dlq.error"].startswith(b"not JSON")


def test_dlq_record_helper_truncates_long_reasons() -> None:
    r = dlq_record(Record("t", b"k", b"v", 0, 1), "é" * 5000)
    err = dict(r.headers or [])["dlq.error"]
    assert len(err) <= 1000 and r.value == b"v" and r.key == b"k"


def test_accounts_share_one_copy_of_client_strings_models_and_summaries(world: Any) -> None:
    """Strings and behaviour summaries many accounts hold alike are kept once per partition, also
    after a restore from the changelog and after a thaw: an account holds a reference."""
    _, lines, _ = world
    proc = AccountProcessor(DetectorConfig())
    recs = [Record("requests", None, v, 0, i) for i, v in enumerate(lines)]
    proc.process(recs)

    def sharing(p: AccountProcessor) -> tuple[int, int, int]:
        states = [st for st in p.accounts.values() if isinstance(st, AccountState)]
        uas = {st.lua for st in states if st.lua}
        models = {m for st in states for m in st.models}
        sent = [st.sent for st in states if st.sent]
        # as many distinct objects as distinct values: every account refers to the one copy
        assert len({id(x) for st in states if st.lua for x in [st.lua]}) == len(uas)
        assert len({id(m) for st in states for m in st.models}) == len(models)
        assert len({id(s) for s in sent}) == len({orjson.dumps(s) for s in sent})
        return len(uas), len(models), len(sent)

    n_ua, n_models, n_sent = sharing(proc)
    assert n_ua >= 2 and n_models >= 1 and n_sent > len({orjson.dumps(st.sent) for st in proc.accounts.values()
                                                          if isinstance(st, AccountState) and st.sent})
    back = AccountProcessor(DetectorConfig())
    back.restore(proc.take_changes())
    assert sharing(back) == (n_ua, n_models, n_sent)


def test_learning_with_the_score_the_model_gave_is_learning() -> None:
    """The account stage passes learn_one the score scored_quantile just took: the model ends
    exactly as if learn_one had scored the vector itself."""
    rng = random.Random(4)
    a, b = (BehaviourModel(len(FEATURE_NAMES), seed=3, n_trees=5, height=5, window_size=30) for _ in range(2))
    for i in range(400):
        v = [rng.random() for _ in FEATURE_NAMES]
        score, q = b.scored_quantile(v)
        assert q == a.quantile_one(v) and (score is None) == (i < 50)
        a.learn_one(v)
        b.learn_one(v, score)
    assert a.dumps() == b.dumps() and a.hist == b.hist and sum(a.hist) == 400


def test_an_account_changelog_value_is_its_list_as_json(world: Any) -> None:
    """take_changes writes AccountState.dumps (the prompt keys as JSON straight from their
    memory): the same bytes as orjson.dumps of to_list, which restores the account."""
    _, lines, _ = world
    proc = AccountProcessor(DetectorConfig())
    proc.process([Record("requests", None, v, 0, i) for i, v in enumerate(lines)])
    states = [st for st in proc.accounts.values() if isinstance(st, AccountState)]
    assert sum(len(st.prompts) for st in states) > 100
    for st in states:
        assert st.dumps() == orjson.dumps(st.to_list())
        assert AccountState.from_list(orjson.loads(st.dumps())).to_list() == st.to_list()
