"""The evaluation report renders in real headless chromium (marker ``browser``).

Builds a report from a small hand-made input, takes a screenshot and dumps the rendered DOM with
Debian's ``/usr/bin/chromium``, and checks the sections, the charts and the headline numbers.
Chromium missing is a failure, not a skip: run ``make browser`` (installs it) first.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from consumers.contract.units import HOUR_MS
from consumers.evaluate import evaluate, write_report

CHROMIUM = "/usr/bin/chromium"
T0 = 1_776_816_000_000  # 2026-04-22 00:00 UTC
MIN = 60_000

pytestmark = pytest.mark.browser


def _inputs() -> tuple[list[dict], list[dict], list[dict]]:
    """8 hydra accounts (campaign h) and 2 cot_harvest (campaign k); 20 benign in two personas.

    Enforced: 6 hydra at their 5th request, 1 cot_harvest at its first, 1 developer (false
    positive); review: 1 casual. Every account sends 20 requests, one every 10 minutes.
    Known answers: precision 7/8 = 87.5%, enforced recall 7/10 = 70.0%, FPR 1/20 = 5.00%,
    leakage (6*4 + 2*20 + 0 + 20) / 200 = 84/200 = 42.0%, median hydra delay 40 min.
    """
    labels, events, flags = [], [], []
    accounts = ([(f"hydra-{i}", "attack", "hydra", "h") for i in range(8)]
                + [(f"cot-{i}", "attack", "cot_harvest", "k") for i in range(2)]
                + [(f"casual-{i}", "benign", "casual", None) for i in range(12)]
                + [(f"dev-{i}", "benign", "developer", None) for i in range(8)])
    for n, (acc, label, group, camp) in enumerate(accounts):
        labels.append({"account_id": acc, "org_id": None, "label": label, "group": group, "campaign": camp})
        start = T0 + n * MIN
        for i in range(20):
            events.append({"schema_version": 1, "event_id": f"{acc}-{i}", "ts_ms": start + i * 10 * MIN,
                           "account_id": acc})
    def f(acc: str, action: str, at: int, score: float, campaign: str | None = None) -> dict:
        return {"schema_version": 1, "flag_id": f"{acc}-{action}", "account_id": acc, "org_id": None,
                "action": action, "score": score, "campaign_id": campaign, "campaign_size": None,
                "reasons": [{"code": "SHARED_PROMPTS", "detail": "near-duplicate prompts shared with 6 accounts",
                             "value": 6}],
                "decided_at_ms": at, "window_start_ms": at - HOUR_MS, "detector_version": "test"}
    start = {acc: T0 + n * MIN for n, (acc, *_rest) in enumerate(accounts)}
    for i in range(6):
        flags.append(f(f"hydra-{i}", "suspend", start[f"hydra-{i}"] + 40 * MIN, 0.9, "P-h"))
    flags.append(f("cot-0", "throttle", start["cot-0"], 0.8))
    flags.append(f("dev-3", "suspend", start["dev-3"] + 30 * MIN, 0.77))
    flags.append(f("casual-5", "review", start["casual-5"] + 30 * MIN, 0.45))
    events.sort(key=lambda e: e["ts_ms"])
    return events, labels, flags


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, timeout=180, check=False)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def _png_rows_distinct(data: bytes) -> int:
    """Number of distinct pixel rows (after unfiltering is not needed: identical rows stay identical)."""
    pos, idat = 8, b""
    width, height = _png_size(data)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = len(raw) // height
    return len({raw[r * stride + 1:(r + 1) * stride] for r in range(0, height, 4)})


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is not installed: run `make browser` (apt-get install chromium) first")
    out = tmp_path_factory.mktemp("report")
    events, labels, flags = _inputs()
    metrics = evaluate(events, labels, flags)
    write_report(metrics, out)
    return out, metrics


def test_screenshot_is_rendered(report: tuple[Path, dict], tmp_path: Path):
    out, _ = report
    png = tmp_path / "report.png"
    res = _chromium([f"--screenshot={png}", "--window-size=1280,2400", (out / "index.html").as_uri()],
                    tmp_path / "profile")
    assert png.exists(), f"no screenshot; chromium said: {res.stderr.decode(errors='replace')[-2000:]}"
    data = png.read_bytes()
    assert _png_size(data) == (1280, 2400)
    assert len(data) > 50_000, "screenshot is suspiciously small (blank page?)"
    assert _png_rows_distinct(data) > 100, "screenshot has too little content"


def test_rendered_dom_has_sections_charts_and_headline_numbers(report: tuple[Path, dict], tmp_path: Path):
    out, metrics = report
    res = _chromium(["--dump-dom", (out / "index.html").as_uri()], tmp_path / "profile")
    dom = res.stdout.decode()
    assert res.returncode == 0, res.stderr.decode(errors="replace")[-2000:]
    for section in ("headline", "families", "personas", "timelines", "scores", "false-positives", "missed",
                    "campaigns", "groups"):
        assert f'id="{section}"' in dom, f"section {section} missing"
    for chart in ("family-bars", "persona-fpr", "persona-anyflag", "score-hist"):
        assert re.search(rf'<svg[^>]*id="{chart}"', dom), f"chart {chart} missing"
    assert len(re.findall(r'<svg[^>]*class="chart tl"', dom)) == 2  # one timeline per true campaign

    def card(key: str) -> str:
        m = re.search(rf'data-metric="{key}".*?<div class="cv">([^<]*)</div>', dom, re.S)
        assert m, f"card {key} missing"
        return m.group(1)

    # the known answers of _inputs()
    assert card("precision") == "87.5%"
    assert card("enforced_recall") == "70.0%"
    assert card("fpr") == "5.00%"
    assert card("leakage") == "42.0%"
    assert card("median_hydra_delay") == "40 min"
    assert metrics["overall"]["precision"] == pytest.approx(7 / 8)
    # the false positive and the missed accounts are listed
    fp_table = re.search(r'<table id="fp-table">.*?</table>', dom, re.S).group(0)
    assert "dev-3" in fp_table and "SHARED_PROMPTS" in fp_table
    missed = re.search(r'<table id="missed-table">.*?</table>', dom, re.S).group(0)
    for acc in ("hydra-6", "hydra-7", "cot-1"):
        assert acc in missed
    # self-contained: nothing fetched from elsewhere
    assert not re.search(r'(src|href)="(https?:)?//', dom)
