"""RequestEvent v1: one per API request, emitted by the gateway.

Two implementations of one rule set:

* :class:`RequestEvent` — the pydantic model. It is the reference: ``schemas/request_event.v1.json``
  is generated from it, and analysts can use it to validate files.
* :func:`parse_event` — the hot-path parser: ``orjson.loads`` plus plain type and range checks on a
  dict, returning the plain dict the core works on. Measured (``bench/validation.py``): 2.8x the
  cost of ``orjson.loads`` alone, against 3.4x for ``RequestEvent.model_validate_json`` and 5.5x
  for the model plus ``model_dump`` to get a dict — the hand checks cost about as much as the JSON
  parse. A property test (``tests/unit/test_contract.py``) checks that both accept and reject the
  same inputs.

Rules (CONTRACT.md): strict on required fields, types and ranges; unknown extra fields are
ignored (but a message larger than :data:`MAX_EVENT_BYTES` is rejected before it is parsed: a
valid event is well under 2 KiB, and a huge one must not cost the hot path its parse); unknown ``account_tier`` values are kept; unknown ``task_category`` values become
``"other"``. Booleans are not integers and integers are not strings (no coercion), but an integer
is accepted where a float is expected, as JSON does not distinguish ``1`` from ``1.0``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from consumers.native_choice import native_module

#: The task categories in their one fixed order: per-account category counts are indexed by it and
#: seeded generators sample from it, so the order is part of the detector's state and of every
#: seeded scenario. New categories go at the end.
CATEGORIES: tuple[str, ...] = (
    "coding", "agentic", "reasoning", "math", "writing", "analysis", "chat", "translation", "other",
)
TASK_CATEGORIES = frozenset(CATEGORIES)
KNOWN_TIERS = ("free", "build", "scale", "enterprise")

_SIMHASH_RE = re.compile(r"[0-9a-fA-F]{16}\Z")
_COUNTRY_RE = re.compile(r"[A-Za-z]{2}\Z")

#: Largest accepted integer (JSON readers in other languages lose precision beyond 2**63).
MAX_INT = 2**63 - 1

#: Largest accepted message (bytes of the Kafka value). A RequestEvent v1 is a few hundred bytes
#: (the longest bounded field, ``user_agent``, is 512 characters); anything beyond this is
#: rejected as ``too large`` before it is decoded.
MAX_EVENT_BYTES = 64 * 1024


class InvalidEvent(ValueError):
    """A message that is not a valid RequestEvent v1. ``reason`` is short and safe to log."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


NonNegInt = Annotated[int, Field(strict=True, ge=0, le=MAX_INT)]
StrictStr = Annotated[str, Field(strict=True)]


