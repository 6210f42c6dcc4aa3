"""Detection quality against ground truth: per attack family, per benign persona and overall.

Inputs (formats in the common brief): the events file (RequestEvent v1 JSONL), the labels file (one
line per account with ``label``, ``group``, ``campaign``) and the flags (Flag v1, in the order they
were published). :func:`evaluate` consumes labels and flags first (both are per account, small),
then streams the events exactly once with per-account integer counters, so memory grows with the
number of accounts, never with the number of events.

Definitions (stable; they are also written into ``metrics.json`` under ``definitions``):

* An account's flag history is its flags in input order; a later flag supersedes an earlier one.
  A flag repeated with the same ``flag_id`` (at-least-once delivery) is dropped.
* *Enforcing time*: ``decided_at_ms`` of the account's first flag whose action is ``throttle`` or
  ``suspend`` (in input order). *Enforced* = the account has an enforcing time. *Any-flag time*:
  ``decided_at_ms`` of its first flag of any action.
* Requests are counted by unique ``event_id`` (a duplicate delivery counts once). Duplicates are
  recognised within a sliding window of event time (``dedup_window_ms``, default 24 h; ``None``
  keeps every id, exact but memory grows with events).
* *Leakage* of an attack account: its requests with ``ts_ms < enforcing time`` (all of them when it
  was never enforced). A request with ``ts_ms >= enforcing time`` is NOT leaked: the decision was
  taken with that event time, so enforcement applies from that instant on.
  Group leakage = leaked requests / all requests of the group's accounts.
* *Delay*: enforcing time - the account's first request ``ts_ms``, in hours of event time, over
  enforced attack accounts that have requests; median and p90 (linear interpolation).
* ``fpr`` (benign): enforced benign accounts / benign accounts. ``any_flag_rate``: benign accounts
  with any flag (the review load). ``blocked_share``: benign requests at or after a false
  enforcement / all benign requests of the group.
* ``review_queue``: accounts whose latest flag is ``review``.
* ``precision``: enforced attack accounts / enforced labelled accounts (``null`` when nothing was
  enforced). Flags for accounts missing from the labels are reported under ``unknown_accounts`` and
  left out of every other number.
* ``campaign_purity``: for each predicted ``campaign_id`` (from the members' *latest* flag), the
  share of its labelled members that belong to its majority true campaign (benign members count as
  impurity); ``weighted_mean`` = sum of majority counts / sum of members.
* ``campaign_coverage``: for each true campaign, the share of its accounts whose latest flag
  carries a ``campaign_id``, and ``fragments``: the distinct predicted ids among those latest
  flags (``ids_ever``: distinct ids over the whole flag history).

Every ratio with an empty denominator is ``None`` (``null`` in JSON), never a crash or a NaN.
"""

from __future__ import annotations

import gzip
import io
import math
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import orjson

from consumers.contract.flags import ACTIONS, ENFORCING_ACTIONS
from consumers.contract.units import HOUR_MS

from .dimensions import dimension_metrics, honest_rows

Metrics = dict[str, Any]

SCHEMA = "distillwatch.evaluate/v1"
DEFAULT_DEDUP_WINDOW_MS = 24 * HOUR_MS

#: Known groups in display order; groups found in the labels but not listed here follow, sorted.
ATTACK_FAMILIES = ("hydra", "hydra_evasive", "hydra_stealth", "cot_harvest", "blended", "heavy_scraper")
BENIGN_PERSONAS = (
    "casual", "developer", "enterprise", "eval_company", "ci_agent", "reseller", "researcher",
    "new_signup", "cohort", "agent_fleet",
)

#: Quality targets drawn on the report and checked in ``metrics["checks"]``.
#: ``enforced_recall``: per attack family (``"*"`` = any family not named).
TARGETS: dict[str, Any] = {
    "enforced_recall": {"hydra": 0.95, "cot_harvest": 0.95, "heavy_scraper": 0.95, "*": 0.90},
    "fpr": 0.001,
    "leakage": 0.15,
    # no enforced flag at all on these personas (issue: detection targets)
    "zero_enforced": ("eval_company", "enterprise"),
    "hydra_median_delay_h": 6.0,
}

#: Rows kept for the analyst tables of the report.
MAX_FALSE_POSITIVES = 20
MAX_MISSED = 20
SCORE_BINS = 20

