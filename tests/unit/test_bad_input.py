"""Bad input at the account stage's boundary: each kind goes to the DLQ with a reason of its own,
unchanged, and the stream goes on.

The kinds (issue #12): oversized message, not UTF-8, wrong ``schema_version``, a missing required
field, not JSON — plus not an object and a wrong type. Each is sent between two good events of
the same account, in one batch: exactly one DLQ record per bad message (original key and bytes,
the contract's headers), the reasons are distinct per kind, both good events are processed.
(``test_poison.py`` checks with hypothesis that such messages never change the flags.)
"""

from __future__ import annotations

import orjson
import pytest

from consumers.contract.events import MAX_EVENT_BYTES, InvalidEvent, parse_event
from consumers.core.account_stage import AccountProcessor
from consumers.core.config import DetectorConfig
from consumers.core.stage import Record
from tests.eventgen import valid_event

GOOD = orjson.dumps(valid_event())
_ev = valid_event()
del _ev["account_id"]

CASES: dict[str, tuple[bytes, str]] = {
    # kind: (message, expected reason prefix)
    "oversized": (GOOD[:-1] + b',"padding":"' + b"p" * MAX_EVENT_BYTES + b'"}', "too large:"),
    "not_utf8": (GOOD.replace(b'"account_id":"', b'"account_id":"\xff'), "not UTF-8:"),
    "not_utf8_surrogate": (b'{"schema_version": 1, "event_id": "\xed\xa0\x80"}', "not UTF-8:"),
    "wrong_schema_version": (orjson.dumps(valid_event(schema_version=2)), "schema_version:"),
    "missing_field": (orjson.dumps(_ev), "account_id: required field missing"),
    "not_json": (b"GET /v1/messages HTTP/1.1", "not JSON:"),
    "not_an_object": (b"[" + GOOD + b"]", "not a JSON object"),
    "wrong_type": (orjson.dumps(valid_event(n_turns="3")), "n_turns:"),
}


def test_oversized_is_only_the_size() -> None:
    """A message just under the limit with an unknown field is still a valid event."""
    pad = MAX_EVENT_BYTES - len(GOOD) - 20
    ok = GOOD[:-1] + b',"padding":"' + b"p" * pad + b'"}'
    assert len(ok) <= MAX_EVENT_BYTES
    assert parse_event(ok)["event_id"] == valid_event()["event_id"]


@pytest.mark.parametrize("kind", sorted(CASES))
def test_bad_input_goes_to_the_dlq_and_the_stream_goes_on(kind: str) -> None:
    value, prefix = CASES[kind]
    with pytest.raises(InvalidEvent) as ei:
        parse_event(value)
    assert ei.value.reason.startswith(prefix) and len(ei.value.reason) <= 200
    ap = AccountProcessor(DetectorConfig())
    e1 = valid_event(event_id="e-1", ts_ms=valid_event()["ts_ms"])
    e2 = valid_event(event_id="e-2", ts_ms=valid_event()["ts_ms"] + 1000)
    recs = [Record("llm.requests", b"acct-1", orjson.dumps(e1), 0, 10),
            Record("llm.requests", b"acct-1", value, 0, 11),
            Record("llm.requests", b"acct-1", orjson.dumps(e2), 0, 12)]
    out = ap.process(recs)
    [dlq] = [r for r in out if r.topic == "dlq"]
    assert dlq.value == value and dlq.key == b"acct-1"
    h = dict(dlq.headers or [])
    assert h["dlq.error"].decode().startswith(prefix)
    assert (h["dlq.offset"], h["dlq.partition"], h["dlq.topic"]) == (b"11", b"0", b"llm.requests")
    assert ap.counters["invalid"] == 1 and ap.counters["events"] == 2


def test_reasons_are_distinct_per_kind() -> None:
    kinds = {"oversized", "not_utf8", "wrong_schema_version", "missing_field", "not_json"}
    reasons = {}
    for k in kinds:
        try:
            parse_event(CASES[k][0])
        except InvalidEvent as e:
            reasons[k] = e.reason.split(":")[0]
    assert len(set(reasons.values())) == len(kinds), reasons


def test_str_input_is_not_checked_for_utf8() -> None:
    """``parse_event`` also takes text (replay of decoded lines): no UTF-8 question there."""
    with pytest.raises(InvalidEvent) as ei:
        parse_event("not json")
    assert ei.value.reason.startswith("not JSON")
