"""RequestEvent v1: the hot-path parser (``parse_event``) and the pydantic model agree.

The model (:class:`RequestEvent`) is the reference; ``parse_event`` is the fast path that the
account stage runs on every message. Property: for JSON built from a valid event with fields
removed, retyped, pushed out of range or made too long, and with unknown extra fields,
``parse_event`` accepts iff the model accepts, and when both accept the normalised values agree.
Non-JSON input of every kind raises :class:`InvalidEvent` with a short, non-empty reason that
names the field at fault — never another exception.

The divergences these tests found are fixed; their repros stay at the end of the file
(``test_bug_*``) as regression tests.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from consumers.contract.events import (
    CATEGORIES,
    KNOWN_TIERS,
    MAX_EVENT_BYTES,
    MAX_INT,
    TASK_CATEGORIES,
    InvalidEvent,
    RequestEvent,
    parse_event,
    validate_event,
)
from consumers.core.features import CATEGORIES as CORE_CATEGORIES
from consumers.sim.world import CATEGORIES as SIM_CATEGORIES
from tests.eventgen import valid_event

FIELDS = tuple(RequestEvent.model_fields)
NONNEG_INT = ("ts_ms", "account_created_ms", "input_tokens", "output_tokens", "latency_ms")
NULLABLE_STR = ("org_id", "api_key_id", "payment_fingerprint")
STR_LIMITS = {"event_id": 64, "account_id": 128, "client_ip_prefix": 64}

# --- strategies --------------------------------------------------------------------------------

#: text orjson can serialise (no lone surrogates)
TEXT = st.characters(exclude_categories=("Cs",))
HEX = "0123456789abcdefABCDEF"

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)   # everything orjson can write
    | st.floats(allow_nan=False, allow_infinity=False)          # NaN/inf are not JSON
    | st.text(TEXT, max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(TEXT, max_size=6), inner, max_size=3),
    max_leaves=6,
)

INT_EDGES = (-1, 0, 1, MAX_INT, MAX_INT + 1, 2**64 - 1, -(2**63), 1.0, 0.0, 0.5, 1e18, True, False,
             "1", None, [], {})


def _len_edges(limit: int) -> st.SearchStrategy[Any]:
    return st.sampled_from(["", "x", "x" * limit, "x" * (limit + 1), "é" * limit, "😀" * (limit + 1),
                            "x" * 5000])


@st.composite
def tweaked(draw: st.DrawFn, v: Any) -> Any:
    """A near miss of a valid value: a character added to a string, a number nudged or retyped."""
    if isinstance(v, str):
        c = draw(st.sampled_from(["\n", " ", "\t", "\x00", "0", "x", "é"]))
        return draw(st.sampled_from([v + c, c + v, v[:-1], v.upper(), v.lower()]))
    if isinstance(v, bool):
        return draw(st.sampled_from([int(v), str(v).lower(), None]))
    if isinstance(v, int):
        return draw(st.sampled_from([v - 1, v + 1, -v, float(v), str(v), v > 0]))
    if isinstance(v, float):
        return draw(st.sampled_from([v + 1.0, -v - 1e-9, str(v), int(v)]))
    return draw(json_values)


def field_edges(field: str) -> st.SearchStrategy[Any]:
    """Values near the edge of what ``field`` accepts (valid and invalid)."""
    if field == "schema_version":
        return st.sampled_from([1, 0, 2, -1, True, False, "1", None, 1.0, 1.5, [1]])
    if field in NONNEG_INT:
        return st.sampled_from(INT_EDGES)
    if field == "status":
        return st.sampled_from((200, 0, -1, -MAX_INT, -(2**63), MAX_INT, MAX_INT + 1, 2**64 - 1,
                                200.0, True, "200", None))
    if field == "n_turns":
        return st.sampled_from((0, 1, 2, -1, MAX_INT, MAX_INT + 1, 1.0, True, None, "3"))
    if field == "asn":
        return st.sampled_from((None, -1, 0, 64500, MAX_INT, MAX_INT + 1, 1.5, True, "64500"))
    if field in STR_LIMITS:
        return _len_edges(STR_LIMITS[field]) | st.sampled_from([None, 5, True, ["a"]])
    if field == "user_agent":
        return _len_edges(512) | st.sampled_from([None, 5, False])
    if field in NULLABLE_STR:
        return st.sampled_from([None, "", "x" * 300, 5, 0, True, ["x"], {"a": 1}])
    if field == "country":
        return st.sampled_from(["DE", "de", "Zz", "DEU", "D", "", "1A", "ÄÖ", "D-", " DE", "DE ",
                                None, 49, True]) | st.text(TEXT, max_size=3)
    if field == "prompt_simhash":
        return (
            st.text(st.sampled_from(HEX), min_size=15, max_size=17)
            | st.sampled_from(["0123456789ABCDEF", "0123456789abcdeg", "0x23456789abcdef",
                               " 123456789abcdef", "0123456789abcde ", "", None, 81985529216486895])
        )
    if field == "task_category":
        return st.sampled_from(sorted(TASK_CATEGORIES) + ["poetry", "", "CODING", None, 3, ["coding"]])
    if field == "account_tier":
        return st.sampled_from(list(KNOWN_TIERS) + ["platinum", "", None, 1, True])
    if field == "model":
        return st.sampled_from(["m", "", "model-b" * 40, None, 1, False])
    if field == "reasoning_elicitation":
        return st.sampled_from([0, 1, 0.0, 1.0, -0.0, 0.5, 5e-324, 1.0000000001, -1e-12, 2, -1,
                                True, False, "0.5", None, MAX_INT]) | st.floats(-2, 2, allow_nan=False)
    if field == "tool_use":
        return st.sampled_from([True, False, 0, 1, "true", None, 1.0, []])
    raise AssertionError(f"no edge strategy for {field}")


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with varied (valid) values in every field."""
    short = st.text(TEXT, min_size=1, max_size=20)
    return valid_event(
        event_id=draw(short),
        ts_ms=draw(st.integers(0, MAX_INT)),
        account_id=draw(short),
        org_id=draw(st.none() | st.text(TEXT, max_size=20)),
        api_key_id=draw(st.none() | st.text(TEXT, max_size=20)),
        account_created_ms=draw(st.integers(0, MAX_INT)),
        account_tier=draw(st.sampled_from(list(KNOWN_TIERS) + ["platinum", ""])),
        model=draw(st.text(TEXT, max_size=20)),
        input_tokens=draw(st.integers(0, MAX_INT)),
        output_tokens=draw(st.integers(0, 10**6)),
        latency_ms=draw(st.integers(0, 10**6)),
        status=draw(st.integers(-MAX_INT, MAX_INT)),
        client_ip_prefix=draw(st.text(TEXT, min_size=1, max_size=64)),
        asn=draw(st.none() | st.integers(0, MAX_INT)),
        country=draw(st.none() | st.from_regex(r"\A[A-Za-z]{2}\Z")),
        user_agent=draw(st.none() | st.text(TEXT, max_size=512)),
        payment_fingerprint=draw(st.none() | st.text(TEXT, max_size=20)),
        prompt_simhash=draw(st.text(st.sampled_from(HEX), min_size=16, max_size=16)),
        task_category=draw(st.sampled_from(sorted(TASK_CATEGORIES) + ["poetry", "", "Coding"])),
        reasoning_elicitation=draw(st.floats(0.0, 1.0) | st.sampled_from([0, 1])),
        tool_use=draw(st.booleans()),
        n_turns=draw(st.integers(1, MAX_INT)),
    )


