"""The fixed input/output contract (``shared/CONTRACT.md``) as code.

* :mod:`consumers.contract.events` — RequestEvent v1: the pydantic model (the reference, used for
  the JSON Schema) and :func:`parse_event`, the fast hot-path parser that must agree with it; the
  task categories (:data:`CATEGORIES`, in their fixed order).
* :mod:`consumers.contract.flags` — Flag v1, the actions in escalation order (:data:`ACTIONS`,
  :data:`ACTION_RANK`, :data:`ENFORCING_ACTIONS`) and the stable list of reason codes.
* :mod:`consumers.contract.units` — time units of the ``*_ms`` fields (:data:`HOUR_MS`,
  :data:`DAY_MS`).
"""

from consumers.contract.events import (
    CATEGORIES,
    TASK_CATEGORIES,
    InvalidEvent,
    RequestEvent,
    parse_event,
)
from consumers.contract.flags import (
    ACTION_RANK,
    ACTIONS,
    ENFORCING_ACTIONS,
    REASON_CODES,
    Flag,
    Reason,
)
from consumers.contract.units import DAY_MS, HOUR_MS

__all__ = [
    "ACTIONS",
    "ACTION_RANK",
    "CATEGORIES",
    "DAY_MS",
    "ENFORCING_ACTIONS",
    "HOUR_MS",
    "REASON_CODES",
    "TASK_CATEGORIES",
    "Flag",
    "InvalidEvent",
    "Reason",
    "RequestEvent",
    "parse_event",
]
