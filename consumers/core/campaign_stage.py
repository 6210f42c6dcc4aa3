"""Stage 2, the campaign stage: evidence across accounts, keyed by fingerprint.

Input: ``observations`` from the account stage. Two kinds of message
(:mod:`consumers.core.messages`):

* :class:`~consumers.core.messages.FingerprintSeen` — an account shows a
  fingerprint (client prefix ``ip:``, payment ``pay:``, client string ``ua:``, creation wave
  ``wave:``, prompt LSH key ``p<i>:``, paraphrase key ``q<xyz>:``, time-slot key ``tim:``: support
  only, never a campaign tie). Keyed by the fingerprint, so every account that shares it
  lands here, whichever account partition it came from.
* :class:`~consumers.core.messages.Behaviour` — a behaviour summary, relayed unchanged to ``verdicts``
  (so the policy stage sees one ordered stream per account; no feedback loop, no race).

For each fingerprint the stage keeps a bounded *group*: its members and the distinct *units* they
belong to — an organisation; without one, the customer who pays (a developer's fleet, a
household); without a card, the account itself (see :func:`_unit`). A group is *shared
evidence* once it spans ``link_min_units[kind]`` units: sharing inside one organisation is never
evidence (enterprise templates, one company card). A group that spans more than
``hot_units[kind]`` units is common infrastructure (a big cloud prefix, a popular SDK) and stops
being evidence, so it can never merge everything into one campaign.

Paraphrase keys (24 bits) collide by chance at scale, so they count as a kind only once an
account shares ``para_min_links`` of them, and at least ``para_min_share`` of the paraphrase keys
it announced to this partition (a heavy honest user collides with a few out of thousands). An account linked by shared evidence of at
least ``campaign_min_kinds`` kinds, one of them a prompt, paraphrase or payment link — or by
``campaign_min_templates`` prompt keys (exact or paraphrase) on their own — is a *campaign
member*; its prompt, payment and client-prefix groups (paraphrase groups once counted, and its
creation-wave group when its client string is rare: shared, but not hot) are united
(union-find; client strings are not, as unrelated campaigns and people share them) into a
campaign whose id is the id of its oldest group, so ids are stable as the campaign grows. One
prompt, paraphrase or client-prefix link — a chance collision, or a residential proxy exit that
is also somebody's home — never ties an account to an *established* campaign (one with
``campaign_min_size`` members) nor merges two: that takes two links. Once a campaign has
``campaign_min_size`` members, every member gets a verdict with the campaign id; when two
campaigns merge, the members of the younger one get the older id.

For every account it also keeps its *shared-content requests* (the request numbers of its prompt
and paraphrase keys that became shared evidence: distinct prompts unrelated units also send), and
for every campaign the members whose shared library is broad (``content_broad_requests``): with
``campaign_strong_members`` of them the campaign is *strong*, and every member hears of it.
Campaign ids, sizes and strength are this partition's view: they label the flags, and the policy
decides membership from what adds up across partitions — the kinds, the counts of shared prompt
and paraphrase keys, and each account's *neighbours* (accounts of other units sharing one of its
prompt, paraphrase or card fingerprints; see :meth:`CampaignProcessor._meet`).

Output: ``verdicts`` keyed by account: a :class:`~consumers.core.messages.Link` per account whose
evidence changed (with several campaign-stage partitions an account's fingerprints, and so its
verdicts, come from several of them; the policy stage keeps the latest of each partition and
combines them), and the relayed behaviour summaries.

Changelog keys: ``g:<fingerprint>`` (group), ``m:<account>`` (account links), ``u:<group>``
(union-find parent and campaign roots), ``__meta__``.
"""

from __future__ import annotations

import hashlib
import sys
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import orjson

from consumers.core.config import DetectorConfig
from consumers.core.evidence import STRONG_KINDS, SUPPORT_ONLY_KINDS, para_counts, qualifies
from consumers.core.messages import SUMMED_KINDS, Behaviour, FingerprintSeen, Link
from consumers.core.stage import Record

META_KEY = b"__meta__"
#: kinds whose groups unite campaigns: templates, cards, proxy prefixes (not client strings, which
#: unrelated campaigns and honest users share; creation waves only for an account whose client
#: string is rare — shared, yet not hot)
UNION_KINDS = ("prompt", "para", "pay", "ip")
#: ... of which one link alone never merges established campaigns (see ``_may_unite``)
WEAK_UNION_KINDS = ("prompt", "para", "ip")


def _steps(n: int, cap: int) -> int:
    """``n`` rounded down to 0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, ... and capped: a verdict is sent
    again when the account's shared-content requests reach the next step, not on each one.

    >>> [_steps(n, 24) for n in (0, 3, 5, 7, 13, 23, 40)]
    [0, 3, 4, 6, 12, 16, 24]
    """
    n = min(n, cap)
    if n <= 4:
        return n
    top = 1 << (n.bit_length() - 1)
    return top + top // 2 if n >= top + top // 2 else top