class RequestEvent(BaseModel):
    """RequestEvent v1 (see ``shared/CONTRACT.md``)."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, title="RequestEvent v1")

    schema_version: Literal[1]
    event_id: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64)]
    ts_ms: NonNegInt
    account_id: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=128)]
    org_id: Annotated[str, Field(strict=True)] | None
    api_key_id: Annotated[str, Field(strict=True)] | None
    account_created_ms: NonNegInt
    account_tier: Annotated[str, Field(strict=True, description="free, build, scale or enterprise; unknown values are kept")]
    model: Annotated[str, Field(strict=True)]
    input_tokens: NonNegInt
    output_tokens: NonNegInt
    latency_ms: NonNegInt
    status: Annotated[int, Field(strict=True, ge=-MAX_INT, le=MAX_INT)]
    client_ip_prefix: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64)]
    asn: Annotated[int, Field(strict=True, ge=0, le=MAX_INT)] | None
    country: Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Za-z]{2}$")] | None
    user_agent: Annotated[str, StringConstraints(strict=True, max_length=512)] | None
    payment_fingerprint: Annotated[str, Field(strict=True)] | None
    prompt_simhash: Annotated[str, StringConstraints(strict=True, pattern=r"^[0-9a-fA-F]{16}$")]
    task_category: Annotated[str, Field(strict=True, description="unknown values become 'other'")]
    reasoning_elicitation: Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)]
    tool_use: Annotated[bool, Field(strict=True)]
    n_turns: Annotated[int, Field(strict=True, ge=1, le=MAX_INT)]

    @field_validator("schema_version", mode="before")
    @classmethod
    def _no_bool_version(cls, v: Any) -> Any:
        if type(v) is not int:
            raise ValueError("schema_version must be the integer 1")
        return v

    @field_validator("task_category")
    @classmethod
    def _known_category(cls, v: str) -> str:
        return v if v in TASK_CATEGORIES else "other"


# ---------------------------------------------------------------------------------------------
# Hot path
# ---------------------------------------------------------------------------------------------

_NULLABLE_STR = ("org_id", "api_key_id", "payment_fingerprint")
_NONNEG_INT = ("ts_ms", "account_created_ms", "input_tokens", "output_tokens", "latency_ms")
_PLAIN_STR = ("account_tier", "model", "task_category")


def _int(v: Any) -> bool:
    return type(v) is int and -MAX_INT <= v <= MAX_INT


def py_check_event(ev: dict[str, Any]) -> str | None:
    """Why a decoded JSON object is not a RequestEvent v1, or None: the first failed check's
    reason (the DLQ's ``dlq.error``). The reference: ``consumers._native.check_event`` makes the
    same checks in the same order when the native hot path was built (tests/unit/test_native.py
    compares the two on mutated events).

    >>> py_check_event({"schema_version": 1, "event_id": ""})
    'event_id: must be a string of 1-64 characters'
    """
    try:
        if ev["schema_version"] != 1 or type(ev["schema_version"]) is not int:
            return "schema_version: must be 1"
        v = ev["event_id"]
        if type(v) is not str or not 1 <= len(v) <= 64:
            return "event_id: must be a string of 1-64 characters"
        v = ev["account_id"]
        if type(v) is not str or not 1 <= len(v) <= 128:
            return "account_id: must be a string of 1-128 characters"
        for k in _NONNEG_INT:
            v = ev[k]
            if type(v) is not int or not 0 <= v <= MAX_INT:
                return f"{k}: must be an integer >= 0"
        for k in _NULLABLE_STR:
            v = ev[k]
            if v is not None and type(v) is not str:
                return f"{k}: must be a string or null"
        for k in _PLAIN_STR:
            if type(ev[k]) is not str:
                return f"{k}: must be a string"
        if not _int(ev["status"]):
            return "status: must be an integer"
        v = ev["client_ip_prefix"]
        if type(v) is not str or not 1 <= len(v) <= 64:
            return "client_ip_prefix: must be a string of 1-64 characters"
        v = ev["asn"]
        if v is not None and (type(v) is not int or not 0 <= v <= MAX_INT):
            return "asn: must be an integer >= 0 or null"
        v = ev["country"]
        if v is not None and (type(v) is not str or not _COUNTRY_RE.match(v)):
            return "country: must be a 2-letter code or null"
        v = ev["user_agent"]
        if v is not None and (type(v) is not str or len(v) > 512):
            return "user_agent: must be a string of at most 512 characters or null"
        v = ev["prompt_simhash"]
        if type(v) is not str or not _SIMHASH_RE.match(v):
            return "prompt_simhash: must be 16 hex characters"
        v = ev["reasoning_elicitation"]
        tv = type(v)
        if not ((tv is float and 0.0 <= v <= 1.0) or (tv is int and 0 <= v <= 1)):
            return "reasoning_elicitation: must be a number in [0, 1]"
        if type(ev["tool_use"]) is not bool:
            return "tool_use: must be a boolean"
        v = ev["n_turns"]
        if type(v) is not int or not 1 <= v <= MAX_INT:
            return "n_turns: must be an integer >= 1"
    except KeyError as e:
        return f"{e.args[0]}: required field missing"
    return None


#: the native checks where built (a third of the cost: one call instead of ~25 dict lookups and
#: type tests in Python; see consumers.native_choice), else :func:`py_check_event`
_native = native_module()
_check_event: Callable[[dict[str, Any]], str | None] = py_check_event if _native is None else _native.check_event


def validate_event(ev: Any) -> dict[str, Any]:
    """Check a decoded JSON value against RequestEvent v1; return it (normalised) or raise.

    The returned dict is the input dict itself, with ``task_category`` normalised; unknown
    fields are left in place (and ignored by every consumer of the dict).
    """
    if type(ev) is not dict:
        raise InvalidEvent("not a JSON object")
    reason = _check_event(ev)
    if reason is not None:
        raise InvalidEvent(reason)
    if ev["task_category"] not in TASK_CATEGORIES:
        ev["task_category"] = "other"
    return ev


def parse_event(raw: bytes | str) -> dict[str, Any]:
    """Decode and validate one RequestEvent v1 message; raise :class:`InvalidEvent` if bad.

    >>> ev = parse_event(b'{"schema_version":1,"event_id":"e1","ts_ms":1,"account_id":"a",'
    ...   b'"org_id":null,"api_key_id":null,"account_created_ms":0,"account_tier":"free",'
    ...   b'"model":"m","input_tokens":1,"output_tokens":2,"latency_ms":3,"status":200,'
    ...   b'"client_ip_prefix":"203.0.113.0/24","asn":null,"country":null,"user_agent":null,'
    ...   b'"payment_fingerprint":null,"prompt_simhash":"00ff00ff00ff00ff","task_category":"poetry",'
    ...   b'"reasoning_elicitation":0.5,"tool_use":false,"n_turns":1}')
    >>> ev["task_category"]
    'other'
    >>> parse_event(b'{"schema_version":1}')
    Traceback (most recent call last):
    ...
    consumers.contract.events.InvalidEvent: event_id: required field missing

    Each kind of bad input has its own reason (the DLQ's ``dlq.error``): ``too large: ...``,
    ``not UTF-8: ...``, ``not JSON: ...``, ``not a JSON object``, ``schema_version: must be 1``,
    ``<field>: required field missing``, ``<field>: must be ...``.

    >>> parse_event(b'{"schema_version":1, "x": "' + bytes([0xff]) + b'"}')
    Traceback (most recent call last):
    ...
    consumers.contract.events.InvalidEvent: not UTF-8: invalid byte 0xff at offset 27
    """
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"too large: {len(raw)} bytes (limit {MAX_EVENT_BYTES})")
    try:
        ev = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        if isinstance(raw, bytes | bytearray | memoryview):
            try:
                bytes(raw).decode("utf-8")
            except UnicodeDecodeError as u:
                if u.reason == "unexpected end of data":
                    # a truncated message cut inside a character: truncated JSON above all
                    raise InvalidEvent(f"not JSON: {str(e)[:120]}") from None
                bad = bytes(raw)[u.start]
                raise InvalidEvent(f"not UTF-8: invalid byte 0x{bad:02x} at offset {u.start}") from None
        raise InvalidEvent(f"not JSON: {str(e)[:120]}") from None
    return validate_event(ev)
