"""``distillwatch inspect``: an analyst's view of the enforcement store.

    distillwatch inspect account ID [--store S] [--json]
    distillwatch inspect campaign ID [--store S] [--json]

``account``: the action in force, whether the account or its org is allow-listed, and every flag
received for it (time, recommended and applied action, outcome, campaign, score, reasons).
``campaign``: its members and their actions, the reason codes behind them, and its flag history.
Text tables by default; ``--json`` for tools. Exit 1 when the store knows nothing of the ID.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from typing import Any

from consumers.enforce.cli import add_store_argument, open_store
from consumers.enforce.store import StoreError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=("account", "campaign"))
    p.add_argument("id", help="account_id or campaign_id")
    add_store_argument(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _ts(ms: Any) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(int(ms) / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table.

    >>> print(table(["a", "bb"], [[1, "x"], [22, None]]))
    a   bb
    --  --
    1   x
    22  -
    """
    cells = [[("-" if v is None else str(v)) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _reasons(reasons: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['code']}={r['value']}" if r.get("value") is not None else r["code"] for r in reasons)


def render_account(v: dict[str, Any]) -> str:
    out = [f"account {v['account_id']}"]
    s = v["state"]
    if s:
        out.append(f"  in force: {s['action']} (flag {s['flag_id']}, decided {_ts(s['decided_at_ms'])}, "
                   f"score {s['score']:.2f}, campaign {s['campaign_id'] or '-'}"
                   f"{', size ' + str(s['campaign_size']) if s['campaign_size'] else ''}, org {s['org_id'] or '-'})")
    else:
        out.append("  in force: nothing")
    if v["allow_listed"]:
        kind, ident, note = v["allow_listed"]
        out.append(f"  allow-listed: {kind} {ident}{' (' + note + ')' if note else ''}")
    out.append("")
    out.append(table(["decided", "flag_id", "recommended", "applied", "outcome", "campaign", "score", "reasons"],
                     [[_ts(h["decided_at_ms"]), h["flag_id"], h["flag_action"], h["applied_action"], h["outcome"],
                       h["campaign_id"], f"{h['score']:.2f}" if h["score"] is not None else None,
                       _reasons(h["reasons"])] for h in v["history"]]))
    for h in v["history"]:
        out.append(f"  {h['flag_id']}: {h['why']}")
        for r in h["reasons"]:
            out.append(f"      {r['code']}: {r['detail']}")
    return "\n".join(out)


def render_campaign(v: dict[str, Any]) -> str:
    out = [f"campaign {v['campaign_id']}: {len(v['members'])} accounts in force "
           f"({', '.join(f'{k} {n}' for k, n in v['actions'].items()) or 'none'}), "
           f"{v['accounts_ever_flagged']} ever flagged with it",
           "reason codes: " + (", ".join(f"{k} ({n})" for k, n in v["reason_codes"].items()) or "-"), "",
           table(["account", "org", "action", "size", "decided", "score", "allow-listed"],
                 [[m["account_id"], m["org_id"], m["action"], m["campaign_size"], _ts(m["decided_at_ms"]),
                   f"{m['score']:.2f}", "yes" if m["allow_listed"] else ""] for m in v["members"]]),
           "", "history:",
           table(["decided", "account", "recommended", "applied", "outcome", "size"],
                 [[_ts(h["decided_at_ms"]), h["account_id"], h["flag_action"], h["applied_action"],
                   h["outcome"], h["campaign_size"]] for h in v["history"]])]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    try:
        store = open_store(args)
    except (StoreError, OSError) as e:
        print(f"inspect: cannot open the store: {e}", file=sys.stderr)
        return 2
    with store:
        if args.what == "account":
            view = store.account_view(args.id)
            found = bool(view["state"] or view["history"])
            text = render_account(view)
        else:
            view = store.campaign_view(args.id)
            found = bool(view["members"] or view["history"])
            text = render_campaign(view)
    if args.json:
        print(json.dumps(view, indent=2, sort_keys=True, default=str))
    else:
        print(text if found else f"no {args.what} {args.id!r} in the store")
    return 0 if found else 1