def _unit(kind: str, acct: str, org: str | None, card: str | None) -> str:
    """Who an account is when sharing is counted: its organisation; without one, the customer who
    pays for it (a developer's fleet of accounts, a household: related on purpose, like an org's);
    without a card, the account itself. A card shared by several payers is evidence of its own, so
    for ``pay`` fingerprints an org-less account counts as itself.

    >>> _unit("prompt", "a1", "org-1", "pf1"), _unit("prompt", "a1", None, "pf1"), _unit("pay", "a1", None, "pf1")
    ('org-1', 'c:pf1', 'a:a1')
    """
    # interned: hundreds of thousands of fingerprints remember their member's unit
    if org is not None:
        return sys.intern(org)
    if card is not None and kind != "pay":
        return sys.intern("c:" + card)
    return sys.intern("a:" + acct)


def kind_of(fp: str) -> str:
    """The evidence kind of a fingerprint: ``p<i>:`` exact prompt keys are ``prompt``,
    ``q<xyz>:`` paraphrase keys ``para``, the others their prefix (``ip``, ``pay``, ``ua``, ``wave``,
    ``tim``: synchronised-timing keys).

    >>> kind_of("p3:0123abcd"), kind_of("q013:a1b2c3"), kind_of("pay:pf1"), kind_of("tim:81.2.0a1f")
    ('prompt', 'para', 'pay', 'tim')
    """
    if fp[0] == "q":  # most fingerprints are paraphrase keys: answered first
        return "para"
    k = fp[: fp.index(":")]
    return "prompt" if k[0] == "p" and k != "pay" else k


def campaign_id_for(root_fp: str) -> str:
    return "cmp-" + hashlib.blake2b(root_fp.encode(), digest_size=6).hexdigest()


#: kinds whose groups are prompt content (the account's request number is remembered per member)
CONTENT_KINDS = ("prompt", "para")
#: distinct shared-content requests remembered per account (and sent, newest first, in verdicts)
MAX_SHARED_REQUESTS = 64


class Group:
    __slots__ = ("kind", "members", "units", "n_units", "first", "last", "state", "since", "touch",
                 "reqs")

    def __init__(self, kind: str, ts: int):
        self.kind = kind
        self.members: dict[str, str] = {}   # account -> unit (bounded)
        self.units: dict[str, int] = {}     # unit -> members (bounded with members)
        self.n_units = 0                    # distinct units (approximate past the member cap)
        self.first = ts
        self.last = ts
        self.state = 0                      # 0 plain, 1 shared evidence, 2 hot
        self.since = 0                      # ts at which it became evidence
        self.touch = 0                      # sequence number of its last observation (recency)
        self.reqs: dict[str, int] = {}      # content groups: member -> its request number then

    def to_list(self) -> list[Any]:
        return [self.kind, self.members, self.n_units, self.first, self.last, self.state, self.since,
                self.touch, self.reqs]

    @classmethod
    def from_list(cls, v: list[Any]) -> Group:
        g = cls(v[0], v[3])
        g.members, g.n_units, g.last, g.state, g.since, g.touch = v[1], v[2], v[4], v[5], v[6], v[7]
        g.reqs = v[8] if len(v) > 8 else {}
        for u in g.members.values():
            g.units[u] = g.units.get(u, 0) + 1
        return g


#: a :class:`Single`'s packed ``p``: touch << _TOUCH | last << _LAST | first << _FIRST | req + 1
_TOUCH, _LAST, _FIRST = 120, 76, 32
_TS = (1 << 44) - 1          # event times (ms) fit 44 bits until the year 2527
_REQ = (1 << 32) - 1         # request numbers: 0 stands for none (not a content fingerprint)
_KEEP_FIRST_REQ = (1 << _LAST) - 1


