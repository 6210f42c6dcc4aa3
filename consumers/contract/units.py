"""Time units of the contract: every ``*_ms`` field (``ts_ms``, ``account_created_ms``,
``decided_at_ms``...) is epoch milliseconds, and spans of them are milliseconds too.

The one home of these constants: the core, the simulator, the evaluation and the tests import
them from here.

>>> DAY_MS // HOUR_MS
24
"""

from __future__ import annotations

__all__ = ["DAY_MS", "HOUR_MS"]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
