"""MODEL_SWITCH: an account that existed before a model's release and moved to it within hours."""

from __future__ import annotations

import orjson

from consumers.core.account_stage import AccountProcessor
from consumers.core.config import DAY_MS, HOUR_MS, DetectorConfig
from consumers.core.stage import Record
from tests.eventgen import valid_event

T0 = 1_776_816_000_000


def _rec(i: int, acct: str, ts: int, model: str) -> Record:
    ev = valid_event(event_id=f"e{i}", account_id=acct, ts_ms=ts, model=model, account_created_ms=ts - 400 * DAY_MS)
    return Record("requests", None, orjson.dumps(ev), 0, i, None, ts)  # live: broker time = event time


def _switch(release_after: int, move_after: int) -> float:
    """Hours of the account's move as the stage recorded them (-1: not a switch)."""
    p = AccountProcessor(DetectorConfig())
    recs = [_rec(0, "early", T0, "m-old"),                      # the partition starts here
            _rec(1, "mover", T0 + HOUR_MS, "m-old"),             # the account predates the release
            _rec(2, "first-user", T0 + release_after, "m-new"),  # first sighting = the release
            _rec(3, "mover", T0 + release_after + move_after, "m-new")]
    p.process(recs)
    return p.accounts["mover"].switch_h


def test_a_quick_move_to_a_released_model_is_recorded() -> None:
    assert _switch(3 * DAY_MS, 2 * HOUR_MS) == 2.0


def test_a_late_move_is_not_a_switch() -> None:
    assert _switch(3 * DAY_MS, 2 * DAY_MS) == -1.0


def test_models_met_in_the_first_day_are_not_releases() -> None:
    # at start-up every model is new to the detector: no account "moves" to it
    assert _switch(2 * HOUR_MS, HOUR_MS) == -1.0


def test_the_reason_reaches_the_behaviour_summary() -> None:
    from consumers.core.account_stage import behaviour_evidence

    p = AccountProcessor(DetectorConfig())
    p.process([_rec(0, "early", T0, "m-old"), _rec(1, "mover", T0 + HOUR_MS, "m-old"),
               _rec(2, "first-user", T0 + 3 * DAY_MS, "m-new"),
               _rec(3, "mover", T0 + 3 * DAY_MS + HOUR_MS, "m-new")])
    _, reasons, _ = behaviour_evidence(p.accounts["mover"], 0.0, p.cfg)
    assert ["MODEL_SWITCH", 1.0] in reasons
