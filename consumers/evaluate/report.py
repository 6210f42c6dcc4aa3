"""The quality report: ``metrics.json`` and a self-contained ``index.html``.

The page has no external resources (no CDN, no JavaScript): every chart is an inline SVG drawn
here from the metrics dict produced by :func:`consumers.evaluate.metrics.evaluate`, styled with a
little inline CSS. Every string that comes from the inputs (account ids, reason details...) is
HTML-escaped. Sections (each a ``<section id=...>``): ``headline`` cards, ``families`` and
``personas`` bar charts with the target lines, ``timelines`` per true campaign, ``scores``
histogram, ``false-positives``, ``missed``, ``campaigns``, ``dimensions`` (labels with a sweep
campaign's dims: a heat map and tables per dimension bucket) and the ``groups`` table.
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import orjson

from consumers.contract.units import HOUR_MS

from .metrics import TARGETS, Metrics, recall_target

# palette: warm for attack, cool for benign
C_ATTACK = "#d9480f"
C_ATTACK_LIGHT = "#ffa94d"
C_ATTACK_FILL = "#ffe8cc"
C_LEAK = "#862e9c"
C_BENIGN = "#1864ab"
C_BENIGN_LIGHT = "#74c0fc"
C_TARGET = "#343a40"
C_OK = "#2b8a3e"
C_BAD = "#c92a2a"
C_GRID = "#e9ecef"
C_AXIS = "#868e96"
C_TEXT = "#212529"

MAX_TIMELINES = 12


# ------------------------------------------------------------------------------ formatting


def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def _fpr(x: float | None) -> str:
    return _pct(x, 3 if x is not None and x < 0.01 else 2)


def _tick_pct(v: float) -> str:
    """Axis tick as a percentage with no trailing zeros (``0%``, ``0.05%``, ``80%``)."""
    return f"{100 * v:.3f}".rstrip("0").rstrip(".") + "%"


def _fpr_axis(scale: float) -> Any:
    """Percent formatter with enough decimals for an axis running to ``scale``."""
    digits = 3 if scale < 0.01 else 2 if scale < 0.1 else 1 if scale < 0.5 else 0
    return lambda v: _pct(v, digits)


def _bar_pct(v: float | None) -> str:
    return "—" if v is None else ("100%" if v >= 0.9995 else _pct(v))


def _n(count: int, noun: str) -> str:
    """``1 account`` / ``3 accounts``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _num(x: int | float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,}" if isinstance(x, int) else f"{x:,.2f}"


def _hours(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x * 60:.0f} min" if abs(x) < 1 else f"{x:.1f} h"


def _ts(ms: int | None, with_time: bool = True) -> str:
    if ms is None:
        return "—"
    d = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return d.strftime("%Y-%m-%d %H:%M") if with_time else d.strftime("%Y-%m-%d")


def _e(x: Any) -> str:
    return escape("" if x is None else str(x), quote=True)


