"""Quality measurement: flags against ground-truth labels over the request stream.

``evaluate(events, labels, flags)`` returns the metrics dict (see :mod:`.metrics` for every
definition), ``headline_table(metrics)`` the fixed-width text table the demo prints, and
``write_report(metrics, out_dir)`` writes ``metrics.json`` and the self-contained ``index.html``.
``distillwatch evaluate`` (:mod:`.cli`) does all three from files or the flags topic.
"""

from .metrics import (
    DEFAULT_DEDUP_WINDOW_MS,
    TARGETS,
    JsonlReader,
    Metrics,
    evaluate,
    headline_table,
    load_jsonl,
)
from .report import render_html, write_report

__all__ = [
    "DEFAULT_DEDUP_WINDOW_MS",
    "TARGETS",
    "JsonlReader",
    "Metrics",
    "evaluate",
    "headline_table",
    "load_jsonl",
    "render_html",
    "write_report",
]
