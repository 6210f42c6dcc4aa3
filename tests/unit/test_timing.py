"""Synchronised timing (``consumers/core/timing.py``) and its path through the three stages:
slot windows, MinHash band keys, their announcement once per epoch, their counting in the
campaign stage (support only) and the policy (never alone)."""

from __future__ import annotations

import random

import orjson
import pytest

from consumers.core.account_stage import AccountProcessor
from consumers.core.campaign_stage import CampaignProcessor
from consumers.core.config import HOUR_MS, DetectorConfig
from consumers.core.features import AccountState
from consumers.core.messages import Link
from consumers.core.policy import PolicyProcessor, combine
from consumers.core.stage import Record
from consumers.core.timing import SlotSketch, window_from_json, window_to_json
from tests.eventgen import valid_event
from tests.unit.test_core_stages import latest_links, obs

T0 = 1_776_816_000_000  # a multiple of 6 h


def _sketch(**kw: object) -> SlotSketch:
    p: dict[str, object] = dict(slot_ms=HOUR_MS, window_slots=48, epoch_ms=6 * HOUR_MS, bands=8, rows=5,
                                min_slots=4, max_density=0.5, seed=42)
    p.update(kw)
    return SlotSketch(**p)  # type: ignore[arg-type]


def _window(sk: SlotSketch, hours: list[int], rng: random.Random | None = None) -> int:
    win = 0
    for h in hours:
        win = sk.mark(win, T0 + h * HOUR_MS + (rng.randrange(HOUR_MS) if rng else 0))
    return win


def test_slot_window_marks_slides_and_ignores_what_left_it() -> None:
    sk = _sketch(window_slots=8)
    win = _window(sk, [0, 3])
    assert win and sk.active(win, T0 + 4 * HOUR_MS) == 2
    win = sk.mark(win, T0 + 1 * HOUR_MS)             # late, within the window
    assert sk.active(win, T0 + 4 * HOUR_MS) == 3
    win = sk.mark(win, T0 + 10 * HOUR_MS)            # slides: hours 0, 1 leave an 8-slot window
    assert sk.active(win, T0 + 11 * HOUR_MS) == 2
    assert sk.mark(win, T0) == win                   # older than the window: ignored
    assert win & 255 == 0b10000001 and sk.newest(win) == T0 // HOUR_MS + 10   # hours 10 and 3; no bit past 8
    # a window ending before the newest slot leaves that slot out
    assert sk.active(win, T0 + 10 * HOUR_MS) == 1


def test_same_schedule_shares_keys_and_unrelated_rhythms_rarely_do() -> None:
    sk = _sketch()
    rng = random.Random(1)
    end = T0 + 48 * HOUR_MS
    schedule = [h for d in (0, 24) for h in (d + 2, d + 7, d + 13, d + 19, d + 22)]
    a, b = _window(sk, schedule, rng), _window(sk, schedule, rng)
    assert sk.keys(a, end) == sk.keys(b, end) and len(sk.keys(a, end)) == 8
    # two accounts that each keep their own random 8 hours a day share a key rarely
    shared = 0
    for _ in range(200):
        x = _window(sk, [d + h for d in (0, 24) for h in rng.sample(range(24), 8)], rng)
        y = _window(sk, [d + h for d in (0, 24) for h in rng.sample(range(24), 8)], rng)
        shared += bool(set(sk.keys(x, end)) & set(sk.keys(y, end)))
    assert shared <= 10  # J ~ 0.2: 1 - (1 - 0.2**5)**8 = 0.26% per pair; allow noise


def test_band_collisions_follow_j_to_the_rows() -> None:
    """P(a band shared) = J ** rows: measured over random pairs of sets of a known Jaccard."""
    sk = _sketch(bands=64, rows=2, min_slots=1, max_density=1.0)
    rng = random.Random(7)
    end = T0 + 48 * HOUR_MS
    hits = total = 0
    for _ in range(40):
        common = rng.sample(range(48), 12)
        rest = [h for h in range(48) if h not in common]
        own = rng.sample(rest, 12)
        a = _window(sk, common + own[:6])
        b = _window(sk, common + own[6:])                # J = 12 / 24 = 0.5
        ka, kb = sk.keys(a, end), sk.keys(b, end)
        hits += sum(x == y for x, y in zip(ka, kb, strict=True))
        total += len(ka)
    assert abs(hits / total - 0.25) < 0.06


@pytest.mark.parametrize("hours, why", [([0, 1, 2], "too few slots"), (list(range(40)), "round the clock")])
def test_no_key_for_too_few_or_too_many_slots(hours: list[int], why: str) -> None:
    sk = _sketch()
    assert sk.keys(_window(sk, hours), T0 + 48 * HOUR_MS) == [], why


