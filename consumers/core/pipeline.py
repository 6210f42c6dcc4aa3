"""The detector as a pipeline of three stages, and the in-process chain used by file replay.

::

    requests ─► [account stage] ─► observations ─► [campaign stage] ─► verdicts ─► [policy stage] ─► flags
      (key: account)            │  (key: fingerprint,                (key: account)
                                ▼   or account for behaviour)
                               dlq

Each arrow is a Kafka topic in ``detect``; in ``replay`` the same processors are chained in
memory (:class:`LocalPipeline`). There is no feedback loop, so every stage's output depends only
on the order of its input; with one partition per topic, Kafka and file replay give the same flags.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from consumers import __version__
from consumers.core.account_stage import AccountProcessor
from consumers.core.campaign_stage import CampaignProcessor
from consumers.core.config import DetectorConfig
from consumers.core.policy import PolicyProcessor
from consumers.core.stage import Processor, Record, StageSpec

DETECTOR_VERSION = __version__

#: logical topic names of the pipeline (the Kafka layer maps them to real names)
REQUESTS, OBSERVATIONS, VERDICTS, FLAGS, DLQ = "requests", "observations", "verdicts", "flags", "dlq"


def stage_specs(cfg: DetectorConfig, version: str = DETECTOR_VERSION) -> list[StageSpec]:
    """The three stages, in pipeline order."""
    return [
        StageSpec("account", (REQUESTS,), (OBSERVATIONS, DLQ), lambda p: AccountProcessor(cfg, p)),
        StageSpec("campaign", (OBSERVATIONS,), (VERDICTS,), lambda p: CampaignProcessor(cfg, p)),
        StageSpec("policy", (VERDICTS,), (FLAGS,), lambda p: PolicyProcessor(cfg, version, p)),
    ]


@dataclass
class LocalPipeline:
    """All three stages in one process, one partition each: what ``replay --input`` runs.

    >>> pipe = LocalPipeline(DetectorConfig())
    >>> pipe.feed([b"not json"])
    []
    >>> pipe.counters()["account"]["invalid"]
    1
    """

    cfg: DetectorConfig
    version: str = DETECTOR_VERSION
    dead_letters: list[Record] = field(default_factory=list)
    #: keep what changed for ``take_changes()`` (a warm start hands the state over); without a
    #: changelog that bookkeeping is discarded after every batch, as it would only grow
    changelog: bool = False

    def __post_init__(self) -> None:
        self.account = AccountProcessor(self.cfg, 0)
        self.campaign = CampaignProcessor(self.cfg, 0)
        self.policy = PolicyProcessor(self.cfg, self.version, 0)
        self._offset = 0

    def feed(self, values: Iterable[bytes], source: str = REQUESTS,
             offsets: Iterable[int] | None = None) -> list[bytes]:
        """Process raw RequestEvent messages in order; return the Flag v1 values produced.

        ``offsets`` (e.g. line numbers of a file) end up in the DLQ headers of bad messages;
        by default messages are numbered from 0 in the order they are fed.
        """
        recs = []
        if offsets is None:
            for v in values:
                recs.append(Record(topic=source, key=None, value=v, partition=0, offset=self._offset))
                self._offset += 1
        else:
            for v, off in zip(values, offsets, strict=True):
                recs.append(Record(topic=source, key=None, value=v, partition=0, offset=off))
        obs: list[Record] = []
        for r in self.account.process(recs):
            (self.dead_letters if r.topic == DLQ else obs).append(r)
        verdicts = self.campaign.process(obs)
        flags = [r.value for r in self.policy.process(verdicts)]
        if not self.changelog:
            self.account.discard_changes()
            self.campaign.discard_changes()
            self.policy.discard_changes()
        return flags

    def counters(self) -> dict[str, Any]:
        return {"account": dict(self.account.counters), "campaign": dict(self.campaign.counters),
                "policy": dict(self.policy.counters)}



def partition_for(key: bytes | None, partitions: int) -> int:
    """The partition librdkafka's default partitioner (``consistent_random``: CRC32 of the key)
    gives a keyed record; records without a key go to partition 0 here.

    >>> partition_for(b"acct-1", 1), partition_for(b"acct-1", 4) == partition_for(b"acct-1", 4)
    (0, True)
    """
    return zlib.crc32(key) % partitions if key else 0


class PartitionedPipeline:
    """The three stages at ``partitions`` partitions each, in one process: what ``detect`` does
    on topics of that many partitions, with the records of a batch routed by key exactly as the
    producer would route them (requests by account, observations by fingerprint, verdicts by
    account). Within a batch, each stage's partitions are fed in partition order — on Kafka the
    interleaving depends on timing; this is one of the orders Kafka allows. Used to measure that
    decisions do not depend on the partition count.

    >>> pipe = PartitionedPipeline(DetectorConfig(), 4)
    >>> pipe.feed([b"not json"])
    []
    """

    def __init__(self, cfg: DetectorConfig, partitions: int, version: str = DETECTOR_VERSION):
        self.partitions = partitions
        self.account = [AccountProcessor(cfg, p) for p in range(partitions)]
        self.campaign = [CampaignProcessor(cfg, p) for p in range(partitions)]
        self.policy = [PolicyProcessor(cfg, version, p) for p in range(partitions)]
        self.dead_letters: list[Record] = []
        self._offset = 0

    def _route(self, records: Iterable[Record]) -> list[list[Record]]:
        out: list[list[Record]] = [[] for _ in range(self.partitions)]
        for r in records:
            p = partition_for(r.key, self.partitions)
            out[p].append(Record(r.topic, r.key, r.value, p))
        return out

    def feed(self, values: Iterable[bytes]) -> list[bytes]:
        reqs: list[Record] = []
        for v in values:
            try:
                key = orjson.loads(v)["account_id"].encode()
            except Exception:  # noqa: BLE001 - a malformed message goes to the DLQ of partition 0
                key = None
            reqs.append(Record(REQUESTS, key, v, offset=self._offset))
            self._offset += 1
        obs: list[Record] = []
        for proc, part in zip(self.account, self._route(reqs), strict=True):
            for r in proc.process(part):
                (self.dead_letters if r.topic == DLQ else obs).append(r)
        verdicts = [r for proc, part in zip(self.campaign, self._route(obs), strict=True) for r in proc.process(part)]
        flags = [r.value for proc, part in zip(self.policy, self._route(verdicts), strict=True)
                 for r in proc.process(part)]
        stages: list[Processor] = [*self.account, *self.campaign, *self.policy]
        for stage in stages:
            stage.discard_changes()  # no changelog here
        return flags
