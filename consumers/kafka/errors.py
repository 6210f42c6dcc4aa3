"""Errors raised by the Kafka layer.

* :class:`FatalRunnerError` — the runner cannot go on (fenced producer, fatal librdkafka error,
  a processor bug, a misconfigured topic). The caller logs it and exits non-zero so the
  orchestrator restarts the process; nothing that was not committed is lost or duplicated,
  because the next owner resumes from the last committed transaction.
* :class:`TopicError` — a topic is missing or has too few partitions for co-partitioning.
"""

from __future__ import annotations


class FatalRunnerError(RuntimeError):
    """The stage runner stopped on an error it must not retry; restart the process."""


class TopicError(FatalRunnerError):
    """A topic is missing, or has fewer partitions than co-partitioning requires."""