def test_busy_hours_make_no_key_quiet_coincidences_do() -> None:
    """Per-key background: 300 day-time accounts share keys by chance (the same busy hours), so
    :meth:`SlotSketch.epoch_keys` drops them; a schedule in hours few accounts use survives."""
    sk = _sketch(max_chance=1e-4)
    rng = random.Random(11)
    end = T0 + 48 * HOUR_MS
    windows: list[tuple[str, int, int | None]] = []
    for i in range(300):   # office hours 8-18, each person 6 of them a day
        windows.append((f"h{i}", _window(sk, [d + h for d in (0, 24) for h in rng.sample(range(8, 18), 6)], rng), None))
    quiet = [d + h for d in (0, 24) for h in (1, 3, 5, 21, 23)]
    for i in range(6):
        windows.append((f"c{i}", _window(sk, quiet, rng), None))
    every = dict((a, k) for a, k in _sketch().epoch_keys(windows, end))
    rare = dict(sk.epoch_keys(windows, end))
    assert all(f"h{i}" in every for i in range(300))                       # without the test: all keyed
    assert sum(len(rare.get(f"h{i}", [])) for i in range(300)) <= 0.02 * 300 * sk.bands
    assert all(rare[f"c{i}"] == every[f"c{i}"] for i in range(6))            # the quiet schedule keeps all
    # and without it, office hours collide: many day-time keys are shared by several accounts
    from collections import Counter
    shared = Counter(k for i in range(300) for k in every[f"h{i}"])
    assert sum(1 for c in shared.values() if c >= 4) >= 20


def test_keys_depend_on_epoch_and_seed() -> None:
    sk = _sketch()
    win = _window(sk, [1, 5, 9, 13, 30, 33])
    k1, k2 = sk.keys(win, T0 + 36 * HOUR_MS), sk.keys(win, T0 + 42 * HOUR_MS)
    assert k1 and k2 and not set(k1) & set(k2)       # one epoch's keys never meet another's
    assert sk.keys(win, T0 + 36 * HOUR_MS) == k1     # deterministic
    assert _sketch(seed=43).keys(win, T0 + 36 * HOUR_MS) != k1


def test_window_survives_the_changelog() -> None:
    for win in [0, 12 << 48 | 0b1011, (1 << 140) | 1]:
        assert window_from_json(orjson.loads(orjson.dumps(window_to_json(win)))) == win
    st = AccountState.new(None, 0, 0)
    st.slots = _window(_sketch(), [0, 3, 7])
    assert AccountState.from_list(orjson.loads(orjson.dumps(st.to_list()))).slots == st.slots
    # a state written before timing existed has no window
    assert AccountState.from_list(st.to_list()[:33]).slots == 0


# --- account stage: announced once per epoch, not per request ----------------------------------------

def _requests(accounts: list[str], hours: list[int], per_hour: int = 2) -> list[Record]:
    rng = random.Random(3)
    evs = []
    for acct in accounts:
        for h in hours:
            for _ in range(per_hour):
                evs.append(valid_event(event_id=f"{acct}-{len(evs)}", account_id=acct, org_id=None,
                                       payment_fingerprint=None, account_created_ms=T0 - 400 * 86_400_000,
                                       ts_ms=T0 + h * HOUR_MS + rng.randrange(HOUR_MS),
                                       prompt_simhash=f"{rng.getrandbits(64):016x}"))
    evs.sort(key=lambda e: e["ts_ms"])
    return [Record("llm.requests", e["account_id"].encode(), orjson.dumps(e), offset=i) for i, e in enumerate(evs)]


def _timing_obs(out: list[Record]) -> list[dict[str, object]]:
    return [m for r in out if r.topic == "observations"
            and (m := orjson.loads(r.value))["k"] == "fp" and str(m["f"]).startswith("tim:")]


