"""``distillwatch diff --a RUN --b RUN``: shadow comparison of the flags of two runs.

A run is a Flag v1 JSONL file (``.gz`` ok, ``-`` for stdin) or a topic written as ``kafka:TOPIC``
(read to its current end with ``read_committed``). Typical pairs: the live flags topic against a
replay of the same range (``--a kafka:distillation.flags --b replay.jsonl``), or the current
detector version against a candidate (two replays with different ``--detector-config``).

Per account, a run's *decision* is its latest flag (a later flag supersedes an earlier one);
``A`` is the baseline, ``B`` the candidate. The report counts accounts

* **newly flagged** (a flag in B, none in A) and **no longer flagged** (in A, not in B);
* **escalated** / **de-escalated**: flagged in both, B's latest action ranks higher / lower
  (review < throttle < suspend);
* **campaign changed**: flagged in both, different latest ``campaign_id``;
* **newly enforced** / **no longer enforced**: enforcing (throttle or suspend) in one run only;

and, for the accounts enforced in both, how much the *detection time* moved: B's first enforcing
``decided_at_ms`` minus A's (negative = B enforces earlier) — count earlier/same/later, median,
mean, percentiles and a histogram. ``identical`` is true when both runs contain the same flags
(same ``flag_id`` sequence per account). ``--since``/``--until`` keep only flags decided in a
window (both runs), e.g. the range a replay covered.

Exit code 0, or 1 with ``--fail-on-change`` when the decisions differ (a CI gate for "the new
version changes nothing" or "two replays agree").
"""

from __future__ import annotations

import argparse
import sys

import orjson

from consumers.flag_diff import compare, render_text
from consumers.kafka.reader import load_flags
from consumers.times import parse_time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--a", required=True, metavar="RUN",
                   help="baseline run: Flag v1 JSONL file (.gz ok, - = stdin) or kafka:TOPIC")
    p.add_argument("--b", required=True, metavar="RUN", help="candidate run (same forms)")
    p.add_argument("--json", metavar="OUT", help="also write the full comparison as JSON")
    p.add_argument("--bootstrap-servers", metavar="S",
                   help="for kafka:TOPIC runs (default $DISTILLWATCH_BOOTSTRAP_SERVERS or 127.0.0.1:9092)")
    p.add_argument("--since", metavar="TIME", help="only flags decided at or after TIME (ISO 8601 or epoch ms)")
    p.add_argument("--until", metavar="TIME", help="only flags decided before TIME")
    p.add_argument("--show", type=int, default=20, metavar="N", help="accounts listed per category (default 20)")
    p.add_argument("--fail-on-change", action="store_true",
                   help="exit 1 when the runs' decisions differ")


def run(args: argparse.Namespace) -> int:
    """Compare, print the report on standard output, optionally write JSON."""
    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as e:
        print(f"diff: {e}", file=sys.stderr)
        return 2
    loaded = []
    for spec in (args.a, args.b):
        stats: dict[str, int] = {}
        try:
            flags = load_flags(spec, args.bootstrap_servers, stats)
        except (OSError, RuntimeError, ValueError) as e:
            print(f"diff: cannot read {spec}: {e}", file=sys.stderr)
            return 2
        if stats.get("not_json"):
            print(f"diff: {spec}: {stats['not_json']} lines are not JSON objects (skipped)", file=sys.stderr)
        loaded.append(flags)
    res = compare(loaded[0], loaded[1], name_a=args.a, name_b=args.b, since_ms=since, until_ms=until)
    print(render_text(res, args.show))
    if args.json:
        with open(args.json, "wb") as f:
            f.write(orjson.dumps(res, option=orjson.OPT_INDENT_2))
    return 1 if args.fail_on_change and res["changed"] else 0
