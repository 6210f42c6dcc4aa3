"""Paraphrase-tolerant prompt evidence and the campaign rules built on it (pure core, no broker).

Paraphrase keys (3 of a SimHash's 8 bytes) survive the bit flips of a paraphrase but collide by
chance at scale, so the campaign stage counts them only in numbers (``para_min_links``) and as a
share of what the account announced (``para_min_share``), and a single one never merges two
established campaigns.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from consumers.core.account_stage import AccountProcessor
from consumers.core.campaign_stage import CampaignProcessor, kind_of
from consumers.core.config import DAY_MS, DetectorConfig
from consumers.core.messages import Behaviour, FingerprintSeen, Link, decode
from consumers.core.policy import PolicyProcessor, combine, counted_kinds
from consumers.core.prompt_keys import paraphrase_keys, prompt_keys
from consumers.core.stage import Record
from tests.eventgen import valid_event
from tests.unit.test_core_stages import latest_links, obs


def _flip(h: int, k: int, rng: random.Random) -> int:
    for bit in rng.sample(range(64), k):
        h ^= 1 << bit
    return h


def _hex(h: int) -> str:
    return f"{h:016x}"


# --- the keys ------------------------------------------------------------------------------------

def test_paraphrase_keys_survive_paraphrases_where_exact_keys_do_not() -> None:
    rng = random.Random(7)
    kept_para = kept_exact = 0
    for _ in range(300):
        template = rng.getrandbits(64)
        t_para = set(paraphrase_keys(_hex(template), 1))
        t_exact = set(prompt_keys(_hex(template)))
        p = _hex(_flip(template, 6, rng))   # a paraphrase: 6 bits away
        kept_para += bool(t_para & set(paraphrase_keys(p, 1)))
        kept_exact += bool(t_exact & set(prompt_keys(p)))
    assert kept_para >= 0.9 * 300       # 3 of 8 bytes untouched by 6 flips: mostly
    assert kept_exact <= 0.25 * 300     # 2 whole 16-bit blocks untouched: rarely


def test_paraphrase_keys_sampling_is_consistent_and_about_one_in_sample() -> None:
    rng = random.Random(3)
    hashes = [_hex(rng.getrandbits(64)) for _ in range(4000)]
    for sample in (4, 16, 64):
        n = sum(len(paraphrase_keys(h, sample)) for h in hashes) / len(hashes)
        assert 56 / sample * 0.8 <= n <= 56 / sample * 1.2, (sample, n)
    # a key is kept or dropped whatever the rest of the hash: two hashes that share bytes 0-2
    # both keep or both drop the key made of them
    for _ in range(500):
        a = rng.getrandbits(64)
        b = (a & (0xFFFFFF << 40)) | rng.getrandbits(40)
        ka = [k for k in paraphrase_keys(_hex(a), 16) if k.startswith("q012:")]
        kb = [k for k in paraphrase_keys(_hex(b), 16) if k.startswith("q012:")]
        assert ka == kb
    assert kind_of("q012:abcdef") == "para" and kind_of("p0:01234567") == "prompt" and kind_of("pay:x") == "pay"


def test_unrelated_prompts_rarely_share_a_paraphrase_key() -> None:
    rng = random.Random(11)
    seen: set[str] = set()
    collisions = 0
    for _ in range(20_000):
        ks = paraphrase_keys(_hex(rng.getrandbits(64)), 16)
        collisions += any(k in seen for k in ks)
        seen.update(ks)
    # ~70k keys over 56 x 2**24 values: a handful of chance collisions, not more
    assert collisions < 40


# --- the account stage: who announces them --------------------------------------------------------

def _announced(cfg: DetectorConfig, age_days: float, n: int = 40) -> list[str]:
    ap = AccountProcessor(cfg)
    t0 = 1_776_816_000_000
    rng = random.Random(5)
    recs = []
    for i in range(n):
        ev = valid_event(event_id=f"e{i}", ts_ms=t0 + i * 60_000, account_id="a1",
                         account_created_ms=t0 - int(age_days * DAY_MS),
                         prompt_simhash=_hex(rng.getrandbits(64)))
        recs.append(Record("llm.requests", b"a1", orjson.dumps(ev), offset=i))
    return [m.fingerprint for r in ap.process(recs) if r.topic == "observations"
            and isinstance(m := decode(r.value), FingerprintSeen)]


def test_every_account_announces_paraphrase_keys_each_once() -> None:
    """Aged and bought accounts run campaigns too: by default every account announces them."""
    cfg = DetectorConfig()
    fresh = [f for f in _announced(cfg, age_days=2) if f.startswith("q")]
    old = [f for f in _announced(cfg, age_days=400) if f.startswith("q")]
    assert len(fresh) >= 40 and len(fresh) == len(set(fresh))
    assert len(old) >= 40 and len(old) == len(set(old))
    # an age limit is still configuration
    assert [f for f in _announced(DetectorConfig(para_max_age_days=1.0), age_days=2) if f.startswith("q")] == []


# --- the campaign stage ---------------------------------------------------------------------------

SMALL = dict(link_min_units={"prompt": 2, "para": 3, "ip": 2, "pay": 2, "ua": 2, "wave": 2},
             campaign_min_size=3, para_min_links=3, campaign_min_templates=5)


def _para_campaign(cp: CampaignProcessor, accounts: list[str], keys: list[str], t: int) -> list[Record]:
    out: list[Record] = []
    for a in accounts:
        out += cp.process([obs(k, a, None, t) for k in keys])
        t += 10
    return out


@pytest.mark.parametrize("n_keys", [2, 3, 5])
def test_paraphrase_evidence_counts_only_in_numbers(n_keys: int) -> None:
    cp = CampaignProcessor(DetectorConfig(**SMALL))
    accts = [f"c{i}" for i in range(6)]
    keys = [f"q012:00000{i}" for i in range(n_keys)]
    # each account also shares a card with one other: a second kind of evidence
    out: list[Record] = []
    for i, a in enumerate(accts):
        out += cp.process([obs(f"pay:card{i // 2}", a, None, 100 + i)])
    out += _para_campaign(cp, accts, keys, 1_000)
    last = latest_links(out)
    assert all(last[a]["kinds"].get("para") == n_keys for a in accts)  # reported: the policy adds them up
    assert all(last[a]["pa"] == n_keys for a in accts)                  # ... and the keys each announced
    if n_keys < 3:   # one or two 24-bit keys in common can be chance: not a kind, no campaign
        assert all(last[a]["cid"] is None for a in accts)
    else:
        assert all(last[a]["kinds"].get("para") == n_keys for a in accts)
        assert len({last[a]["cid"] for a in accts}) == 1 and last[accts[0]]["cid"] is not None
        assert max(last[a]["size"] for a in accts) == len(accts)


def test_paraphrase_links_alone_make_a_campaign_from_campaign_min_templates() -> None:
    for n_keys, expect in ((4, False), (5, True)):
        cp = CampaignProcessor(DetectorConfig(**SMALL))
        accts = [f"c{i}" for i in range(5)]
        last = latest_links(_para_campaign(cp, accts, [f"q123:0000{i:02x}" for i in range(n_keys)], 1_000))
        assert all((last[a]["cid"] is not None) is expect for a in accts), (n_keys, last)


def test_chance_collisions_of_a_heavy_account_are_not_evidence() -> None:
    """A heavy honest account announces thousands of paraphrase keys; the few that collide with a
    campaign's are under ``para_min_share`` of them, so they do not count."""
    cfg = DetectorConfig(**SMALL)
    cp = CampaignProcessor(cfg)
    keys = [f"q012:0000{i:02x}" for i in range(6)]
    out = _para_campaign(cp, [f"c{i}" for i in range(5)], keys, 1_000)
    heavy = [obs(f"q567:{i:06x}", "heavy", None, 2_000) for i in range(1_000)]
    out += cp.process(heavy + [obs(k, "heavy", None, 3_000) for k in keys[:4]])
    last = latest_links(out)
    # the campaign stage reports the counts (the policy adds them up over partitions and tests
    # the share there) and does not make the heavy account a campaign member
    assert last["heavy"]["kinds"]["para"] == 4 and last["heavy"]["pa"] == 1_004 and last["heavy"]["cid"] is None
    assert not _para_counts(cfg, last["heavy"])
    # control: the same four links from a light account count
    out += cp.process([obs(k, "light", None, 4_000) for k in keys[:4]])
    light = latest_links(out)["light"]
    assert light["kinds"].get("para") == 4 and light["pa"] == 4 and _para_counts(cfg, light)


