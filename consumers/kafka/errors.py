"""Errors raised by the Kafka layer.

* :class:`FatalRunnerError` — the runner cannot go on (fenced producer, fatal librdkafka error,
  a processor bug, a misconfigured topic). The caller logs it and exits non-zero so the
  orchestrator restarts the process; nothing that was not committed is lost or duplicated,
  because the next owner resumes from the last committed transaction.
* :class:`TopicError` — a topic is missing or has too few partitions for co-partitioning.
* :class:`RangeTruncated` — a range being read lost its start to retention.
"""

from __future__ import annotations


class FatalRunnerError(RuntimeError):
    """The stage runner stopped on an error it must not retry; restart the process."""


class TopicError(FatalRunnerError):
    """A topic is missing, or has fewer partitions than co-partitioning requires."""


class RangeTruncated(RuntimeError):
    """A range's start offset was deleted by retention while it was being read."""


EXIT_FATAL, EXIT_USAGE = 1, 2


class ReplayError(Exception):
    """A replay that must not (or could not) run; ``exit_code`` 2 = refused/usage, 1 = failure."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


class ProcessorFailure(Exception):
    """A processor raised: a bug in the stage (wrapped to tell it apart from Kafka errors)."""
