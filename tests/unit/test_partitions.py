"""Decisions do not depend on the partition count (issue: platform teams scale ``detect`` by
partitions). :class:`~consumers.core.pipeline.PartitionedPipeline` routes every stage's records by
key exactly as the producer does; the accounts enforced must be the same at 1, 4 and 16
partitions, and the campaign ids of several campaign-stage partitions must not multiply the flags.
"""

from __future__ import annotations

import random

import orjson
import pytest

from consumers.contract.flags import ENFORCING_ACTIONS
from consumers.core.campaign_stage import CampaignProcessor
from consumers.core.config import DetectorConfig
from consumers.core.messages import Link, decode
from consumers.core.pipeline import LocalPipeline, PartitionedPipeline, partition_for
from consumers.core.policy import combine
from consumers.core.stage import Record
from tests.eventgen import scenario
from tests.unit.test_core_stages import obs

DATASET = scenario(seed=4, n_benign=40, n_org=8, n_hydra=40, scraper=True, days=2)
LINES = DATASET.lines()


def _run(partitions: int) -> list[dict]:
    cfg = DetectorConfig()
    pipe = LocalPipeline(cfg) if partitions == 1 else PartitionedPipeline(cfg, partitions)
    out: list[bytes] = []
    for i in range(0, len(LINES), 2000):
        out += pipe.feed(LINES[i:i + 2000])
    return [orjson.loads(f) for f in out]


def _enforced(flags: list[dict]) -> set[str]:
    last = {f["account_id"]: f["action"] for f in flags}
    return {a for a, action in last.items() if action in ENFORCING_ACTIONS}


ONE = _run(1)


def test_one_partition_finds_the_campaign_and_the_scraper() -> None:
    enforced = _enforced(ONE)
    assert DATASET.accounts("hydra") <= enforced and DATASET.accounts("scraper") <= enforced
    assert not enforced & (DATASET.accounts("benign") | DATASET.accounts("org"))


@pytest.mark.parametrize("partitions", [4, 16])
def test_the_same_accounts_are_enforced_at_any_partition_count(partitions: int) -> None:
    flags = _run(partitions)
    assert _enforced(flags) == _enforced(ONE)
    # the campaign is seen by several campaign-stage partitions under several ids; an account keeps
    # the campaign it was flagged with, so the flags do not multiply
    assert len(flags) <= 1.25 * len(ONE)


def test_records_are_spread_over_the_partitions() -> None:
    """The parity above means something only if accounts really land on different partitions."""
    parts = {partition_for(a.encode(), 16) for a in DATASET.accounts("hydra")}
    assert len(parts) >= 10


def _evidence(partitions: int, observations: list[Record]) -> dict[str, tuple]:
    """What the policy combines about each account when the observations are spread over
    ``partitions`` campaign-stage partitions by fingerprint, as the producer spreads them."""
    cfg = DetectorConfig()
    procs = [CampaignProcessor(cfg, p) for p in range(partitions)]
    latest: dict[str, dict[str, Link]] = {}
    for r in observations:
        p = partition_for(r.key, partitions)
        for v in procs[p].process([r]):
            m = decode(v.value)
            if isinstance(m, Link):
                latest.setdefault(m.account, {})[str(p)] = m
    out = {}
    for acct, links in latest.items():
        e = combine(links, cfg.campaign_neighbours_cap)
        # paraphrase keys: exactly up to campaign_min_templates, then in steps (and the keys
        # announced with them, a snapshot): the share test is approximate across partitions
        # announced with them, a snapshot): the share test is approximate across partitions; of
        # the spans, the policy tests the cards' (shared_card_units), the others name a reason
        kinds = {k: min(v, cfg.campaign_min_templates) if k == "para" else min(v, cfg.shared_card_units)
                 if k == "pay" else 1 for k, v in e.kinds.items()}
        out[acct] = (kinds, e.shared_requests, e.prompt_keys, e.neighbours)
    return out


def test_what_decides_membership_adds_up_to_the_same_at_any_partition_count() -> None:
    """A campaign of light accounts, each drawing a few prompts and paraphrase keys from a library
    and sharing cards in pairs: on one partition its members are one campaign; on several, each
    partition sees a piece. The counts the policy decides on (kinds, shared requests, prompt keys,
    neighbours) must come out the same."""
    rng = random.Random(7)
    library = [f"p{i % 6}:{i:08x}" for i in range(40)] + [f"q012:{i:06x}" for i in range(40)]
    observations: list[Record] = []
    t = 1_000
    for i in range(30):
        acct = f"c{i}"
        for n, fp in enumerate(rng.sample(library, 12), start=1):
            observations.append(obs(fp, acct, None, t, n))
            t += 7
        observations.append(obs(f"pay:card{i // 2}", acct, None, t, 12))
        for n in range(20):   # its own prompts: nobody else's
            observations.append(obs(f"q345:{i:03x}{n:03x}", acct, None, t, 13 + n))
    one = _evidence(1, observations)
    assert len(one) == 30 and all(v[3] >= 10 for v in one.values())   # every member has neighbours
    for partitions in (3, 8):
        assert _evidence(partitions, observations) == one