def _para_counts(cfg: DetectorConfig, link: dict[str, Any]) -> bool:
    """Whether the policy counts the paraphrase keys of one partition's verdict as evidence."""
    return "para" in counted_kinds(combine({"0": Link.from_dict(link)}), cfg)


def _two_campaigns(cp: CampaignProcessor) -> tuple[list[Record], list[str], list[str], list[str]]:
    a_keys = [f"q012:aaaa{i:02x}" for i in range(6)]
    b_keys = [f"q012:bbbb{i:02x}" for i in range(6)]
    a = [f"a{i}" for i in range(5)]
    b = [f"b{i}" for i in range(5)]
    out = _para_campaign(cp, a, a_keys, 1_000) + _para_campaign(cp, b, b_keys, 2_000)
    return out, a_keys, b, a


def test_one_chance_paraphrase_link_does_not_merge_established_campaigns() -> None:
    cp = CampaignProcessor(DetectorConfig(**SMALL))
    out, a_keys, b, a = _two_campaigns(cp)
    cid_a, cid_b = latest_links(out)[a[0]]["cid"], latest_links(out)[b[0]]["cid"]
    assert cid_a and cid_b and cid_a != cid_b
    # b's members hit one of a's keys by chance (enough of them for the key to be evidence)
    for m in b:
        out += cp.process([obs(a_keys[0], m, None, 3_000)])
    last = latest_links(out)
    assert {last[m]["cid"] for m in b} == {cid_b} and {last[m]["cid"] for m in a} == {cid_a}