class Single:
    """A fingerprint only one account has shown (most of them: an honest user's own prompts).

    Kept apart from :class:`Group` because there are so many: the account, its unit and one int
    packing the times and the request number (``p``: recency ``touch``, ``last`` and ``first``
    seen, ``req``) instead of three dicts and four int objects — about 110 bytes less per
    fingerprint than slots of their own, a third of the stage's memory on ``day``. When a second
    account shows the fingerprint it becomes a :class:`Group` (:meth:`promote`); in the changelog
    it is written as the group it stands for.

    >>> s = Single.new("a1", "a:a1", 7, 1_700_000_000_000, touch=3)
    >>> s.seen_again(1_700_000_000_500, touch=9)
    >>> s.touch, s.last, s.first, s.req
    (9, 1700000000500, 1700000000000, 7)
    >>> Single.from_group(s.promote("prompt")).p == s.p
    True
    """

    __slots__ = ("acct", "unit", "p")

    def __init__(self, acct: str, unit: str, p: int):
        self.acct = acct
        self.unit = unit
        self.p = p

    @classmethod
    def new(cls, acct: str, unit: str, req: int | None, ts: int, touch: int) -> Single:
        return cls(acct, unit, touch << _TOUCH | ts << _LAST | ts << _FIRST
                   | (0 if req is None else (req + 1) & _REQ))

    def seen_again(self, ts: int, touch: int) -> None:
        """Its account showed it again at ``ts``: most recent now, ``last`` at least ``ts``."""
        p = self.p
        if ts > (p >> _LAST) & _TS:
            self.p = touch << _TOUCH | ts << _LAST | (p & _KEEP_FIRST_REQ)
        else:
            self.p = touch << _TOUCH | (p & ((1 << _TOUCH) - 1))

    @property
    def touch(self) -> int:
        return self.p >> _TOUCH

    @property
    def last(self) -> int:
        return (self.p >> _LAST) & _TS

    @property
    def first(self) -> int:
        return (self.p >> _FIRST) & _TS

    @property
    def req(self) -> int | None:
        r = self.p & _REQ
        return r - 1 if r else None

    def promote(self, kind: str) -> Group:
        g = Group(kind, self.first)
        g.last, g.touch = self.last, self.touch
        g.members[self.acct] = self.unit
        g.units[self.unit] = 1
        g.n_units = 1
        req = self.req
        if req is not None:
            g.reqs[self.acct] = req
        return g

    def to_list(self, kind: str) -> list[Any]:
        """The changelog form of the group it stands for (:meth:`Group.to_list`); written for
        every new fingerprint, so the fields are read off ``p`` here, not through the properties."""
        p, acct = self.p, self.acct
        r = p & _REQ
        return [kind, {acct: self.unit}, 1, (p >> _FIRST) & _TS, (p >> _LAST) & _TS, 0, 0, p >> _TOUCH,
                {acct: r - 1} if r else {}]

    @classmethod
    def from_group(cls, g: Group) -> Single | None:
        """The group as a single, when it is one (one member, one unit, not evidence)."""
        if g.state != 0 or g.n_units != 1 or len(g.members) != 1:
            return None
        (acct, unit), = g.members.items()
        s = cls.new(acct, unit, g.reqs.get(acct), g.first, g.touch)
        s.seen_again(g.last, g.touch)
        return s


class AccountLinks:
    __slots__ = ("org", "links", "kc", "cid", "sent", "last", "joined", "touch", "pa", "sreq", "n", "nb")

    def __init__(self, org: str | None, ts: int):
        self.org = org
        self.sreq: dict[int, None] = {}   # the account's requests with a prompt shared with unrelated units
        self.n = 0                        # requests of the account (as of its latest observation)
        self.pa = 0                       # paraphrase keys the account announced to this partition
        self.joined = 0                   # sequence number of joining a campaign (restore order)
        self.links: dict[str, str] = {}  # evidence fingerprint -> kind
        self.kc: dict[str, int] = {}     # kind -> number of evidence links of that kind
        self.touch = 0                    # sequence number of its last observation (recency)
        self.cid: str | None = None      # root fingerprint of its component, when a member
        self.sent: list[Any] = []
        self.last = ts
        self.nb: dict[int, None] = {}     # neighbours: accounts sharing its evidence (CRC32s; see _meet)

    def to_list(self) -> list[Any]:
        return [self.org, self.links, self.cid, self.sent, self.last, self.joined, self.touch, self.pa,
                list(self.sreq), self.n, list(self.nb)]

    @classmethod
    def from_list(cls, v: list[Any]) -> AccountLinks:
        a = cls(v[0], v[4])
        a.links, a.cid, a.sent, a.joined, a.touch = v[1], v[2], v[3], v[5], v[6]
        a.pa = v[7] if len(v) > 7 else 0
        if len(v) > 9:
            a.sreq, a.n = dict.fromkeys(v[8]), v[9]
        if len(v) > 10:
            a.nb = dict.fromkeys(v[10])
        for kind in a.links.values():
            a.kc[kind] = a.kc.get(kind, 0) + 1
        return a


