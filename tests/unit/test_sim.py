"""Unit tests of the traffic simulator (consumers.sim): determinism, contract validity, ordering,
labels, the properties that define each persona and attack family, duplicate deliveries,
streaming memory, the writers and the ``simulate`` CLI."""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gc
import gzip
import hashlib
import itertools
import statistics
import sys
import tracemalloc

import orjson
import pytest

from consumers.contract.events import RequestEvent, parse_event
from consumers.contract.units import HOUR_MS
from consumers.sim import (
    SCENARIOS,
    Simulation,
    generate,
    get_scenario,
    read_jsonl,
    write_events,
    write_labels,
)
from consumers.sim import cli as sim_cli
from consumers.sim.world import COUNTRIES, NEW_MODEL, PROXY_ASNS, UA_MIXES

HOUR = HOUR_MS
BENIGN = {"casual", "developer", "enterprise", "eval_company", "ci_agent", "reseller",
          "researcher", "new_signup"}
FAMILIES = {"hydra", "cot_harvest", "blended", "heavy_scraper", "hydra_evasive", "hydra_stealth"}


@pytest.fixture(scope="module")
def smoke() -> tuple[Simulation, list[dict], dict[str, dict]]:
    sim = Simulation("smoke", 11)
    events = list(sim.events())
    labels = {lab["account_id"]: lab for lab in sim.labels}
    return sim, events, labels


def _digest(events) -> str:
    h = hashlib.sha256()
    for ev in events:
        h.update(orjson.dumps(ev))
        h.update(b"\n")
    return h.hexdigest()


def _by_group(events, labels, group):
    return [e for e in events if labels[e["account_id"]]["group"] == group]


def _accounts(labels, group):
    return [a for a, lab in labels.items() if lab["group"] == group]


def _sh(ev) -> int:
    return int(ev["prompt_simhash"], 16)


def _near_partners(events, max_bits=3):
    """account -> set of OTHER accounts that sent a prompt within ``max_bits`` bits (exact for
    max_bits <= 3: two such hashes agree on at least one of four 16-bit bands)."""
    index = collections.defaultdict(list)
    pairs = {(_sh(e), e["account_id"]) for e in events}
    for sh, acct in pairs:
        for b in range(4):
            index[(b, (sh >> (16 * b)) & 0xFFFF)].append((sh, acct))
    partners = collections.defaultdict(set)
    for sh, acct in pairs:
        for b in range(4):
            for sh2, acct2 in index[(b, (sh >> (16 * b)) & 0xFFFF)]:
                if acct2 != acct and (sh ^ sh2).bit_count() <= max_bits:
                    partners[acct].add(acct2)
    return partners


def _reuse_share(events, max_bits=3) -> float:
    """Share of events whose prompt is within ``max_bits`` of another event's prompt."""
    index = collections.defaultdict(list)
    for i, e in enumerate(events):
        sh = _sh(e)
        for b in range(4):
            index[(b, (sh >> (16 * b)) & 0xFFFF)].append((i, sh))
    hits = 0
    for i, e in enumerate(events):
        sh = _sh(e)
        if any(j != i and (sh ^ sh2).bit_count() <= max_bits
               for b in range(4) for j, sh2 in index[(b, (sh >> (16 * b)) & 0xFFFF)]):
            hits += 1
    return hits / max(1, len(events))


# --- determinism, validity, ordering -----------------------------------------------------------


def test_same_seed_gives_identical_output_and_other_seed_differs(smoke):
    sim, events, _ = smoke
    again_events, again_labels = generate("smoke", 11)
    assert _digest(again_events) == _digest(events)
    assert again_labels == sim.labels
    # a second pass over the same Simulation replays the same stream
    assert _digest(sim.events(5000)) == _digest(events[:5000])
    other_events, other_labels = generate("smoke", 12, max_events=5000)
    assert _digest(other_events) != _digest(events[:5000])
    assert not {x["account_id"] for x in other_labels} & {x["account_id"] for x in sim.labels}


