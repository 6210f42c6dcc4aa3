"""Stage 3, the flag policy: turns evidence into Flag v1, keyed by ``account_id``.

Input: ``verdicts`` — per account, in order, the behaviour summaries of the account stage
(``beh``: reasons, behaviour score, extraction profile, requests) and the shared-evidence verdicts
of the campaign stage (``link``), one stream per campaign-stage partition. For each account the
stage keeps the latest behaviour summary, the latest verdict of each partition and the last flag
it emitted; :func:`combine` adds the partitions' verdicts up, and :meth:`PolicyProcessor.judge`
decides (the rules, and why, in ``docs/detection.md`` and the README's *Flag policy*):

* **campaign membership** is decided here, from the partitions' counts added up
  (:meth:`PolicyProcessor.member`: kinds, prompt keys, neighbours), so the same at any partition
  count; the campaign stage's campaign id and strength label the flag and decide nothing;
* **shared content** — the account's distinct prompts that unrelated units also send — is what
  enforcement rests on; a *broad* library, a card shared with another unit, shared
  infrastructure (a card of ≥ ``shared_card_units`` payers, ≥ ``proxy_pool_prefixes`` shared
  /24s), synchronised timing (≥ ``timing_min_links`` time-slot keys, rare by chance) or an
  extreme extraction profile, together with an extraction profile, make less of it enough;
* infrastructure alone, timing alone, an established account's own volume and account age alone
  never enforce;
* the naive scraper (fresh, heavy volume, capability targeting) is throttled on behaviour;
* **score** = 1 − (1 − campaign evidence)(1 − behaviour evidence), a noisy-OR reported in the
  flag (``campaign_evidence``: 0.55 for a member, +0.1 per extra kind, +0.1 per decade of its
  neighbours, at most ``campaign_neighbours_cap``);
* **hysteresis**: an account is flagged again only when the action escalates
  (review → throttle → suspend) or when a campaign id becomes known to an account flagged
  without one; actions never step down on their own, and an account keeps the campaign id it was
  flagged with while a partition still sees it.

Changelog keys: ``p:<account>``.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import orjson

from consumers.contract.flags import ACTION_RANK, flag_id_for
from consumers.core.config import DetectorConfig
from consumers.core.evidence import para_counts, qualifies
from consumers.core.messages import SUMMED_KINDS, Behaviour, Link, decode
from consumers.core.stage import Record

#: kinds of shared infrastructure that are a campaign's own assets — client /24s, cards, sign-up
#: waves (a client string is shared by unrelated people and fleets); infrastructure raises
#: confidence in a campaign that content already ties together, and never enforces by itself
ASSET_KINDS = frozenset({"ip", "pay", "wave"})

LINK_REASONS = {
    "prompt": ("SHARED_PROMPTS", "near-duplicate prompts shared with {v} unrelated accounts or organisations"),
    "para": ("PARAPHRASED_PROMPTS", "{v} paraphrase-tolerant prompt fingerprints shared with unrelated accounts or organisations"),
    "ip": ("SHARED_NETWORK", "client IP prefix shared with {v} unrelated accounts or organisations"),
    "pay": ("SHARED_PAYMENT", "payment instrument shared with {v} unrelated accounts or organisations"),
    "ua": ("SHARED_CLIENT", "client string shared with {v} unrelated accounts or organisations"),
    "wave": ("CREATION_WAVE", "created in a wave of {v} accounts with the same client"),
    "tim": ("SYNCHRONIZED_TIMING", "active in the same hours as unrelated accounts: {v} time-slot fingerprints in common"),
}
BEH_DETAILS = {
    "FRESH_ACCOUNT": "first request {v} days after the account was created",
    "CAPABILITY_CONCENTRATION": "{p} of requests target coding, agentic, reasoning or math",
    "REASONING_ELICITATION": "mean reasoning-elicitation score {v}",
    "ROUND_THE_CLOCK": "active around the clock ({p} of the hours a 24/7 client would cover)",
    "HIGH_VOLUME": "{v} requests per day",
    "BEHAVIOUR_ANOMALY": "more unusual than {p} of established accounts",
    "MODEL_SWITCH": "moved to a new model {v} hours after its release",
}


def combine(by_source: dict[str, Link], cap: int | None = None) -> Evidence:
    """Merge the latest verdicts of several campaign-stage partitions about one account.

    Kinds of shared evidence are united (largest span per kind; paraphrase-key and client-prefix
    counts add up, as each fingerprint lives on one partition, and so do the shared prompt keys and
    the paraphrase keys announced); the account's requests with shared content are the union of
    each partition's, and so are its neighbours (at most ``cap``: a partition that reports
    ``cap`` of them proves as many); of the campaigns the partitions see, the
    largest wins (ties: the smallest id), so the choice does not depend on the order in which the
    partitions' verdicts arrive.

    >>> e = combine({"0": Link("x", None, {"ip": 5, "para": 2}, None, None, 0, 0, [1, 4], 9, 2, 0),
    ...              "1": Link("x", None, {"pay": 3, "ip": 7, "para": 1}, "cmp-b", 9, 0, 1, [4, 7], 12, 1, 4),
    ...              "2": Link("x", None, {}, "cmp-a", 9, 0, 2)})
    >>> e.kinds, e.campaign_id, e.campaign_size, e.shared_requests, e.requests, e.shared_prefixes
    ({'ip': 7, 'para': 3, 'pay': 3}, 'cmp-a', 9, 3, 12, 3)
    >>> e.campaigns, e.campaign_strong
    ({'cmp-b': 9, 'cmp-a': 9}, 4)
    >>> combine({"0": Link("x", None, {}, None, None, 0, 0, neighbours=[1, 2]),
    ...          "1": Link("x", None, {}, None, None, 0, 1, neighbours=[2, 3])}, cap=4).neighbours
    3
    """
    kinds: dict[str, int] = {}
    best: tuple[int, str] | None = None
    campaigns: dict[str, int] = {}
    shared: set[int] = set()
    strong = 0
    n = 0
    prefixes = 0
    prompt_keys = 0
    para_announced = 0
    neighbours: set[int] = set()
    full = False
    for v in by_source.values():
        for k, c in v.kinds.items():
            if k in SUMMED_KINDS:
                kinds[k] = kinds.get(k, 0) + c
            elif c > kinds.get(k, 0):
                kinds[k] = c
        cid, size = v.campaign_id, v.campaign_size or 0
        if cid is not None:
            campaigns[cid] = max(campaigns.get(cid, 0), size)
            if best is None or (-size, cid) < (-best[0], best[1]):
                best = (size, cid)
        if v.shared_requests:
            shared.update(v.shared_requests)
        n = max(n, v.requests)
        prefixes += v.shared_prefixes
        strong = max(strong, v.strong_members)
        prompt_keys += v.prompt_keys
        para_announced += v.para_announced
        if cap is not None and len(v.neighbours) >= cap:
            full = True
        neighbours.update(v.neighbours)
    kinds = dict(sorted(kinds.items()))
    nb = len(neighbours) if cap is None else cap if full else min(cap, len(neighbours))
    return Evidence(kinds, best[1] if best else None, best[0] if best else None, len(shared), n, prefixes,
                    campaigns, strong, prompt_keys, para_announced, nb)


@dataclasses.dataclass(frozen=True, slots=True)
class Evidence:
    """What the campaign stage's partitions know about one account, combined (:func:`combine`).

    ``kinds``: kind of shared evidence -> widest span in units (paraphrase keys: how many);
    ``shared_requests``: the account's requests whose prompt is shared with unrelated accounts;
    ``neighbours``: accounts of other units that share one of its prompt, paraphrase or card
    fingerprints (at most ``campaign_neighbours_cap``); with the counts, what decides campaign
    membership (:meth:`PolicyProcessor.member`) the same way at any partition count;
    ``requests``: the account's requests as of the latest verdict; ``shared_prefixes``: client
    /24s it shares with unrelated accounts (a proxy pool shows as several); ``campaign_strong``:
    members of its campaign (the largest a partition sees) whose shared library is broad.
    """

    kinds: dict[str, int]
    campaign_id: str | None
    campaign_size: int | None
    shared_requests: int = 0
    requests: int = 0
    shared_prefixes: int = 0
    campaigns: dict[str, int] | None = None   # every campaign a partition attributes it to -> size
    campaign_strong: int = 0                  # members of its campaign with a broad shared library
    prompt_keys: int = 0                      # exact prompt keys shared with unrelated units
    para_announced: int = 0                   # paraphrase keys it announced (the share's denominator)
    neighbours: int = 0                       # accounts of other units sharing its prompts or cards


def counted_kinds(ev: Evidence, cfg: DetectorConfig) -> dict[str, int]:
    """The kinds of shared evidence that count: ``ev.kinds`` without paraphrase keys below
    ``para_min_links`` or below ``para_min_share`` of the keys the account announced (one or two
    24-bit keys in common can be chance, and so can a heavy user's few out of thousands: campaign
    members share a good part of theirs), and without timing keys below ``timing_min_links``.

    >>> cfg = DetectorConfig()
    >>> counted_kinds(Evidence({"para": 4, "ip": 5}, None, None, para_announced=100), cfg)
    {'para': 4, 'ip': 5}
    >>> counted_kinds(Evidence({"para": 4, "ip": 5}, None, None, para_announced=1000), cfg)
    {'ip': 5}
    """
    kinds = dict(ev.kinds)
    if not para_counts(kinds.get("para", 0), ev.para_announced, cfg):
        kinds.pop("para", None)
    if kinds.get("tim", 0) < cfg.timing_min_links:
        kinds.pop("tim", None)
    return kinds


def _detail(code: str, v: Any) -> str:
    t = BEH_DETAILS.get(code, code)
    p = f"{v:.0%}" if isinstance(v, float | int) else str(v)
    return t.format(v=v, p=p)


class PolicyAccount:
    """What the policy stage keeps per account: the latest behaviour summary, the latest
    :class:`~consumers.core.messages.Link` of each campaign-stage partition, and the last flag."""

    __slots__ = ("org", "beh", "reasons", "window_start", "links", "action", "flag_cid", "watermark",
                 "touch", "extraction", "requests")

    def __init__(self, org: str | None, window_start: int):
        self.org = org
        self.beh = 0.0                        # behaviour evidence of the latest summary
        self.reasons: list[list[Any]] = []    # its reasons [[code, value], ...]
        self.window_start = window_start
        self.links: dict[str, Link] = {}      # campaign-stage partition -> its latest verdict
        self.action: str | None = None        # last action flagged (hysteresis)
        self.flag_cid: str | None = None      # ... and the campaign id it carried
        self.watermark = 0                    # event time of the latest message
        self.touch = 0                        # sequence number of its latest message (recency)
        self.extraction = 0.0                 # extraction profile of the latest summary
        self.requests = 0                     # requests, as of the latest summary

    # changelog: a list (slots 5 and 6 are unused, kept so older changelogs restore)
    def to_list(self) -> list[Any]:
        links = {p: [v.kinds, v.campaign_id, v.campaign_size, v.shared_requests, v.requests,
                     v.shared_prefixes, v.strong_members, v.prompt_keys, v.para_announced, v.neighbours]
                 for p, v in self.links.items()}
        return [self.org, self.beh, self.reasons, self.window_start, links, None, None, self.action,
                self.flag_cid, self.watermark, self.touch, self.extraction, self.requests]

    @classmethod
    def from_list(cls, v: list[Any], account: str = "") -> PolicyAccount:
        s = cls(v[0], v[3])
        s.beh, s.reasons, s.action, s.flag_cid, s.watermark, s.touch = v[1], v[2], v[7], v[8], v[9], v[10]
        s.extraction = v[11] if len(v) > 11 else 0.0
        s.requests = v[12] if len(v) > 12 else 0
        s.links = {p: Link(account, s.org, x[0], x[1], x[2], 0, int(p), *x[3:10]) for p, x in v[4].items()}
        return s


class PolicyProcessor:
    """The policy stage for one partition of the verdicts topic."""

    def __init__(self, cfg: DetectorConfig, detector_version: str, partition: int = 0):
        self.cfg = cfg
        self.version = detector_version
        self.partition = partition
        self.accounts: OrderedDict[str, PolicyAccount] = OrderedDict()  # least recently active first
        self.seq = 0
        self._dirty: dict[str, None] = {}
        self._tomb: list[str] = []
        self.counters = {"flags": 0}

    def process(self, records: list[Record]) -> list[Record]:
        out: list[Record] = []
        for r in records:
            m = decode(r.value)
            acct = m.account
            s = self.accounts.get(acct)
            if s is None:
                s = PolicyAccount(m.org, m.window_start if isinstance(m, Behaviour) else m.watermark)
                self.accounts[acct] = s
            else:
                self.accounts.move_to_end(acct)
            self.seq += 1
            s.touch = self.seq
            if isinstance(m, Behaviour):
                s.beh, s.reasons, s.window_start = m.score, m.reasons, m.window_start
                s.extraction = m.extraction
                s.requests = max(s.requests, m.requests)
            elif isinstance(m, Link):
                s.links[str(m.partition)] = m
            s.watermark = m.watermark
            self._dirty[acct] = None
            f = self.decide(acct, s)
            if f is not None:
                out.append(Record(topic="flags", key=acct.encode(), value=f))
            self._expire()
        return out

    def judge(self, ev: Evidence, kinds: dict[str, int], beh: float, extraction: float,
              requests: int, codes: set[str]) -> tuple[str | None, float]:
        """The action the evidence supports (or None) and the combined score.

        Enforcement rests on *coordination in what accounts send*: a share of the account's
        requests reuse prompts that unrelated accounts also send (``content``). Infrastructure
        shared with unrelated accounts (a card, a proxy pool's prefixes) together with an
        extraction profile makes a little shared content enough; a library used so broadly that
        no cohort's few starter prompts explain it is enough with a moderate profile, and a very
        broad one with any profile. Infrastructure alone, the account's own volume alone and its
        age alone never enforce; age only opens the fast path to an account outside a recognised
        campaign.
        """
        cfg = self.cfg
        member = self.member(ev, kinds)
        nk = len(kinds)
        ce = cfg.campaign_evidence
        if member:
            ec = min(ce["max"], ce["member"] + ce["per_kind"] * max(0, nk - 2)
                     + ce["per_decade"] * math.log10(ev.neighbours + 1))
        else:
            ec = min(ce["outside_max"], ce["outside_per_kind"] * nk)
        score = 1.0 - (1.0 - ec) * (1.0 - beh)
        d = ev.shared_requests
        # (verdicts stop reporting growth at content_very_broad_requests: saturated is enough)
        share_ok = d >= cfg.content_min_share * requests or d >= cfg.content_very_broad_requests
        content = d >= cfg.content_min_requests and share_ok
        broad = content and d >= cfg.content_broad_requests
        # a card shared with another unit (a pair is enough here: content already ties the
        # account to its neighbours); what a strong campaign (members with broad libraries) used
        # to add, seen from the account alone, so the same at any partition count
        paired = kinds.get("pay", 0) >= cfg.card_pair_units
        infra = kinds.get("pay", 0) >= cfg.shared_card_units or ev.shared_prefixes >= cfg.proxy_pool_prefixes
        # synchronised timing: time-slot keys, each rare by chance (quiet hours, not busy ones),
        # shared with unrelated accounts. Like infrastructure it never enforces nor reviews
        # alone (honest cohorts keep the same hours), and makes a little shared content enough;
        # being the stronger tie, with a weaker extraction profile (timing_support_extraction)
        timing = kinds.get("tim", 0) >= cfg.timing_min_links
        if infra and d >= 1 and share_ok:
            content = True  # a card or proxy pool shared with unrelated accounts that also share a prompt
        fresh = "FRESH_ACCOUNT" in codes
        enforce = max(score, cfg.throttle_score)
        if member:
            if content and ((infra and extraction >= cfg.extraction_support)
                            or (timing and (extraction >= cfg.timing_support_extraction or paired or infra))
                            or ((broad or paired) and extraction >= cfg.extraction_broad)
                            or (extraction >= cfg.extraction_extreme and requests >= cfg.extraction_extreme_min_requests)
                            or d >= cfg.content_very_broad_requests):
                return ("suspend" if score >= cfg.suspend_score else "throttle"), enforce
            if ((content and (infra or broad or paired or timing))
                    or (infra and extraction >= cfg.extraction_support
                        and len(ASSET_KINDS.intersection(kinds)) >= 2)):
                # coordinated, but short of enforcement: a person looks (infrastructure alone
                # only when two of a campaign's assets are shared: one card shared by many
                # accounts is also how an org-less developer pays for a fleet of agents)
                return "review", score
            return None, score
        if content and infra and fresh and extraction >= cfg.extraction_support:
            # a fresh account tied by content and a card or a proxy pool to unrelated accounts,
            # whose campaign no campaign-stage partition has recognised (yet)
            return "throttle", enforce
        if ("HIGH_VOLUME" in codes and "CAPABILITY_CONCENTRATION" in codes and fresh
                and extraction >= cfg.extraction_support):
            # the naive scraper: heavy volume targeting capabilities from a new account with no
            # coordination to show (an evaluation lab's bursts and an agent fleet's 24/7 come
            # from established accounts: for them, volume alone is never evidence)
            return "throttle", enforce
        if (score >= cfg.review_score and (content or infra) and extraction >= cfg.extraction_support
                and (fresh or (content and infra))):
            # something beyond the account's own volume points at it
            return "review", score
        return None, score

    def member(self, ev: Evidence, kinds: dict[str, int]) -> bool:
        """Whether the account is a campaign member, from the evidence of every campaign-stage
        partition added up (so the same at any partition count): evidence that
        :func:`~consumers.core.evidence.qualifies` (the rule the campaign stage applies per
        partition for its labels) and at least ``campaign_min_size`` - 1 accounts of other units
        sharing its prompts or cards. ``kinds``
        is ``ev.kinds`` without the paraphrase and timing keys that do not count (:meth:`decide`).

        The campaign id in a flag is a label: the campaign stage's union of evidence groups, as
        the largest campaign one of its partitions sees; it decides nothing.
        """
        return (qualifies(kinds, ev.prompt_keys + kinds.get("para", 0), self.cfg)
                and ev.neighbours >= self.cfg.campaign_min_size - 1)

    def decide(self, acct: str, s: PolicyAccount) -> bytes | None:
        prev, prev_cid, w = s.action, s.flag_cid, s.watermark
        ev = combine(s.links, self.cfg.campaign_neighbours_cap)
        if prev_cid is not None and ev.campaigns and prev_cid in ev.campaigns and prev_cid != ev.campaign_id:
            # several campaign-stage partitions each see part of a campaign (under their own ids):
            # keep the campaign the account was flagged with while a partition still sees it
            ev = dataclasses.replace(ev, campaign_id=prev_cid, campaign_size=ev.campaigns[prev_cid])
        cid, size = ev.campaign_id, ev.campaign_size
        kinds = counted_kinds(ev, self.cfg)
        action, score = self.judge(ev, kinds, s.beh, s.extraction, max(s.requests, ev.requests),
                                   {r[0] for r in s.reasons})
        if action is None:
            return None
        if prev is not None:
            if ACTION_RANK[prev] > ACTION_RANK[action]:
                action = prev
            if action == prev and (cid is None or prev_cid is not None):
                # the same action again: re-flagged only to name a campaign the last flag could
                # not (campaign ids are the campaign-stage partitions' labels; several partitions'
                # views of one campaign, and merges, must not multiply flags)
                return None
        s.action, s.flag_cid = action, cid
        reasons = []
        if cid is not None:
            reasons.append({"code": "CAMPAIGN_MEMBER", "value": size,
                            "detail": f"member of a coordinated campaign of {size} accounts with no organisation in common"})
        for kind in sorted(kinds):
            code, text = LINK_REASONS.get(kind, ("SHARED_" + kind.upper(), "{v}"))
            reasons.append({"code": code, "value": kinds[kind], "detail": text.format(v=kinds[kind])})
        for code, v in s.reasons:
            reasons.append({"code": code, "value": v, "detail": _detail(code, v)})
        self.counters["flags"] += 1
        return orjson.dumps({
            "schema_version": 1,
            "flag_id": flag_id_for(acct, action, cid, w, self.version),
            "account_id": acct,
            "org_id": s.org,
            "action": action,
            "score": round(min(1.0, max(0.0, score)), 4),
            "reasons": reasons,
            "campaign_id": cid,
            "campaign_size": size if cid is not None else None,
            "decided_at_ms": w,
            "window_start_ms": s.window_start,
            "detector_version": self.version,
        })

    def _expire(self) -> None:
        """Memory bound: past the cap, forget the least recently active accounts."""
        cap = self.cfg.max_accounts_per_partition
        while len(self.accounts) > cap:
            acct, _ = self.accounts.popitem(last=False)
            self._dirty.pop(acct, None)
            self._tomb.append(acct)

    def take_changes(self) -> list[tuple[bytes, bytes | None]]:
        out: list[tuple[bytes, bytes | None]] = [(b"p:" + a.encode(), None) for a in self._tomb]
        for acct in self._dirty:
            s = self.accounts.get(acct)
            if s is not None:
                out.append((b"p:" + acct.encode(), orjson.dumps(s.to_list())))
        out.append((b"__meta__", orjson.dumps({"seq": self.seq})))
        self.discard_changes()
        return out

    def discard_changes(self) -> None:
        """Forget what changed since the last checkpoint (file replay has no changelog)."""
        self._tomb, self._dirty = [], {}

    def restore(self, entries: Iterable[tuple[bytes, bytes | None]]) -> None:
        latest: dict[bytes, bytes | None] = {}
        for k, v in entries:
            latest[k] = v
        rows = []
        for k, v in latest.items():
            if v is None:
                continue
            if k == b"__meta__":
                self.seq = orjson.loads(v)["seq"]
            elif k.startswith(b"p:"):
                s = PolicyAccount.from_list(orjson.loads(v), k[2:].decode())
                rows.append((s.touch, k[2:].decode(), s))
        rows.sort(key=lambda t: t[0])  # recency order, exactly as live
        self.accounts = OrderedDict((a, s) for _, a, s in rows)

    def state_size(self) -> dict[str, int]:
        return {"accounts": len(self.accounts)}