def test_account_stage_announces_timing_keys_once_per_epoch() -> None:
    cfg = DetectorConfig(timing_max_chance=1.0)  # two accounts: every slot of theirs is "busy"
    ap = AccountProcessor(cfg)
    sched = [2, 7, 13, 19, 22, 26, 31, 37, 43, 46]
    out = ap.process(_requests(["a1", "a2"], sched + [50]))
    tim = _timing_obs(out)
    epochs = sorted({int(str(m["f"]).split(":")[1].split(".")[0]) for m in tim})
    # epochs ending at 24, 30, 36, 42, 48 h: the accounts had >= 4 active hours from 24 h on
    assert epochs == [(T0 + h * HOUR_MS) // cfg.timing_epoch_ms for h in (24, 30, 36, 42, 48)]
    by = {a: [m["f"] for m in tim if m["a"] == a] for a in ("a1", "a2")}
    assert len(by["a1"]) == 5 * cfg.timing_bands and by["a1"] == by["a2"]   # the same schedule
    assert all(m["t"] % cfg.timing_epoch_ms == 0 for m in tim)


def test_timing_restore_equivalence() -> None:
    """Cut anywhere, restore from the changelog, and the same timing keys come out."""
    cfg = DetectorConfig(timing_max_chance=1.0)
    recs = _requests(["a1", "a2", "a3"], [2, 7, 13, 19, 22, 26, 31, 37, 43, 46, 50])
    whole = _timing_obs(AccountProcessor(cfg).process(recs))
    for cut in (1, len(recs) // 3, len(recs) // 2, len(recs) - 1):
        first = AccountProcessor(cfg)
        out = first.process(recs[:cut])
        second = AccountProcessor(cfg)
        second.restore(first.take_changes())
        out += second.process(recs[cut:])
        assert _timing_obs(out) == whole, cut


# --- campaign stage and policy: support only ------------------------------------------------------

def test_timing_keys_never_make_a_campaign_member() -> None:
    cfg = DetectorConfig(link_min_units={"tim": 2, "prompt": 2})
    cp = CampaignProcessor(cfg)
    out: list[Record] = []
    for i in range(8):
        out += cp.process([obs(f"tim:100.{b}.0102030405", f"a{i}", None, T0) for b in range(8)])
    links = latest_links(out)
    assert len(links) == 8
    assert all(set(v["kinds"]) == {"tim"} and v["kinds"]["tim"] >= cfg.timing_min_links and v["cid"] is None
               for v in links.values())


def test_timing_counts_add_up_across_partitions() -> None:
    e = combine({"0": Link("a", None, {"tim": 2}, None, None, 0, 0),
                 "1": Link("a", None, {"tim": 3, "ip": 4}, None, None, 0, 1)})
    assert e.kinds == {"ip": 4, "tim": 5}


def _judge(kinds: dict[str, int], d: int, extraction: float, cid: bool = True) -> str | None:
    """``cid``: the account is a campaign member (40 accounts share its prompts), or alone."""
    cfg = DetectorConfig()
    pp = PolicyProcessor(cfg, "t")
    ev = combine({"0": Link("a", None, kinds, "cmp-x" if cid else None, 40 if cid else None, 0,
                            shared_requests=list(range(d)), requests=200, prompt_keys=kinds.get("prompt", 0),
                            neighbours=list(range(40 if cid else 0)))}, cfg.campaign_neighbours_cap)
    k = dict(ev.kinds)
    if k.get("tim", 0) < cfg.timing_min_links:
        k.pop("tim", None)
    return pp.judge(ev, k, 0.2, extraction, 200, set())[0]


def test_timing_alone_never_flags() -> None:
    assert _judge({"tim": 40}, 0, 0.9) is None
    assert _judge({"tim": 40}, 0, 0.9, cid=False) is None
    assert _judge({"tim": 40, "ip": 30}, 1, 0.9, cid=False) is None


def test_timing_makes_a_little_content_enough_with_some_profile() -> None:
    cfg = DetectorConfig()
    enough = cfg.timing_min_links
    assert _judge({"tim": enough, "prompt": 5}, 6, cfg.timing_support_extraction + 0.05) in ("throttle", "suspend")
    assert _judge({"prompt": 5}, 6, cfg.timing_support_extraction + 0.05) is None          # without timing
    assert _judge({"tim": enough - 1, "prompt": 5}, 6, 0.5) is None                      # a few bands: chance
    assert _judge({"tim": enough, "prompt": 5}, 6, cfg.timing_support_extraction - 0.05) == "review"  # no lean
    assert _judge({"tim": enough, "prompt": 5}, 1, 0.9) is None                          # one prompt is not content
    assert _judge({"tim": enough, "prompt": 5}, 6, 0.9, cid=False) is None               # no campaign: never


def test_timing_and_content_with_a_shared_card_enforce_whatever_the_profile() -> None:
    # content and timing both tie the account to unrelated ones: a card shared with another
    # unit (or a proxy pool, or a card of many) is the third, independent tie — no extraction
    # lean needed (a blended campaign looks honest in behaviour)
    cfg = DetectorConfig()
    enough, x = cfg.timing_min_links, cfg.timing_support_extraction - 0.05
    assert _judge({"tim": enough, "prompt": 5, "pay": cfg.card_pair_units}, 6, x) in ("throttle", "suspend")
    assert _judge({"tim": enough, "prompt": 5, "ip": 4}, 6, x) == "review"               # one client /24: no pool
    assert _judge({"tim": enough, "prompt": 5, "pay": cfg.card_pair_units - 1}, 6, x) == "review"
    assert _judge({"tim": enough - 1, "prompt": 5, "pay": cfg.card_pair_units}, 6, x) == "review"  # no timing
    assert _judge({"tim": enough, "prompt": 5, "pay": cfg.card_pair_units}, 1, x) is None          # no content
