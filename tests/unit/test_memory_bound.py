"""Bounded memory: a flood of a million distinct accounts (an attacker creating accounts, or ids
churned on purpose; fresh, so each also keeps paraphrase keys) or a million distinct fingerprints
keeps each stage's state under its configured cap, is reported in the stage's counters, and never
crashes the detector.

Memory is measured as live allocated blocks (``sys.getallocatedblocks``: what the stage holds,
unaffected by allocator fragmentation from earlier tests): once the caps are reached it must stay
flat while the flood goes on."""

from __future__ import annotations

import gc
import sys

from consumers.core.account_stage import AccountProcessor
from consumers.core.campaign_stage import CampaignProcessor
from consumers.core.config import DetectorConfig
from consumers.core.messages import FingerprintSeen
from consumers.core.stage import Record

N = 1_000_000
CAP = 20_000
T0 = 1_776_816_000_000

_TEMPLATE = (
    '{{"schema_version":1,"event_id":"e{i}","ts_ms":{ts},"account_id":"flood-{i}","org_id":null,'
    '"api_key_id":null,"account_created_ms":{created},"account_tier":"free","model":"m","input_tokens":10,'
    '"output_tokens":20,"latency_ms":5,"status":200,"client_ip_prefix":"10.0.0.0/24","asn":1,'
    '"country":"US","user_agent":"ua","payment_fingerprint":null,"prompt_simhash":"0123456789abcdef",'
    '"task_category":"coding","reasoning_elicitation":0.5,"tool_use":false,"n_turns":1}}'
)


def live_blocks() -> int:
    gc.collect()
    return sys.getallocatedblocks()


def test_a_million_distinct_accounts_stay_under_the_cap() -> None:
    proc = AccountProcessor(DetectorConfig(max_accounts_per_partition=CAP))
    chunk = 50_000
    warm = 0
    for start in range(0, N, chunk):
        recs = [Record("requests", None, _TEMPLATE.format(i=i, ts=T0 + i, created=T0 - 86_400_000).encode(), 0, i)
                for i in range(start, start + chunk)]
        proc.process(recs)
        proc.take_changes()  # as the runner does at every checkpoint
        assert len(proc.accounts) <= CAP
        if start == 2 * chunk:
            warm = live_blocks()
    grown = live_blocks() - warm
    assert proc.counters["events"] == N
    assert proc.counters["evicted_cap"] + proc.counters["evicted_ttl"] >= N - CAP  # reported
    assert grown < warm * 0.10, f"live blocks grew by {grown:,} (from {warm:,}) after the cap was reached"


def test_a_million_distinct_fingerprints_stay_under_the_cap() -> None:
    proc = CampaignProcessor(DetectorConfig(max_fingerprints_per_partition=CAP, max_accounts_per_partition=CAP))
    chunk = 50_000
    warm = 0
    for start in range(0, N, chunk):
        recs = [Record("observations", None, FingerprintSeen(
            f"ip:10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32", f"flood-{i % 300_000}", None, T0 + i, T0 + i).encode(),
            0, i) for i in range(start, start + chunk)]
        proc.process(recs)
        proc.take_changes()
        assert len(proc.groups) + len(proc.singles) <= CAP
        assert len(proc.accounts) <= CAP
        if start == 2 * chunk:
            warm = live_blocks()
    grown = live_blocks() - warm
    assert proc.counters["observations"] == N
    assert proc.counters["groups_evicted"] >= N - CAP  # reported
    assert grown < warm * 0.10, f"live blocks grew by {grown:,} (from {warm:,}) after the cap was reached"


def test_past_the_cap_singles_are_forgotten_before_groups() -> None:
    # a fingerprint two accounts showed (a group: evidence) outlives a flood of fingerprints one
    # account each showed, though it is the least recently observed; singles go first
    cap = 100
    proc = CampaignProcessor(DetectorConfig(max_fingerprints_per_partition=cap))

    def seen(fp: str, acct: str, ts: int) -> Record:
        return Record("observations", None, FingerprintSeen(fp, acct, None, ts, ts).encode(), 0, ts)

    proc.process([seen("pay:shared", "a", T0), seen("pay:shared", "b", T0 + 1)])
    proc.process([seen(f"p0:{i:08x}", f"x{i}", T0 + 10 + i) for i in range(5 * cap)])
    assert "pay:shared" in proc.groups
    assert len(proc.groups) + len(proc.singles) <= cap
    assert f"p0:{5 * cap - 1:08x}" in proc.singles and "p0:00000000" not in proc.singles