@st.composite
def mutated_events(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    """A valid event with 0-3 fields removed or replaced and 0-3 unknown fields added.

    Returns the dict and the names of the fields that were changed.
    """
    ev = draw(valid_events())
    changed = set(draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)))
    for f in sorted(changed):
        how = draw(st.sampled_from(("remove", "edge", "edge", "tweak", "tweak", "any")))
        if how == "remove":
            del ev[f]
        elif how == "tweak":
            ev[f] = draw(tweaked(ev[f]))
        elif how == "edge":
            ev[f] = draw(field_edges(f))
        else:
            ev[f] = draw(json_values)
    extra = draw(st.dictionaries(st.text(TEXT, min_size=1, max_size=8).filter(lambda k: k not in FIELDS),
                                 json_values, max_size=3))
    ev.update(extra)
    return ev, changed


# --- helpers -----------------------------------------------------------------------------------

def model_result(raw: bytes) -> tuple[dict[str, Any] | None, set[str]]:
    """(normalised dict, set()) when the model accepts, else (None, fields it blames)."""
    if len(raw) > MAX_EVENT_BYTES:  # the size limit is a rule of the message, before any model
        return None, {"too large"}
    try:
        return RequestEvent.model_validate_json(raw).model_dump(), set()
    except ValidationError as e:
        return None, {str(err["loc"][0]) if err["loc"] else "" for err in e.errors()}


