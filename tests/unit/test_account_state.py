"""The compact per-account state of the account stage (consumers/core/features.py): the dedup
ring, keys as ints, and changelog values of this and of earlier versions."""

from __future__ import annotations

import random

import pytest

from consumers.core.features import AccountState, digest8
from consumers.core.prompt_keys import (
    paraphrase_key_ints,
    paraphrase_key_name,
    paraphrase_keys,
    prompt_key_ints,
    prompt_key_name,
    prompt_keys,
)
from consumers.core.prompt_memory import KeySet, PromptMemory


def test_dedup_ring_remembers_exactly_the_last_window_ids() -> None:
    st = AccountState.new(None, 0, 0)
    for i in range(100):
        st.remember_event(digest8(f"e{i}"), 64)
    assert len(st.recent_ids) == 64 * 8
    assert all(st.seen_event(digest8(f"e{i}")) for i in range(36, 100))
    assert not any(st.seen_event(digest8(f"e{i}")) for i in range(36))


def test_a_digest_found_across_two_entries_is_not_a_match() -> None:
    st = AccountState.new(None, 0, 0)
    a, b = digest8("a"), digest8("b")
    st.remember_event(a, 4)
    st.remember_event(b, 4)
    straddling = a[4:] + b[:4]  # present in the bytes, but not as an entry
    assert not st.seen_event(straddling)
    assert st.seen_event(a) and st.seen_event(b)


def test_key_ints_name_the_announced_fingerprints() -> None:
    h = "91b7584a2265b1f5"
    assert [prompt_key_name(k) for k in prompt_key_ints(h)] == prompt_keys(h)
    assert prompt_keys(h)[1] == "p1:91b72265"
    assert [paraphrase_key_name(k) for k in paraphrase_key_ints(h, 1)] == paraphrase_keys(h, 1)
    assert paraphrase_keys(h, 1)[0] == "q012:91b758"


def test_changelog_round_trip() -> None:
    st = AccountState.new("org", 1, 2)
    st.remember_event(digest8("x"), 64)
    keys = prompt_key_ints("91b7584a2265b1f5")
    st.prompts.use(keys, 3)
    st.para = KeySet()
    st.para.add(paraphrase_key_ints("91b7584a2265b1f5", 1)[0])
    back = AccountState.from_list(st.to_list())
    assert back.to_list() == st.to_list()
    assert back.seen_event(digest8("x"))
    assert back.prompts.use(keys, 4)[2]  # remembered: a reuse


def test_changelog_of_an_earlier_version_restores() -> None:
    # before the compact state: event ids as strings, prompt keys as {name: request} (< 0:
    # announced) in the order of first use, paraphrase keys as names
    st = AccountState.new("org", 1, 2)
    old = st.to_list()
    old[17] = ["e1", "e2"]
    old[18] = {"p0:91b7584a": -3, "p5:2265b1f5": 4}
    old[30] = ["q012:91b758"]
    back = AccountState.from_list(old)
    assert back.seen_event(digest8("e1")) and back.seen_event(digest8("e2"))
    keys = prompt_key_ints("91b7584a2265b1f5")
    assert back.prompts.to_list() == [keys[0], -3, keys[5], 4]
    assert back.para is not None and paraphrase_key_ints("91b7584a2265b1f5", 1)[0] in back.para


def test_changelog_with_client_prefixes_and_fingerprints_as_strings_restores() -> None:
    # before they were digest8s: the strings themselves (and model names a dict)
    st = AccountState.new("org", 1, 2)
    old = st.to_list()
    old[14] = ["203.0.113.0/24", "198.51.100.0/24"]
    old[19] = ["ip:203.0.113.0/24", "pay:c1", "ua:curl/8"]
    old[16] = {"m1": 5, "m2": 9}  # model names with their first use: the names are kept
    back = AccountState.from_list(old)
    assert back.models == ("m1", "m2")
    assert back.n_ips() == 2 and back.add_ip("203.0.113.0/24", 64) == 0 and back.add_ip("192.0.2.0/24", 64) == 3
    assert back.n_fingerprints() == 3 and len(back.fps) == 16  # the ip: one is counted, not remembered
    assert back.has_fingerprint("pay:c1") and back.has_fingerprint("ua:curl/8") and not back.has_fingerprint("pay:c2")
    again = AccountState.from_list(back.to_list())  # and in today's form
    assert again.to_list() == back.to_list() and again.has_fingerprint("pay:c1") and again.n_fingerprints() == 3


