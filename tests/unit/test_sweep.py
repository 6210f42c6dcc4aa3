"""The adversary space: the ``sweep`` scenario (determinism, drawn dimensions visible in the
traffic, honest look-alikes), the per-dimension evaluation on a hand-built case, and the
``evaluate-sweep`` command."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import random
import statistics

import orjson
import pytest

from consumers.cli import build_parser
from consumers.contract.units import DAY_MS, HOUR_MS
from consumers.evaluate import evaluate, render_html
from consumers.evaluate import sweep as sweep_cmd
from consumers.evaluate.dimensions import DIMENSIONS, dimension_table, pool
from consumers.sim import Simulation, generate, get_scenario
from consumers.sim.sweep import Dims, build_sweep_campaign
from consumers.sim.world import UA_MIXES, World

BASE = Dims(size=24, age_days=0.0, creation="wave", paraphrase_bits=2, network="proxy_pool",
            client="rare", payment="shared_pool", schedule="24/7", ramp="none", ramp_days=5.0,
            blend=0.0, capability="coding_agentic", concentration=0.9, elicitation="high",
            rate_per_day=40.0, model_hop=False, heavy=False, sophistication=0.0)


def _digest(events) -> str:
    h = hashlib.sha256()
    for ev in events:
        h.update(orjson.dumps(ev))
    return h.hexdigest()


def _small_sweep():
    return get_scenario("sweep", scale=0.05, days=0.5)


# --- the scenario ---------------------------------------------------------------------------


def test_sweep_same_seed_same_bytes_other_seed_differs():
    sc = _small_sweep()
    e1, l1 = generate(sc, 7)
    e2, l2 = generate(sc, 7)
    assert _digest(e1) == _digest(e2)
    assert l1 == l2
    e3, l3 = generate(sc, 8, max_events=3000)
    assert _digest(e3) != _digest(generate(sc, 7, max_events=3000)[0])
    assert [x["dims"] for x in l3 if x["label"] == "attack"] != [x["dims"] for x in l1 if x["label"] == "attack"]


def test_sweep_labels_carry_dims_and_evasions_per_campaign():
    sim = Simulation(_small_sweep(), 3)
    labels = sim.labels
    attack = [x for x in labels if x["label"] == "attack"]
    campaigns = collections.defaultdict(list)
    for x in attack:
        campaigns[x["campaign"]].append(x)
    assert 10 <= len(campaigns) <= 20
    for rows in campaigns.values():
        d = rows[0]["dims"]
        assert all(r["dims"] == d for r in rows)  # campaign-level values
        assert d["size"] == len(rows)
        fields = {f.name for f in dataclasses.fields(Dims)}
        assert d["evasions"] == Dims(**{k: d[k] for k in fields}).evasions()
        assert {r["batch"] for r in rows} == ({1, 2} if d["model_hop"] else {1})
    groups = {x["group"] for x in labels if x["label"] == "benign"}
    assert {"cohort", "agent_fleet", "casual", "developer"} <= groups
    assert all("dims" not in x for x in labels if x["label"] == "benign")
    # other scenarios' labels keep the old format
    assert set(generate("smoke", 1, max_events=1)[1][0]) == {"account_id", "org_id", "label", "group", "campaign"}


def test_sweep_evasion_counts_spread():
    counts = collections.Counter()
    for seed in range(1, 6):
        sim = Simulation(get_scenario("sweep", scale=0.02, days=0.2), seed)
        counts.update({x["campaign"]: x["dims"]["evasions"] for x in sim.labels if x["label"] == "attack"}.values())
    assert min(counts) <= 1 and max(counts) >= 6


@pytest.fixture(scope="module")
def crafted():
    """A small sweep world with hand-drawn campaigns, one per variant, and honest users."""
    sc = dataclasses.replace(get_scenario("sweep", scale=0.1, days=1.0), sweep_campaigns=(0, 0), cohorts=4)
    sim = Simulation(sc, 5)
    world = World(random.Random("crafted"))
    variants = {
        "base": BASE,
        "aged": dataclasses.replace(BASE, creation="bought", age_days=400.0),
        "home": dataclasses.replace(BASE, network="home"),
        "sdk": dataclasses.replace(BASE, client="popular_sdk"),
        "slots": dataclasses.replace(BASE, schedule="shared_slots"),
        "p10": dataclasses.replace(BASE, paraphrase_bits=10),
        "p15": dataclasses.replace(BASE, paraphrase_bits=15),
        "own": dataclasses.replace(BASE, payment="own"),
        "pairs": dataclasses.replace(BASE, payment="pairs"),
        "none": dataclasses.replace(BASE, payment="none"),
        "hop": dataclasses.replace(BASE, model_hop=True, size=30),
    }
    accounts = {}
    for i, (name, d) in enumerate(variants.items(), 1):
        accounts[name] = build_sweep_campaign(world, sc, d, i)
        sim.accounts += accounts[name]
    events = list(sim.events())
    by_acct = collections.defaultdict(list)
    for e in events:
        by_acct[e["account_id"]].append(e)
    return sc, sim, variants, accounts, by_acct


def _evs(by_acct, accts):
    return [e for a in accts for e in by_acct[a.account_id]]


def test_aged_campaign_accounts_are_old_fresh_ones_new(crafted):
    sc, _, _, accounts, by_acct = crafted
    aged = [(sc.start_ms - e["account_created_ms"]) / DAY_MS for e in _evs(by_acct, accounts["aged"])]
    fresh = [(sc.start_ms - e["account_created_ms"]) / DAY_MS for e in _evs(by_acct, accounts["base"])]
    assert min(aged) >= 14 and 200 <= statistics.median(aged) <= 800
    assert max(fresh) <= 7


def test_home_network_campaign_has_a_24_of_its_own_per_account(crafted):
    _, _, _, accounts, by_acct = crafted

    def main_prefix(a):
        return collections.Counter(e["client_ip_prefix"] for e in by_acct[a.account_id]).most_common(1)[0][0]

    home = [main_prefix(a) for a in accounts["home"] if by_acct[a.account_id]]
    assert len(set(home)) >= 0.9 * len(home) >= 18
    # the proxy-pool campaign's accounts share their /24s
    users = collections.defaultdict(set)
    for e in _evs(by_acct, accounts["base"]):
        users[e["client_ip_prefix"]].add(e["account_id"])
    assert statistics.mean(len(u) for u in users.values()) > 2


def test_popular_sdk_campaign_uses_strings_honest_users_use(crafted):
    _, sim, _, accounts, by_acct = crafted
    labels = {x["account_id"]: x for x in sim.labels}
    honest_uas = {e["user_agent"] for a, evs in by_acct.items() if labels[a]["label"] == "benign" for e in evs}
    sdk = {e["user_agent"] for e in _evs(by_acct, accounts["sdk"])}
    rare = {e["user_agent"] for e in _evs(by_acct, accounts["base"])}
    assert sdk and sdk <= honest_uas & set(UA_MIXES["popular_sdk"])
    assert rare and not rare & honest_uas


def test_shared_schedule_requests_fall_in_the_same_slots(crafted):
    _, _, _, accounts, by_acct = crafted
    slots = {(e["ts_ms"] // HOUR_MS) % 24 for e in _evs(by_acct, accounts["slots"])}
    assert 3 <= len(slots) <= 8
    for a in accounts["slots"]:
        assert {(e["ts_ms"] // HOUR_MS) % 24 for e in by_acct[a.account_id]} <= slots
    assert len({(e["ts_ms"] // HOUR_MS) % 24 for e in _evs(by_acct, accounts["base"])}) >= 20


@pytest.mark.parametrize("name", ["base", "p10", "p15"])
def test_paraphrase_distance_from_the_template_matches_the_drawn_bucket(crafted, name):
    _, _, variants, accounts, by_acct = crafted
    d = variants[name].paraphrase_bits
    library = [t[0] for t in accounts[name][0].profile.templates]
    dists = []
    for e in _evs(by_acct, accounts[name]):
        sh = int(e["prompt_simhash"], 16)
        best = min((sh ^ t).bit_count() for t in library)
        if best <= 20:  # a template use (fresh prompts are ~32 bits from everything)
            dists.append(best)
    # template uses flip max(0, d-4)..d bits; a few fresh prompts land within 20 bits by chance
    assert len(dists) > 100
    assert sum(1 for x in dists if max(0, d - 4) <= x <= d) >= 0.9 * len(dists)
    assert d in dists
    bucket = dict((k, b) for k, _, b in DIMENSIONS)["paraphrase_bits"]
    p90 = sorted(dists)[int(0.9 * len(dists))]
    assert bucket(p90) == bucket(d)


def test_payment_variants(crafted):
    _, _, _, accounts, by_acct = crafted

    def cards(name):
        return [by_acct[a.account_id][0]["payment_fingerprint"] for a in accounts[name] if by_acct[a.account_id]]

    own, pairs, none, shared = cards("own"), cards("pairs"), cards("none"), cards("base")
    assert len(set(own)) == len(own) and None not in own
    assert max(collections.Counter(pairs).values()) == 2
    assert set(none) == {None}
    assert max(collections.Counter(shared).values()) >= 3


def test_model_hop_new_batch_behind_new_infrastructure_reuses_part_of_the_library(crafted):
    _, sim, _, accounts, by_acct = crafted
    labels = {x["account_id"]: x for x in sim.labels}
    b1 = [a for a in accounts["hop"] if labels[a.account_id]["batch"] == 1]
    b2 = [a for a in accounts["hop"] if labels[a.account_id]["batch"] == 2]
    assert b1 and b2 and len(b1) + len(b2) == 30
    e1, e2 = _evs(by_acct, b1), _evs(by_acct, b2)
    assert max(e["ts_ms"] for e in e1) <= min(e["ts_ms"] for e in e2) + 3 * HOUR_MS
    assert {e["model"] for e in e2} == {"frontier-5"}
    assert not {e["client_ip_prefix"] for e in e1} & {e["client_ip_prefix"] for e in e2}
    assert not {e["payment_fingerprint"] for e in e1} & {e["payment_fingerprint"] for e in e2}
    lib1 = {t[0] for t in b1[0].profile.templates}
    lib2 = {t[0] for t in b2[0].profile.templates}
    assert 0 < len(lib1 & lib2) < len(lib1)


def test_cohorts_created_together_share_a_network_and_starters_no_org(crafted):
    _, sim, _, _, by_acct = crafted
    cohorts = collections.defaultdict(list)
    for a in sim.accounts:
        if a.group == "cohort":
            cohorts[id(a.alt_profile)].append(a)  # one shared starter profile per cohort
    assert cohorts
    fresh = 0
    for members in cohorts.values():
        assert 10 <= len(members) <= 80
        created = [a.created_ms for a in members]
        assert max(created) - min(created) <= 4 * HOUR_MS
        evs = _evs(by_acct, members)
        assert {e["org_id"] for e in evs} == {None}
        assert len({e["user_agent"] for e in evs}) == 1
        venue = collections.Counter(e["client_ip_prefix"] for e in evs)
        top = {p for p, _ in venue.most_common(3)}
        assert sum(1 for a in members if top & {e["client_ip_prefix"] for e in by_acct[a.account_id]}) >= 0.8 * len(members)
        cards = [a.payment_fp for a in members if a.payment_fp]
        assert len(set(cards)) == len(cards)
        starters = [t[0] for t in members[0].alt_profile.templates]

        def starter(e, starters=starters):
            return min((int(e["prompt_simhash"], 16) ^ t).bit_count() for t in starters) <= 2

        # early only: no starter after the last member's starter window
        last = max(a.alt_until for a in members)
        assert not any(starter(e) for e in evs if e["ts_ms"] > last)
        if last > sim.scenario.start_ms + 3 * HOUR_MS:  # a cohort starting now
            fresh += 1
            assert len({e["account_id"] for e in evs if starter(e)}) >= 3
    assert fresh


def test_agent_fleets_one_card_cloud_shared_templates(crafted):
    _, sim, _, _, _ = crafted
    fleets = collections.defaultdict(list)
    for a in sim.accounts:
        if a.group == "agent_fleet":
            fleets[a.payment_fp].append(a)
    assert fleets
    for members in fleets.values():
        assert len({a.org_id for a in members}) == 1
        assert len({id(a.profile.templates) for a in members}) == 1
        assert all(a.created_ms < sim.scenario.start_ms - 14 * DAY_MS for a in members)


# --- per-dimension evaluation -------------------------------------------------------------

T0 = 1_776_816_000_000


def _ev(eid, acc, ts):
    return {"schema_version": 1, "event_id": eid, "ts_ms": ts, "account_id": acc}


def _flag(acc, action, at):
    return {"schema_version": 1, "flag_id": f"{acc}-{action}-{at}", "account_id": acc, "org_id": None,
            "action": action, "score": 0.9, "reasons": [], "campaign_id": None, "campaign_size": None,
            "decided_at_ms": at, "window_start_ms": at, "detector_version": "t"}


def _tiny():
    da = {"size": 20, "evasions": 1, "network": "proxy_pool", "paraphrase_bits": 2, "age_days": 0.0}
    db = {"size": 12, "evasions": 5, "network": "home", "paraphrase_bits": 14, "age_days": 400.0}
    labels = [
        {"account_id": "a1", "org_id": None, "label": "attack", "group": "sweep", "campaign": "A", "dims": da},
        {"account_id": "a2", "org_id": None, "label": "attack", "group": "sweep", "campaign": "A", "dims": da},
        {"account_id": "b1", "org_id": None, "label": "attack", "group": "sweep", "campaign": "B", "dims": db},
        {"account_id": "h1", "org_id": None, "label": "benign", "group": "cohort", "campaign": None},
        {"account_id": "h2", "org_id": None, "label": "benign", "group": "casual", "campaign": None},
    ]
    h = HOUR_MS
    events = sorted([_ev("a1-0", "a1", T0), _ev("a1-1", "a1", T0 + h), _ev("a1-2", "a1", T0 + 2 * h),
                     _ev("a1-3", "a1", T0 + 3 * h), _ev("a2-0", "a2", T0 + h), _ev("a2-1", "a2", T0 + 30 * h),
                     _ev("b1-0", "b1", T0), _ev("b1-1", "b1", T0 + h), _ev("h1-0", "h1", T0),
                     _ev("h2-0", "h2", T0)], key=lambda e: e["ts_ms"])
    flags = [_flag("a1", "throttle", T0 + 2 * h), _flag("a2", "review", T0 + 2 * h),
             _flag("b1", "suspend", T0 + 25 * h), _flag("h1", "review", T0 + h)]
    return events, labels, flags


def _cells(m, key):
    return {c["bucket"]: c for d in m["dimensions"]["dimensions"] if d["key"] == key for c in d["buckets"]}


def test_per_dimension_cells_of_a_hand_built_case():
    m = evaluate(*_tiny())
    net = _cells(m, "network")
    assert list(net) == ["proxy_pool", "home"]
    p = net["proxy_pool"]
    assert (p["campaigns"], p["accounts"], p["enforced"], p["requests"], p["leaked_requests"]) == (1, 2, 1, 6, 4)
    assert p["recall"] == 0.5 and p["recall_24h"] == 0.5
    assert p["leakage"] == pytest.approx(4 / 6) and p["median_delay_h"] == 2.0
    assert p["target"]["recall"] == 0.95 and p["target"]["leakage"] == pytest.approx(0.10)
    assert p["grade"] == {"recall": 3, "recall_24h": 2, "leakage": 3, "median_delay_h": 0}
    hm = net["home"]
    assert (hm["accounts"], hm["enforced"], hm["recall"], hm["recall_24h"], hm["leakage"]) == (1, 1, 1.0, 0.0, 1.0)
    assert hm["median_delay_h"] == 25.0
    assert hm["target"]["recall"] == 0.80 and hm["target"]["leakage"] is None  # a small campaign
    assert hm["grade"] == {"recall": 0, "recall_24h": 3, "leakage": None, "median_delay_h": 1}
    assert set(_cells(m, "size")) == {"10–19", "20–49"}
    assert set(_cells(m, "paraphrase_bits")) == {"0–3", "13–16"}
    assert set(_cells(m, "age_days")) == {"fresh", "≥1y"}
    assert _cells(m, "evasions")["4–5"]["accounts"] == 1
    o = m["dimensions"]["overall"]
    assert (o["accounts"], o["enforced"], o["requests"], o["leaked_requests"]) == (3, 2, 8, 6)
    assert o["median_delay_h"] == pytest.approx(13.5)
    assert o["target"]["recall"] == pytest.approx(0.9) and o["target"]["leakage"] == pytest.approx(0.10)
    honest = {h["persona"]: h for h in m["dimensions"]["honest"]}
    assert (honest["cohort"]["enforced_share"], honest["cohort"]["flagged_share"]) == (0.0, 1.0)
    assert (honest["casual"]["enforced_share"], honest["casual"]["flagged_share"]) == (0.0, 0.0)


def test_dimension_table_heat_map_and_no_dims_case():
    m = evaluate(*_tiny())
    text = dimension_table(m["dimensions"])
    assert "proxy_pool" in text and "cohort" in text and "13–16" in text
    html = render_html(m)
    assert 'id="dimensions"' in html and 'id="dimension-heatmap"' in html
    n_buckets = sum(len(d["buckets"]) for d in m["dimensions"]["dimensions"])
    heat = html.split('id="dimension-heatmap"')[1].split("</svg>")[0]
    assert heat.count("<rect") == 4 * n_buckets
    events, labels, flags = _tiny()
    plain = evaluate(events, [{k: v for k, v in x.items() if k != "dims"} for x in labels], flags)
    assert plain["dimensions"] is None and 'id="dimensions"' not in render_html(plain)


def test_pooling_runs_keeps_campaigns_apart_and_sums_honest():
    dm = evaluate(*_tiny())["dimensions"]
    pooled = pool([("s1", dm), ("s2", dm)])
    assert len(pooled["campaign_dims"]) == 4
    net = {c["bucket"]: c for d in pooled["dimensions"] if d["key"] == "network" for c in d["buckets"]}
    assert net["proxy_pool"]["campaigns"] == 2 and net["proxy_pool"]["accounts"] == 4
    assert net["proxy_pool"]["recall"] == 0.5
    honest = {h["persona"]: h for h in pooled["honest"]}
    assert honest["cohort"]["accounts"] == 2 and honest["cohort"]["flagged_share"] == 1.0


def test_evaluate_sweep_command_end_to_end(tmp_path, capsys):
    args = build_parser().parse_args(["evaluate-sweep", "--seeds", "4", "--scale", "0.03", "--days", "0.3",
                                      "--report", str(tmp_path)])
    assert sweep_cmd.run(args) == 0
    out = capsys.readouterr().out
    assert "campaign size" in out and "honest persona" in out
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["seeds"] == [4] and summary["pooled"]["dimensions"]
    assert (tmp_path / "sweep-s4" / "index.html").exists()