def fast_result(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return parse_event(raw), None
    except InvalidEvent as e:
        return None, e.reason


def reason_field(reason: str) -> str:
    return reason.split(":", 1)[0]


def assert_agree(x: Any, changed: set[str] | None = None) -> None:
    raw = orjson.dumps(x)
    fast, reason = fast_result(raw)
    ref, blamed = model_result(raw)
    assert (fast is not None) == (ref is not None), (
        f"parse_event {'accepts' if fast is not None else 'rejects (' + str(reason) + ')'} but the "
        f"model {'accepts' if ref is not None else 'rejects ' + str(sorted(blamed))}: {raw[:300]!r}")
    if fast is not None:
        assert ref is not None
        assert {k: fast[k] for k in FIELDS} == ref
        assert fast["task_category"] in TASK_CATEGORIES
        assert fast["account_tier"] == x["account_tier"]       # unknown tiers are kept
    else:
        assert reason, "empty reason"
        assert len(reason) <= 200
        assert reason_field(reason) in blamed, f"reason {reason!r} does not name one of {blamed}"
        if changed is not None:
            assert reason_field(reason) in changed


# --- the property ------------------------------------------------------------------------------

@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_events())
@example((valid_event(), set()))
@example((valid_event(reasoning_elicitation=1), {"reasoning_elicitation"}))
@example((valid_event(reasoning_elicitation=True), {"reasoning_elicitation"}))
@example((valid_event(ts_ms=True), {"ts_ms"}))
@example((valid_event(status=-(2**63)), {"status"}))
@example((valid_event(asn=MAX_INT + 1), {"asn"}))
@example((valid_event(task_category="poetry", account_tier="platinum"), set()))
def test_parse_event_agrees_with_model(case: tuple[dict[str, Any], set[str]]) -> None:
    ev, changed = case
    assert_agree(ev, changed)


@settings(max_examples=100, deadline=None)
@given(valid_events())
def test_valid_events_accepted_and_normalised(ev: dict[str, Any]) -> None:
    raw = orjson.dumps(ev)
    fast = parse_event(raw)
    ref = RequestEvent.model_validate_json(raw).model_dump()
    assert {k: fast[k] for k in FIELDS} == ref
    expected_cat = ev["task_category"] if ev["task_category"] in TASK_CATEGORIES else "other"
    assert fast["task_category"] == ref["task_category"] == expected_cat
    assert fast["account_tier"] == ref["account_tier"] == ev["account_tier"]
    # str input is accepted too and gives the same result
    assert parse_event(raw.decode()) == fast


@pytest.mark.parametrize("field", FIELDS)
def test_missing_field_named(field: str) -> None:
    ev = valid_event()
    del ev[field]
    with pytest.raises(InvalidEvent) as ei:
        parse_event(orjson.dumps(ev))
    assert ei.value.reason == f"{field}: required field missing"
    assert model_result(orjson.dumps(ev))[0] is None


@pytest.mark.parametrize("field", FIELDS)
def test_wrong_type_named(field: str) -> None:
    """A list is never a valid value: both reject, and the reason names the field."""
    ev = valid_event(**{field: ["x"]})
    raw = orjson.dumps(ev)
    fast, reason = fast_result(raw)
    assert fast is None and reason is not None
    assert reason_field(reason) == field
    assert model_result(raw) == (None, {field})


@pytest.mark.parametrize(("field", "value"), [
    ("ts_ms", -1), ("ts_ms", MAX_INT + 1), ("input_tokens", 1.0), ("latency_ms", True),
    ("n_turns", 0), ("status", "200"), ("asn", -5), ("event_id", ""), ("event_id", "e" * 65),
    ("account_id", "a" * 129), ("client_ip_prefix", ""), ("user_agent", "u" * 513),
    ("prompt_simhash", "0123456789abcdeg"), ("prompt_simhash", "0123456789abcde"),
    ("country", "DEU"), ("country", "ÄÖ"), ("reasoning_elicitation", 1.5),
    ("reasoning_elicitation", -0.1), ("reasoning_elicitation", "0.5"), ("tool_use", 1),
    ("schema_version", 2), ("schema_version", True), ("org_id", 7), ("task_category", None),
])
def test_out_of_range_named(field: str, value: Any) -> None:
    raw = orjson.dumps(valid_event(**{field: value}))
    fast, reason = fast_result(raw)
    assert fast is None, f"{field}={value!r} accepted"
    assert reason is not None and reason_field(reason) == field
    assert model_result(raw) == (None, {field})


def test_normalisation() -> None:
    ev = parse_event(orjson.dumps(valid_event(task_category="poetry", account_tier="platinum",
                                              reasoning_elicitation=1, extra_field={"a": [1]})))
    assert ev["task_category"] == "other"
    assert ev["account_tier"] == "platinum"
    assert ev["reasoning_elicitation"] == 1.0
    for cat in TASK_CATEGORIES:
        assert parse_event(orjson.dumps(valid_event(task_category=cat)))["task_category"] == cat