def _per_key(events: list[tuple[str, int]], cap: int, mask: int = 0xF, template: bool = True
             ) -> list[tuple[int, str, int]]:
    """A plain per-key dict, as the account stage kept before PromptMemory: what it announces.
    With ``template``, every key a prompt announces carries the earliest first use among the keys
    it shares with the account's earlier prompts (its template's); without, its own key's."""
    pk: dict[int, int] = {}
    out = []
    for h, n in events:
        keys = prompt_key_ints(h)
        seen = [abs(pk[k]) for k in keys if k in pk]
        first = min(seen) if template and seen else n
        for k in keys:
            s = pk.get(k)
            if s is None:
                if not k & mask:
                    pk[k] = -first
                    out.append((n, prompt_key_name(k), first))
                else:
                    pk[k] = first
            elif s > 0:
                pk[k] = -s
                out.append((n, prompt_key_name(k), first if template else s))
        if len(pk) > cap:
            items = list(pk.items())
            pk = dict(items[len(items) - cap // 2:])
    return out


def _compact(events: list[tuple[str, int]], cap: int, mask: int = 0xF) -> list[tuple[int, str, int]]:
    """The same with PromptMemory.use, as the account stage calls it."""
    pm = PromptMemory(cap)
    out = []
    for h, n in events:
        announce, first, _ = pm.use(prompt_key_ints(h), n, mask)
        out += [(n, prompt_key_name(k), first) for k in announce]
        assert len(pm) <= cap
    return out


def _library_events(seed: int, flips: tuple[int, ...] = (0, 0, 1, 2, 8), fresh: float = 0.3,
                    templates: int = 60) -> tuple[list[int], list[tuple[str, int]]]:
    rng = random.Random(seed)
    library = [rng.getrandbits(64) for _ in range(templates)]
    events = []
    for n in range(1, 1500):
        h = rng.choice(library)
        for _ in range(rng.choice(flips)):  # the same prompt, a near-duplicate, a paraphrase
            h ^= 1 << rng.randrange(64)
        if rng.random() < fresh:
            h = rng.getrandbits(64)
        events.append((f"{h:016x}", n))
    return library, events


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("mask", [0xF, 0x3])
def test_prompt_memory_announces_what_a_per_key_dict_does(seed: int, mask: int) -> None:
    _, events = _library_events(seed)
    want = _per_key(events, 64, mask)
    assert len(want) > 100 and any(first != n for n, _, first in want)  # reuse happened
    assert _compact(events, 64, mask) == want
    # the same keys at the same requests as without template counting: only the first uses differ
    before = _per_key(events, 64, mask, template=False)
    assert [(n, k) for n, k, _ in want] == [(n, k) for n, k, _ in before]


def test_prompt_memory_counts_templates_not_near_duplicate_uses() -> None:
    # a cohort member resending its 5 starter prompts 80 times, each within 2 bits of its starter:
    # announcements name a handful of first uses (two uses 4 bits apart may share no key, so a
    # starter can start two chains), where per-key first uses named one per resend
    for seed in range(5):
        library, events = _library_events(seed, flips=(1, 2), fresh=0.0, templates=5)
        events = events[:80]
        assert len({first for _, _, first in _compact(events, 512, 0x3)}) <= 2 * len(library)
        assert len({first for _, _, first in _per_key(events, 512, 0x3, template=False)}) > 4 * len(library)


def test_key_set_forgets_the_older_half_past_capacity() -> None:
    ks = KeySet(capacity=8)
    for k in range(9):
        assert ks.add(k << 24 | 5)
    assert not ks.add(3 << 24 | 5)
    ks.trim()
    assert len(ks) == 4 and [k in ks for k in (4 << 24 | 5, 5 << 24 | 5)] == [False, True]


# --- frozen accounts (AccountProcessor, freeze_after_ms) --------------------------------------------

def _requests(acct: str, times_h: list[float], first_id: int = 0) -> list:
    import orjson

    from consumers.core.stage import Record
    from tests.eventgen import T0, valid_event
    return [Record("requests", acct.encode(), orjson.dumps(valid_event(
        event_id=f"{acct}-{first_id + i}", account_id=acct, ts_ms=T0 + int(h * 3_600_000),
        account_created_ms=T0 - 86_400_000, prompt_simhash=f"{(first_id + i) * 0x9E3779B97F4A7C15 % 2**64:016x}")),
        offset=first_id + i) for i, h in enumerate(times_h)]


def test_an_idle_account_freezes_small_and_thaws_on_its_next_request() -> None:
    from consumers.core.account_stage import AccountProcessor
    from consumers.core.config import HOUR_MS, DetectorConfig

    ap = AccountProcessor(DetectorConfig(freeze_after_ms=6 * HOUR_MS))
    ap.process(_requests("idle", [0.0, 0.1, 0.2, 0.3]))
    ap.process(_requests("busy", [h / 2 for h in range(1, 30)], 100))  # 14.5 hours of activity
    st = ap.accounts["idle"]
    assert isinstance(st, bytes) and len(st) < 320  # compressed (~540 bytes as JSON)
    assert isinstance(ap.accounts["busy"], AccountState)
    assert ap.state_size() == {"accounts": 2, "frozen": 1}
    # its changelog entry is the frozen value
    assert (b"a:idle", st) in ap.take_changes()
    ap.process(_requests("idle", [15.0], 4))
    back = ap.accounts["idle"]
    assert isinstance(back, AccountState) and back.n == 5
    assert ap.counters["frozen"] == 1 and ap.counters["thawed"] == 1


def test_a_frozen_value_written_before_compression_restores_and_thaws() -> None:
    # changelogs written before frozen values were compressed hold them as plain JSON
    import zlib

    import orjson

    from consumers.core import features
    from consumers.core.account_stage import AccountProcessor
    from consumers.core.config import HOUR_MS, DetectorConfig

    cfg = DetectorConfig(freeze_after_ms=6 * HOUR_MS)
    ap = AccountProcessor(cfg)
    ap.process(_requests("idle", [0.0, 0.1, 0.2, 0.3]))
    ap.process(_requests("busy", [h / 2 for h in range(1, 30)], 100))
    changes = dict(ap.take_changes())
    blob = changes[b"a:idle"]
    plain = orjson.dumps(AccountState.load_value(blob))
    assert plain[:1] == b"[" and blob[:1] == b"\x02" and len(blob) < len(plain)
    # mark 1: a zlib stream with the first preset dictionary (before prefixes were digests)
    c = zlib.compressobj(6, zdict=features._FROZEN_ZDICT)
    mark1 = b"\x01" + c.compress(plain) + c.flush()
    thawed = []
    for value in (blob, plain, mark1):
        restored = AccountProcessor(cfg)
        restored.restore([(k, v) for k, v in changes.items() if k != b"a:idle"] + [(b"a:idle", value)])
        assert restored.accounts["idle"] == value  # kept frozen, as written
        restored.process(_requests("idle", [15.0], 4))
        st = restored.accounts["idle"]
        assert isinstance(st, AccountState) and st.n == 5
        thawed.append(st.to_list())
    assert thawed[0] == thawed[1] == thawed[2]


def test_freezing_can_be_turned_off() -> None:
    from consumers.core.account_stage import AccountProcessor
    from consumers.core.config import DetectorConfig

    ap = AccountProcessor(DetectorConfig(freeze_after_ms=0))
    ap.process(_requests("idle", [0.0, 0.1]))
    ap.process(_requests("busy", [h for h in range(1, 60)], 100))
    assert isinstance(ap.accounts["idle"], AccountState)
    assert ap.counters["frozen"] == 0