def test_every_smoke_event_is_valid(smoke):
    _, events, _ = smoke
    assert 30_000 <= len(events) <= 80_000
    for ev in events:
        parsed = parse_event(orjson.dumps(ev))
        assert parsed["task_category"] == ev["task_category"]  # generated categories are known
    for ev in events[:: max(1, len(events) // 500)]:
        model = RequestEvent.model_validate_json(orjson.dumps(ev))
        assert model.event_id == ev["event_id"]


def test_events_sorted_within_span_and_ids_unique_per_request(smoke):
    sim, events, _ = smoke
    sc = sim.scenario
    ts = [e["ts_ms"] for e in events]
    assert ts == sorted(ts)
    assert sc.start_ms <= ts[0] and ts[-1] < sc.end_ms
    by_id = {}
    for e in events:
        first = by_id.setdefault(e["event_id"], e)
        assert first == e  # a repeated id is a duplicate delivery: same content
        assert e["ts_ms"] >= e["account_created_ms"]


def test_labels_cover_every_persona_family_and_account(smoke):
    _, events, labels = smoke
    groups = collections.Counter(lab["group"] for lab in labels.values())
    assert set(groups) == BENIGN | FAMILIES
    for lab in labels.values():
        assert set(lab) == {"account_id", "org_id", "label", "group", "campaign"}
        if lab["group"] in FAMILIES:
            assert lab["label"] == "attack" and lab["campaign"]
        else:
            assert lab["label"] == "benign" and lab["campaign"] is None
    assert {e["account_id"] for e in events} <= set(labels)
    active = collections.Counter(labels[e["account_id"]]["group"] for e in events)
    assert set(active) == BENIGN | FAMILIES  # every group actually sends traffic
    # smoke sizes from the brief
    assert 350 <= sum(groups[g] for g in BENIGN) <= 600
    assert 50 <= groups["hydra"] <= 80 and 15 <= groups["hydra_evasive"] <= 30
    assert 15 <= groups["hydra_stealth"] <= 30
    assert groups["cot_harvest"] >= 5 and groups["blended"] >= 2 and groups["heavy_scraper"] >= 1
    # every account of a campaign has one campaign id; campaigns do not mix families except
    # blended accounts attached to a hydra operator
    fams = collections.defaultdict(set)
    for lab in labels.values():
        if lab["campaign"]:
            fams[lab["campaign"]].add(lab["group"])
    assert all(f <= {"hydra", "blended"} or len(f) == 1 for f in fams.values())


def test_labels_org_matches_events(smoke):
    _, events, labels = smoke
    for e in events:
        assert e["org_id"] == labels[e["account_id"]]["org_id"]


# --- benign personas ---------------------------------------------------------------------------


def test_enterprise_orgs_share_org_card_prefixes_and_templates(smoke):
    _, events, labels = smoke
    ent = _by_group(events, labels, "enterprise")
    orgs = collections.defaultdict(set)
    for a in _accounts(labels, "enterprise"):
        orgs[labels[a]["org_id"]].add(a)
    assert all(org is not None for org in orgs) and all(len(m) >= 10 for m in orgs.values())
    cards = collections.defaultdict(set)
    prefixes = collections.defaultdict(set)
    for e in ent:
        cards[e["org_id"]].add(e["payment_fingerprint"])
        prefixes[e["org_id"]].add(e["client_ip_prefix"])
        assert e["account_tier"] == "enterprise"
    assert all(len(c) == 1 and None not in c for c in cards.values())
    assert len({next(iter(c)) for c in cards.values()}) == len(cards)  # one card per org
    assert all(len(p) <= 6 for p in prefixes.values())
    # near-duplicate prompts across many accounts, all inside the same org
    partners = _near_partners(ent)
    sharing = [a for a in partners if partners[a]]
    assert len(sharing) >= 0.3 * len({e["account_id"] for e in ent})
    for a, ps in partners.items():
        assert all(labels[p]["org_id"] == labels[a]["org_id"] for p in ps)
    # business hours: little traffic at local night
    sim_accounts = {a.account_id: a for a in smoke[0].accounts}
    night = sum(1 for e in ent if ((e["ts_ms"] // 60000 + sim_accounts[e["account_id"]].tz_min)
                                   // 60) % 24 in (0, 1, 2, 3, 4, 5))
    assert night < 0.05 * len(ent)


def test_eval_company_identical_prompts_and_burst_after_release(smoke):
    sim, events, labels = smoke
    ev = _by_group(events, labels, "eval_company")
    accts = _accounts(labels, "eval_company")
    assert 3 <= len(accts) <= 8 and len({labels[a]["org_id"] for a in accts}) == 1
    partners = _near_partners(ev, max_bits=2)
    assert all(partners[a] for a in {e["account_id"] for e in ev})
    elic = [e["reasoning_elicitation"] for e in ev]
    assert statistics.mean(elic) > 0.5
    rel = sim.scenario.release_ms
    after = sum(1 for e in ev if rel <= e["ts_ms"] < rel + 6 * HOUR)
    before = sum(1 for e in ev if rel - 6 * HOUR <= e["ts_ms"] < rel)
    assert after > 5 * max(before, 1)
    assert len({e["client_ip_prefix"] for e in ev}) <= 2
    assert all(e["account_created_ms"] < sim.scenario.start_ms - 60 * 24 * HOUR for e in ev)


def test_ci_agent_24_7_heavy_own_templates(smoke):
    sim, events, labels = smoke
    ci = _by_group(events, labels, "ci_agent")
    per = collections.defaultdict(list)
    for e in ci:
        per[e["account_id"]].append(e)
    assert per
    for evs in per.values():
        assert len({(e["ts_ms"] // HOUR) % 24 for e in evs}) >= 20
        assert len(evs) >= 400
        assert sum(e["tool_use"] for e in evs) > 0.6 * len(evs)
        assert evs[0]["account_created_ms"] < sim.scenario.start_ms - 300 * 24 * HOUR
    # heavy template reuse...
    for evs in per.values():
        assert _reuse_share(evs) >= 0.5
    # ...but never shared with anyone else
    index = collections.defaultdict(list)
    for e in ci:
        sh = _sh(e)
        for b in range(4):
            index[(b, (sh >> (16 * b)) & 0xFFFF)].append((sh, e["account_id"]))
    for e in events:
        sh = _sh(e)
        for b in range(4):
            for sh2, owner in index.get((b, (sh >> (16 * b)) & 0xFFFF), ()):
                assert owner == e["account_id"] or (sh ^ sh2).bit_count() > 3


def test_casual_users_sleep(smoke):
    sim, events, labels = smoke
    tz = {a.account_id: a.tz_min for a in sim.accounts}
    hours = collections.Counter()
    for e in _by_group(events, labels, "casual"):
        hours[((e["ts_ms"] // 60000 + tz[e["account_id"]]) // 60) % 24] += 1
    night = sum(hours[h] for h in (1, 2, 3, 4, 5))
    evening = sum(hours[h] for h in (17, 18, 19, 20, 21))
    assert evening > 0 and night < 0.3 * evening
    ips = collections.defaultdict(collections.Counter)
    for e in _by_group(events, labels, "casual"):
        ips[e["account_id"]][e["client_ip_prefix"]] += 1
    stable = [a for a, c in ips.items() if sum(c.values()) >= 5]
    top_share = [c.most_common(1)[0][1] / sum(c.values()) for a, c in ips.items() if a in stable]
    assert statistics.median(top_share) >= 0.6


def test_reseller_many_prefixes_diverse_prompts(smoke):
    _, events, labels = smoke
    rs = _by_group(events, labels, "reseller")
    assert len(rs) >= 2000
    assert len({e["client_ip_prefix"] for e in rs}) >= 40
    assert len({e["prompt_simhash"] for e in rs}) > 0.8 * len(rs)
    assert len({e["task_category"] for e in rs}) >= 7


def test_researcher_high_elicitation_low_volume_diverse(smoke):
    sim, events, labels = smoke
    rs = _by_group(events, labels, "researcher")
    rm = [e["reasoning_elicitation"] for e in rs if e["task_category"] in ("reasoning", "math")]
    assert len(rm) > 30 and statistics.mean(rm) > 0.45
    per = collections.Counter(e["account_id"] for e in rs)
    assert statistics.median(per.values()) < 40
    assert len({e["prompt_simhash"] for e in rs}) > 0.9 * len(rs)


def test_new_signups_created_during_scenario_and_spread(smoke):
    sim, events, labels = smoke
    sc = sim.scenario
    created = sorted({e["account_created_ms"] for e in _by_group(events, labels, "new_signup")})
    assert len(created) >= 5
    assert all(sc.start_ms <= c < sc.end_ms for c in created)
    assert len({(c - sc.start_ms) // (4 * HOUR) for c in created}) >= 3  # not one wave


def test_benign_card_sharing_outside_orgs_is_small_households(smoke):
    _, events, labels = smoke
    card_accts = collections.defaultdict(set)
    for e in events:
        lab = labels[e["account_id"]]
        if lab["label"] == "benign" and lab["org_id"] is None and e["payment_fingerprint"]:
            card_accts[e["payment_fingerprint"]].add(e["account_id"])
    shared = [s for s in card_accts.values() if len(s) > 1]
    assert shared  # hard negatives: households, a developer's second account
    assert max(len(s) for s in shared) <= 4


# --- attack families ---------------------------------------------------------------------------


def test_hydra_shared_templates_proxies_cards_no_org(smoke):
    sim, events, labels = smoke
    hy = _by_group(events, labels, "hydra")
    accts = _accounts(labels, "hydra")
    orgs = [labels[a]["org_id"] for a in accts if labels[a]["org_id"] is not None]
    assert len(orgs) == len(set(orgs))  # no shared org
    partners = _near_partners(hy)
    active = {e["account_id"] for e in hy}
    with_partner = [a for a in active if partners[a]]
    assert len(with_partner) >= 0.8 * len(active)
    for a in with_partner:  # sharing stays within the campaign
        assert all(labels[p]["campaign"] == labels[a]["campaign"] for p in partners[a])
    cards = collections.Counter()
    card_of = {}
    for e in hy:
        card_of[e["account_id"]] = e["payment_fingerprint"]
    cards.update(c for c in card_of.values() if c)
    assert max(cards.values()) >= 3 and max(cards.values()) <= 10
    assert {e["asn"] for e in hy} <= set(PROXY_ASNS)
    prefix_accts = collections.defaultdict(set)
    for e in hy:
        prefix_accts[e["client_ip_prefix"]].add(e["account_id"])
    assert max(len(s) for s in prefix_accts.values()) >= 3
    per_camp_ua = collections.defaultdict(set)
    for e in hy:
        per_camp_ua[labels[e["account_id"]]["campaign"]].add(e["user_agent"])
    assert all(len(u) <= 2 for u in per_camp_ua.values())
    cats = collections.Counter(e["task_category"] for e in hy)
    assert (cats["coding"] + cats["agentic"] + cats["reasoning"]) == len(hy)
    # created in waves: creation times fall into few 6-hour bins
    created = {e["account_created_ms"] // (6 * HOUR) for e in hy}
    assert len(created) <= 8
    # light per account, no daily rhythm (24/7): accounts already active at the start send
    # about as much in every 4-hour block (casual users, by contrast, sleep)
    per = collections.Counter(e["account_id"] for e in hy)
    assert max(per.values()) <= 60
    start = sim.scenario.start_ms
    early = {a.account_id for a in sim.accounts if a.group == "hydra" and a.active_from == start}
    blocks = collections.Counter((e["ts_ms"] - start) // (4 * HOUR) for e in hy
                                 if e["account_id"] in early)
    assert len(blocks) == 6 and max(blocks.values()) < 2 * min(blocks.values())


def test_campaigns_switch_model_within_hours_benign_slower(smoke):
    sim, events, labels = smoke
    rel = sim.scenario.release_ms
    assert all(e["model"] != NEW_MODEL for e in events if e["ts_ms"] < rel)
    late = [e for e in events if e["ts_ms"] >= rel + 6 * HOUR]
    for fam in ("hydra", "cot_harvest", "heavy_scraper"):
        evs = [e for e in late if labels[e["account_id"]]["group"] == fam]
        assert evs and sum(e["model"] == NEW_MODEL for e in evs) >= 0.95 * len(evs)
    honest = [e for e in late if labels[e["account_id"]]["group"] in
              ("casual", "developer", "enterprise", "researcher", "ci_agent")]
    assert sum(e["model"] == NEW_MODEL for e in honest) < 0.3 * len(honest)


def test_cot_harvest_high_elicitation_reasoning(smoke):
    _, events, labels = smoke
    cot = _by_group(events, labels, "cot_harvest")
    assert {e["task_category"] for e in cot} <= {"reasoning", "math"}
    assert statistics.mean(e["reasoning_elicitation"] for e in cot) > 0.85
    assert min(e["reasoning_elicitation"] for e in cot) >= 0.8


def test_heavy_scraper_naive_volume_one_subnet(smoke):
    _, events, labels = smoke
    hs = _by_group(events, labels, "heavy_scraper")
    per = collections.Counter(e["account_id"] for e in hs)
    assert per and min(per.values()) >= 1000
    assert len({e["client_ip_prefix"] for e in hs}) == 1
    assert len({e["prompt_simhash"] for e in hs}) > 0.99 * len(hs)


def test_blended_mixes_extraction_with_customer_traffic(smoke):
    sim, events, labels = smoke
    bl = _by_group(events, labels, "blended")
    accts = _accounts(labels, "blended")
    assert len({labels[a]["org_id"] for a in accts}) == len(accts)
    hydra_camps = {labels[a]["campaign"] for a in _accounts(labels, "hydra")}
    assert {labels[a]["campaign"] for a in accts} <= hydra_camps
    pool = bl + _by_group(events, labels, "hydra")
    partners = _near_partners(pool)
    for a in accts:
        hydra_partners = {p for p in partners[a] if labels[p]["group"] == "hydra"}
        assert hydra_partners and all(labels[p]["campaign"] == labels[a]["campaign"]
                                      for p in hydra_partners)
    per = collections.Counter(e["account_id"] for e in bl)
    for a in accts:
        evs = [e for e in bl if e["account_id"] == a]
        cats = {e["task_category"] for e in evs}
        assert per[a] >= 1000 and len(cats) >= 6  # customers' variety mixed in
        assert len({e["client_ip_prefix"] for e in evs}) >= 20


def _library_distances(sim, events, labels, group):
    bases = {a.account_id: [t[0] for t in a.profile.templates] for a in sim.accounts if a.group == group}
    return [min((_sh(e) ^ b).bit_count() for b in bases[e["account_id"]])
            for e in _by_group(events, labels, group)]


def test_hydra_evasive_is_hydra_with_the_three_threats_evasions(smoke):
    """THREATS.md: paraphrased templates, residential IPs instead of a shared proxy pool, slowly
    ramping volume — everything else hydra-like (cards in small groups, its own clients)."""
    sim, events, labels = smoke
    ev = _by_group(events, labels, "hydra_evasive")
    d_ev = _library_distances(sim, events, labels, "hydra_evasive")
    assert sum(4 <= d <= 10 for d in d_ev) >= 0.8 * len(d_ev)
    d_hy = _library_distances(sim, events, labels, "hydra")
    assert sum(d <= 3 for d in d_hy) >= 0.85 * len(d_hy)
    residential = {asn for _, _, asns in COUNTRIES.values() for asn in asns}
    assert {e["asn"] for e in ev} <= residential
    # a proxy network: each account rotates through several /24s, few accounts per /24
    per_acct = collections.defaultdict(set)
    per_prefix = collections.defaultdict(set)
    for e in ev:
        per_acct[e["account_id"]].add(e["client_ip_prefix"])
        per_prefix[e["client_ip_prefix"]].add(e["account_id"])
    assert statistics.median(len(v) for v in per_acct.values()) >= 3
    assert statistics.mean(len(v) for v in per_prefix.values()) < 2.5
    card_of = {e["account_id"]: e["payment_fingerprint"] for e in ev}
    sharing = collections.Counter(card_of.values())
    assert len(sharing) < len(card_of) and max(sharing.values()) <= 10  # cards shared by small groups
    assert not {e["user_agent"] for e in ev} & set(UA_MIXES["mimic"])
    # slow ramp: each account's volume grows with its age
    sc = sim.scenario
    accts = [a for a in sim.accounts if a.group == "hydra_evasive"]
    assert all(a.ramp_ms > 0 and a.ramp0 < 0.5 for a in accts)
    hour = sc.start_ms // HOUR + 2
    assert all(a.hour_rate(hour) < a.hour_rate(hour + 24 * 20) for a in accts
               if a.created_ms > sc.start_ms - 3 * 24 * HOUR)


def test_hydra_stealth_paraphrases_home_prefixes_ramp_mimicry(smoke):
    sim, events, labels = smoke
    ev = _by_group(events, labels, "hydra_stealth")
    d_ev = _library_distances(sim, events, labels, "hydra_stealth")
    assert sum(4 <= d <= 10 for d in d_ev) >= 0.7 * len(d_ev)
    residential = {asn for _, _, asns in COUNTRIES.values() for asn in asns}
    assert {e["asn"] for e in ev} <= residential
    assert {e["user_agent"] for e in ev} <= set(UA_MIXES["mimic"])
    home = collections.defaultdict(collections.Counter)
    for e in ev:
        home[e["account_id"]][e["client_ip_prefix"]] += 1
    tops = collections.Counter(c.most_common(1)[0][0] for c in home.values())
    assert tops.most_common(1)[0][1] <= 0.2 * len(home) + 1  # mostly its own /24
    # slow ramp: accounts younger than a week send less than older ones
    sc = sim.scenario
    per = collections.Counter(e["account_id"] for e in ev)
    created = {a.account_id: a.created_ms for a in sim.accounts if a.group == "hydra_stealth"}
    young = [per[a] for a, c in created.items() if sc.start_ms - 7 * 24 * HOUR < c < sc.start_ms]
    old = [per[a] for a, c in created.items() if c < sc.start_ms - 10 * 24 * HOUR]
    assert young and old and statistics.mean(young) < statistics.mean(old)


# --- duplicates --------------------------------------------------------------------------------


def test_duplicate_deliveries_at_configured_rate(smoke):
    sim, events, _ = smoke
    counts = collections.Counter(e["event_id"] for e in events)
    dups = sum(c - 1 for c in counts.values())
    expected = sim.scenario.duplicate_rate * len(counts)
    assert sim.scenario.duplicate_rate > 0  # the contract: a request may be delivered twice
    assert 0.4 * expected <= dups <= 1.8 * expected and dups > 0
    sc = dataclasses.replace(get_scenario("smoke", scale=0.3), duplicate_rate=0.05)
    evs = list(Simulation(sc, 5).events())
    counts = collections.Counter(e["event_id"] for e in evs)
    rate = sum(c - 1 for c in counts.values()) / len(counts)
    assert 0.04 <= rate <= 0.06
    # default delay 0: the copy is delivered right after the original, stream stays sorted
    for prev, cur in zip(evs, evs[1:], strict=False):
        assert prev["ts_ms"] <= cur["ts_ms"]


def test_delayed_duplicates_arrive_later_with_same_content():
    sc = dataclasses.replace(get_scenario("smoke", scale=0.3), duplicate_rate=0.05,
                             duplicate_delay_ms=60_000)
    evs = list(Simulation(sc, 5).events())
    pos = collections.defaultdict(list)
    for i, e in enumerate(evs):
        pos[e["event_id"]].append(i)
    twice = [p for p in pos.values() if len(p) == 2]
    assert len(twice) > 100
    assert all(evs[i] == evs[j] for i, j in twice)
    assert sum(1 for i, j in twice if j - i > 1) > 0.5 * len(twice)


# --- scenarios, streaming, sinks ---------------------------------------------------------------


def test_scenarios_scale_and_override():
    assert set(SCENARIOS) >= {"smoke", "day", "week", "seed-scale"}
    seed = get_scenario("seed-scale")
    assert seed.n_attack() == 25_000 and seed.n_benign >= 250_000 and seed.days == 44
    assert sum(seed.hydra) > 0.8 * seed.n_attack()
    day = get_scenario("day")
    assert 380 <= sum(day.hydra) <= 450 and 2500 <= day.n_benign <= 3500
    half = get_scenario("day", scale=0.5, days=2.0)
    assert half.n_benign == day.n_benign // 2 and half.days == 2.0
    assert sum(half.hydra) == sum(day.hydra) // 2
    assert get_scenario("smoke", scale=0.001).heavy_scraper == 1  # families never vanish
    with pytest.raises(ValueError):
        get_scenario("nope")
    short = Simulation(get_scenario("smoke", scale=0.2, days=0.25), 3)
    evs = list(short.events())
    assert evs and evs[-1]["ts_ms"] < short.scenario.start_ms + 6 * HOUR


def test_starting_a_new_stream_ends_the_previous_one():
    sim = Simulation(get_scenario("smoke", scale=0.2), 2)
    first = sim.events()
    a = [next(first) for _ in range(100)]
    second = sim.events()
    assert [next(second) for _ in range(100)] == a
    with pytest.raises(RuntimeError):
        next(first)


def test_max_events_and_scale_change_counts():
    sim = Simulation(get_scenario("smoke", scale=0.5), 2)
    assert sum(1 for _ in sim.events(1234)) == 1234
    assert len(sim.labels) < len(Simulation("smoke", 2).labels)


def _traced_peak(sim: Simulation, skip: int, n: int) -> int:
    """Peak memory allocated (and still held) while consuming ``n`` events after ``skip``."""
    it = sim.events()
    for _ in range(skip):
        next(it)
    tracemalloc.start()
    try:
        count = sum(1 for _ in itertools.islice(it, n))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    return peak


def test_streaming_memory_is_flat_in_events():
    # live interpreter blocks do not grow with events consumed from `week` (a leak of one
    # object per event would add 50,000)
    sim = Simulation("week", 4)
    it = sim.events()
    sum(1 for _ in itertools.islice(it, 10_000))
    gc.collect()
    before = sys.getallocatedblocks()
    assert sum(1 for _ in itertools.islice(it, 50_000)) == 50_000
    gc.collect()
    assert abs(sys.getallocatedblocks() - before) < 2_000
    # tracemalloc: memory may grow with accounts touched (their arrival state, < 100 B each),
    # never with events; 3k more events leaking 25 B each would add 75 kB
    small_sim = Simulation(get_scenario("week", scale=0.05), 4)
    small = _traced_peak(small_sim, 3_000, 1_000)
    large = _traced_peak(small_sim, 3_000, 4_000)
    assert large < small + 75 * 1024
    assert large < 512 * 1024


def test_write_and_read_jsonl_plain_and_gzip(tmp_path):
    events, labels = generate(get_scenario("smoke", scale=0.2), 9, max_events=3000)
    events = list(events)
    for name in ("e.jsonl", "e.jsonl.gz"):
        assert write_events(iter(events), tmp_path / name) == len(events)
        assert list(read_jsonl(tmp_path / name)) == events
    with gzip.open(tmp_path / "e.jsonl.gz", "rb") as f:
        assert f.readline().startswith(b'{"schema_version":1,')
    assert write_labels(labels, tmp_path / "l.jsonl") == len(labels)
    assert list(read_jsonl(tmp_path / "l.jsonl")) == labels


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    sim_cli.add_arguments(p)
    return p


def test_cli_writes_events_and_labels(tmp_path, capsys):
    out, lab = tmp_path / "ev.jsonl.gz", tmp_path / "lab.jsonl"
    args = _parser().parse_args(["--scenario", "smoke", "--seed", "3", "--scale", "0.2",
                                 "--days", "0.5", "--output", str(out), "--labels", str(lab),
                                 "--start", "2026-05-01T00:00:00Z"])
    assert sim_cli.run(args) == 0
    events = list(read_jsonl(out))
    labels = list(read_jsonl(lab))
    start = sim_cli.parse_time_ms("2026-05-01")
    assert events and all(start <= e["ts_ms"] < start + 12 * HOUR for e in events)
    assert {e["account_id"] for e in events} <= {x["account_id"] for x in labels}
    assert "events=" in capsys.readouterr().err
    bad = _parser().parse_args(["--output", str(out), "--labels", str(lab), "--days", "0"])
    assert sim_cli.run(bad) == 2
    with pytest.raises(SystemExit):
        _parser().parse_args(["--output", "a", "--topic", "t", "--labels", "l"])