def test_categories_have_one_order() -> None:
    # The core indexes per-account category counts by this order and the simulator samples from
    # it: both use the contract's tuple, not copies of it.
    assert frozenset(CATEGORIES) == TASK_CATEGORIES and len(CATEGORIES) == len(TASK_CATEGORIES)
    assert CORE_CATEGORIES is CATEGORIES and SIM_CATEGORIES is CATEGORIES


def test_validate_event_matches_parse_event() -> None:
    ev = valid_event(task_category="nope")
    assert validate_event(dict(ev)) == parse_event(orjson.dumps(ev))
    with pytest.raises(InvalidEvent):
        validate_event([ev])


# --- not an event at all -----------------------------------------------------------------------

_VALID = orjson.dumps(valid_event())
NOT_EVENTS = [
    b"", b" ", b"\n", b"not json", b"{", b"}", b"{'a': 1}", b"[]", b"[1, 2]", b'"a string"',
    b"42", b"-1.5e3", b"true", b"null", b"\xff\xfe\x00", b"\xc3\x28", b'{"a": "\xed\xa0\x80"}',
    b"\xef\xbb\xbf" + _VALID, _VALID[: len(_VALID) // 2], _VALID[:-1], _VALID + b"x",
    _VALID + _VALID, b"[" + _VALID + b"]", b'{"schema_version": NaN}', b'{"a": Infinity}',
    b"\x00" * 100, b"{" * 10_000, b"[" * 100_000, b'{"x": "' + b"a" * 1_000_000,
    b"x" * 1_000_000, orjson.dumps("a" * 1_000_000), orjson.dumps(valid_event(user_agent="u" * 1_000_000)),
    orjson.dumps(valid_event(event_id="e" * 1_000_000)), orjson.dumps({"schema_version": 1}),
    orjson.dumps({}), orjson.dumps({"schema_version": 1, "event_id": None}),
]


@pytest.mark.parametrize("raw", NOT_EVENTS, ids=lambda b: repr(b[:24]) + f"..({len(b)}B)")
def test_not_an_event_raises_invalid_event(raw: bytes) -> None:
    with pytest.raises(InvalidEvent) as ei:
        parse_event(raw)
    reason = ei.value.reason
    assert reason and isinstance(reason, str)
    assert len(reason) <= 200, "reasons are short and safe to log"
    assert str(ei.value) == reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=100).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    try:
        ev = parse_event(raw)
    except InvalidEvent as e:
        assert e.reason
    else:
        assert isinstance(ev, dict)


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_arbitrary_json_rejected_with_reason(v: Any) -> None:
    raw = orjson.dumps(v)
    with pytest.raises(InvalidEvent) as ei:
        parse_event(raw)
    assert ei.value.reason
    if isinstance(v, dict):
        assert reason_field(ei.value.reason) in FIELDS
    else:
        assert ei.value.reason == "not a JSON object"


@settings(max_examples=50, deadline=None)
@given(valid_events(), st.integers(1, 400))
def test_truncated_event_rejected(ev: dict[str, Any], cut: int) -> None:
    raw = orjson.dumps(ev)
    cut = min(cut, len(raw) - 1)
    with pytest.raises(InvalidEvent) as ei:
        parse_event(raw[:cut])
    assert ei.value.reason.startswith("not JSON")


def test_big_ints_in_fields_rejected_with_field_named() -> None:
    """Integers past 64 bits are valid JSON; written with the stdlib they reach the parser."""
    for field in ("ts_ms", "asn", "status", "n_turns", "input_tokens"):
        raw = json.dumps(valid_event(**{field: 2**70})).encode()
        with pytest.raises(InvalidEvent) as ei:
            parse_event(raw)
        assert reason_field(ei.value.reason) == field
        assert model_result(raw)[0] is None


# --- divergences found by the property (fixed): regression tests ---

@pytest.mark.parametrize("field,value", [("country", "DE\n"), ("prompt_simhash", "0123456789abcdef\n")])
def test_bug_trailing_newline_in_patterned_fields(field: str, value: str) -> None:
    assert_agree(valid_event(**{field: value}), {field})


def test_bug_schema_version_float() -> None:
    assert_agree(valid_event(schema_version=1.0), {"schema_version"})


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"1e400", b"1" + b"0" * 400])
def test_non_standard_numbers_are_not_json(literal: bytes) -> None:
    """NaN/Infinity are not JSON (RFC 8259) and 1e400 has no double: the hot path sends such a
    message to the DLQ even in an ignored extra field (pydantic's own JSON parser is more lenient;
    the hot path is the implementation of the contract)."""
    raw = _VALID[:-1] + b',"extra":' + literal + b"}"
    fast, reason = fast_result(raw)
    assert fast is None and reason and reason.startswith("not JSON")