def _f(x: float) -> str:
    """Compact SVG coordinate."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _nice_step(span: float, ticks: int = 5) -> float:
    if span <= 0:
        return 1.0
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _nice_max(x: float) -> float:
    if x <= 0:
        return 1.0
    step = _nice_step(x, 4)
    return math.ceil(x / step) * step


def _count_label(x: float) -> str:
    if x >= 1_000_000:
        return f"{x / 1_000_000:g}M"
    if x >= 1_000:
        return f"{x / 1_000:g}k"
    return f"{x:g}"


# ------------------------------------------------------------------------------ SVG charts


def _legend(items: list[tuple[str, str, str]], x: float, y: float) -> str:
    """items: (label, colour, kind) with kind 'box' | 'dash' | 'line'."""
    out = []
    for label, colour, kind in items:
        if kind == "box":
            out.append(f'<rect x="{_f(x)}" y="{_f(y - 9)}" width="12" height="12" rx="2" fill="{colour}"/>')
        elif kind == "dash":
            out.append(f'<line x1="{_f(x)}" x2="{_f(x + 14)}" y1="{_f(y - 3)}" y2="{_f(y - 3)}" '
                       f'stroke="{colour}" stroke-width="2" stroke-dasharray="4 3"/>')
        else:
            out.append(f'<line x1="{_f(x)}" x2="{_f(x + 14)}" y1="{_f(y - 3)}" y2="{_f(y - 3)}" '
                       f'stroke="{colour}" stroke-width="2.5"/>')
        out.append(f'<text x="{_f(x + 19)}" y="{_f(y + 1)}" class="lg">{_e(label)}</text>')
        x += 32 + 7.2 * len(label)
    return "".join(out)


def bar_chart(
    categories: list[str],
    series: list[tuple[str, str, list[float | None]]],
    *,
    y_max: float = 1.0,
    y_fmt: Any = _pct,
    y_label: str = "",
    targets: list[dict[str, Any]] | None = None,
    width: int = 1000,
    height: int = 330,
    sub_labels: list[str] | None = None,
    chart_id: str = "",
) -> str:
    """Grouped vertical bars: one group per category, one bar per series.

    ``series``: (name, colour, values). ``targets``: dicts with ``value``, ``label``, ``colour`` and
    optionally ``cat`` (draw over that category only) — drawn as dashed lines.
    """
    ml, mr, mt, mb = 62, 16, 40, 54 if sub_labels else 40
    pw, ph = width - ml - mr, height - mt - mb
    n = max(1, len(categories))
    gw = pw / n
    nb = max(1, len(series))
    bw = min(46.0, gw * 0.78 / nb)
    out = [f'<svg class="chart" id="{_e(chart_id)}" viewBox="0 0 {width} {height}" '
           f'role="img" aria-label="{_e(y_label)}" preserveAspectRatio="xMidYMid meet">']

    def y(v: float) -> float:
        return mt + ph - ph * max(0.0, min(v, y_max)) / y_max

    step = _nice_step(y_max, 5)
    t = 0.0
    while t <= y_max + 1e-12:
        yy = y(t)
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{_f(yy)}" y2="{_f(yy)}" stroke="{C_GRID}"/>')
        out.append(f'<text x="{ml - 8}" y="{_f(yy + 4)}" class="tick" text-anchor="end">{_e(_tick_pct(t))}</text>')
        t += step
    out.append(f'<text transform="translate(16 {_f(mt + ph / 2)}) rotate(-90)" class="axl" '
               f'text-anchor="middle">{_e(y_label)}</text>')
    for i, cat in enumerate(categories):
        gx = ml + i * gw + (gw - bw * nb) / 2
        for j, (name, colour, values) in enumerate(series):
            v = values[i]
            bx = gx + j * bw
            if v is None:
                out.append(f'<text x="{_f(bx + bw / 2)}" y="{_f(mt + ph - 4)}" class="val" '
                           f'text-anchor="middle">n/a</text>')
                continue
            top = y(v)
            hgt = max(mt + ph - top, 0.0 if v == 0 else 1.5)
            out.append(f'<rect x="{_f(bx + 1)}" y="{_f(mt + ph - hgt)}" width="{_f(bw - 2)}" '
                       f'height="{_f(hgt)}" fill="{colour}" rx="2"><title>{_e(cat)} — {_e(name)}: '
                       f'{_e(y_fmt(v))}</title></rect>')
            label = y_fmt(v)
            if bw >= 26 or len(label) <= 4:
                over = v > y_max
                out.append(f'<text x="{_f(bx + bw / 2)}" y="{_f(max(mt + 10, mt + ph - hgt - 4))}" '
                           f'class="val" text-anchor="middle">{_e(label)}{"↑" if over else ""}</text>')
        out.append(f'<text x="{_f(ml + i * gw + gw / 2)}" y="{_f(mt + ph + 18)}" class="cat" '
                   f'text-anchor="middle">{_e(cat)}</text>')
        if sub_labels:
            out.append(f'<text x="{_f(ml + i * gw + gw / 2)}" y="{_f(mt + ph + 34)}" class="sub" '
                       f'text-anchor="middle">{_e(sub_labels[i])}</text>')
    for tg in targets or []:
        yy = y(tg["value"])
        if "cat" in tg:
            i = categories.index(tg["cat"])
            x1, x2 = ml + i * gw + 4, ml + (i + 1) * gw - 4
        else:
            x1, x2 = ml, ml + pw
        out.append(f'<line x1="{_f(x1)}" x2="{_f(x2)}" y1="{_f(yy)}" y2="{_f(yy)}" '
                   f'stroke="{tg["colour"]}" stroke-width="1.8" stroke-dasharray="6 4">'
                   f'<title>{_e(tg["label"])}</title></line>')
        if tg.get("text", True):
            out.append(f'<text x="{_f(x2 - 2)}" y="{_f(yy - 4)}" class="tgt" text-anchor="end" '
                       f'fill="{tg["colour"]}">{_e(tg["label"])}</text>')
    out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{mt + ph}" y2="{mt + ph}" stroke="{C_AXIS}"/>')
    legend = [(name, colour, "box") for name, colour, _ in series]
    legend += [(tg["legend"], tg["colour"], "dash") for tg in targets or [] if tg.get("legend")]
    out.append(_legend(legend, ml, 18))
    out.append("</svg>")
    return "".join(out)


def hbar_chart(
    categories: list[str],
    values: list[float | None],
    *,
    colour: str,
    x_max: float,
    fmt: Any,
    title: str,
    sub_labels: list[str] | None = None,
    target: dict[str, Any] | None = None,
    width: int = 560,
    row_h: int = 38,
    chart_id: str = "",
) -> str:
    """Horizontal bars, one row per category (labels on the left), with an optional target line."""
    ml, mr, mt, mb = 170, 60, 34, 26
    pw = width - ml - mr
    height = mt + mb + row_h * max(1, len(categories))
    ph = height - mt - mb

    def x(v: float) -> float:
        return ml + pw * max(0.0, min(v, x_max)) / x_max

    out = [f'<svg class="chart" id="{_e(chart_id)}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{_e(title)}">']
    step = _nice_step(x_max, 4)
    t = 0.0
    while t <= x_max + 1e-12:
        out.append(f'<line x1="{_f(x(t))}" x2="{_f(x(t))}" y1="{mt}" y2="{mt + ph}" stroke="{C_GRID}"/>')
        out.append(f'<text x="{_f(x(t))}" y="{mt + ph + 16}" class="tick" text-anchor="middle">{_e(_tick_pct(t))}</text>')
        t += step
    for i, cat in enumerate(categories):
        yc = mt + i * row_h + row_h / 2
        lab_y = yc - 1 if sub_labels else yc + 4
        out.append(f'<text x="{ml - 10}" y="{_f(lab_y)}" class="cat" text-anchor="end">{_e(cat)}</text>')
        if sub_labels:
            out.append(f'<text x="{ml - 10}" y="{_f(yc + 12)}" class="sub" text-anchor="end">{_e(sub_labels[i])}</text>')
        v = values[i]
        if v is None:
            out.append(f'<text x="{ml + 4}" y="{_f(yc + 4)}" class="val">n/a</text>')
            continue
        w = x(v) - ml
        if v > 0:
            w = max(w, 2.0)
        out.append(f'<rect x="{ml}" y="{_f(yc - row_h * 0.32)}" width="{_f(w)}" height="{_f(row_h * 0.64)}" '
                   f'fill="{colour}" rx="2"><title>{_e(cat)}: {_e(fmt(v))}</title></rect>')
        out.append(f'<text x="{_f(ml + w + 5)}" y="{_f(yc + 4)}" class="val">{_e("0%" if v == 0 else fmt(v))}'
                   f'{"↑" if v > x_max else ""}</text>')
    out.append(f'<line x1="{ml}" x2="{ml}" y1="{mt}" y2="{mt + ph}" stroke="{C_AXIS}"/>')
    legend = [(title, colour, "box")]
    if target:
        xt = x(target["value"])
        out.append(f'<line x1="{_f(xt)}" x2="{_f(xt)}" y1="{mt - 4}" y2="{mt + ph}" stroke="{target["colour"]}" '
                   f'stroke-width="1.8" stroke-dasharray="6 4"><title>{_e(target["label"])}</title></line>')
        legend.append((target["label"], target["colour"], "dash"))
    out.append(_legend(legend, 12, 18))
    out.append("</svg>")
    return "".join(out)


def _time_step(n_hours: int) -> int:
    """Tick step in hours for a span of ``n_hours`` (at most about 8 ticks)."""
    for step in (1, 2, 3, 6, 12, 24, 48, 72, 168, 336, 720):
        if n_hours / step <= 8:
            return step
    return 1440


def timeline_chart(camp: str, tl: dict[str, Any], cov: dict[str, Any] | None,
                   width: int = 560, height: int = 250) -> str:
    """Requests per hour (area, left axis) and cumulative accounts enforced (line, right axis)."""
    reqs: list[int] = tl["requests_per_hour"]
    cum: list[int] = tl["enforced_cumulative"]
    n = len(reqs)
    accounts = max(1, tl["accounts"])
    ml, mr, mt, mb = 52, 52, 30, 36
    pw, ph = width - ml - mr, height - mt - mb
    rmax = _nice_max(max(reqs) if reqs else 1)
    h0 = tl["start_ms"] // HOUR_MS

    def x(i: float) -> float:
        return ml + pw * (i / max(1, n))

    def yl(v: float) -> float:
        return mt + ph - ph * v / rmax

    def yr(v: float) -> float:
        return mt + ph - ph * v / accounts

    out = [f'<svg class="chart tl" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="timeline {_e(camp)}">']
    step = _nice_step(rmax, 4)
    t = 0.0
    while t <= rmax + 1e-9:
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{_f(yl(t))}" y2="{_f(yl(t))}" stroke="{C_GRID}"/>')
        out.append(f'<text x="{ml - 6}" y="{_f(yl(t) + 4)}" class="tick" text-anchor="end">{_count_label(t)}</text>')
        t += step
    for v in sorted({0, accounts // 2 if accounts % 2 == 0 else 0, accounts}):
        out.append(f'<text x="{ml + pw + 6}" y="{_f(yr(v) + 4)}" class="tick" fill="{C_TEXT}">'
                   f'{_count_label(v)}</text>')
    tstep = _time_step(n)
    first = (-h0) % min(tstep, 24)
    for i in range(first, n + 1, tstep):
        d = datetime.fromtimestamp((h0 + i) * 3600, tz=UTC)
        label = d.strftime("%b %d") if d.hour == 0 else d.strftime("%H:00")
        out.append(f'<line x1="{_f(x(i))}" x2="{_f(x(i))}" y1="{mt + ph}" y2="{mt + ph + 4}" stroke="{C_AXIS}"/>')
        out.append(f'<text x="{_f(x(i))}" y="{mt + ph + 16}" class="tick" text-anchor="middle">{label}</text>')
    if n:
        pts = [f"{_f(x(0))},{_f(yl(0))}"]
        for i, r in enumerate(reqs):
            pts.append(f"{_f(x(i))},{_f(yl(r))}")
            pts.append(f"{_f(x(i + 1))},{_f(yl(r))}")
        pts.append(f"{_f(x(n))},{_f(yl(0))}")
        out.append(f'<polygon points="{" ".join(pts)}" fill="{C_ATTACK_FILL}" stroke="{C_ATTACK_LIGHT}" '
                   f'stroke-width="1"><title>requests per hour (peak {max(reqs):,})</title></polygon>')
        line = [f"{_f(x(0))},{_f(yr(0))}"]
        for i, c in enumerate(cum):
            line.append(f"{_f(x(i))},{_f(yr(c if i == 0 else cum[i - 1]))}")
            line.append(f"{_f(x(i + 1))},{_f(yr(c))}")
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{_f(yr(accounts))}" y2="{_f(yr(accounts))}" '
                   f'stroke="{C_TARGET}" stroke-dasharray="3 3" stroke-width="1"/>')
        out.append(f'<polyline points="{" ".join(line)}" fill="none" stroke="{C_BAD}" stroke-width="2.2">'
                   f'<title>accounts enforced: {cum[-1]:,} of {accounts:,}</title></polyline>')
    out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{mt + ph}" y2="{mt + ph}" stroke="{C_AXIS}"/>')
    out.append(f'<text transform="translate(12 {_f(mt + ph / 2)}) rotate(-90)" class="axl" '
               f'text-anchor="middle">requests / hour</text>')
    out.append(f'<text transform="translate({width - 8} {_f(mt + ph / 2)}) rotate(90)" class="axl" '
               f'text-anchor="middle">accounts enforced</text>')
    out.append(_legend([("requests/h", C_ATTACK_LIGHT, "box"), ("enforced (cum.)", C_BAD, "line"),
                        ("all accounts", C_TARGET, "dash")], ml, 16))
    out.append("</svg>")
    return "".join(out)


def score_histogram(hist: dict[str, Any], width: int = 1000, height: int = 300) -> str:
    """Latest-flag score per account, benign vs attack, log-scaled counts; unflagged bar apart."""
    bins = hist["bins"]
    att, ben = hist["attack"], hist["benign"]
    unf = hist["unflagged"]
    ml, mr, mt, mb = 62, 16, 40, 44
    pw, ph = width - ml - mr, height - mt - mb
    gap = 30
    slot = (pw - gap) / (bins + 1)
    vmax = max([1, *att, *ben, unf["attack"], unf["benign"]])
    lmax = math.log10(vmax + 1)

    def y(v: float) -> float:
        return mt + ph - ph * math.log10(v + 1) / lmax

    out = [f'<svg class="chart" id="score-hist" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="score distribution">']
    p = 0
    while 10 ** p <= vmax:
        for m in (1,):
            v = m * 10 ** p
            out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{_f(y(v))}" y2="{_f(y(v))}" stroke="{C_GRID}"/>')
            out.append(f'<text x="{ml - 8}" y="{_f(y(v) + 4)}" class="tick" text-anchor="end">{_count_label(v)}</text>')
        p += 1
    out.append(f'<text x="{ml - 8}" y="{_f(y(0) + 4)}" class="tick" text-anchor="end">0</text>')

    def bars(x0: float, b: int | None, a_val: int, b_val: int, label: str) -> None:
        w = slot * 0.42
        for k, (v, colour, who) in enumerate(((b_val, C_BENIGN, "benign"), (a_val, C_ATTACK, "attack"))):
            bx = x0 + slot * 0.08 + k * w
            top = y(v)
            out.append(f'<rect x="{_f(bx)}" y="{_f(top)}" width="{_f(w - 1)}" height="{_f(mt + ph - top)}" '
                       f'fill="{colour}" rx="1.5"><title>{who}, {label}: {v:,} accounts</title></rect>')

    bars(ml, None, unf["attack"], unf["benign"], "not flagged")
    out.append(f'<text x="{_f(ml + slot / 2)}" y="{mt + ph + 16}" class="tick" text-anchor="middle">not</text>')
    out.append(f'<text x="{_f(ml + slot / 2)}" y="{mt + ph + 28}" class="tick" text-anchor="middle">flagged</text>')
    x0 = ml + slot + gap
    out.append(f'<line x1="{_f(x0 - gap / 2)}" x2="{_f(x0 - gap / 2)}" y1="{mt}" y2="{mt + ph}" '
               f'stroke="{C_AXIS}" stroke-dasharray="2 3"/>')
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        bars(x0 + b * slot, b, att[b], ben[b], f"score {lo:.2f}–{hi:.2f}")
    for k in range(0, bins + 1, max(1, bins // 4)):
        xx = x0 + k * slot
        out.append(f'<line x1="{_f(xx)}" x2="{_f(xx)}" y1="{mt + ph}" y2="{mt + ph + 4}" stroke="{C_AXIS}"/>')
        out.append(f'<text x="{_f(xx)}" y="{mt + ph + 16}" class="tick" text-anchor="middle">{k / bins:.2f}</text>')
    out.append(f'<text x="{_f(x0 + bins * slot / 2)}" y="{mt + ph + 36}" class="axl" '
               f'text-anchor="middle">score of the latest flag</text>')
    out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{mt + ph}" y2="{mt + ph}" stroke="{C_AXIS}"/>')
    out.append(f'<text transform="translate(16 {_f(mt + ph / 2)}) rotate(-90)" class="axl" '
               f'text-anchor="middle">accounts (log scale)</text>')
    out.append(_legend([("benign", C_BENIGN, "box"), ("attack", C_ATTACK, "box")], ml, 18))
    out.append("</svg>")
    return "".join(out)


# ------------------------------------------------------------------------------ page parts


def _card(title: str, value: str, sub: str, ok: bool | None, key: str) -> str:
    cls = "card" + ("" if ok is None else (" ok" if ok else " bad"))
    badge = "" if ok is None else f'<span class="badge">{"meets target" if ok else "misses target"}</span>'
    return (f'<div class="{cls}" data-metric="{_e(key)}"><div class="ct">{_e(title)}</div>'
            f'<div class="cv">{_e(value)}</div><div class="cs">{_e(sub)}{badge}</div></div>')


def _reasons(reasons: list[Any]) -> str:
    out = []
    for r in reasons or []:
        if not isinstance(r, dict):
            continue
        val = r.get("value")
        val_s = "" if val is None else (f" = {val:.3g}" if isinstance(val, float) else f" = {val}")
        out.append(f'<li><span class="code">{_e(r.get("code"))}</span>{_e(val_s)}'
                   f'<span class="detail">{_e(r.get("detail"))}</span></li>')
    return f'<ul class="reasons">{"".join(out)}</ul>' if out else '<span class="muted">—</span>'


def _score(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _action(a: str | None) -> str:
    if not a:
        return '<span class="muted">no flag</span>'
    return f'<span class="act act-{_e(a)}">{_e(a)}</span>'


def _table(table_id: str, cols: list[tuple[str, bool]], rows: list[tuple[str, list[str]]],
           empty: str = "nothing to show") -> str:
    """An HTML table. ``cols``: (header, numeric); ``rows``: (row class, pre-escaped cells)."""
    head = "".join(f'<th class="n">{_e(h)}</th>' if num else f"<th>{_e(h)}</th>" for h, num in cols)
    body = []
    for cls, cells in rows:
        tds = "".join(f'<td class="n">{c}</td>' if num else f"<td>{c}</td>"
                      for c, (_, num) in zip(cells, cols, strict=True))
        body.append(f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(cols)}" class="muted">{_e(empty)}</td></tr>')
    return f'<div class="tw"><table id="{_e(table_id)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _checked(value: str, ok: bool | None) -> str:
    return value if ok is None else f'<span class="{"ok" if ok else "bad"}">{value}</span>'


def _groups_table(m: Metrics) -> str:
    g = m["groups"]
    cols = [("group", False), ("kind", False), ("accounts", True), ("requests", True), ("enforced", True),
            ("enforced recall", True), ("any-flag recall", True), ("FPR", True), ("any-flag rate", True),
            ("review queue", True), ("delay p50", True), ("delay p90", True), ("leakage", True)]
    rows: list[tuple[str, list[str]]] = []
    for name in m["attack_families"]:
        r = g[name]
        rec_ok = None if r["enforced_recall"] is None else r["enforced_recall"] >= recall_target(name)
        leak_ok = None if r["leakage"] is None else r["leakage"] <= TARGETS["leakage"]
        rows.append(("attack", [f'<span class="dot a"></span>{_e(name)}', "attack", f'{r["accounts"]:,}',
                                f'{r["requests"]:,}', f'{r["enforced"]:,}',
                                _checked(_pct(r["enforced_recall"]), rec_ok), _pct(r["any_flag_recall"]),
                                "—", "—", f'{r["review_queue"]:,}', _hours(r["median_delay_h"]),
                                _hours(r["p90_delay_h"]), _checked(_pct(r["leakage"]), leak_ok)]))
    for name in m["benign_personas"]:
        r = g[name]
        fpr_ok = None if r["fpr"] is None else r["fpr"] <= TARGETS["fpr"]
        rows.append(("benign", [f'<span class="dot b"></span>{_e(name)}', "benign", f'{r["accounts"]:,}',
                                f'{r["requests"]:,}', f'{r["enforced"]:,}', "—", "—",
                                _checked(_fpr(r["fpr"]), fpr_ok), _pct(r["any_flag_rate"], 2),
                                f'{r["review_queue"]:,}', "—", "—", "—"]))
    o = m["overall"]
    rows.append(("total", ["overall", "all", f'{o["accounts"]:,}', f'{o["requests"]:,}', f'{o["enforced"]:,}',
                           _pct(o["enforced_recall"]), _pct(o["any_flag_recall"]), _fpr(o["fpr"]),
                           _pct(o["any_flag_rate"], 2), f'{o["review_queue"]:,}', _hours(o["median_delay_h"]),
                           _hours(o["p90_delay_h"]), _pct(o["leakage"])]))
    return _table("groups-table", cols, rows)


CSS = f"""
:root {{ --attack:{C_ATTACK}; --benign:{C_BENIGN}; --ok:{C_OK}; --bad:{C_BAD}; --text:{C_TEXT}; }}
* {{ box-sizing: border-box; }}
body {{ margin:0; background:#f4f5f7; color:var(--text);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", "Inter", "DejaVu Sans", "Liberation Sans", sans-serif; }}
main {{ max-width: 1200px; margin: 0 auto; padding: 24px 20px 48px; }}
header h1 {{ font-size: 26px; margin: 0 0 2px; letter-spacing: -0.01em; }}
header .meta {{ color:#5c636a; font-size: 13px; }}
header .meta b {{ color: var(--text); font-weight: 600; }}
section {{ background:#fff; border-radius: 10px; padding: 18px 20px 16px; margin: 18px 0;
  box-shadow: 0 1px 2px rgba(0,0,0,.06), 0 1px 8px rgba(0,0,0,.04); }}
section h2 {{ font-size: 18px; margin: 0 0 4px; }}
section p.lead {{ margin: 0 0 12px; color:#5c636a; font-size: 13.5px; }}
.cards {{ display:grid; grid-template-columns: repeat(auto-fit, minmax(165px, 1fr)); gap: 12px;
  background: none; box-shadow: none; padding: 0; }}
.card {{ background:#fff; border-radius:10px; padding: 14px 16px; border-top: 4px solid #adb5bd;
  box-shadow: 0 1px 2px rgba(0,0,0,.06), 0 1px 8px rgba(0,0,0,.04); }}
.card.ok {{ border-top-color: var(--ok); }} .card.bad {{ border-top-color: var(--bad); }}
.card .ct {{ font-size: 12.5px; text-transform: uppercase; letter-spacing: .05em; color:#5c636a; }}
.card .cv {{ font-size: 30px; font-weight: 700; margin: 2px 0; font-variant-numeric: tabular-nums; }}
.card .cs {{ font-size: 12.5px; color:#5c636a; }}
.badge {{ display:inline-block; margin-left:6px; padding: 0 6px; border-radius: 8px; font-size: 11px;
  font-weight:600; }}
.card.ok .badge {{ background:#d3f9d8; color: var(--ok); }}
.card.bad .badge {{ background:#ffe3e3; color: var(--bad); }}
svg.chart {{ width:100%; height:auto; display:block; }}
.wide {{ overflow-x: auto; }} .wide svg.chart {{ min-width: 760px; }}
svg text {{ font-family: inherit; fill: {C_TEXT}; }}
svg .tick {{ font-size: 11.5px; fill:#5c636a; }} svg .axl {{ font-size: 12px; fill:#495057; }}
svg .cat {{ font-size: 13px; font-weight: 600; }} svg .sub {{ font-size: 11.5px; fill:#5c636a; }}
svg .val {{ font-size: 11px; fill:#343a40; paint-order: stroke; stroke: #fff; stroke-width: 3px;
  stroke-linejoin: round; }} svg .lg {{ font-size: 12.5px; }}
svg .tgt {{ font-size: 11.5px; font-weight: 600; }}
.two {{ display:grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 8px 20px; }}
.tls {{ display:grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 14px 20px; }}
.tl-card h3 {{ font-size: 14.5px; margin: 6px 0 0; }}
.tl-card .cs {{ font-size: 12.5px; color:#5c636a; }}
.tw {{ overflow-x: auto; }}
table {{ border-collapse: collapse; width: 100%; font-size: 13px; }}
th, td {{ text-align: left; padding: 6px 8px; border-bottom: 1px solid #edf0f2; vertical-align: top; }}
th {{ font-size: 12px; text-transform: uppercase; letter-spacing: .03em; color:#5c636a;
  background:#f8f9fa; position: sticky; top: 0; }}
td.n, th.n {{ text-align:right; font-variant-numeric: tabular-nums; }}
td:first-child {{ white-space: nowrap; }}
section h3 {{ font-size: 15px; margin: 16px 0 6px; }}
tr.total td {{ font-weight: 700; border-top: 2px solid #ced4da; }}
span.ok {{ color: var(--ok); font-weight: 600; }} span.bad {{ color: var(--bad); font-weight: 600; }}
.dot {{ display:inline-block; width:9px; height:9px; border-radius:50%; margin-right:6px; }}
.dot.a {{ background: var(--attack); }} .dot.b {{ background: var(--benign); }}
.mono {{ font-family: "DejaVu Sans Mono", ui-monospace, monospace; font-size: 12px; word-break: break-all; }}
.muted {{ color:#868e96; }}
.act {{ display:inline-block; padding: 1px 7px; border-radius: 8px; font-size: 12px; font-weight:600; }}
.act-suspend {{ background:#ffe3e3; color:#c92a2a; }} .act-throttle {{ background:#fff3bf; color:#e67700; }}
.act-review {{ background:#e7f5ff; color:#1864ab; }}
ul.reasons {{ list-style:none; margin:0; padding:0; }}
ul.reasons li {{ margin: 0 0 3px; }}
.code {{ font-family: "DejaVu Sans Mono", ui-monospace, monospace; font-size: 11.5px; background:#f1f3f5;
  border-radius: 4px; padding: 0 4px; }}
.detail {{ display:block; color:#5c636a; font-size: 12px; }}
.empty {{ padding: 14px; color:#2b8a3e; background:#ebfbee; border-radius: 8px; }}
details {{ font-size: 13px; color:#495057; }} details dt {{ font-weight:600; margin-top:6px; }}
details dd {{ margin: 0 0 0 14px; }}
footer {{ color:#868e96; font-size: 12px; text-align:center; margin-top: 16px; }}
@media (max-width: 700px) {{ .two, .tls {{ grid-template-columns: 1fr; }} .card .cv {{ font-size: 24px; }} }}
"""


#: heat-map fill per grade (0 meets the target ... 3 far from it; None: no target)
GRADE_FILL = {0: "#d3f9d8", 1: "#fff3bf", 2: "#ffd8a8", 3: "#ffc9c9", None: "#f1f3f5"}
_HEAT_COLS = (("recall", "enforced recall", _pct), ("recall_24h", "recall ≤ 24 h", _pct),
              ("leakage", "leakage", _pct), ("median_delay_h", "median delay h", _hours))


def dimension_heatmap(dm: dict[str, Any], width: int = 760) -> str:
    """One row per dimension bucket; recall, recall within 24 h, leakage and median delay
    coloured by how far each is from its target (grades of :mod:`.dimensions`)."""
    rows = [(d["title"] if i == 0 else "", c) for d in dm["dimensions"] for i, c in enumerate(d["buckets"])]
    label_w, head_h, row_h = 250, 34, 22
    col_w = (width - label_w) / len(_HEAT_COLS)
    height = head_h + row_h * len(rows) + 6
    out = [f'<svg class="chart heat" id="dimension-heatmap" viewBox="0 0 {width} {height}" role="img" '
           'aria-label="per-dimension heat map">']
    for j, (_, title, _fmt) in enumerate(_HEAT_COLS):
        out.append(f'<text class="axl" x="{_f(label_w + (j + 0.5) * col_w)}" y="{head_h - 12}" '
                   f'text-anchor="middle">{_e(title)}</text>')
    for i, (dim, c) in enumerate(rows):
        y = head_h + i * row_h
        if dim:
            out.append(f'<line x1="0" x2="{width}" y1="{y}" y2="{y}" stroke="{C_AXIS}" stroke-width="0.6"/>')
            out.append(f'<text class="cat" x="4" y="{y + 15}">{_e(dim)}</text>')
        out.append(f'<text class="sub" x="{label_w - 8}" y="{y + 15}" text-anchor="end">'
                   f'{_e(c["bucket"])} · {c["accounts"]:,}</text>')
        for j, (key, title, fmt) in enumerate(_HEAT_COLS):
            g = c["grade"].get(key)
            x = label_w + j * col_w
            out.append(f'<rect x="{_f(x + 1)}" y="{y + 1}" width="{_f(col_w - 2)}" height="{row_h - 2}" '
                       f'fill="{GRADE_FILL[g]}" data-grade="{"" if g is None else g}">'
                       f'<title>{_e(dim or "")} {_e(c["bucket"])}: {_e(title)} {fmt(c[key])}</title></rect>')
            out.append(f'<text class="val" x="{_f(x + col_w / 2)}" y="{y + 15}" text-anchor="middle">'
                       f'{fmt(c[key])}</text>')
    out.append("</svg>")
    return "".join(out)


def _dimensions_section(dm: dict[str, Any]) -> str:
    """The per-dimension section: heat map, table per bucket, campaigns and honest personas."""
    t = dm["targets"]

    def tgt(v: float | None) -> str:
        return "—" if v is None else _pct(v, 0)

    rows = []
    for d in dm["dimensions"]:
        for i, c in enumerate(d["buckets"]):
            rows.append(("", [_e(d["title"]) if i == 0 else "", _e(c["bucket"]), f'{c["campaigns"]:,}',
                              f'{c["accounts"]:,}', _checked(_pct(c["recall"]), c["grade"]["recall"] == 0),
                              tgt(c["target"]["recall"]),
                              _checked(_pct(c["recall_24h"]), c["grade"]["recall_24h"] == 0),
                              _checked(_pct(c["leakage"]), None if c["grade"]["leakage"] is None
                                       else c["grade"]["leakage"] == 0),
                              tgt(c["target"]["leakage"]),
                              _checked(_hours(c["median_delay_h"]), c["grade"]["median_delay_h"] == 0)]))
    camp_rows = [("", [f'<span class="mono">{_e(c["campaign"])}</span>', f'{c["size"]:,}', f'{c["evasions"]}',
                       _e(" · ".join(f"{k} {c['dims'][k]}" for k in ("network", "client", "payment", "schedule",
                                                                      "ramp", "paraphrase_bits", "creation")
                                     if k in c["dims"])),
                       _checked(_pct(c["recall"]), c["ok"]), _pct(c["leakage"]), _hours(c["median_delay_h"])])
                 for c in dm["campaigns"]]
    honest_rows = [("", [_e(h["persona"]), f'{h["accounts"]:,}', _checked(_pct(h["enforced_share"], 2),
                                                                        not h["enforced"]),
                         _pct(h["flagged_share"])]) for h in dm["honest"]]
    return (
        '<section id="dimensions"><h2>Quality per evasion dimension</h2><p class="lead">Attack accounts '
        "grouped by the bucket of each dimension their campaign was drawn with. Targets per campaign: "
        f"≥ {t['small_size']} accounts and ≤ {t['few_evasions']} evasions: recall ≥ {_pct(t['recall_few'], 0)}, "
        f"leakage ≤ {_pct(t['leakage_few'], 0)}; more evasions: ≥ {_pct(t['recall_many'], 0)} / "
        f"≤ {_pct(t['leakage_many'], 0)}; smaller campaigns: ≥ {_pct(t['recall_24h'], 0)} enforced within "
        f"{t['delay_h']:.0f} h. A bucket's target is the mean of its accounts' (leakage: requests'). "
        "Colour: green meets the target, yellow misses by ≤ 10 points (delay ≤ 2x), orange by ≤ 30 "
        "(≤ 4x), red by more.</p>"
        f'<div class="wide">{dimension_heatmap(dm)}</div>'
        + _table("dimensions-table", [("dimension", False), ("bucket", False), ("campaigns", True),
                                      ("accounts", True), ("recall", True), ("target", True),
                                      ("≤ 24 h", True), ("leakage", True), ("target", True),
                                      ("median delay h", True)], rows)
        + "<h3>Campaigns</h3>"
        + _table("sweep-campaigns-table", [("campaign", False), ("size", True), ("evasions", True),
                                           ("drawn", False), ("recall", True), ("leakage", True),
                                           ("median delay h", True)], camp_rows)
        + "<h3>Honest personas</h3>"
        + _table("honest-table", [("persona", False), ("accounts", True), ("enforced", True),
                                  ("flagged at all", True)], honest_rows)
        + "</section>")


def render_html(metrics: Metrics) -> str:
    """The whole report page as one self-contained HTML string."""
    m = metrics
    o = m["overall"]
    g = m["groups"]
    fams, pers = m["attack_families"], m["benign_personas"]
    inp = m["inputs"]
    ev = inp["events"]
    parts: list[str] = []

    # --- header
    src = []
    for k in ("events", "labels", "flags"):
        s = inp.get(k, {}).get("source")
        if s:
            src.append(f"{k}: <b>{_e(s)}</b>")
    versions = inp.get("flags", {}).get("detector_versions") or []
    parts.append(
        '<header><h1>distillwatch — detection quality</h1><div class="meta">'
        f'<b>{ev["unique"]:,}</b> requests ({ev["duplicates"]:,} duplicate deliveries dropped) · '
        f'<b>{o["attack_accounts"]:,}</b> attack and <b>{o["benign_accounts"]:,}</b> benign accounts · '
        f'<b>{inp["flags"]["flags"]:,}</b> flags on <b>{inp["flags"]["accounts"]:,}</b> accounts · '
        f'event time {_ts(ev["first_ts_ms"])} → {_ts(ev["last_ts_ms"])} UTC'
        + (f' · detector {", ".join(_e(v) for v in versions)}' if versions else "")
        + (f'<br>{" · ".join(src)}' if src else "") + "</div></header>")

    # --- headline cards
    hydra = g.get("hydra")
    hd = hydra["median_delay_h"] if hydra else None
    cards = [
        _card("Precision", _pct(o["precision"]), f'{o["enforced_attack"]:,} of {o["enforced"]:,} enforced are attack',
              None, "precision"),
        _card("Enforced recall", _pct(o["enforced_recall"]),
              f'{o["enforced_attack"]:,} of {o["attack_accounts"]:,} attack accounts · target ≥ '
              f'{_pct(TARGETS["enforced_recall"]["*"], 0)}',
              None if o["enforced_recall"] is None else o["enforced_recall"] >= TARGETS["enforced_recall"]["*"],
              "enforced_recall"),
        _card("False positive rate", _fpr(o["fpr"]),
              f'{o["enforced_benign"]:,} benign enforced · target ≤ {_pct(TARGETS["fpr"], 1)}',
              None if o["fpr"] is None else o["fpr"] <= TARGETS["fpr"], "fpr"),
        _card("Leakage", _pct(o["leakage"]),
              f'{o["leaked_requests"]:,} attack requests served · target ≤ {_pct(TARGETS["leakage"], 0)}',
              None if o["leakage"] is None else o["leakage"] <= TARGETS["leakage"], "leakage"),
        _card("Median hydra delay", _hours(hd),
              f'p90 {_hours(hydra["p90_delay_h"])} · first request → enforcement' if hydra else "no hydra accounts",
              None, "median_hydra_delay"),
        _card("Review queue", _num(o["review_queue"]),
              f'accounts whose latest flag is review · any-flag rate (benign) {_pct(o["any_flag_rate"], 2)}',
              None, "review_queue"),
    ]
    parts.append(f'<section class="cards" id="headline">{"".join(cards)}</section>')

    # --- families
    if fams:
        targets = [{"value": recall_target(f), "label": f"recall target {_pct(recall_target(f), 0)}",
                    "colour": C_TARGET, "cat": f, "text": False} for f in fams]
        targets[0]["legend"] = "recall target (" + ", ".join(
            sorted({f"{_pct(recall_target(f), 0)}" for f in fams}, reverse=True)) + ")"
        targets.append({"value": TARGETS["leakage"], "label": f"leakage target {_pct(TARGETS['leakage'], 0)}",
                        "colour": C_LEAK, "legend": f"leakage target {_pct(TARGETS['leakage'], 0)}",
                        "text": False})
        chart = bar_chart(
            fams,
            [("enforced recall", C_ATTACK, [g[f]["enforced_recall"] for f in fams]),
             ("any-flag recall", C_ATTACK_LIGHT, [g[f]["any_flag_recall"] for f in fams]),
             ("leakage", C_LEAK, [g[f]["leakage"] for f in fams])],
            y_max=1.0, y_label="share", y_fmt=_bar_pct, targets=targets, chart_id="family-bars",
            sub_labels=[f'{g[f]["accounts"]:,} accounts · p50 {_hours(g[f]["median_delay_h"])}' for f in fams],
        )
        parts.append(
            '<section id="families"><h2>Attack families</h2><p class="lead">Share of each family\'s '
            "accounts that got an enforcing flag (throttle/suspend) or any flag, and the share of its "
            "requests served before enforcement (leakage). Dashed: targets — recall per family, "
            f"leakage ≤ {_pct(TARGETS['leakage'], 0)}.</p><div class=\"wide\">{chart}</div></section>")

    # --- personas
    if pers:
        fprs = [g[p]["fpr"] for p in pers]
        fmax = _nice_max(max([TARGETS["fpr"] * 2, *(v for v in fprs if v is not None)]) * 1.05)
        c1 = hbar_chart(pers, fprs, colour=C_BENIGN, x_max=fmax, fmt=_fpr_axis(fmax),
                        title="false positive rate (enforced)", chart_id="persona-fpr",
                        sub_labels=[f'{g[p]["enforced"]:,} of {g[p]["accounts"]:,} enforced' for p in pers],
                        target={"value": TARGETS["fpr"], "label": f"target {_pct(TARGETS['fpr'], 1)}",
                                "colour": C_BAD})
        rates = [g[p]["any_flag_rate"] for p in pers]
        rmax = min(1.0, _nice_max(max([0.01, *(v for v in rates if v is not None)]) * 1.05))
        c2 = hbar_chart(pers, rates, colour=C_BENIGN_LIGHT, x_max=rmax, fmt=_fpr_axis(rmax),
                        title="any-flag rate (review load)", chart_id="persona-anyflag",
                        sub_labels=[f'{g[p]["any_flagged"]:,} flagged · {g[p]["review_queue"]:,} review'
                                    for p in pers])
        parts.append(
            '<section id="personas"><h2>Benign personas</h2><p class="lead">Honest accounts that were '
            f"enforced (false positives; target ≤ {_pct(TARGETS['fpr'], 1)} per persona) and that got "
            f'any flag, the load on the review team.</p><div class="two"><div>{c1}</div><div>{c2}</div></div></section>')

    # --- timelines
    tls = m["charts"]["timelines"]
    cov_by = {c["campaign"]: c for c in m["campaign_coverage"]}
    if tls:
        order = [c["campaign"] for c in m["campaign_coverage"] if c["campaign"] in tls][:MAX_TIMELINES]
        items = []
        for camp in order:
            c = cov_by.get(camp)
            sub = (f'{c["family"]} · {c["accounts"]:,} accounts · recall {_pct(c["enforced_recall"])} · '
                   f'leakage {_pct(c["leakage"])}') if c else ""
            items.append(f'<div class="tl-card" data-campaign="{_e(camp)}"><h3>{_e(camp)}</h3>'
                         f'<div class="cs">{_e(sub)}</div>{timeline_chart(camp, tls[camp], c)}</div>')
        more = len(tls) - len(order)
        note = f'<p class="lead">{more} smaller campaigns not drawn (see metrics.json).</p>' if more > 0 else ""
        parts.append(
            '<section id="timelines"><h2>Campaign timelines</h2><p class="lead">Per true campaign, over event '
            "time (UTC): its requests per hour (area) and the cumulative number of its accounts enforced "
            f'(line, right axis; dashed = all its accounts). The gap between the two is the leakage.</p>'
            f'<div class="tls">{"".join(items)}</div>{note}</section>')

    # --- scores
    sh = m["charts"]["score_histogram"]
    parts.append(
        '<section id="scores"><h2>Score distributions</h2><p class="lead">Score of each account\'s latest '
        f'flag, benign vs attack (log scale). Left, apart: accounts never flagged — '
        f'{sh["unflagged"]["benign"]:,} benign, {sh["unflagged"]["attack"]:,} attack.</p>'
        f'<div class="wide">{score_histogram(sh)}</div></section>')

    # --- false positives
    fp = m["false_positives"]
    fp_rows = [("", [f'<span class="mono">{_e(r["account_id"])}</span>',
                     f'<span class="dot b"></span>{_e(r["persona"])}', _action(r["action"]), _score(r["score"]),
                     f'<span class="mono">{_e(r["campaign_id"] or "—")}</span>', f'{r["requests"]:,}',
                     _ts(r["enforced_at_ms"]), _reasons(r["reasons"])]) for r in fp["shown"]]
    if fp_rows:
        body = _table("fp-table", [("account", False), ("persona", False), ("action", False), ("score", True),
                                   ("campaign", False), ("requests", True), ("enforced at (UTC)", False),
                                   ("reasons (latest flag)", False)], fp_rows)
    else:
        body = '<div class="empty">No benign account was enforced.</div>'
    parts.append(f'<section id="false-positives"><h2>Worst false positives</h2><p class="lead">'
                 f'{_n(fp["total"], "benign account")} got an enforcing flag; the {len(fp["shown"])} with the '
                 f"highest score, with the reasons an analyst would see.</p>{body}</section>")

    # --- missed
    ms = m["missed"]
    if ms["shown"]:
        mrows = [("", [f'<span class="mono">{_e(r["account_id"])}</span>', f'<span class="dot a"></span>{_e(r["family"])}',
                       f'<span class="mono">{_e(r["campaign"] or "—")}</span>', f'{r["requests"]:,}',
                       _action(r["action"]), _score(r["score"]), _reasons(r["reasons"])]) for r in ms["shown"]]
        by = " · ".join(f"{_e(f)}: {n:,}" for f, n in ms["by_family"].items())
        body = (f'<p class="lead">Not enforced, by family: {by}. Shown: the busiest accounts of each family.</p>'
                + _table("missed-table", [("account", False), ("family", False), ("true campaign", False),
                                          ("requests (all leaked)", True), ("latest flag", False), ("score", True),
                                          ("reasons", False)], mrows))
    else:
        body = '<div class="empty">Every attack account was enforced.</div>'
    parts.append(f'<section id="missed"><h2>Missed attack accounts</h2><p class="lead">'
                 f'{_n(ms["total"], "attack account")} never got an enforcing flag.</p>{body}</section>')

    # --- campaigns
    cp = m["campaign_purity"]
    cov_rows = [("", [f'<span class="mono">{_e(c["campaign"])}</span>', _e(c["family"]), f'{c["accounts"]:,}',
                      _pct(c["enforced_recall"]), _pct(c["leakage"]), _pct(c["coverage"]), f'{c["fragments"]:,}',
                      f'{c["ids_ever"]:,}']) for c in m["campaign_coverage"][:30]]
    pur_rows = [("", [f'<span class="mono">{_e(p["campaign_id"])}</span>', f'{p["members"]:,}',
                      f'<span class="mono">{_e(p["majority_campaign"] or "—")}</span>', _e(p["majority_family"] or "—"),
                      f'{p["majority_members"]:,}', f'{p["benign_members"]:,}', f'{p["true_campaigns"]:,}',
                      _pct(p["purity"])]) for p in cp["campaigns"][:30]]
    parts.append(
        '<section id="campaigns"><h2>Campaign attribution</h2><p class="lead">Weighted purity of the '
        f'predicted campaigns: <b>{_pct(cp["weighted_mean"])}</b> over {cp["predicted_campaigns"]:,} '
        "predicted campaign ids. Coverage: the share of a true campaign's accounts whose latest flag names "
        "a campaign; fragments: how many predicted ids those latest flags use (ever: over the whole history).</p>"
        + _table("coverage-table", [("true campaign", False), ("family", False), ("accounts", True),
                                    ("enforced recall", True), ("leakage", True), ("coverage", True),
                                    ("fragments", True), ("ids ever", True)], cov_rows)
        + "<h3>Predicted campaigns</h3>"
        + _table("purity-table", [("predicted id", False), ("members", True), ("majority true campaign", False),
                                  ("family", False), ("majority", True), ("benign", True),
                                  ("true campaigns", True), ("purity", True)], pur_rows,
                 empty="no campaign ids in the flags")
        + "</section>")

    # --- per evasion dimension (sweep labels)
    if m.get("dimensions"):
        parts.append(_dimensions_section(m["dimensions"]))

    # --- groups table
    unk = m["unknown_accounts"]
    unk_note = (f'<p class="lead">Flags for {_n(unk["accounts"], "account")} not in the labels '
                f'({unk["enforced"]:,} enforced) are left out of every number above.</p>') if unk["accounts"] else ""
    parts.append(f'<section id="groups"><h2>Metrics per group</h2>{unk_note}{_groups_table(m)}'
                 '<details><summary>Definitions</summary><dl>'
                 + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in m["definitions"].items())
                 + "</dl></details></section>")
    parts.append(f'<footer>distillwatch evaluate · {_e(m["schema"])} · all numbers are also in metrics.json</footer>')

    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            "<title>distillwatch — detection quality</title>"
            f"<style>{CSS}</style></head><body><main>{''.join(parts)}</main></body></html>")


def write_report(metrics: Metrics, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``index.html`` into ``out_dir`` (created); return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mj = out / "metrics.json"
    mj.write_bytes(orjson.dumps(metrics, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    html = out / "index.html"
    html.write_text(render_html(metrics), encoding="utf-8")
    return mj, html
