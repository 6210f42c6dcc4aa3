"""The fixed input/output contract (``shared/CONTRACT.md``) as code.

* :mod:`consumers.contract.events` — RequestEvent v1: the pydantic model (the reference, used for
  the JSON Schema) and :func:`parse_event`, the fast hot-path parser that must agree with it.
* :mod:`consumers.contract.flags` — Flag v1 and the stable list of reason codes.
"""

from consumers.contract.events import InvalidEvent, RequestEvent, parse_event
from consumers.contract.flags import ACTIONS, REASON_CODES, Flag, Reason

__all__ = [
    "ACTIONS",
    "REASON_CODES",
    "Flag",
    "InvalidEvent",
    "Reason",
    "RequestEvent",
    "parse_event",
]