def test_many_shared_paraphrase_links_do_merge_campaigns() -> None:
    cp = CampaignProcessor(DetectorConfig(**SMALL))
    out, a_keys, b, a = _two_campaigns(cp)
    for m in b:
        out += cp.process([obs(k, m, None, 3_000) for k in a_keys])   # as many links as its own
    last = latest_links(out)
    assert len({last[m]["cid"] for m in a + b}) == 1


@pytest.mark.parametrize("rare_client", [True, False])
def test_creation_wave_unites_only_with_a_rare_client(rare_client: bool) -> None:
    """Cards shared in pairs (components of two) from one sign-up wave: the wave unites them
    into one campaign only when their client string is rare (shared, not hot)."""
    hot = {"prompt": 100, "para": 100, "ip": 100, "pay": 100, "ua": 100 if rare_client else 3, "wave": 100}
    cfg = DetectorConfig(**{**SMALL, "campaign_min_size": 5}, hot_units=hot)
    cp = CampaignProcessor(cfg)
    accts = [f"w{i}" for i in range(8)]
    out: list[Record] = []
    for i, a in enumerate(accts):
        out += cp.process([obs("wave:123:bot/1", a, None, 100 + i), obs("ua:bot/1", a, None, 100 + i),
                           obs(f"pay:card{i // 2}", a, None, 100 + i)])
    last = latest_links(out)
    cids = {last[a]["cid"] for a in accts}
    if rare_client:
        assert len(cids) == 1 and None not in cids
    else:
        assert cids == {None}


# --- the policy -----------------------------------------------------------------------------------

def _decide(by_partition: dict[str, dict[str, Any]], codes: list[str], extraction: float,
            cid: str | None = None, size: int | None = None, n: int = 9) -> dict[str, Any] | None:
    """The policy's last flag for one account: a behaviour summary, then one campaign-stage verdict
    per partition (``{"kinds": ..., "sr": [shared-content request numbers], "ipn": shared /24s,
    "nb": accounts sharing its evidence (default: ``size``, or none without a campaign)}``)."""
    pp = PolicyProcessor(DetectorConfig(), "test")
    recs = [Record("verdicts", b"x", Behaviour("x", None, 0.4, [[c, 1] for c in codes], extraction, 10, 1, n).encode())]
    for p, v in by_partition.items():
        nb = v.get("nb", min(size or 0, 32))
        recs.append(Record("verdicts", b"x", Link(
            "x", None, v["kinds"], cid, size, 11, int(p), v.get("sr", []), n, v.get("ipn", 0), v.get("cs", 0),
            v["kinds"].get("prompt", 0), 0, [int(p) * 1000 + i for i in range(nb)]).encode()))
    out = pp.process(recs)
    return orjson.loads(out[-1].value) if out else None