DEFINITIONS = {
    "enforcing_time": "decided_at_ms of the account's first throttle/suspend flag, in input order",
    "requests": "unique event_id per account (duplicates within the dedup window count once)",
    "leakage": "attack requests with ts_ms < the account's enforcing time (all when never "
               "enforced) / all attack requests; a request at exactly the enforcing time is not leaked",
    "delay_h": "enforcing time - first request ts_ms, hours of event time, enforced attack accounts",
    "fpr": "benign accounts with an enforcing flag / benign accounts",
    "any_flag_rate": "benign accounts with any flag / benign accounts (review load)",
    "blocked_share": "benign requests with ts_ms >= the account's enforcing time / benign requests",
    "review_queue": "accounts whose latest flag is review",
    "precision": "enforced attack accounts / enforced labelled accounts (null when none enforced)",
    "campaign_purity": "per predicted campaign_id (latest flags): majority true campaign / labelled "
                       "members, benign members are impurity; weighted_mean = sum majority / sum members",
    "campaign_coverage": "per true campaign: share of accounts whose latest flag has a campaign_id; "
                         "fragments = distinct predicted ids among those latest flags",
    "dimensions": "labels with dims (sweep): per bucket of each drawn dimension, enforced recall, recall "
                  "within 24 h of the first request, leakage and median delay of the attack accounts; "
                  "targets and grades in consumers/evaluate/dimensions.py; null without dims",
}


# --------------------------------------------------------------------------------------- input


class JsonlReader:
    """Iterate the JSON objects of a JSONL file (gzip when the name ends in ``.gz``).

    Blank lines are skipped. A line that is not JSON raises ``ValueError`` when ``strict``;
    otherwise it is skipped and counted in ``bad_lines``. The file is opened on each iteration,
    so the reader can be iterated more than once.
    """

    def __init__(self, path: str | os.PathLike[str], strict: bool = False):
        self.path = os.fspath(path)
        self.strict = strict
        self.lines = 0
        self.bad_lines = 0

    def _open(self) -> IO[bytes]:
        if self.path.endswith(".gz"):
            return io.BufferedReader(gzip.open(self.path, "rb"), buffer_size=1 << 20)  # type: ignore[arg-type]
        return open(self.path, "rb", buffering=1 << 20)

    def __iter__(self) -> Iterator[Any]:
        loads = orjson.loads
        decode_error = orjson.JSONDecodeError
        lines = bad = 0
        try:
            with self._open() as fh:
                for line in fh:
                    try:
                        obj = loads(line)
                    except decode_error as exc:
                        if not line.strip():
                            continue
                        lines += 1
                        if self.strict:
                            raise ValueError(f"{self.path}:{lines}: not JSON: {exc}") from exc
                        bad += 1
                        continue
                    lines += 1
                    yield obj
        finally:
            self.lines, self.bad_lines = lines, bad


def load_jsonl(path: str | os.PathLike[str], strict: bool = False) -> JsonlReader:
    """Return an iterable over the JSON objects of a JSONL file (gzip-aware, orjson).

    Malformed lines are skipped and counted in the returned reader's ``bad_lines`` unless
    ``strict`` (then ``ValueError``).
    """
    return JsonlReader(path, strict=strict)