class CampaignProcessor:
    """The campaign stage for one partition of the observations topic."""

    def __init__(self, cfg: DetectorConfig, partition: int = 0):
        self.cfg = cfg
        self.partition = partition
        self.groups: OrderedDict[str, Group] = OrderedDict()     # fingerprints of 2+ accounts, by recency
        self.singles: OrderedDict[str, Single] = OrderedDict()   # fingerprints of one account, by recency
        self.accounts: OrderedDict[str, AccountLinks] = OrderedDict()
        self.parent: dict[str, str] = {}            # union-find over evidence groups
        self.roots: dict[str, list[Any]] = {}       # root fp -> [since, first fp ts, members dict]
        self.strong: dict[str, dict[str, None]] = {}  # root fp -> its members with a broad shared library
        self.watermark = 0
        #: kinds whose fingerprint is evidence from its first account (link_min_units of 1): no single
        self._shared_at_once = frozenset(k for k, v in cfg.link_min_units.items() if v <= 1)
        #: fingerprints and accounts past their TTL are forgotten when the watermark enters a new
        #: step of this many ms (a pass on every watermark step cost the stage ~5%)
        self._expire_step = max(1, cfg.fingerprint_ttl_ms // 1000)
        self.seq = 0                                # campaign joins so far
        self.tseq = 0                               # observations so far (recency order)
        self._dirty_g: dict[str, None] = {}
        self._dirty_a: dict[str, None] = {}
        self._dirty_u: dict[str, None] = {}
        self._tomb: list[bytes] = []
        self.counters = {"observations": 0, "groups_evicted": 0, "hot_groups": 0, "member_cap": 0}

    # -- processing ------------------------------------------------------------------------------
    def process(self, records: list[Record]) -> list[Record]:
        out: list[Record] = []
        seen = 0
        intern = sys.intern
        for r in records:
            m = orjson.loads(r.value)
            w = m.get("w", 0)
            if w > self.watermark:
                # expiry runs when the watermark enters a new step of a thousandth of the TTL:
                # a function of the watermark alone, so a restored stage expires as the live one
                step = self._expire_step
                expire = w // step != self.watermark // step
                self.watermark = w
                if expire:
                    self._expire()
            if m["k"] == Behaviour.KIND:  # relayed unchanged: one ordered stream per account
                out.append(Record(topic="verdicts", key=r.key, value=r.value))
                continue
            seen += 1
            fp, acct, org, ts, wm, n, card = FingerprintSeen.unpack(m)
            self._observe(out, fp, intern(acct), org, ts, wm, n, card)
        self.counters["observations"] += seen
        return out

    def _observe(self, out: list[Record], fp: str, acct: str, org: str | None, ts: int, w: int,
                 n: int = 0, card: str | None = None) -> None:
        cfg = self.cfg
        self.tseq += 1
        self._dirty_g[fp] = None
        g = self.groups.get(fp)
        if g is not None:
            self.groups.move_to_end(fp)
        else:
            single = self.singles.get(fp)
            if single is None:
                kind = kind_of(fp)
                if kind not in self._shared_at_once:
                    # the first account to show it: a single (most fingerprints stay one)
                    self.singles[fp] = Single.new(acct, _unit(kind, acct, org, card),
                                                  n if kind in CONTENT_KINDS else None, ts, self.tseq)
                    self._over_cap()
                    a = self._account(acct, org, ts, n)
                    if kind == "para":
                        a.pa += 1
                    return
                g = Group(kind, ts)
                self.groups[fp] = g
                self._over_cap()
            elif single.acct == acct:
                self.singles.move_to_end(fp)
                single.seen_again(ts, self.tseq)
                self._account(acct, org, ts, n)
                return
            else:
                # a second account shows it: now a group
                del self.singles[fp]
                g = single.promote(kind_of(fp))
                self.groups[fp] = g
        g.touch = self.tseq
        if ts > g.last:
            g.last = ts
        a = self._account(acct, org, ts, n)
        if acct in g.members:
            return
        if g.kind == "para":
            a.pa += 1
        unit = _unit(g.kind, acct, org, card)
        if len(g.members) < cfg.max_members_per_fingerprint:
            g.members[acct] = unit
            if g.kind in CONTENT_KINDS:
                g.reqs[acct] = n
            c = g.units.get(unit, 0)
            g.units[unit] = c + 1
            if c == 0:
                g.n_units += 1
        else:
            self.counters["member_cap"] += 1
            g.n_units += 1
        kind = g.kind
        if g.state == 0 and g.n_units >= cfg.link_min_units.get(kind, 4):
            g.state = 1
            g.since = ts
            for member in sorted(g.members):
                self._link(out, member, fp, kind, w)
            if acct not in g.members:
                self._link(out, acct, fp, kind, w)
        elif g.state == 1 and g.n_units > cfg.hot_units.get(kind, 10**9):
            g.state = 2
            self.counters["hot_groups"] += 1
            for member in sorted(g.members):
                la = self.accounts.get(member)
                if la is not None and la.links.pop(fp, None) is not None:
                    la.kc[kind] -= 1
                    if not la.kc[kind]:
                        del la.kc[kind]
                    self._dirty_a[member] = None
                    self._evaluate(out, member, la, w)
        elif g.state == 1:
            self._link(out, acct, fp, kind, w)

    def _account(self, acct: str, org: str | None, ts: int, n: int) -> AccountLinks:
        """The account's links, created or moved to the recent end, with its latest request."""
        a = self.accounts.get(acct)
        if a is None:
            a = AccountLinks(org, ts)
            self.accounts[acct] = a
            if len(self.accounts) > self.cfg.max_accounts_per_partition:
                self._evict_account()
        else:
            self.accounts.move_to_end(acct)
            if ts > a.last:
                a.last = ts
        a.touch = self.tseq
        if n > a.n:
            a.n = n
        self._dirty_a[acct] = None
        return a

    def _link(self, out: list[Record], acct: str, fp: str, kind: str, w: int) -> None:
        a = self.accounts.get(acct)
        if a is None:
            return
        if fp not in a.links:
            a.links[fp] = kind
            a.kc[kind] = a.kc.get(kind, 0) + 1
            g = self.groups.get(fp)
            if kind in STRONG_KINDS and g is not None:
                self._meet(out, acct, a, g, w)
            if kind in CONTENT_KINDS:
                req = g.reqs.get(acct) if g is not None else None
                if req is not None and req not in a.sreq:
                    a.sreq[req] = None
                    if len(a.sreq) > MAX_SHARED_REQUESTS:
                        del a.sreq[min(a.sreq)]
                    if a.cid is not None and len(a.sreq) == self.cfg.content_broad_requests:
                        self._note_strong(out, self._find(a.cid), acct, w)
            self._dirty_a[acct] = None
            self._evaluate(out, acct, a, w, fp)

    # -- union-find -----------------------------------------------------------------------------
    def _find(self, fp: str) -> str:
        p = self.parent.get(fp, fp)
        if p == fp:
            return fp
        root = self._find(p)
        if root != p:
            self.parent[fp] = root
            self._dirty_u[fp] = None
        return root

    def _age(self, fp: str) -> tuple[int, str]:
        g = self.groups.get(fp)
        r = self.roots.get(fp)
        since = r[0] if r is not None else (g.since if g is not None else 0)
        return (since, fp)

    def _union(self, out: list[Record], a: str, b: str, w: int) -> str:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return ra
        old, young = (ra, rb) if self._age(ra) <= self._age(rb) else (rb, ra)
        self.parent[young] = old
        self._dirty_u[young] = None
        self._dirty_u[old] = None
        ro = self.roots.setdefault(old, [self._age(old)[0], {}])
        ry = self.roots.pop(young, None)
        sy = self.strong.pop(young, None)
        if sy:
            so = self.strong.setdefault(old, {})
            before = len(so)
            so.update(sy)
            if before < self.cfg.campaign_strong_members <= len(so):
                self._emit_members(out, old, w)
        if ry is not None:
            self._tomb.append(b"u:" + young.encode())
            was_active = len(ro[1]) >= self.cfg.campaign_min_size
            for member in ry[1]:
                ro[1][member] = None
            if len(ro[1]) >= self.cfg.campaign_min_size:
                targets = ro[1] if not was_active else ry[1]
                for member in sorted(targets):
                    la = self.accounts.get(member)
                    if la is not None:
                        la.cid = old
                        self._dirty_a[member] = None
                        self._emit(out, member, la, w)
        return old

    # -- verdicts -------------------------------------------------------------------------------
    def _kinds(self, a: AccountLinks) -> dict[str, int]:
        """Per kind of evidence: the widest span in units; for ``para``, the number of shared keys
        (one key is weak; their number is the evidence, and it adds up across partitions)."""
        kinds: dict[str, int] = {}
        for fp, kind in a.links.items():
            if kind in SUMMED_KINDS:
                continue
            g = self.groups.get(fp)
            n = g.n_units if g is not None else 1 if fp in self.singles else 0
            if n > kinds.get(kind, 0):
                kinds[kind] = n
        if "para" in a.kc:
            kinds["para"] = a.kc["para"]  # raw: the policy tests the share on the sums of all partitions
        if "tim" in a.kc:
            kinds["tim"] = a.kc["tim"]  # timing keys shared: their number is the evidence
        return kinds

    def _card_span(self, a: AccountLinks) -> int:
        """The widest span of the account's shared cards, up to what the policy tests
        (``shared_card_units``)."""
        if "pay" not in a.kc:
            return 0
        top = self.cfg.shared_card_units
        n = 0
        for fp, kind in a.links.items():
            if kind == "pay":
                g = self.groups.get(fp)
                if g is not None and g.n_units > n:
                    n = g.n_units
                    if n >= top:
                        return top
        return n

    def _counted(self, a: AccountLinks) -> list[str]:
        """The kinds of evidence that count on this partition: timing never (support only),
        paraphrase keys per :func:`~consumers.core.evidence.para_counts`."""
        kc = a.kc
        return [k for k in kc if k not in SUPPORT_ONLY_KINDS
                and (k != "para" or para_counts(kc[k], a.pa, self.cfg))]

    def _evaluate(self, out: list[Record], acct: str, a: AccountLinks, w: int, new_fp: str | None = None) -> None:
        cfg = self.cfg
        kc = a.kc
        counted = self._counted(a)
        templates = kc.get("prompt", 0) + (kc.get("para", 0) if "para" in counted else 0)
        if qualifies(counted, templates, cfg):
            # unite only through campaign-specific assets (templates, cards, proxy prefixes):
            # client strings are shared by unrelated campaigns and people
            unites = [k for k in UNION_KINDS if k in counted]
            if "wave" in counted and "ua" in counted:
                # a creation wave of a *rare* client (its client string shared, but not common
                # enough to be hot) is the campaign's own sign-up batch
                unites.append("wave")
            if a.cid is not None and new_fp is not None:
                # already a member: only the new link can unite its campaign with another
                root = self._find(a.cid)
                if a.links.get(new_fp) in unites:
                    other = self._find(new_fp)
                    if other != root and self._may_unite(a, new_fp, other, root, unites):
                        root = self._union(out, root, new_fp, w)
            else:
                # join the campaign the account has most links into, then unite the others
                of, into = self._links_into(a, unites)
                fps = sorted(of)
                ok = [fp for fp in fps if not self._lone_weak_link(a, fp, of[fp], into)]
                if not ok:
                    # its only ties to campaigns are lone weak links: linked, but not attributed
                    if a.cid is not None:
                        self._leave_campaign(acct, a)
                    self._emit(out, acct, a, w)
                    return
                first = min(ok, key=lambda fp: (-into[of[fp]], fp))
                root = of[first]
                if root not in self.roots:
                    self.roots[root] = [self._age(root)[0], {}]
                    self._dirty_u[root] = None
                for fp in fps:
                    if fp != first and self._may_unite(a, fp, self._find(fp), of[first], unites, into):
                        root = self._union(out, root, fp, w)
            if root not in self.roots:
                self.roots[root] = [self._age(root)[0], {}]
                self._dirty_u[root] = None
            comp = self.roots[root][1]
            if acct not in comp:
                before = len(comp)
                comp[acct] = None
                self.seq += 1
                a.joined = self.seq
                self._dirty_u[root] = None
                if before + 1 == cfg.campaign_min_size:
                    for member in sorted(comp):
                        if member != acct:
                            la = self.accounts.get(member)
                            if la is not None:
                                la.cid = root
                                self._dirty_a[member] = None
                                self._emit(out, member, la, w)
            a.cid = root
            if len(a.sreq) >= cfg.content_broad_requests:
                self._note_strong(out, root, acct, w)
        elif a.cid is not None:
            self._leave_campaign(acct, a)
        self._emit(out, acct, a, w)

    def _may_unite(self, a: AccountLinks, fp: str, other: str, main: str, unites: list[str],
                   into: dict[str, int] | None = None) -> bool:
        """Whether the account's link ``fp`` may unite its campaign (root ``main``) with the
        link's (root ``other``). A prompt or paraphrase key can be a chance collision, and a
        client prefix can be a residential proxy exit that is also somebody's home, so such links
        merge an *established* campaign (``campaign_min_size`` members) into the account's only
        when the account has two or more links into it, and at least half as many as into its own."""
        if a.links.get(fp) not in WEAK_UNION_KINDS or not self._established(other):
            return True
        if into is None:
            into = self._links_into(a, unites)[1]
        n = into.get(other, 0)
        return n >= 2 and 2 * n >= into.get(main, 0)

    def _links_into(self, a: AccountLinks, unites: list[str]) -> tuple[dict[str, str], dict[str, int]]:
        """The root of each of the account's links of the ``unites`` kinds, and how many of its
        links go into each root."""
        of = {fp: self._find(fp) for fp, kind in a.links.items() if kind in unites}
        into: dict[str, int] = {}
        for r in of.values():
            into[r] = into.get(r, 0) + 1
        return of, into

    def _lone_weak_link(self, a: AccountLinks, fp: str, root: str, into: dict[str, int]) -> bool:
        """A prompt, paraphrase or client-prefix link that is the account's only tie to an established
        campaign: not enough to attribute the account to it (see :meth:`_may_unite`)."""
        return a.links.get(fp) in WEAK_UNION_KINDS and self._established(root) and into.get(root, 0) < 2

    def _established(self, root: str) -> bool:
        r = self.roots.get(root)
        return r is not None and len(r[1]) >= self.cfg.campaign_min_size

    def _leave_campaign(self, acct: str, a: AccountLinks) -> None:
        root = self._find(a.cid) if a.cid is not None else None
        if root is not None and root in self.roots:
            self.roots[root][1].pop(acct, None)
            self._dirty_u[root] = None
            self.strong.get(root, {}).pop(acct, None)
        a.cid = None

    def _note_strong(self, out: list[Record], root: str, acct: str, w: int) -> None:
        """``acct``, a member of the campaign ``root``, has a broad shared library; when the
        campaign becomes strong (``campaign_strong_members``), every member hears of it."""
        members = self.strong.setdefault(root, {})
        if acct in members:
            return
        members[acct] = None
        if len(members) == self.cfg.campaign_strong_members:
            self._emit_members(out, root, w)

    def _emit_members(self, out: list[Record], root: str, w: int) -> None:
        for member in sorted(self.roots.get(root, [0, {}])[1]):
            la = self.accounts.get(member)
            if la is not None:
                self._emit(out, member, la, w)

    def _emit(self, out: list[Record], acct: str, a: AccountLinks, w: int) -> None:
        cid = None
        size = None
        strong = 0
        if a.cid is not None:
            root = self._find(a.cid)
            a.cid = root
            comp = self.roots.get(root, [0, {}])[1]
            if len(comp) >= self.cfg.campaign_min_size:
                cid = campaign_id_for(root)
                size = len(comp)
                strong = len(self.strong.get(root, ()))
        # what the policy acts on, from counts alone: a verdict is sent when one of them changes
        cfg = self.cfg
        nb = a.nb
        para = a.kc.get("para", 0)
        # (shared requests and neighbours exactly up to what the policy tests: the union of every
        # partition's latest is then what one partition would report, at any partition count)
        summary = [sorted(a.kc), min(para, cfg.campaign_min_templates), _steps(para, 64), cid,
                   min(len(a.sreq), cfg.content_very_broad_requests), self._card_span(a),
                   min(a.kc.get("ip", 0), cfg.proxy_pool_prefixes), min(strong, cfg.campaign_strong_members),
                   min(a.kc.get("tim", 0), cfg.timing_min_links), min(a.kc.get("prompt", 0), cfg.campaign_min_templates),
                   len(nb)]
        if summary == a.sent:
            return
        a.sent = summary
        out.append(Record(topic="verdicts", key=acct.encode(), value=Link(
            acct, a.org, self._kinds(a), cid, size, w, self.partition, sorted(a.sreq), a.n, a.kc.get("ip", 0),
            strong, a.kc.get("prompt", 0), a.pa, list(nb)).encode()))

    def _meet(self, out: list[Record], acct: str, a: AccountLinks, g: Group, w: int) -> None:
        """``acct`` is linked to the evidence group ``g`` (a prompt, paraphrase or card fingerprint):
        its members of other units become its neighbours, and it becomes theirs.

        Neighbours are kept as CRC32s of account ids, up to ``campaign_neighbours_cap``: each
        fingerprint lives on one partition, so the union of every partition's sets is the account's
        neighbourhood whatever the partition count (a partition that found the cap proves the union
        does too). A group of more than the cap's members makes each of them full, so only the
        members of smaller groups are told of a newcomer (bounded work per observation)."""
        cap = self.cfg.campaign_neighbours_cap
        own = g.members.get(acct)
        me = zlib.crc32(acct.encode())
        small = len(g.members) <= cap + 1
        nb = a.nb
        for m, u in g.members.items():
            if u == own or m == acct:
                continue
            if len(nb) < cap:
                nb[zlib.crc32(m.encode())] = None
            elif not small:
                break
            if small:
                la = self.accounts.get(m)
                if la is not None and len(la.nb) < cap and me not in la.nb:
                    la.nb[me] = None
                    self._dirty_a[m] = None
                    self._emit(out, m, la, w)

    # -- bounds ---------------------------------------------------------------------------------
    def _expire(self) -> None:
        horizon = self.watermark - self.cfg.fingerprint_ttl_ms
        while (oldest := self._oldest_fingerprint()) is not None and oldest.last < horizon:
            self._forget(self.singles if isinstance(oldest, Single) else self.groups)
        while self.accounts:
            acct, a = next(iter(self.accounts.items()))
            if a.last >= horizon:
                break
            self._evict_account()

    def _evict_account(self) -> None:
        acct, a = self.accounts.popitem(last=False)
        if a.cid is not None:
            self._leave_campaign(acct, a)
        self._dirty_a.pop(acct, None)
        self._tomb.append(b"m:" + acct.encode())
        self.counters["accounts_evicted"] = self.counters.get("accounts_evicted", 0) + 1

    def _oldest_fingerprint(self) -> Group | Single | None:
        """The least recently observed fingerprint, group or single."""
        g = next(iter(self.groups.values())) if self.groups else None
        s = next(iter(self.singles.values())) if self.singles else None
        return s if g is None or (s is not None and s.touch < g.touch) else g

    def _over_cap(self) -> None:
        if len(self.groups) + len(self.singles) > self.cfg.max_fingerprints_per_partition:
            self._evict_over_cap()

    def _evict_over_cap(self) -> None:
        """Past the cap, forget the least recently observed *single* (a fingerprint one account
        has shown); a group — two accounts or more, the evidence — only when no single is left.
        Singles are most of the fingerprints and most never gain a second account: under an LRU
        over both, a week of one partition at a 1-in-4 exact-key sample evicted 22k of 99k groups,
        among them the paraphrase keys that made campaign members of hydra_stealth."""
        self._forget(self.singles if self.singles else self.groups)

    def _forget(self, table: OrderedDict[str, Any]) -> None:
        """Forget the least recently observed fingerprint of ``table`` (singles or groups)."""
        fp, _ = table.popitem(last=False)
        self._dirty_g.pop(fp, None)
        self._tomb.append(b"g:" + fp.encode())
        self.counters["groups_evicted"] += 1

    # -- checkpointing ----------------------------------------------------------------------------
    def take_changes(self) -> list[tuple[bytes, bytes | None]]:
        out: list[tuple[bytes, bytes | None]] = [(k, None) for k in self._tomb]
        for fp in self._dirty_g:
            g = self.groups.get(fp)
            if g is not None:
                out.append((b"g:" + fp.encode(), orjson.dumps(g.to_list())))
            elif (single := self.singles.get(fp)) is not None:
                out.append((b"g:" + fp.encode(), orjson.dumps(single.to_list(kind_of(fp)))))
        for acct in self._dirty_a:
            a = self.accounts.get(acct)
            if a is not None:
                out.append((b"m:" + acct.encode(), orjson.dumps(a.to_list())))
        for fp in self._dirty_u:
            r = self.roots.get(fp)
            # members are not written: they are rebuilt from the accounts' links on restore
            out.append((b"u:" + fp.encode(), orjson.dumps([self.parent.get(fp), r[0] if r else None])))
        out.append((META_KEY, orjson.dumps({"wm": self.watermark, "seq": self.seq, "tseq": self.tseq,
                                            "c": self.counters})))
        self.discard_changes()
        return out

    def discard_changes(self) -> None:
        """Forget what changed since the last checkpoint (file replay has no changelog)."""
        self._tomb, self._dirty_g, self._dirty_a, self._dirty_u = [], {}, {}, {}

    def restore(self, entries: Iterable[tuple[bytes, bytes | None]]) -> None:
        latest: dict[bytes, bytes | None] = {}
        for k, v in entries:
            latest[k] = v
        groups, accounts = [], []
        for k, v in latest.items():
            if v is None:
                continue
            if k == META_KEY:
                m = orjson.loads(v)
                self.watermark = m["wm"]
                self.seq = m["seq"]
                self.tseq = m["tseq"]
                self.counters.update(m.get("c", {}))
                continue
            name = k[2:].decode()
            if k.startswith(b"g:"):
                g = Group.from_list(orjson.loads(v))
                groups.append((g.touch, name, g))
            elif k.startswith(b"m:"):
                a = AccountLinks.from_list(orjson.loads(v))
                accounts.append((a.touch, name, a))
            elif k.startswith(b"u:"):
                parent, since = orjson.loads(v)
                if parent is not None:
                    self.parent[name] = parent
                if since is not None:
                    self.roots[name] = [since, {}]
        groups.sort(key=lambda t: t[0])  # recency order, exactly as live
        accounts.sort(key=lambda t: t[0])
        self.groups, self.singles = OrderedDict(), OrderedDict()
        for _, n, g in groups:
            single = Single.from_group(g)
            if single is None:
                self.groups[n] = g
            else:
                self.singles[n] = single
        self.accounts = OrderedDict((n, a) for _, n, a in accounts)
        # campaign membership, in the order members joined (first seen, then id)
        for _, name, a in sorted(accounts, key=lambda t: (t[2].joined, t[1])):
            if a.cid is not None:
                root = self._find(a.cid)
                if root in self.roots:
                    self.roots[root][1][name] = None
                    if len(a.sreq) >= self.cfg.content_broad_requests:
                        self.strong.setdefault(root, {})[name] = None

    def state_size(self) -> dict[str, int]:
        return {"groups": len(self.groups), "singles": len(self.singles), "accounts": len(self.accounts),
                "campaigns": len(self.roots)}
