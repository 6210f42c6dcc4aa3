"""The enforcement store on SQLite: idempotency, supersede rules, allow-list, malformed flags,
and the ``enforce allow`` / ``inspect`` commands on it."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from consumers.cli import main
from consumers.enforce.store import Store, parse_allow_list
from tests.enforce_cases import MALFORMED, check_idempotent, flag, real_flags, stream


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'enforce.db'}")
    yield s
    s.close()


def _state(store: Store, account: str) -> dict:
    [row] = store.rows("SELECT * FROM enforcement_state WHERE account_id = ?", (account,))
    return row


def test_real_flags_are_interesting() -> None:
    actions = {orjson.loads(f)["action"] for f in real_flags()}
    assert {"review", "throttle", "suspend"} & actions and len(real_flags()) >= 5


def test_applying_twice_leaves_the_store_identical(store: Store) -> None:
    check_idempotent(store)


def test_batching_does_not_matter(tmp_path: Path) -> None:
    """One transaction for everything or one per record: the same tables."""
    a, b = Store(str(tmp_path / "a.db"), clock=lambda: 1), Store(str(tmp_path / "b.db"), clock=lambda: 1)
    a.apply_many(stream())
    for rec in stream():
        b.apply_many([rec])
    assert a.dump() == b.dump()


def test_state_is_the_last_flag_of_each_account(store: Store) -> None:
    store.apply_many((f, None) for f in real_flags())
    last: dict[str, dict] = {}
    for f in real_flags():
        d = orjson.loads(f)
        last[d["account_id"]] = d  # the detector only escalates or changes campaign
    for acct, d in last.items():
        s = _state(store, acct)
        assert (s["action"], s["flag_id"], s["campaign_id"]) == (d["action"], d["flag_id"], d["campaign_id"])


def test_escalation_and_campaign_change(store: Store) -> None:
    r = store.apply_many([(flag("a", "review", 100), None), (flag("a", "suspend", 200), None),
                          (flag("a", "suspend", 300, campaign="c1"), None)])
    assert [x.outcome for x in r] == ["applied", "escalated", "campaign_changed"]
    s = _state(store, "a")
    assert (s["action"], s["campaign_id"], s["decided_at_ms"]) == ("suspend", "c1", 300)


def test_never_steps_down(store: Store) -> None:
    r = store.apply_many([(flag("a", "suspend", 100), None), (flag("a", "review", 200), None)])
    assert [x.outcome for x in r] == ["applied", "no_downgrade"]
    assert _state(store, "a")["action"] == "suspend"
    [audit] = store.rows("SELECT * FROM audit WHERE outcome = 'no_downgrade'")
    assert audit["applied_action"] is None and "never steps down" in audit["why"]


def test_out_of_order_flag_is_stale(store: Store) -> None:
    r = store.apply_many([(flag("a", "throttle", 200), None), (flag("a", "review", 100), None),
                          (flag("a", "suspend", 150), None)])
    assert [x.outcome for x in r] == ["applied", "stale", "stale"]
    s = _state(store, "a")
    assert (s["action"], s["decided_at_ms"]) == ("throttle", 200)


def test_same_action_same_campaign_later_is_an_update(store: Store) -> None:
    r = store.apply_many([(flag("a", "throttle", 100, version="v1"), None),
                          (flag("a", "throttle", 200, version="v2"), None)])
    assert [x.outcome for x in r] == ["applied", "updated"]
    assert _state(store, "a")["decided_at_ms"] == 200


def test_allow_list_turns_flags_into_review_items(store: Store) -> None:
    with store.transaction():
        store.allow_add("org", "org-x", "partner lab")
        store.allow_add("account", "b")
    r = store.apply_many([(flag("a", "suspend", 100, org="org-x"), None), (flag("b", "throttle", 100), None),
                          (flag("c", "suspend", 100, org="org-y"), None)])
    assert [x.outcome for x in r] == ["allow_listed", "allow_listed", "applied"]
    assert [_state(store, x)["action"] for x in "abc"] == ["review", "review", "suspend"]
    assert _state(store, "a")["allow_listed"] == 1
    [audit] = store.rows("SELECT * FROM audit WHERE account_id = 'a'")
    assert audit["flag_action"] == "suspend" and audit["applied_action"] == "review"
    assert "org org-x is on the allow-list (partner lab)" in audit["why"]
    # once removed from the allow-list, the next flag is enforced
    with store.transaction():
        store.allow_remove("org", "org-x")
    [res] = store.apply_many([(flag("a", "suspend", 200, org="org-x"), None)])
    assert res.outcome == "applied" and _state(store, "a")["action"] == "suspend"


def test_allow_list_file(store: Store, tmp_path: Path) -> None:
    f = tmp_path / "allow.txt"
    f.write_text("# partners\norg:org-x  # lab\naccount:a-1\n")
    with store.transaction():
        store.allow_add("account", "cli-added")
    assert store.load_allow_file(str(f)) == 2
    f.write_text("org:org-z\n")
    store.load_allow_file(str(f))
    assert [(k, i, s) for k, i, _n, s in store.allow_list()] == [
        ("account", "cli-added", "cli"), ("org", "org-z", "file")]
    with pytest.raises(ValueError):
        parse_allow_list("team:x")


@pytest.mark.parametrize("bad", MALFORMED + [b"[]", b'{"schema_version": 1, "flag_id": 3}', b"\x00" * 2_000_000])
def test_malformed_flag_is_audited_and_skipped(store: Store, bad: bytes) -> None:
    r1 = store.apply_many([(bad, "t:0:5"), (flag("a", "review", 1), None)])
    r2 = store.apply_many([(bad, "t:0:5")])
    assert [x.outcome for x in r1 + r2] == ["malformed", "applied", "malformed"]
    rows = store.rows("SELECT * FROM audit WHERE outcome = 'malformed'")
    assert len(rows) == 1 and rows[0]["why"].startswith("not a valid Flag v1") and rows[0]["source"] == "t:0:5"
    assert store.counters["malformed"] == 2


def test_inspect_and_allow_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'e.db'}"
    assert main(["enforce", "allow", "add", "org:org-x", "--note", "partner", "--store", db]) == 0
    with Store(db) as s:
        s.apply_many([(flag("a", "review", 1_700_000_000_000, campaign="camp-1"), None),
                      (flag("a", "suspend", 1_700_000_100_000, campaign="camp-1"), None),
                      (flag("b", "suspend", 1_700_000_000_000, campaign="camp-1", org="org-x"), None)])
    capsys.readouterr()
    assert main(["inspect", "account", "a", "--store", db]) == 0
    out = capsys.readouterr().out
    assert "in force: suspend" in out and "escalated" in out and "CAMPAIGN_MEMBER" in out
    assert main(["inspect", "campaign", "camp-1", "--store", db, "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert {m["account_id"]: m["action"] for m in view["members"]} == {"a": "suspend", "b": "review"}
    assert view["reason_codes"] == {"CAMPAIGN_MEMBER": 3}
    assert main(["inspect", "campaign", "camp-1", "--store", db]) == 0
    assert "allow-listed" in capsys.readouterr().out
    assert main(["inspect", "account", "nobody", "--store", db]) == 1
    assert main(["enforce", "allow", "list", "--store", db]) == 0
    assert "org:org-x\tcli\tpartner" in capsys.readouterr().out
    assert main(["enforce", "allow", "remove", "org:org-x", "--store", db]) == 0
