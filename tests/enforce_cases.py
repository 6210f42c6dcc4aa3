"""Flags and checks shared by the enforcement-store tests (SQLite unit tests, PostgreSQL, Kafka).

:func:`real_flags` are the detector's own flags on a small eventgen scenario (a hydra campaign,
benign accounts, an org); :func:`flag` builds one Flag v1 by hand for the rule tests;
:func:`check_idempotent` applies a stream twice to a store and checks that the second pass
changes nothing (full dump of every table).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson

from consumers.contract.flags import flag_id_for
from consumers.core.config import DetectorConfig
from consumers.core.pipeline import LocalPipeline
from consumers.enforce.store import Store
from tests.eventgen import scenario

MALFORMED: list[bytes] = [
    b"not json",
    b"\xff\xfe\x00 not utf-8",
    b'{"schema_version": 2, "flag_id": "x"}',
    b'{"schema_version": 1}',
    b"",
]


@lru_cache(maxsize=1)
def real_flags() -> tuple[bytes, ...]:
    ds = scenario(seed=2, n_benign=6, n_org=3, n_hydra=10, days=1)
    return tuple(LocalPipeline(DetectorConfig()).feed(ds.lines()))


def flag(account: str, action: str, decided: int, campaign: str | None = None, org: str | None = None,
         score: float = 0.7, version: str = "test") -> bytes:
    return orjson.dumps({
        "schema_version": 1,
        "flag_id": flag_id_for(account, action, campaign, decided, version),
        "account_id": account, "org_id": org, "action": action, "score": score,
        "reasons": [{"code": "CAMPAIGN_MEMBER" if campaign else "HIGH_VOLUME", "detail": "test", "value": 3}],
        "campaign_id": campaign, "campaign_size": 3 if campaign else None,
        "decided_at_ms": decided, "window_start_ms": 0, "detector_version": version,
    })


def stream() -> list[tuple[bytes | None, str | None]]:
    """Real flags with malformed records mixed in and one allow-listed org's account."""
    flags = list(real_flags())
    out: list[tuple[bytes | None, str | None]] = [(f, f"flags:0:{i}") for i, f in enumerate(flags)]
    for j, bad in enumerate(MALFORMED):
        out.insert((j * 7) % (len(out) + 1), (bad, f"flags:0:bad{j}"))
    out.append((flag("acct-partner", "suspend", 10**12, org="org-partner"), "flags:0:p"))
    return out


def check_idempotent(store: Store) -> dict[str, Any]:
    """Apply :func:`stream` twice; the second pass must leave every table identical."""
    with store.transaction():
        store.allow_add("org", "org-partner", "contract partner")
    first = store.apply_many(stream())
    dump1 = store.dump()
    assert {r.outcome for r in first} >= {"applied", "malformed", "allow_listed"}
    assert sum(r.outcome == "malformed" for r in first) == len(MALFORMED)
    second = store.apply_many(stream())
    assert store.dump() == dump1, "applying the same flags again changed the store"
    assert {r.outcome for r in second} == {"duplicate", "malformed"}
    # one audit row per distinct flag and per distinct malformed record
    assert len(dump1["audit"]) == len(real_flags()) + 1 + len(MALFORMED)
    return dump1