# ------------------------------------------------------------------------------------ helpers


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def quantile(sorted_values: list[float], q: float) -> float | None:
    """Quantile ``q`` of already sorted values, linear interpolation (``None`` when empty)."""
    n = len(sorted_values)
    if n == 0:
        return None
    pos = (n - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _group_order(groups: Iterable[str], known: tuple[str, ...]) -> list[str]:
    present = set(groups)
    return [g for g in known if g in present] + sorted(present - set(known))


def recall_target(family: str) -> float:
    """The enforced-recall target of an attack family."""
    t = TARGETS["enforced_recall"]
    return float(t.get(family, t["*"]))


# ---------------------------------------------------------------------------------- evaluate


def _read_labels(labels: Iterable[dict], dims_of: dict[str, dict[str, Any]] | None = None
                 ) -> tuple[dict[str, tuple[str, str, str | None, str | None]], int]:
    """account_id -> (label, group, campaign, org_id); and the count of unusable label lines.
    Attack accounts' ``dims`` (sweep labels) go into ``dims_of`` when given."""
    out: dict[str, tuple[str, str, str | None, str | None]] = {}
    bad = 0
    for row in labels:
        try:
            acc = row["account_id"]
            label = row["label"]
            group = row.get("group") or label
        except (KeyError, TypeError, AttributeError):
            bad += 1
            continue
        if not isinstance(acc, str) or label not in ("attack", "benign"):
            bad += 1
            continue
        campaign = row.get("campaign") if label == "attack" else None
        out[acc] = (label, str(group), campaign, row.get("org_id"))
        dims = row.get("dims")
        if dims_of is not None and label == "attack" and isinstance(dims, dict):
            dims_of[acc] = dims
    return out, bad


class _FlagHistory:
    """Per-account digest of the flag history: first times, latest flag, campaign ids ever."""

    __slots__ = ("n", "first_any_ms", "enforce_ms", "enforce_action", "latest", "campaigns_ever")

    def __init__(self) -> None:
        self.n = 0
        self.first_any_ms: int | None = None
        self.enforce_ms: int | None = None
        self.enforce_action: str | None = None
        self.latest: dict[str, Any] = {}
        self.campaigns_ever: set[str] = set()


def _read_flags(flags: Iterable[dict]) -> tuple[dict[str, _FlagHistory], dict[str, Any]]:
    hist: dict[str, _FlagHistory] = {}
    seen_ids: set[str] = set()
    counts: dict[str, Any] = {"flags": 0, "duplicates": 0, "invalid": 0}
    for f in flags:
        counts["flags"] += 1
        try:
            acc = f["account_id"]
            action = f["action"]
            decided = f["decided_at_ms"]
        except (KeyError, TypeError, AttributeError):
            counts["invalid"] += 1
            continue
        if not isinstance(acc, str) or action not in ACTIONS or type(decided) is not int:
            counts["invalid"] += 1
            continue
        fid = f.get("flag_id")
        if isinstance(fid, str):
            if fid in seen_ids:
                counts["duplicates"] += 1
                continue
            seen_ids.add(fid)
        h = hist.get(acc)
        if h is None:
            h = hist[acc] = _FlagHistory()
        h.n += 1
        if h.first_any_ms is None:
            h.first_any_ms = decided
        if h.enforce_ms is None and action in ENFORCING_ACTIONS:
            h.enforce_ms = decided
            h.enforce_action = action
        cid = f.get("campaign_id")
        if cid is not None:
            cid = str(cid)
            h.campaigns_ever.add(cid)
        score = f.get("score")
        h.latest = {
            "action": action,
            "score": float(score) if isinstance(score, int | float) else None,
            "campaign_id": cid,
            "campaign_size": f.get("campaign_size"),
            "decided_at_ms": decided,
            "reasons": f.get("reasons") or [],
            "detector_version": f.get("detector_version"),
        }
    counts["accounts"] = len(hist)
    counts["detector_versions"] = sorted({str(h.latest.get("detector_version")) for h in hist.values()
                                          if h.latest.get("detector_version") is not None})
    return hist, counts


class _Stream:
    """What one pass over the events leaves: per-account counters, per-campaign hourly
    requests and the input counts."""

    __slots__ = ("state", "per_hour", "n_lines", "n_invalid", "n_dup", "n_unlabeled",
                 "n_disorder", "first_ts", "last_ts")

    def __init__(self) -> None:
        #: account -> [requests, first_ts, leaked, campaign, enforce_ms, unlabeled]
        self.state: dict[str, list] = {}
        self.per_hour: Counter[tuple[str, int]] = Counter()  # (true campaign, epoch hour) -> requests
        self.n_lines = self.n_invalid = self.n_dup = self.n_unlabeled = self.n_disorder = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None


def _stream_events(events: Iterable[dict], label_of: dict[str, tuple[str, str, str | None, str | None]],
                   hist: dict[str, _FlagHistory], dedup_window_ms: int | None,
                   progress: Callable[[int], None] | None) -> _Stream:
    """Stream the events once: per account requests, first request and leaked requests."""
    INF = 1 << 62
    state: dict[str, list] = {}
    per_hour: Counter[tuple[str, int]] = Counter()  # (true campaign, epoch hour) -> requests
    # duplicate detection over a sliding window of event time, in one-minute buckets (inlined
    # here: this loop runs once per event)
    seen: set[str] = set()
    seen_add = seen.add
    window_buckets = None if dedup_window_ms is None else max(1, -(-dedup_window_ms // 60_000))
    buckets: deque[tuple[int, list[str]]] = deque()
    cur_bucket = -INF
    cur_ids: list[str] = []
    n_lines = n_invalid = n_dup = n_unlabeled = n_disorder = 0
    next_progress = 1_000_000
    first_ts = last_ts = None
    max_ts = -INF
    for ev in events:
        n_lines += 1
        try:
            eid = ev["event_id"]
            ts = ev["ts_ms"]
            acc = ev["account_id"]
        except (KeyError, TypeError, IndexError):
            n_invalid += 1
            continue
        if type(ts) is not int or type(acc) is not str or type(eid) is not str:
            n_invalid += 1
            continue
        if eid in seen:
            n_dup += 1
            continue
        seen_add(eid)
        if window_buckets is not None:
            b = ts // 60_000
            if b > cur_bucket:
                cur_bucket = b
                cur_ids = [eid]
                buckets.append((b, cur_ids))
                horizon = b - window_buckets
                while buckets[0][0] < horizon:
                    seen.difference_update(buckets.popleft()[1])
            else:  # same minute, or out of order: keep it with the newest bucket
                cur_ids.append(eid)
        if ts < max_ts:
            n_disorder += 1
        else:
            max_ts = ts
        st = state.get(acc)
        if st is None:
            lab = label_of.get(acc)
            h = hist.get(acc)
            enf = h.enforce_ms if h is not None and h.enforce_ms is not None else INF
            st = state[acc] = [0, ts, 0, lab[2] if lab is not None else None, enf, lab is None]
        st[0] += 1
        if ts < st[1]:
            st[1] = ts
        if ts < st[4]:
            st[2] += 1
        if st[3] is not None:
            per_hour[(st[3], ts // HOUR_MS)] += 1
        if st[5]:
            n_unlabeled += 1
        if n_lines >= next_progress and progress is not None:
            progress(n_lines)
            next_progress += 1_000_000
    if max_ts != -INF:
        first_ts = min(s[1] for s in state.values())
        last_ts = max_ts
    out = _Stream()
    out.state, out.per_hour = state, per_hour
    out.n_lines, out.n_invalid, out.n_dup = n_lines, n_invalid, n_dup
    out.n_unlabeled, out.n_disorder = n_unlabeled, n_disorder
    out.first_ts, out.last_ts = first_ts, last_ts
    return out


class _Tally:
    """Per-account outcomes aggregated per group, per true and per predicted campaign."""

    __slots__ = ("groups", "delays", "hist_bins", "unflagged", "fps", "missed", "true_camp",
                 "pred_camp", "enforce_times_by_campaign")
    groups: dict[str, dict[str, Any]]
    delays: dict[str, list[float]]
    hist_bins: dict[str, list[int]]
    unflagged: dict[str, int]
    fps: list[dict[str, Any]]
    missed: dict[str, list[dict[str, Any]]]
    true_camp: dict[str, dict[str, Any]]
    pred_camp: dict[str, Counter]
    enforce_times_by_campaign: dict[str, list[int]]


def _tally_accounts(label_of: dict[str, tuple[str, str, str | None, str | None]],
                    state: dict[str, list], hist: dict[str, _FlagHistory]) -> _Tally:
    """Per account outcomes, aggregated per group."""
    groups: dict[str, dict[str, Any]] = {}
    delays: dict[str, list[float]] = {}
    hist_bins = {"attack": [0] * SCORE_BINS, "benign": [0] * SCORE_BINS}
    unflagged = {"attack": 0, "benign": 0}
    fps: list[dict[str, Any]] = []
    missed: dict[str, list[dict[str, Any]]] = {}
    true_camp: dict[str, dict[str, Any]] = {}
    pred_camp: dict[str, Counter] = {}
    enforce_times_by_campaign: dict[str, list[int]] = {}

    for acc, (label, group, campaign, org_id) in label_of.items():
        st = state.get(acc)
        requests = st[0] if st else 0
        first_req = st[1] if st else None
        leaked = st[2] if st else 0
        h = hist.get(acc)
        latest: dict[str, Any] = (h.latest or {}) if h is not None else {}
        enforce_ms: int | None = h.enforce_ms if h is not None else None
        enforce_action = h.enforce_action if h is not None else None
        enforced = enforce_ms is not None
        g = groups.get(group)
        if g is None:
            g = groups[group] = {
                "kind": label, "accounts": 0, "requests": 0, "enforced": 0, "any_flagged": 0,
                "review_queue": 0, "leaked": 0,
                "actions": {a: 0 for a in ACTIONS},
            }
        g["accounts"] += 1
        g["requests"] += requests
        g["leaked"] += leaked
        if h is not None:
            g["any_flagged"] += 1
            g["actions"][latest["action"]] += 1
            if latest["action"] == "review":
                g["review_queue"] += 1
            s = latest["score"]
            if s is not None:
                hist_bins[label][min(SCORE_BINS - 1, max(0, int(s * SCORE_BINS)))] += 1
            cid = latest["campaign_id"]
            if cid is not None:
                pred_camp.setdefault(cid, Counter())[campaign if label == "attack" else None] += 1
        else:
            unflagged[label] += 1
        if enforced:
            g["enforced"] += 1
            if label == "attack" and first_req is not None and enforce_ms is not None:
                delays.setdefault(group, []).append((enforce_ms - first_req) / HOUR_MS)
        if label == "benign" and enforced:
            fps.append({
                "account_id": acc, "persona": group, "org_id": org_id,
                "action": latest["action"], "enforcing_action": enforce_action,
                "score": latest["score"], "campaign_id": latest["campaign_id"],
                "enforced_at_ms": enforce_ms, "first_request_ms": first_req,
                "requests": requests, "blocked_requests": requests - leaked,
                "reasons": latest["reasons"],
            })
        if label == "attack" and not enforced:
            missed.setdefault(group, []).append({
                "account_id": acc, "family": group, "campaign": campaign, "org_id": org_id,
                "requests": requests, "first_request_ms": first_req,
                "action": latest["action"] if latest else None,
                "score": latest["score"] if latest else None,
                "campaign_id": latest["campaign_id"] if latest else None,
                "reasons": latest["reasons"] if latest else [],
            })
        if label == "attack" and campaign is not None:
            tc = true_camp.get(campaign)
            if tc is None:
                tc = true_camp[campaign] = {
                    "campaign": campaign, "family": group, "accounts": 0, "enforced": 0,
                    "requests": 0, "leaked": 0, "covered": 0, "fragments": set(), "ever": set(),
                    "families": Counter(),
                }
            tc["accounts"] += 1
            tc["families"][group] += 1
            tc["requests"] += requests
            tc["leaked"] += leaked
            if enforce_ms is not None:
                tc["enforced"] += 1
                enforce_times_by_campaign.setdefault(campaign, []).append(enforce_ms)
            if h is not None:
                tc["ever"].update(h.campaigns_ever)
                if latest["campaign_id"] is not None:
                    tc["covered"] += 1
                    tc["fragments"].add(latest["campaign_id"])
    t = _Tally()
    t.groups, t.delays, t.hist_bins, t.unflagged = groups, delays, hist_bins, unflagged
    t.fps, t.missed, t.true_camp, t.pred_camp = fps, missed, true_camp, pred_camp
    t.enforce_times_by_campaign = enforce_times_by_campaign
    return t


def _flag_counts(g: dict[str, Any], kind: str, enforced_rate: str, any_flag_rate: str
                 ) -> dict[str, Any]:
    """What a group's accounts got, for a family or a persona: the two rates are named for the
    kind (``enforced_recall`` of a family is ``fpr`` of a persona)."""
    return {
        "kind": kind,
        "accounts": g["accounts"],
        "requests": g["requests"],
        "enforced": g["enforced"],
        enforced_rate: _ratio(g["enforced"], g["accounts"]),
        "any_flagged": g["any_flagged"],
        any_flag_rate: _ratio(g["any_flagged"], g["accounts"]),
        "review_queue": g["review_queue"],
        "latest_actions": g["actions"],
    }


def _group_metrics(groups: dict[str, dict[str, Any]], delays: dict[str, list[float]]
                   ) -> tuple[dict[str, dict[str, Any]], list[str], list[str]]:
    """Metrics per attack family and benign persona; the families and personas in order."""
    group_metrics: dict[str, dict[str, Any]] = {}
    attack_groups = _group_order((k for k, v in groups.items() if v["kind"] == "attack"), ATTACK_FAMILIES)
    benign_groups = _group_order((k for k, v in groups.items() if v["kind"] == "benign"), BENIGN_PERSONAS)
    for name in attack_groups:
        g = groups[name]
        d = sorted(delays.get(name, []))
        group_metrics[name] = {
            **_flag_counts(g, "attack", "enforced_recall", "any_flag_recall"),
            "median_delay_h": quantile(d, 0.5),
            "p90_delay_h": quantile(d, 0.9),
            "leaked_requests": g["leaked"],
            "leakage": _ratio(g["leaked"], g["requests"]),
        }
    for name in benign_groups:
        g = groups[name]
        blocked = g["requests"] - g["leaked"]
        group_metrics[name] = {
            **_flag_counts(g, "benign", "fpr", "any_flag_rate"),
            "blocked_requests": blocked,
            "blocked_share": _ratio(blocked, g["requests"]),
        }
    return group_metrics, attack_groups, benign_groups


def _overall(groups: dict[str, dict[str, Any]], delays: dict[str, list[float]]) -> dict[str, Any]:
    """The overall numbers (every labelled account)."""
    def total(kind: str, key: str) -> int:
        return sum(v[key] for v in groups.values() if v["kind"] == kind)

    att_acc, ben_acc = total("attack", "accounts"), total("benign", "accounts")
    att_enf, ben_enf = total("attack", "enforced"), total("benign", "enforced")
    att_req, ben_req = total("attack", "requests"), total("benign", "requests")
    att_leak = total("attack", "leaked")
    all_delays = sorted(x for v in delays.values() for x in v)
    overall = {
        "accounts": att_acc + ben_acc,
        "attack_accounts": att_acc,
        "benign_accounts": ben_acc,
        "requests": att_req + ben_req,
        "attack_requests": att_req,
        "benign_requests": ben_req,
        "enforced": att_enf + ben_enf,
        "enforced_attack": att_enf,
        "enforced_benign": ben_enf,
        "precision": _ratio(att_enf, att_enf + ben_enf),
        "enforced_recall": _ratio(att_enf, att_acc),
        "any_flag_recall": _ratio(total("attack", "any_flagged"), att_acc),
        "fpr": _ratio(ben_enf, ben_acc),
        "any_flag_rate": _ratio(total("benign", "any_flagged"), ben_acc),
        "flagged_accounts": total("attack", "any_flagged") + total("benign", "any_flagged"),
        "review_queue": total("attack", "review_queue") + total("benign", "review_queue"),
        "leaked_requests": att_leak,
        "leakage": _ratio(att_leak, att_req),
        "median_delay_h": quantile(all_delays, 0.5),
        "p90_delay_h": quantile(all_delays, 0.9),
    }
    return overall


def _unknown_accounts(hist: dict[str, _FlagHistory], label_of: dict[str, Any]) -> dict[str, Any]:
    """Flagged accounts missing from the labels."""
    unknown = [a for a in hist if a not in label_of]
    unknown_accounts = {
        "accounts": len(unknown),
        "enforced": sum(1 for a in unknown if hist[a].enforce_ms is not None),
        "flags": sum(hist[a].n for a in unknown),
        "review_queue": sum(1 for a in unknown if hist[a].latest["action"] == "review"),
        "examples": sorted(unknown)[:20],
    }
    return unknown_accounts


def _campaigns(pred_camp: dict[str, Counter], true_camp: dict[str, dict[str, Any]]
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Purity of the predicted campaigns and coverage of the true ones."""
    predicted = []
    maj_sum = mem_sum = 0
    for cid, members in pred_camp.items():
        n = sum(members.values())
        attack_members = [(c, k) for c, k in members.items() if c is not None]
        if attack_members:
            maj_c, maj_n = min(attack_members, key=lambda ck: (-ck[1], ck[0]))
        else:
            maj_c, maj_n = None, 0
        maj_sum += maj_n
        mem_sum += n
        predicted.append({
            "campaign_id": cid, "members": n, "majority_campaign": maj_c,
            "majority_family": true_camp[maj_c]["family"] if maj_c in true_camp else None,
            "majority_members": maj_n, "benign_members": members.get(None, 0),
            "true_campaigns": len(attack_members), "purity": _ratio(maj_n, n),
        })
    predicted.sort(key=lambda p: (-p["members"], p["campaign_id"]))
    coverage = []
    for camp, tc in true_camp.items():
        coverage.append({
            "campaign": camp, "family": tc["families"].most_common(1)[0][0],
            "accounts": tc["accounts"], "enforced": tc["enforced"],
            "enforced_recall": _ratio(tc["enforced"], tc["accounts"]),
            "requests": tc["requests"], "leaked_requests": tc["leaked"],
            "leakage": _ratio(tc["leaked"], tc["requests"]),
            "covered": tc["covered"], "coverage": _ratio(tc["covered"], tc["accounts"]),
            "fragments": len(tc["fragments"]), "ids_ever": len(tc["ever"]),
        })
    coverage.sort(key=lambda c: (-c["accounts"], c["campaign"]))
    purity = {"weighted_mean": _ratio(maj_sum, mem_sum), "predicted_campaigns": len(predicted),
              "campaigns": predicted}
    return purity, coverage


def _timelines(per_hour: Counter[tuple[str, int]], coverage: list[dict[str, Any]],
               enforce_times_by_campaign: dict[str, list[int]]) -> dict[str, Any]:
    """Per true campaign: requests per hour and cumulative enforced accounts."""
    hours_by_campaign: dict[str, dict[int, int]] = {}
    for (camp, hour), n in per_hour.items():
        hours_by_campaign.setdefault(camp, {})[hour] = n
    timelines = {}
    for cov in coverage:
        camp = cov["campaign"]
        hours = hours_by_campaign.get(camp, {})
        enf_hours = sorted(t // HOUR_MS for t in enforce_times_by_campaign.get(camp, []))
        span = list(hours) + enf_hours[:1] + enf_hours[-1:]
        if not span:
            continue
        h0, h1 = min(span), max(span)
        reqs = [hours.get(h, 0) for h in range(h0, h1 + 1)]
        cum = [0] * (h1 - h0 + 1)
        for eh in enf_hours:
            cum[eh - h0] += 1
        running = 0
        for i, c in enumerate(cum):
            running += c
            cum[i] = running
        timelines[camp] = {
            "family": cov["family"], "accounts": cov["accounts"], "start_ms": h0 * HOUR_MS,
            "requests_per_hour": reqs, "enforced_cumulative": cum,
        }
    return timelines


def _analyst_tables(fps: list[dict[str, Any]], missed: dict[str, list[dict[str, Any]]],
                    attack_groups: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The false positives and missed attack accounts shown to an analyst."""
    fps.sort(key=lambda r: (-(r["score"] or 0.0), r["account_id"]))
    missed_total = {fam: len(v) for fam, v in missed.items()}
    for v in missed.values():
        v.sort(key=lambda r: (-r["requests"], r["account_id"]))
    shown_missed: list[dict[str, Any]] = []
    fam_order = [f for f in attack_groups if missed.get(f)]
    i = 0
    while len(shown_missed) < MAX_MISSED and any(i < len(missed[f]) for f in fam_order):
        for f in fam_order:
            if i < len(missed[f]) and len(shown_missed) < MAX_MISSED:
                shown_missed.append(missed[f][i])
        i += 1
    shown_missed.sort(key=lambda r: (attack_groups.index(r["family"]), -r["requests"], r["account_id"]))
    return ({"total": len(fps), "shown": fps[:MAX_FALSE_POSITIVES]},
            {"total": sum(missed_total.values()), "by_family": missed_total, "shown": shown_missed})


def _target_checks(group_metrics: dict[str, dict[str, Any]], overall: dict[str, Any],
                   attack_groups: list[str], benign_groups: list[str]) -> list[dict[str, Any]]:
    """Every target of :data:`TARGETS` checked."""
    checks = []
    for name in attack_groups:
        gm = group_metrics[name]
        checks.append(_check("enforced_recall", name, gm["enforced_recall"], recall_target(name), ">="))
        checks.append(_check("leakage", name, gm["leakage"], TARGETS["leakage"], "<="))
    for name in benign_groups:
        checks.append(_check("fpr", name, group_metrics[name]["fpr"], TARGETS["fpr"], "<="))
    checks.append(_check("fpr", "overall", overall["fpr"], TARGETS["fpr"], "<="))
    checks.append(_check("leakage", "overall", overall["leakage"], TARGETS["leakage"], "<="))
    for name in TARGETS["zero_enforced"]:
        if name in group_metrics:
            checks.append(_check("fpr", name, group_metrics[name]["fpr"], 0.0, "<="))
    if "hydra" in group_metrics and group_metrics["hydra"].get("median_delay_h") is not None:
        checks.append(_check("median_delay_h", "hydra", group_metrics["hydra"]["median_delay_h"],
                             TARGETS["hydra_median_delay_h"], "<="))
    return checks


def _inputs(events: Iterable[dict], labels: Iterable[dict], flags: Iterable[dict], s: _Stream,
            label_of: dict[str, Any], bad_labels: int, overall: dict[str, Any], campaigns: int,
            flag_counts: dict[str, Any], dedup_window_ms: int | None,
            sources: dict[str, Any] | None) -> dict[str, Any]:
    """What was read: lines, duplicates, invalid and unlabelled records of each input."""
    n_lines, n_invalid, n_dup = s.n_lines, s.n_invalid, s.n_dup
    n_disorder, n_unlabeled, state = s.n_disorder, s.n_unlabeled, s.state
    first_ts, last_ts = s.first_ts, s.last_ts
    att_acc, ben_acc = overall["attack_accounts"], overall["benign_accounts"]
    inputs = {
        "events": {
            "lines": n_lines + int(getattr(events, "bad_lines", 0)),
            "not_json": int(getattr(events, "bad_lines", 0)),
            "invalid": n_invalid,
            "unique": n_lines - n_invalid - n_dup,
            "duplicates": n_dup,
            "out_of_order": n_disorder,
            "unlabeled_requests": n_unlabeled,
            "accounts": len(state),
            "first_ts_ms": first_ts,
            "last_ts_ms": last_ts,
            "dedup_window_ms": dedup_window_ms,
        },
        "labels": {
            "accounts": len(label_of),
            "attack": att_acc,
            "benign": ben_acc,
            "invalid": bad_labels + int(getattr(labels, "bad_lines", 0)),
            "campaigns": campaigns,
        },
        "flags": {**flag_counts, "not_json": int(getattr(flags, "bad_lines", 0))},
    }
    for k, v in (sources or {}).items():
        entry = inputs.setdefault(k, {})
        if isinstance(entry, dict):
            entry["source"] = v
    return inputs


def evaluate(
    events: Iterable[dict],
    labels: Iterable[dict],
    flags: Iterable[dict],
    *,
    dedup_window_ms: int | None = DEFAULT_DEDUP_WINDOW_MS,
    sources: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Metrics:
    """Measure the flags against the labels over the events; return the metrics as a plain dict.

    ``labels`` and ``flags`` are consumed first, then ``events`` is iterated exactly once.
    ``sources`` (e.g. the input paths) is copied into ``metrics["inputs"]``. ``progress`` is called
    every million events with the number read so far. The result is JSON-serialisable; see the
    module docstring for the definitions.
    """
    dims_of: dict[str, dict[str, Any]] = {}
    label_of, bad_labels = _read_labels(labels, dims_of)
    hist, flag_counts = _read_flags(flags)
    s = _stream_events(events, label_of, hist, dedup_window_ms, progress)
    t = _tally_accounts(label_of, s.state, hist)
    group_metrics, attack_groups, benign_groups = _group_metrics(t.groups, t.delays)
    overall = _overall(t.groups, t.delays)
    purity, coverage = _campaigns(t.pred_camp, t.true_camp)
    false_positives, missed = _analyst_tables(t.fps, t.missed, attack_groups)
    dimensions = (_dimensions(dims_of, label_of, s.state, hist, group_metrics, benign_groups)
                  if dims_of else None)
    return {
        "schema": SCHEMA,
        "definitions": DEFINITIONS,
        "targets": TARGETS,
        "inputs": _inputs(events, labels, flags, s, label_of, bad_labels, overall, len(t.true_camp),
                          flag_counts, dedup_window_ms, sources),
        "overall": overall,
        "groups": group_metrics,
        "attack_families": attack_groups,
        "benign_personas": benign_groups,
        "campaign_purity": purity,
        "campaign_coverage": coverage,
        "unknown_accounts": _unknown_accounts(hist, label_of),
        "checks": _target_checks(group_metrics, overall, attack_groups, benign_groups),
        "false_positives": false_positives,
        "missed": missed,
        "charts": {
            "score_histogram": {
                "bins": SCORE_BINS, "attack": t.hist_bins["attack"], "benign": t.hist_bins["benign"],
                "unflagged": t.unflagged,
            },
            "timelines": _timelines(s.per_hour, coverage, t.enforce_times_by_campaign),
        },
        "dimensions": dimensions,
    }


def _dimensions(dims_of: dict[str, dict[str, Any]], label_of: dict[str, tuple[str, str, str | None, str | None]],
                state: dict[str, list], hist: dict[str, _FlagHistory],
                group_metrics: dict[str, dict[str, Any]], benign_groups: list[str]) -> dict[str, Any]:
    """Per-dimension quality (:mod:`.dimensions`) of the attack accounts whose labels carry dims."""
    records: list[list[Any]] = []
    campaign_dims: dict[str, dict[str, Any]] = {}
    sizes: Counter[str] = Counter()
    for acc, dims in dims_of.items():
        camp = label_of[acc][2] or acc
        st = state.get(acc)
        requests, first, leaked = (st[0], st[1], st[2]) if st else (0, None, 0)
        h = hist.get(acc)
        enforce_ms = h.enforce_ms if h is not None else None
        delay = (enforce_ms - first) / HOUR_MS if enforce_ms is not None and first is not None else None
        records.append([camp, requests, leaked, enforce_ms is not None, delay])
        campaign_dims.setdefault(camp, dims)
        sizes[camp] += 1
    for camp, d in campaign_dims.items():
        if "size" not in d or "evasions" not in d:
            campaign_dims[camp] = {"size": sizes[camp], "evasions": 0, **d}
    return dimension_metrics(records, campaign_dims, honest_rows(group_metrics, benign_groups))


def _check(metric: str, group: str, value: float | None, target: float, op: str) -> dict[str, Any]:
    ok = None if value is None else (value >= target if op == ">=" else value <= target)
    return {"metric": metric, "group": group, "value": value, "target": target, "op": op, "ok": ok}


# ---------------------------------------------------------------------------------- text table


def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def _hours(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def headline_table(metrics: Metrics) -> str:
    """A compact fixed-width text table: one row per group and an overall row."""
    cols = ("group", "accounts", "enforced", "recall", "any-flag", "FPR", "review",
            "delay p50 h", "p90 h", "leakage")
    widths = (15, 9, 9, 8, 9, 9, 7, 12, 7, 8)
    rows: list[tuple[str, ...]] = []
    groups = metrics["groups"]
    for name in metrics["attack_families"]:
        g = groups[name]
        rows.append((name, str(g["accounts"]), str(g["enforced"]), _pct(g["enforced_recall"]),
                     _pct(g["any_flag_recall"]), "—", str(g["review_queue"]),
                     _hours(g["median_delay_h"]), _hours(g["p90_delay_h"]), _pct(g["leakage"])))
    rows.append(())
    for name in metrics["benign_personas"]:
        g = groups[name]
        rows.append((name, str(g["accounts"]), str(g["enforced"]), "—", _pct(g["any_flag_rate"]),
                     _pct(g["fpr"], 3), str(g["review_queue"]), "—", "—", "—"))
    o = metrics["overall"]
    rows.append(())
    rows.append(("overall", str(o["accounts"]), str(o["enforced"]), _pct(o["enforced_recall"]),
                 _pct(o["any_flag_recall"]), _pct(o["fpr"], 3), str(o["review_queue"]),
                 _hours(o["median_delay_h"]), _hours(o["p90_delay_h"]), _pct(o["leakage"])))

    def fmt(r: tuple[str, ...]) -> str:
        return (r[0].ljust(widths[0]) + "".join(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))).rstrip()

    rule = "-" * sum(widths)
    lines = [fmt(cols), rule]
    for r in rows:
        lines.append(rule if not r else fmt(r))
    purity = metrics["campaign_purity"]["weighted_mean"]
    unk = metrics["unknown_accounts"]["accounts"]
    lines.append(
        f"precision {_pct(o['precision'], 2)} · enforced {o['enforced_attack']} attack / "
        f"{o['enforced_benign']} benign · campaign purity {_pct(purity)}"
        + (f" · flags for {unk} unlabelled accounts" if unk else "")
    )
    return "\n".join(lines)

