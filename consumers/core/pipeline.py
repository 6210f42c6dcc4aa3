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

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from consumers import __version__
from consumers.core.account_stage import AccountProcessor
from consumers.core.campaign_stage import CampaignProcessor
from consumers.core.config import DetectorConfig
from consumers.core.policy import PolicyProcessor
from consumers.core.stage import Record, StageSpec

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
        return [r.value for r in self.policy.process(verdicts)]

    def counters(self) -> dict[str, Any]:
        return {"account": dict(self.account.counters), "campaign": dict(self.campaign.counters),
                "policy": dict(self.policy.counters)}

