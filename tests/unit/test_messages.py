"""The inter-stage messages (consumers/core/messages.py): what the stages write decodes to the
classes, every class survives a round trip, and the wire format is the one documented."""

from __future__ import annotations

import orjson
import pytest

from consumers.core.account_stage import AccountProcessor
from consumers.core.campaign_stage import CampaignProcessor
from consumers.core.config import DetectorConfig
from consumers.core.messages import Behaviour, FingerprintSeen, Link, decode
from consumers.core.stage import Record
from tests.eventgen import valid_event

SAMPLES = [
    FingerprintSeen("ip:10.0.0.0/24", "a1", "org-1", 5, 9, 3, "card-1"),
    FingerprintSeen("p0:01234567", "a2", None, 5, 9),
    Behaviour("a1", None, 0.35, [["FRESH_ACCOUNT", 0.5]], 0.2, 9, 1, 12),
    Link("a1", "org-1", {"ip": 3, "para": 4}, "cmp-x", 12, 9, 2, [1, 5, 8], 20, 3, 4),
    Link("a1", None, {}, None, None, 9),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg) -> None:
    assert decode(msg.encode()) == msg


def test_wire_keys_are_the_documented_short_keys() -> None:
    assert list(orjson.loads(SAMPLES[0].encode())) == ["k", "f", "a", "o", "t", "w", "n", "c"]
    assert list(orjson.loads(SAMPLES[2].encode())) == ["k", "a", "o", "b", "r", "x", "w", "ws", "n"]
    assert list(orjson.loads(SAMPLES[3].encode())) == [
        "k", "a", "o", "kinds", "cid", "size", "w", "p", "sr", "n", "ipn", "cs", "pk", "pa", "nb"]


def test_a_verdict_written_before_the_neighbour_counts_still_decodes() -> None:
    old = b'{"k":"link","a":"a1","o":null,"kinds":{"ip":3},"cid":null,"size":null,"w":9,"p":2,"sr":[],"n":4,"ipn":3,"cs":0}'
    m = decode(old)
    assert isinstance(m, Link) and (m.prompt_keys, m.para_announced, m.neighbours) == (0, 0, [])


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown message kind"):
        decode(b'{"k":"flag","a":"x"}')


def test_stage_outputs_decode_to_the_classes() -> None:
    t0 = 1_767_225_600_000
    recs = [Record("requests", b"a", orjson.dumps(valid_event(event_id=f"e{i}", account_id=f"acct-{i % 3}", org_id=None,
                                                             payment_fingerprint=f"card-{i % 3}",
                                                             ts_ms=t0 + i * 60_000, account_created_ms=t0 - 1000)),
                   offset=i) for i in range(30)]
    obs = [r for r in AccountProcessor(DetectorConfig()).process(recs) if r.topic == "observations"]
    decoded = [decode(r.value) for r in obs]
    assert {type(m) for m in decoded} == {FingerprintSeen, Behaviour}
    for r, m in zip(obs, decoded, strict=True):
        # keyed by the fingerprint, or by the account for behaviour summaries
        assert r.key == (m.fingerprint if isinstance(m, FingerprintSeen) else m.account).encode()
        assert m.encode() == r.value  # re-encoding gives the same bytes
    small = DetectorConfig(link_min_units={"prompt": 2, "ip": 2, "pay": 2, "ua": 2, "wave": 2})
    verdicts = CampaignProcessor(small).process(obs)
    assert any(isinstance(decode(v.value), Link) for v in verdicts)
    for v in verdicts:
        assert decode(v.value).encode() == v.value