def test_policy_adds_paraphrase_links_across_partitions() -> None:
    codes = ["FRESH_ACCOUNT", "CAPABILITY_CONCENTRATION"]
    # two links on each of two campaign-stage partitions: four in all, above para_min_links; the
    # shared-content requests are the union of both partitions' (1, 2, 3), and a card is shared
    f = _decide({"0": {"kinds": {"para": 2}, "sr": [1, 2]}, "1": {"kinds": {"para": 2, "pay": 3}, "sr": [2, 3]}},
                codes, 0.5)
    assert f is not None and f["action"] == "throttle"
    assert {"code": "PARAPHRASED_PROMPTS", "value": 4,
            "detail": "4 paraphrase-tolerant prompt fingerprints shared with unrelated accounts or organisations"} in f["reasons"]
    # two in all is not evidence: no paraphrase reason
    g = _decide({"0": {"kinds": {"para": 1, "pay": 3}, "sr": [1]}, "1": {"kinds": {"para": 1}, "sr": [2]}}, codes, 0.5)
    assert g is None or all(r["code"] != "PARAPHRASED_PROMPTS" for r in g["reasons"])


@pytest.mark.parametrize(("verdict", "codes", "extraction", "action"), [
    # infrastructure alone never enforces, whatever the account's age or profile
    ({"kinds": {"ip": 4, "pay": 3}, "ipn": 4}, ["CAPABILITY_CONCENTRATION"], 0.6, "review"),
    ({"kinds": {"ip": 4, "pay": 3}, "ipn": 4}, ["FRESH_ACCOUNT", "CAPABILITY_CONCENTRATION"], 0.6, "review"),
    ({"kinds": {"ip": 4, "pay": 3, "ua": 9, "wave": 12}}, ["FRESH_ACCOUNT"], 0.6, "review"),
    # a household: one shared /24 and a card, ordinary behaviour: nothing
    ({"kinds": {"ip": 4, "pay": 2}, "ipn": 1}, [], 0.0, None),
    # content tied by a card or a proxy pool, with an extraction profile: enforced at any age
    ({"kinds": {"ip": 4, "pay": 3, "prompt": 5}, "sr": [1, 2, 3]}, ["CAPABILITY_CONCENTRATION"], 0.45, "enforce"),
    ({"kinds": {"ip": 4, "prompt": 5}, "sr": [1, 2], "ipn": 3}, [], 0.45, "enforce"),
    # ... not with an ordinary profile
    ({"kinds": {"ip": 4, "pay": 3, "prompt": 5}, "sr": [1, 2, 3]}, [], 0.2, "review"),
    # a few shared prompts and nothing else (a cohort's starters): nothing
    ({"kinds": {"prompt": 5, "ip": 9, "wave": 9, "ua": 9}, "sr": [1, 2, 3], "ipn": 1}, ["FRESH_ACCOUNT"], 0.0, None),
    # a broad shared library: enforced with a moderate profile, and with any profile when very broad
    ({"kinds": {"prompt": 30}, "sr": list(range(12))}, [], 0.35, "enforce"),
    ({"kinds": {"prompt": 30}, "sr": list(range(11))}, [], 0.35, None),
    ({"kinds": {"prompt": 30}, "sr": list(range(12))}, [], 0.1, "review"),
    # a little shared content with a card shared with another unit (campaigns pay in pairs)
    ({"kinds": {"prompt": 3, "pay": 2}, "sr": [1, 2, 3]}, [], 0.35, "enforce"),
    ({"kinds": {"prompt": 3}, "sr": [1, 2, 3]}, [], 0.35, None),
    ({"kinds": {"prompt": 3, "pay": 2}, "sr": [1, 2, 3]}, [], 0.1, "review"),
    # a strong campaign (members with a broad library) is a label: it decides nothing
    ({"kinds": {"prompt": 3}, "sr": [1, 2, 3], "cs": 3}, [], 0.35, None),
    # ... and so is the campaign id: too few accounts share the account's evidence
    ({"kinds": {"prompt": 30}, "sr": list(range(20)), "nb": 3}, [], 0.0, None),
    ({"kinds": {"prompt": 30}, "sr": list(range(19))}, [], 0.0, "review"),
    ({"kinds": {"prompt": 30}, "sr": list(range(20))}, [], 0.0, "enforce"),
])
def test_campaign_member_enforced_on_content_not_on_infrastructure(
        verdict: dict[str, Any], codes: list[str], extraction: float, action: str | None) -> None:
    f = _decide({"0": verdict}, codes, extraction, cid="cmp-big", size=1000, n=30)
    got = None if f is None else ("enforce" if f["action"] in ("throttle", "suspend") else f["action"])
    assert got == action, f
    if f is not None:
        assert f["campaign_id"] == "cmp-big"


_XMIN = DetectorConfig().extraction_extreme_min_requests


