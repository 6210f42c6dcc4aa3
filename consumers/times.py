"""Time on the command line: ISO 8601 or epoch milliseconds in, epoch milliseconds out."""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["format_ms", "parse_time"]

_MIN_EPOCH_MS = 100_000_000_000  # 1973-03-03 in ms; smaller numbers are almost surely seconds


def parse_time(text: str) -> int:
    """Epoch milliseconds of ``text``: ISO 8601 (date or date-time; no zone = UTC) or epoch ms.

    >>> parse_time("2026-04-22T06:00:00Z")
    1776837600000
    >>> parse_time("2026-04-22")
    1776816000000
    >>> parse_time("1776837600000")
    1776837600000
    """
    s = text.strip()
    if re.fullmatch(r"-?\d+", s):
        ms = int(s)
        if abs(ms) < _MIN_EPOCH_MS:
            raise ValueError(f"{text!r} looks like epoch seconds; give epoch milliseconds "
                             f"({ms * 1000}) or ISO 8601")
        return ms
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"{text!r} is neither ISO 8601 (2026-04-22T06:00:00Z) nor epoch "
                         "milliseconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def format_ms(ms: int | None) -> str:
    """ISO 8601 UTC of epoch milliseconds (``-`` for None)."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
