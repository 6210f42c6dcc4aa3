"""Plain counters of a stage runner (no Prometheus yet): what it consumed, produced, committed.

:class:`RunnerMetrics` is written only by the runner's own thread; :meth:`RunnerMetrics.snapshot`
returns a copy that is safe to log or export from anywhere.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any


class RunnerMetrics:
    """Counters of one :class:`~consumers.kafka.runner.StageRunner`.

    ``produced`` counts records handed to the transactional producer per *logical* output topic;
    records of a transaction that is later aborted are counted too (they are re-produced after the
    rewind), so ``produced`` can exceed what read_committed subscribers see.
    """

    __slots__ = (
        "started_at",
        "consumed",
        "produced",
        "changelog_records",
        "checkpoints",
        "aborts",
        "restored_records",
        "restore_seconds",
        "last_checkpoint_ms",
        "assigned",
        "revoked",
        "lost",
        "stale_dropped",
        "producer_replacements",
    )

    def __init__(self, outputs: Iterable[str] = ()) -> None:
        self.started_at = time.monotonic()
        self.consumed = 0
        self.produced: dict[str, int] = {name: 0 for name in outputs}
        self.changelog_records = 0
        self.checkpoints = 0
        self.aborts = 0
        self.restored_records = 0
        self.restore_seconds = 0.0
        self.last_checkpoint_ms = 0.0
        self.assigned = 0
        self.revoked = 0
        self.lost = 0
        self.stale_dropped = 0
        self.producer_replacements = 0

    def snapshot(self) -> dict[str, Any]:
        """A point-in-time copy of every counter (plus uptime), as plain JSON-able values."""
        return {
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "consumed": self.consumed,
            "produced": dict(self.produced),
            "changelog_records": self.changelog_records,
            "checkpoints": self.checkpoints,
            "aborts": self.aborts,
            "restored_records": self.restored_records,
            "restore_seconds": round(self.restore_seconds, 3),
            "last_checkpoint_ms": round(self.last_checkpoint_ms, 3),
            "partitions_assigned": self.assigned,
            "partitions_revoked": self.revoked,
            "partitions_lost": self.lost,
            "stale_dropped": self.stale_dropped,
            "producer_replacements": self.producer_replacements,
        }
