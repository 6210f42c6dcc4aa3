"""Decisions do not depend on the partition count (issue: platform teams scale ``detect`` by
partitions). :class:`~consumers.core.pipeline.PartitionedPipeline` routes every stage's records by
key exactly as the producer does; the accounts enforced must be the same at 1, 4 and 16
partitions, and the campaign ids of several campaign-stage partitions must not multiply the flags.
"""

from __future__ import annotations

import orjson
import pytest

from consumers.contract.flags import ENFORCING_ACTIONS
from consumers.core.config import DetectorConfig
from consumers.core.pipeline import LocalPipeline, PartitionedPipeline, partition_for
from tests.eventgen import scenario

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