@pytest.mark.parametrize(("extraction", "n", "enforced"), [(0.85, _XMIN, True), (0.85, _XMIN - 1, False), (0.75, 60, False)])
def test_an_extreme_extraction_profile_makes_a_little_content_enough(extraction: float, n: int, enforced: bool) -> None:
    """Light members of a campaign with no infrastructure in common and no broad library: three
    shared prompts are enough once nearly every request targets capabilities with elicitation —
    a profile measured over extraction_extreme_min_requests requests, not a handful."""
    f = _decide({"0": {"kinds": {"prompt": 3, "para": 4}, "sr": [1, 2, 3]}}, ["CAPABILITY_CONCENTRATION"], extraction,
                cid="cmp-big", size=40, n=n)
    assert (f is not None and f["action"] in ("throttle", "suspend")) == enforced, f


def test_content_must_be_a_share_of_the_account_requests() -> None:
    """A heavy honest user's few chance collisions are no coordination: 3 of 1,000 requests."""
    v = {"kinds": {"ip": 4, "pay": 3, "prompt": 5}, "sr": [1, 2, 3]}
    assert _decide({"0": v}, ["CAPABILITY_CONCENTRATION"], 0.6, cid="cmp-big", size=1000, n=1000)["action"] == "review"
    assert _decide({"0": v}, ["CAPABILITY_CONCENTRATION"], 0.6, cid="cmp-big", size=1000, n=50)["action"] in ("throttle", "suspend")


def test_a_household_behind_one_proxy_exit_is_not_merged_into_the_campaign() -> None:
    """Residential proxies are somebody's home: two people sharing a card, whose /24 a campaign
    also exits from, stay out of the campaign (one client-prefix link is not enough)."""
    cfg = DetectorConfig(**{**SMALL, "link_min_units": {**SMALL["link_min_units"], "ip": 3}})
    cp = CampaignProcessor(cfg)
    out: list[Record] = []
    bots = [f"bot{i}" for i in range(6)]
    for i, b in enumerate(bots):   # a campaign: one card per pair, a pool of proxy prefixes
        out += cp.process([obs(f"pay:bot{i // 2}", b, None, 100 + i)]
                          + [obs(f"ip:10.0.{j}.0/24", b, None, 100 + i) for j in range(4)])
    cid = latest_links(out)[bots[-1]]["cid"]
    assert cid is not None and {latest_links(out)[b]["cid"] for b in bots} == {cid}
    for h in ("home1", "home2"):
        out += cp.process([obs("pay:family", h, None, 500), obs("ip:10.0.0.0/24", h, None, 500)])
    last = latest_links(out)
    assert set(last["home1"]["kinds"]) == {"ip", "pay"} and last["home1"]["cid"] != cid
    # control: an account with two prefixes of the pool is united with the campaign
    out += cp.process([obs("pay:bot9", "bot9", None, 600), obs("pay:bot9", "bot10", None, 600),
                       obs("ip:10.0.1.0/24", "bot9", None, 600), obs("ip:10.0.2.0/24", "bot9", None, 600)])
    assert latest_links(out)["bot9"]["cid"] == cid


@pytest.mark.parametrize(("library", "strong"), [(6, True), (2, False)])
def test_a_campaign_is_strong_when_members_draw_on_a_broad_library(library: int, strong: bool) -> None:
    """Four accounts share a card pool and prompts: with a library of six prompts each (every
    member's shared library is broad), every member hears that its campaign is strong (at least
    campaign_strong_members broad members; verdicts are re-sent up to that count); with the same
    two prompts only (a cohort's starters), none."""
    cfg = DetectorConfig(**{**SMALL, "content_broad_requests": 3, "campaign_strong_members": 2})
    cp = CampaignProcessor(cfg)
    out: list[Record] = []
    accts = [f"a{i}" for i in range(4)]
    t = 100
    for i, a in enumerate(accts):
        recs = [obs(f"pay:card{i // 2}", a, None, t, 1), obs("pay:card0", a, None, t, 1)]
        recs += [obs(f"p0:{k:08x}", a, None, t, k + 1) for k in range(library)]
        out += cp.process(recs)
        t += 10
    last = latest_links(out)
    assert {last[a]["cid"] for a in accts} != {None}
    if strong:
        assert all(last[a]["cs"] >= cfg.campaign_strong_members for a in accts), last
    else:
        assert all(last[a]["cs"] == 0 for a in accts), last
    assert all(len(last[a]["sr"]) == library for a in accts)
