"""Shadow comparison of two runs' flags (consumers.diff) on hand-made flag sets with known answers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from consumers import diff, flag_diff
from consumers.contract.units import HOUR_MS
from tests.eventgen import dumps_lines, write_jsonl

T0 = 1_776_816_000_000  # 2026-04-22 00:00 UTC
H = HOUR_MS


def flag(acc: str, action: str, at: int, campaign: str | None = None, version: str = "v1") -> dict:
    return {
        "schema_version": 1, "flag_id": f"{acc}:{action}:{campaign}:{at}:{version}",
        "account_id": acc, "org_id": None, "action": action, "score": 0.7, "reasons": [],
        "campaign_id": campaign, "campaign_size": 5 if campaign else None, "decided_at_ms": at,
        "window_start_ms": at - H, "detector_version": version,
    }


# A: baseline. B: candidate. Every account below exercises one category.
A = [
    flag("same", "review", T0),
    flag("same", "suspend", T0 + 2 * H, "c1"),                 # enforced at +2h in both
    flag("esc", "review", T0 + H),                            # review -> suspend in B
    flag("deesc", "throttle", T0 + H),                        # throttle -> review in B
    flag("gone", "review", T0 + 3 * H),                       # A only, not enforcing
    flag("gone_enf", "suspend", T0 + 3 * H, "c2"),            # A only, enforcing
    flag("camp", "throttle", T0 + 4 * H, "c1"),               # campaign c1 -> c9
    flag("earlier", "throttle", T0 + 10 * H),                 # B enforces 4h earlier
    flag("later", "suspend", T0 + 5 * H, "c1"),               # B enforces 1h later
]
B = [
    flag("same", "review", T0),
    flag("same", "suspend", T0 + 2 * H, "c1"),
    flag("esc", "review", T0 + H),
    flag("esc", "suspend", T0 + 6 * H, "c1"),
    flag("deesc", "review", T0 + H),
    flag("new", "review", T0 + 7 * H),                        # B only, not enforcing
    flag("new_enf", "throttle", T0 + 8 * H),                  # B only, enforcing
    flag("camp", "throttle", T0 + 4 * H, "c9"),
    flag("earlier", "throttle", T0 + 6 * H),
    flag("later", "suspend", T0 + 6 * H, "c1"),
]


def names(res: dict, cat: str) -> list[str]:
    return [r["account_id"] for r in res["accounts"][cat]]


def test_categories_have_the_known_accounts() -> None:
    res = flag_diff.compare(A, B, name_a="a", name_b="b")
    assert names(res, "newly_flagged") == ["new", "new_enf"]
    assert names(res, "no_longer_flagged") == ["gone", "gone_enf"]
    assert names(res, "escalated") == ["esc"]
    assert names(res, "de_escalated") == ["deesc"]
    assert names(res, "campaign_changed") == ["camp", "esc"]
    # esc: review in A only -> suspend in B; new_enf: new. deesc: throttle -> review; gone_enf: gone
    assert names(res, "newly_enforced") == ["esc", "new_enf"]
    assert names(res, "no_longer_enforced") == ["deesc", "gone_enf"]
    c = res["counts"]
    assert c["flagged_both"] == 6          # same, esc, deesc, camp, earlier, later
    assert c["unchanged"] == 3             # same, earlier, later (action and campaign equal)
    assert res["a"]["accounts"] == 8 and res["b"]["accounts"] == 8
    assert res["a"]["flags"] == len(A) and res["b"]["flags"] == len(B)
    assert res["identical"] is False and res["changed"] is True


def test_detection_time_shift_of_accounts_enforced_in_both() -> None:
    res = flag_diff.compare(A, B)
    d = res["detection_time"]
    # enforced in both: same (0), camp (0), earlier (-4h), later (+1h)
    assert d["accounts"] == 4
    assert (d["earlier"], d["same"], d["later"]) == (1, 2, 1)
    assert d["min_ms"] == -4 * H and d["max_ms"] == H
    assert d["median_ms"] == 0.0
    assert d["mean_ms"] == pytest.approx((-4 * H + H) / 4)
    hist = {x["bucket"]: x["count"] for x in d["histogram"]}
    assert hist["-6h..-1h"] == 1 and hist["0"] == 2 and hist["+1h..+6h"] == 1
    assert sum(hist.values()) == 4
    assert res["counts"]["enforced_both"] == 4


def test_first_flag_time_counts_any_action() -> None:
    res = flag_diff.compare(A, B)
    f = res["first_flag_time"]
    # flagged in both: same 0, esc 0, deesc 0, camp 0, earlier -4h, later +1h
    assert f["accounts"] == 6
    assert (f["earlier"], f["same"], f["later"]) == (1, 4, 1)


def test_identical_runs() -> None:
    res = flag_diff.compare(A, list(A))
    assert res["identical"] is True and res["changed"] is False
    assert all(res["counts"][c] == 0 for c in flag_diff.CATEGORIES)
    assert res["counts"]["unchanged"] == res["counts"]["flagged_both"] == 8


def test_same_decisions_other_flag_ids_are_not_identical_but_unchanged() -> None:
    b = [dict(f, flag_id=f["flag_id"] + "x", detector_version="v2") for f in A]
    res = flag_diff.compare(A, b)
    assert res["identical"] is False
    assert res["changed"] is False
    assert res["b"]["detector_versions"] == ["v2"]


def test_later_flag_supersedes_and_first_enforcement_is_the_earliest() -> None:
    a = [flag("x", "throttle", T0), flag("x", "suspend", T0 + 5 * H)]
    b = [flag("x", "review", T0), flag("x", "throttle", T0 + 2 * H)]
    res = flag_diff.compare(a, b)
    assert names(res, "de_escalated") == ["x"]          # latest: suspend vs throttle
    assert res["detection_time"]["min_ms"] == 2 * H      # first enforcing: T0 vs T0+2h
    assert res["accounts"]["de_escalated"][0]["a_action"] == "suspend"


def test_window_keeps_only_flags_decided_inside() -> None:
    res = flag_diff.compare(A, B, since_ms=T0 + 5 * H, until_ms=T0 + 9 * H)
    # A inside: later (+5h). B inside: esc (+6h), new (+7h), new_enf (+8h), earlier (+6h), later (+6h)
    assert res["a"]["accounts"] == 1
    assert names(res, "newly_flagged") == ["earlier", "esc", "new", "new_enf"]
    assert res["detection_time"]["accounts"] == 1 and res["detection_time"]["later"] == 1


def test_invalid_flags_are_skipped_and_counted() -> None:
    bad = [{"account_id": "x", "action": "ban", "decided_at_ms": T0}, {"action": "review"},
           flag("ok", "review", T0)]
    res = flag_diff.compare(bad, [flag("ok", "review", T0)])
    assert res["a"]["invalid"] == 2
    assert res["identical"] is True


def test_text_report_names_the_numbers() -> None:
    text = flag_diff.render_text(flag_diff.compare(A, B, name_a="live", name_b="replay"), show=1)
    assert "live" in text and "replay" in text
    assert "escalated" in text and "newly flagged (B only)" in text
    assert "B earlier 1, same 2, later 1" in text
    assert "newly flagged (2, first 1)" in text


def write(path: Path, flags: list[dict]) -> Path:
    return write_jsonl(path, dumps_lines(flags))


def run_cli(*argv: str) -> int:
    p = argparse.ArgumentParser()
    diff.add_arguments(p)
    return diff.run(p.parse_args(list(argv)))


def test_cli_files_json_and_fail_on_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.jsonl", A)
    b = write(tmp_path / "b.jsonl.gz", B)
    (tmp_path / "a.jsonl").write_bytes(a.read_bytes() + b"not json\n")
    out = tmp_path / "diff.json"
    assert run_cli("--a", str(a), "--b", str(b), "--json", str(out)) == 0
    res = json.loads(out.read_text())
    assert res["counts"]["escalated"] == 1 and res["counts"]["newly_flagged"] == 2
    captured = capsys.readouterr()
    assert "shadow diff" in captured.out
    assert "1 lines are not JSON" in captured.err
    assert run_cli("--a", str(a), "--b", str(b), "--fail-on-change") == 1
    assert run_cli("--a", str(a), "--b", str(a), "--fail-on-change") == 0


def test_cli_since_until_accept_iso_and_missing_file_is_an_error(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", A)
    b = write(tmp_path / "b.jsonl", B)
    out = tmp_path / "d.json"
    assert run_cli("--a", str(a), "--b", str(b), "--since", "2026-04-22T05:00:00Z",
                   "--until", str(T0 + 9 * H), "--json", str(out)) == 0
    assert json.loads(out.read_text())["a"]["accounts"] == 1
    assert run_cli("--a", str(tmp_path / "missing.jsonl"), "--b", str(b)) == 2
    assert run_cli("--a", str(a), "--b", str(b), "--since", "yesterday") == 2
