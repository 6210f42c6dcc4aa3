"""Quality metrics on hand-made inputs whose right answers are known (consumers.evaluate)."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import orjson
import pytest

from consumers.contract.units import HOUR_MS
from consumers.evaluate import cli as evaluate_cli
from consumers.evaluate import evaluate, headline_table, load_jsonl, render_html, write_report
from consumers.evaluate.metrics import quantile
from tests.eventgen import dumps_lines, write_jsonl

T0 = 1_776_816_000_000  # 2026-04-22 00:00 UTC
MIN = 60_000


def ev(eid: str, acc: str, ts: int) -> dict:
    return {"schema_version": 1, "event_id": eid, "ts_ms": ts, "account_id": acc}


def lab(acc: str, label: str, group: str, campaign: str | None = None) -> dict:
    return {"account_id": acc, "org_id": None, "label": label, "group": group, "campaign": campaign}


_fid = iter(range(10**9))


def flag(acc: str, action: str, at: int, *, score: float = 0.9, campaign_id: str | None = None,
         fid: str | None = None, reasons: list | None = None) -> dict:
    return {
        "schema_version": 1, "flag_id": fid or f"f{next(_fid)}", "account_id": acc, "org_id": None,
        "action": action, "score": score, "reasons": reasons or [], "campaign_id": campaign_id,
        "campaign_size": None, "decided_at_ms": at, "window_start_ms": at - HOUR_MS,
        "detector_version": "test",
    }


def scenario() -> tuple[list[dict], list[dict]]:
    """Two hydra accounts (campaign c1), one cot_harvest (c2), three benign in two personas.

    Every account sends ``n`` requests, one a minute from its start time.
    """
    spec = [
        ("h1", "attack", "hydra", "c1", 0, 10),
        ("h2", "attack", "hydra", "c1", 5 * MIN, 6),
        ("k1", "attack", "cot_harvest", "c2", 0, 4),
        ("b1", "benign", "casual", None, 0, 8),
        ("b2", "benign", "casual", None, 2 * MIN, 3),
        ("d1", "benign", "developer", None, 0, 5),
    ]
    labels = [lab(a, lb, g, c) for a, lb, g, c, _, _ in spec]
    events = [ev(f"{a}-{i}", a, T0 + start + i * MIN) for a, _, _, _, start, n in spec for i in range(n)]
    events.sort(key=lambda e: e["ts_ms"])
    return events, labels


def first_ts(events: list[dict], acc: str) -> int:
    return min(e["ts_ms"] for e in events if e["account_id"] == acc)


# ------------------------------------------------------------------------------ core metrics


def test_perfect_flags_give_full_recall_no_false_positive_no_leakage():
    events, labels = scenario()
    flags = [flag(a, "suspend", first_ts(events, a)) for a in ("h1", "h2", "k1")]
    m = evaluate(events, labels, flags)
    o = m["overall"]
    assert o["enforced_recall"] == 1.0
    assert o["fpr"] == 0.0
    assert o["precision"] == 1.0
    # flagged at the first request's ts: that request is not leaked (ts >= enforcing time)
    assert o["leakage"] == 0.0
    assert o["leaked_requests"] == 0
    assert o["median_delay_h"] == 0.0
    assert m["groups"]["hydra"]["enforced_recall"] == 1.0
    assert m["groups"]["cot_harvest"]["leakage"] == 0.0
    assert m["groups"]["casual"]["fpr"] == 0.0
    assert m["missed"]["total"] == 0
    assert m["false_positives"]["total"] == 0


def test_empty_flags_recall_zero_leakage_one_precision_null():
    events, labels = scenario()
    m = evaluate(events, labels, [])
    o = m["overall"]
    assert o["enforced_recall"] == 0.0
    assert o["any_flag_recall"] == 0.0
    assert o["leakage"] == 1.0
    assert o["leaked_requests"] == 10 + 6 + 4
    assert o["precision"] is None
    assert o["median_delay_h"] is None
    assert m["groups"]["hydra"]["median_delay_h"] is None
    assert m["campaign_purity"]["weighted_mean"] is None
    assert m["missed"]["total"] == 3
    # null, not NaN, in JSON; and the renderers cope
    assert json.loads(orjson.dumps(m))["overall"]["precision"] is None
    assert "precision" in headline_table(m)
    assert "<svg" in render_html(m)


def test_all_flagged_gives_fpr_one():
    events, labels = scenario()
    flags = [flag(lb["account_id"], "throttle", T0) for lb in labels]
    m = evaluate(events, labels, flags)
    assert m["overall"]["fpr"] == 1.0
    assert m["groups"]["casual"]["fpr"] == 1.0
    assert m["groups"]["developer"]["fpr"] == 1.0
    assert m["overall"]["precision"] == pytest.approx(3 / 6)
    assert m["false_positives"]["total"] == 3
    assert {r["account_id"] for r in m["false_positives"]["shown"]} == {"b1", "b2", "d1"}
    # benign requests at or after the false enforcement are blocked: all of them here
    assert m["groups"]["casual"]["blocked_share"] == 1.0


def test_late_flag_leaks_the_requests_before_it():
    events = [ev(f"e{i}", "a", T0 + i * MIN) for i in range(10)]
    labels = [lab("a", "attack", "hydra", "c")]
    # flagged at the 4th request's ts: the first 3 leaked, the 4th (ts == enforcing time) is not
    m = evaluate(events, labels, [flag("a", "suspend", T0 + 3 * MIN)])
    g = m["groups"]["hydra"]
    assert g["leaked_requests"] == 3
    assert g["leakage"] == pytest.approx(3 / 10)
    assert g["median_delay_h"] == pytest.approx(3 * MIN / HOUR_MS)
    # one ms later and the 4th request leaks too
    m2 = evaluate(events, labels, [flag("a", "suspend", T0 + 3 * MIN + 1)])
    assert m2["groups"]["hydra"]["leakage"] == pytest.approx(4 / 10)


def test_duplicate_event_ids_count_once():
    base = [ev(f"e{i}", "a", T0 + i * MIN) for i in range(5)]
    events = base[:3] + [dict(base[1]), dict(base[2])] + base[3:]
    labels = [lab("a", "attack", "hydra", "c")]
    m = evaluate(events, labels, [flag("a", "suspend", T0 + 2 * MIN)])
    assert m["groups"]["hydra"]["requests"] == 5
    assert m["groups"]["hydra"]["leaked_requests"] == 2
    assert m["inputs"]["events"]["duplicates"] == 2
    assert m["inputs"]["events"]["unique"] == 5


def test_dedup_window_bounds_memory_and_exact_mode_keeps_every_id():
    # a redelivery three hours later: outside a 1 h window (counted again), caught when exact
    events = [ev("x", "a", T0), ev("y", "a", T0 + 3 * HOUR_MS), ev("x", "a", T0 + 3 * HOUR_MS)]
    labels = [lab("a", "benign", "casual")]
    windowed = evaluate(events, labels, [], dedup_window_ms=HOUR_MS)
    exact = evaluate(events, labels, [], dedup_window_ms=None)
    assert windowed["groups"]["casual"]["requests"] == 3
    assert exact["groups"]["casual"]["requests"] == 2
    assert exact["inputs"]["events"]["duplicates"] == 1


def test_supersession_review_then_suspend_uses_the_suspend_time():
    events = [ev(f"e{i}", "a", T0 + i * MIN) for i in range(10)]
    labels = [lab("a", "attack", "hydra", "c")]
    flags = [flag("a", "review", T0 + 1 * MIN, score=0.5), flag("a", "suspend", T0 + 6 * MIN, score=0.95)]
    m = evaluate(events, labels, flags)
    g = m["groups"]["hydra"]
    assert g["enforced"] == 1
    assert g["leaked_requests"] == 6
    assert g["median_delay_h"] == pytest.approx(6 * MIN / HOUR_MS)
    assert g["review_queue"] == 0  # latest flag is the suspend
    assert m["charts"]["score_histogram"]["attack"][19] == 1  # latest score 0.95 -> last bin


def test_first_enforcing_flag_counts_even_if_later_superseded_by_review():
    events = [ev(f"e{i}", "a", T0 + i * MIN) for i in range(10)]
    labels = [lab("a", "attack", "hydra", "c")]
    flags = [flag("a", "throttle", T0 + 2 * MIN), flag("a", "suspend", T0 + 8 * MIN),
             flag("a", "review", T0 + 9 * MIN)]
    g = evaluate(events, labels, flags)["groups"]["hydra"]
    assert g["leaked_requests"] == 2  # the first enforcing flag (throttle) is the enforcing time
    assert g["review_queue"] == 1  # ...while the standing decision is review


def test_review_only_account_is_in_review_queue_not_enforced():
    events, labels = scenario()
    m = evaluate(events, labels, [flag("b1", "review", T0 + MIN, score=0.4)])
    casual = m["groups"]["casual"]
    assert casual["review_queue"] == 1
    assert casual["enforced"] == 0
    assert casual["fpr"] == 0.0
    assert casual["any_flag_rate"] == pytest.approx(1 / 2)
    assert m["overall"]["review_queue"] == 1
    assert m["overall"]["enforced"] == 0


def test_campaign_purity_of_a_mixed_campaign():
    labels = ([lab(f"x{i}", "attack", "hydra", "c1") for i in range(4)]
              + [lab(f"y{i}", "attack", "hydra_evasive", "c2") for i in range(3)]
              + [lab("b", "benign", "enterprise")])
    events = [ev(f"e-{lb['account_id']}", lb["account_id"], T0) for lb in labels]
    flags = (
        # P1: 3 of c1, 1 of c2, 1 benign -> purity 3/5
        [flag(f"x{i}", "suspend", T0, campaign_id="P1") for i in range(3)]
        + [flag("y0", "suspend", T0, campaign_id="P1"), flag("b", "suspend", T0, campaign_id="P1")]
        # P2: 2 of c2 -> purity 1; x3 flagged without a campaign
        + [flag("y1", "suspend", T0, campaign_id="P2"), flag("y2", "suspend", T0, campaign_id="P2"),
           flag("x3", "suspend", T0)]
    )
    m = evaluate(events, labels, flags)
    cp = m["campaign_purity"]
    by_id = {c["campaign_id"]: c for c in cp["campaigns"]}
    assert by_id["P1"]["purity"] == pytest.approx(3 / 5)
    assert by_id["P1"]["majority_campaign"] == "c1"
    assert by_id["P1"]["benign_members"] == 1
    assert by_id["P2"]["purity"] == 1.0
    assert by_id["P2"]["majority_campaign"] == "c2"
    assert cp["weighted_mean"] == pytest.approx((3 + 2) / (5 + 2))
    cov = {c["campaign"]: c for c in m["campaign_coverage"]}
    assert cov["c1"]["coverage"] == pytest.approx(3 / 4)
    assert cov["c1"]["fragments"] == 1
    assert cov["c2"]["coverage"] == 1.0
    assert cov["c2"]["fragments"] == 2


def test_latest_flag_campaign_decides_membership():
    labels = [lab("a", "attack", "hydra", "c1")]
    events = [ev("e", "a", T0)]
    flags = [flag("a", "review", T0, campaign_id="OLD"), flag("a", "suspend", T0, campaign_id="NEW")]
    m = evaluate(events, labels, flags)
    assert [c["campaign_id"] for c in m["campaign_purity"]["campaigns"]] == ["NEW"]
    cov = m["campaign_coverage"][0]
    assert (cov["fragments"], cov["ids_ever"]) == (1, 2)


def test_flags_for_unknown_accounts_are_reported_not_counted():
    events, labels = scenario()
    flags = [flag("h1", "suspend", T0), flag("ghost", "suspend", T0), flag("ghost2", "review", T0)]
    m = evaluate(events, labels, flags)
    assert m["unknown_accounts"]["accounts"] == 2
    assert m["unknown_accounts"]["enforced"] == 1
    assert m["overall"]["enforced"] == 1
    assert m["overall"]["precision"] == 1.0
    assert m["overall"]["review_queue"] == 0


def test_duplicate_flag_ids_are_dropped():
    events = [ev(f"e{i}", "a", T0 + i * MIN) for i in range(4)]
    labels = [lab("a", "attack", "hydra", "c")]
    f_review = flag("a", "review", T0, fid="same-review")
    f_suspend = flag("a", "suspend", T0 + 2 * MIN, fid="s")
    # the review re-delivered after the suspend must not become the latest flag
    m = evaluate(events, labels, [f_review, f_suspend, dict(f_review)])
    assert m["inputs"]["flags"]["duplicates"] == 1
    assert m["groups"]["hydra"]["review_queue"] == 0


def test_invalid_flags_and_events_are_counted_not_fatal():
    labels = [lab("a", "attack", "hydra", "c")]
    events = [ev("e1", "a", T0), {"event_id": "e2"}, ["not", "a", "dict"], ev("e3", "a", "late")]
    flags = [{"account_id": "a"}, flag("a", "ban", T0), "junk"]
    m = evaluate(events, labels, flags)
    assert m["inputs"]["events"]["invalid"] == 3
    assert m["inputs"]["flags"]["invalid"] == 3
    assert m["groups"]["hydra"]["requests"] == 1
    assert m["groups"]["hydra"]["enforced"] == 0


def test_delay_median_and_p90_per_family():
    labels = [lab(f"a{i}", "attack", "hydra", "c") for i in range(5)]
    events = [ev(f"e{i}", f"a{i}", T0) for i in range(5)]
    flags = [flag(f"a{i}", "suspend", T0 + (i + 1) * HOUR_MS) for i in range(5)]  # 1..5 h
    g = evaluate(events, labels, flags)["groups"]["hydra"]
    assert g["median_delay_h"] == pytest.approx(3.0)
    assert g["p90_delay_h"] == pytest.approx(4.6)  # linear interpolation between 4 and 5
    assert quantile([], 0.5) is None


def test_timeline_counts_requests_per_hour_and_cumulative_enforcement():
    labels = [lab("a", "attack", "hydra", "c"), lab("b", "attack", "hydra", "c")]
    events = [ev("1", "a", T0), ev("2", "a", T0 + 10 * MIN), ev("3", "b", T0 + HOUR_MS + 1),
              ev("4", "b", T0 + 2 * HOUR_MS + 5)]
    flags = [flag("a", "suspend", T0 + HOUR_MS + 2), flag("b", "throttle", T0 + 3 * HOUR_MS)]
    tl = evaluate(events, labels, flags)["charts"]["timelines"]["c"]
    assert tl["start_ms"] == T0
    assert tl["requests_per_hour"] == [2, 1, 1, 0]
    assert tl["enforced_cumulative"] == [0, 1, 1, 2]


def test_missed_accounts_are_listed_per_family():
    events, labels = scenario()
    m = evaluate(events, labels, [flag("h1", "suspend", T0)])
    assert m["missed"]["by_family"] == {"hydra": 1, "cot_harvest": 1}
    assert {r["account_id"] for r in m["missed"]["shown"]} == {"h2", "k1"}


def test_headline_table_has_a_row_per_group():
    events, labels = scenario()
    m = evaluate(events, labels, [flag("h1", "suspend", T0)])
    table = headline_table(m)
    first_cols = [line.split()[0] for line in table.splitlines() if line.strip() and not line.startswith("-")]
    for group in ("hydra", "cot_harvest", "casual", "developer", "overall"):
        assert group in first_cols
    assert "50.0%" in table.splitlines()[2]  # hydra: 1 of 2 enforced


def test_report_escapes_untrusted_text(tmp_path: Path):
    events, labels = scenario()
    reasons = [{"code": "SHARED_PROMPTS", "detail": "<script>alert(1)</script>", "value": 3}]
    m = evaluate(events, labels, [flag("b1", "suspend", T0, reasons=reasons)])
    _, html_path = write_report(m, tmp_path)
    html = html_path.read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "http://" not in html and "https://" not in html  # self-contained


def test_load_jsonl_reads_gzip_and_counts_bad_lines(tmp_path: Path):
    p = tmp_path / "x.jsonl.gz"
    with gzip.open(p, "wb") as fh:
        fh.write(b'{"a": 1}\n\nnot json\n{"a": 2}\n')
    r = load_jsonl(p)
    assert [o["a"] for o in r] == [1, 2]
    assert (r.lines, r.bad_lines) == (3, 1)
    with pytest.raises(ValueError):
        list(load_jsonl(p, strict=True))


# ------------------------------------------------------------------------------ CLI end to end


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    write_jsonl(path, dumps_lines(rows))


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    events, labels = scenario()
    events = events + [dict(events[0])]  # one duplicate delivery
    events.sort(key=lambda e: e["ts_ms"])
    flags = [flag("h1", "suspend", first_ts(events, "h1") + 4 * MIN),  # 4 of 10 leaked
             flag("k1", "throttle", first_ts(events, "k1")),  # none of 4 leaked
             flag("d1", "suspend", T0 + MIN),  # a false positive
             flag("b1", "review", T0)]
    _write_jsonl(tmp_path / "events.jsonl.gz", events)
    _write_jsonl(tmp_path / "labels.jsonl", labels)
    _write_jsonl(tmp_path / "flags.jsonl", flags)
    parser = argparse.ArgumentParser()
    evaluate_cli.add_arguments(parser)
    out = tmp_path / "report"
    args = parser.parse_args(["--events", str(tmp_path / "events.jsonl.gz"), "--labels", str(tmp_path / "labels.jsonl"),
                              "--flags", str(tmp_path / "flags.jsonl"), "--report", str(out)])
    assert evaluate_cli.run(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    o = m["overall"]
    assert o["enforced_attack"] == 2 and o["enforced_benign"] == 1
    assert o["precision"] == pytest.approx(2 / 3)
    assert o["enforced_recall"] == pytest.approx(2 / 3)
    assert o["fpr"] == pytest.approx(1 / 3)
    assert o["review_queue"] == 1
    # h1: 4 leaked; h2: all 6 (never enforced); k1: 0 -> 10 of 20 attack requests
    assert o["leakage"] == pytest.approx(10 / 20)
    assert m["groups"]["hydra"]["leakage"] == pytest.approx(10 / 16)
    assert m["groups"]["developer"]["fpr"] == 1.0
    assert m["inputs"]["events"]["duplicates"] == 1
    assert m["inputs"]["flags"]["source"] == str(tmp_path / "flags.jsonl")
    assert (out / "index.html").stat().st_size > 5000
    stdout = capsys.readouterr().out
    assert "hydra" in stdout and "overall" in stdout
    # --fail-on-targets turns the missed targets into exit code 1
    args.fail_on_targets = True
    assert evaluate_cli.run(args) == 1


def test_cli_missing_file_is_exit_code_2(tmp_path: Path):
    parser = argparse.ArgumentParser()
    evaluate_cli.add_arguments(parser)
    args = parser.parse_args(["--events", str(tmp_path / "nope.jsonl"), "--labels", str(tmp_path / "nope"),
                              "--flags", str(tmp_path / "nope"), "--report", str(tmp_path / "r")])
    assert evaluate_cli.run(args) == 2


def test_cli_requires_exactly_one_flags_source():
    parser = argparse.ArgumentParser()
    evaluate_cli.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--events", "e", "--labels", "l", "--report", "r"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--events", "e", "--labels", "l", "--report", "r", "--flags", "f", "--topic", "t"])
