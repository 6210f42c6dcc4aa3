"""Per-account behaviour over event time: the state kept for each account and its features.

:class:`AccountState` is updated once per request (:meth:`AccountState.update`) with plain
arithmetic on ints, floats and small lists — nothing here allocates per event beyond what the
dict lookups need. :meth:`AccountState.features` turns the state into the fixed-length vector
the behaviour model scores, each feature scaled to [0, 1] by a fixed, documented transform
(fixed transforms instead of learned min/max scaling so an attacker cannot stretch the scale).

The state serialises to a compact list (:meth:`AccountState.to_list`) for the changelog.

>>> st = AccountState.new("org-1", created_ms=0, ts_ms=3_600_000)
>>> ev = {"ts_ms": 3_600_000, "task_category": "coding", "reasoning_elicitation": 0.5,
...       "tool_use": True, "input_tokens": 100, "output_tokens": 400, "model": "m1"}
>>> st.update(ev)
>>> st.n, st.cats[CATEGORY_INDEX["coding"]]
(1, 1)
>>> AccountState.from_list(st.to_list()).to_list() == st.to_list()
True
"""

from __future__ import annotations

import base64
import hashlib
import math
import zlib
from typing import Any

import orjson

from consumers.contract.events import CATEGORIES
from consumers.core.config import DAY_MS, HOUR_MS
from consumers.core.prompt_memory import KeySet, PromptMemory, PyKeySet, holds_record
from consumers.core.timing import window_from_json, window_to_json

#: prompt keys remembered per account (~85 prompts), and paraphrase keys (each announced once)
MAX_PROMPT_KEYS = 512
MAX_PARA_KEYS = 128

CATEGORY_INDEX = {c: i for i, c in enumerate(CATEGORIES)}
#: categories worth most to a distiller (THREATS.md: capability targeting)
CAPABILITY_IDX = tuple(CATEGORY_INDEX[c] for c in ("coding", "agentic", "reasoning", "math"))

FEATURE_NAMES = (
    "log_rate",          # requests per day, log-scaled
    "capability_share",  # share of coding/agentic/reasoning/math
    "elicitation",       # mean reasoning elicitation
    "round_the_clock",   # active hours vs. what a uniform 24/7 account would cover
    "gap_regularity",    # 1 - coefficient of variation of log inter-arrival, clipped
    "tool_share",
    "log_out_in",        # output/input token ratio, log-scaled
    "freshness",         # 1 for an account first seen the day it was created, 0 after 30 days
    "own_reuse",         # share of prompts the account itself repeats
    "ip_spread",         # distinct client prefixes per request
    "category_entropy",
)


def _clip01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


class AccountState:
    """Running behaviour of one account. See the module docstring."""

    __slots__ = (
        "org", "created", "first", "last", "n", "cats", "el", "tools", "hours",
        "gn", "gmean", "gm2", "tin", "tout", "ips", "reuse", "models",
        "recent_ids", "ids_at", "prompts", "fps", "next_learn", "sent",
        "dirty", "beh", "lpay", "lua", "scored_n", "scored_t", "touch", "switch_h", "para",
        "para_day", "para_left",
        "slots",  # synchronised timing (consumers/core/timing.py)
        "nfp",
    )

    def __init__(self) -> None:
        self.org: str | None = None
        self.created = 0
        self.first = 0
        self.last = 0
        self.n = 0
        self.cats = [0] * len(CATEGORIES)
        self.el = 0.0
        self.tools = 0
        self.hours = [0] * 24
        self.gn = 0          # inter-arrival Welford (log seconds)
        self.gmean = 0.0
        self.gm2 = 0.0
        self.tin = 0.0       # sum log1p(input tokens)
        self.tout = 0.0
        self.ips = b""                          # distinct client prefixes: their digest8s (bounded)
        self.reuse = 0                          # prompts whose SimHash the account used before
        self.models: tuple[str, ...] = ()       # model names used (bounded)
        self.recent_ids = bytearray()           # dedup window: 8-byte digests of recent event ids, a ring ...
        self.ids_at = 0                         # ... whose oldest entry is here once it is full
        self.prompts = PromptMemory(MAX_PROMPT_KEYS)  # keys of its recent prompts and their first use
        self.fps = b""                          # payment and client-string fingerprints announced: digest8s
        self.nfp = 0                            # non-prompt fingerprints announced (those, prefixes, wave)
        self.next_learn = 0                     # ts from which the account may train the model again
        self.sent: list[Any] = []               # last behaviour summary sent downstream
        self.dirty = False                      # active since the last tick
        self.beh = 0.0                          # last behaviour evidence
        self.lpay: str | None = None            # last payment fingerprint / client string seen
        self.lua: str | None = None             # (skip re-checking them on every request)
        self.scored_n = 0                       # requests at the last behaviour scoring
        self.scored_t = 0                       # event time of the last behaviour scoring
        self.touch = 0                          # partition sequence number of its last request
        self.switch_h = -1.0                    # hours from a model's release to this account's move to it
        self.para: PyKeySet | None = None       # paraphrase keys announced (recent ones)
        self.para_day = -1                      # event-time day of the paraphrase-key budget ...
        self.para_left = 0                      # ... and what is left of it
        self.slots = 0                          # active time slots: a timing.SlotWindow (0: none yet)

    @classmethod
    def new(cls, org: str | None, created_ms: int, ts_ms: int) -> AccountState:
        st = cls()
        st.org = org
        st.created = created_ms
        st.first = ts_ms
        st.last = ts_ms
        return st

    def seen_event(self, digest: bytes) -> bool:
        """Whether an event id with this :func:`digest8` is among the account's recent ones."""
        return holds_record(self.recent_ids, digest)

    def add_ip(self, ip: str, limit: int) -> int:
        """Remember a client prefix: how many the account has shown once it is added, 0 if it
        was known or ``limit`` prefixes are already remembered.

        >>> st = AccountState()
        >>> st.add_ip("203.0.113.0/24", 2), st.add_ip("203.0.113.0/24", 2), st.add_ip("198.51.100.0/24", 2)
        (1, 0, 2)
        >>> st.add_ip("192.0.2.0/24", 2), st.n_ips()
        (0, 2)
        """
        ips = self.ips
        if len(ips) >= 8 * limit:
            return 0
        d = digest8(ip)
        if holds_record(ips, d):
            return 0
        self.ips = ips + d
        return len(ips) // 8 + 1

    def n_ips(self) -> int:
        return len(self.ips) // 8

    def has_fingerprint(self, fp: str) -> bool:
        """Whether the account announced this payment or client-string fingerprint (``pay:`` /
        ``ua:``: the ones it may meet again after a change; its client prefixes are
        :meth:`add_ip`'s, its creation wave is announced once)."""
        return holds_record(self.fps, digest8(fp))

    def add_fingerprint(self, fp: str) -> None:
        """Count an announced fingerprint; remember a ``pay:`` or ``ua:`` one (see above).

        >>> st = AccountState()
        >>> st.add_fingerprint("ip:203.0.113.0/24"); st.add_fingerprint("pay:c1")
        >>> st.n_fingerprints(), st.has_fingerprint("pay:c1"), len(st.fps)
        (2, True, 8)
        """
        self.nfp += 1
        if fp.startswith(_REMEMBERED_FPS):
            self.fps += digest8(fp)

    def n_fingerprints(self) -> int:
        return self.nfp

    def remember_event(self, digest: bytes, window: int) -> None:
        """Remember an event id's digest; past ``window`` ids, the oldest is forgotten."""
        ids = self.recent_ids
        if len(ids) < 8 * window:
            ids += digest
        else:
            at = self.ids_at
            ids[at:at + 8] = digest
            self.ids_at = (at + 8) % len(ids)

    def update(self, ev: dict[str, Any]) -> None:
        """Fold one (validated, non-duplicate) request into the state."""
        ts = ev["ts_ms"]
        last = self.last
        log1p = math.log1p
        if self.n:
            gap = ts - last
            if gap > 0:
                x = log1p(gap / 1000.0)
                gn = self.gn = self.gn + 1
                d = x - self.gmean
                mean = self.gmean = self.gmean + d / gn
                self.gm2 += d * (x - mean)
        if ts > last:
            self.last = ts
        self.n += 1
        self.cats[CATEGORY_INDEX[ev["task_category"]]] += 1
        self.el += ev["reasoning_elicitation"]
        if ev["tool_use"]:
            self.tools += 1
        self.hours[(ts // HOUR_MS) % 24] += 1
        self.tin += log1p(ev["input_tokens"])
        self.tout += log1p(ev["output_tokens"])
        self.dirty = True

    # -- features ----------------------------------------------------------------------------
    def rate_per_day(self) -> float:
        span = max(self.last - self.first, HOUR_MS)
        return self.n * DAY_MS / max(span, DAY_MS / 4) if self.n else 0.0

    def capability_share(self) -> float:
        c = self.cats
        return sum(c[i] for i in CAPABILITY_IDX) / self.n if self.n else 0.0

    def elicitation(self) -> float:
        return self.el / self.n if self.n else 0.0

    def round_the_clock(self) -> float:
        """Active hours of the day relative to a uniform 24/7 account with as many requests."""
        n = self.n
        if n < 8:
            return 0.0
        expected = 24.0 * (1.0 - (23.0 / 24.0) ** n)
        active = 24 - self.hours.count(0)
        return _clip01(active / expected)

    def age_days_at_first(self) -> float:
        return max(0.0, (self.first - self.created) / DAY_MS)

    def freshness(self) -> float:
        return _clip01(1.0 - self.age_days_at_first() / 30.0)

    def category_entropy(self) -> float:
        n = self.n
        if not n:
            return 0.0
        h = 0.0
        for c in self.cats:
            if c:
                p = c / n
                h -= p * math.log(p)
        return h / math.log(len(CATEGORIES))

    def features(self) -> list[float]:
        """The behaviour vector, in :data:`FEATURE_NAMES` order, each in [0, 1]."""
        n = self.n or 1
        if self.gn > 1:
            std = math.sqrt(self.gm2 / (self.gn - 1))
            reg = _clip01(1.0 - std / max(self.gmean, 1e-9))
        else:
            reg = 0.0
        out_in = (self.tout - self.tin) / n
        return [
            _clip01(math.log10(1.0 + self.rate_per_day()) / 4.0),
            self.capability_share(),
            self.elicitation(),
            self.round_the_clock(),
            reg,
            self.tools / n,
            _clip01((out_in + 3.0) / 6.0),
            self.freshness(),
            self.reuse / n,
            _clip01(len(self.ips) // 8 / n),
            self.category_entropy(),
        ]

    # -- changelog -----------------------------------------------------------------------------
    def to_list(self) -> list[Any]:
        return self._as_list(self.prompts.to_list())

    def dumps(self) -> bytes:
        """The changelog value of a warm account: ``orjson.dumps(self.to_list())``, with the
        prompt keys written as JSON by their memory (natively: no list of up to 1,024 ints).

        >>> st = AccountState.new("org-1", created_ms=0, ts_ms=5)
        >>> _ = st.prompts.use_hex("0123456789abcdef", 1)
        >>> st.dumps() == orjson.dumps(st.to_list())
        True
        """
        return orjson.dumps(self._as_list(orjson.Fragment(self.prompts.to_json())))

    def _as_list(self, prompts: Any) -> list[Any]:
        return [
            self.org, self.created, self.first, self.last, self.n, self.cats, self.el, self.tools,
            self.hours, self.gn, self.gmean, self.gm2, self.tin, self.tout, _b64(self.ips),
            self.reuse, list(self.models), [_b64(self.recent_ids), self.ids_at],
            prompts,
            _b64(self.fps), self.next_learn, self.sent, self.dirty, self.beh,
            self.lpay, self.lua, self.scored_n, self.scored_t, self.touch, self.switch_h,
            None if self.para is None else _b64(self.para.to_bytes()), self.para_day, self.para_left,
            0, window_to_json(self.slots),  # [_FROZEN]: 0 (1 once frozen), [_SLOTS]: time slots
            self.nfp,
        ]

    # -- frozen: an idle account's changelog value, without the caches ---------------------------
    def freeze(self) -> bytes:
        """The account as a frozen changelog value: everything but the caches that only serve an
        active account (its dedup window, its prompt and paraphrase keys), marked frozen.

        >>> st = AccountState.new("org-1", created_ms=0, ts_ms=5)
        >>> st.remember_event(digest8("e1"), 64)
        >>> blob = st.freeze()
        >>> AccountState.is_frozen(AccountState.load_value(blob)), AccountState.frozen_last(blob)
        (True, 5)
        >>> len(blob) < len(orjson.dumps(AccountState.load_value(blob)))   # compressed
        True
        >>> back = AccountState.thaw(blob)
        >>> back.org, back.seen_event(digest8("e1"))
        ('org-1', False)
        """
        v = self.to_list()
        v[_IDS], v[_PROMPT_KEYS] = ["", 0], []
        if v[_PARA] is not None:
            v[_PARA] = ""
        v[_FROZEN] = 1
        # compressed: a frozen value is kept for days (and is a fresh bytes object of its own size:
        # orjson's result would keep its whole output buffer, 16 KB for a few hundred bytes)
        c = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=_FROZEN_ZDICT_V2)
        return _FROZEN_MARK_V2 + c.compress(orjson.dumps(v)) + c.flush()

    @classmethod
    def thaw(cls, blob: bytes) -> AccountState:
        return cls.from_list(cls.load_value(blob))

    @staticmethod
    def load_value(blob: bytes) -> list[Any]:
        """A changelog value as its list: plain JSON (a warm account, or an account frozen before
        frozen values were compressed) or a compressed frozen value (:meth:`freeze`; either mark)."""
        mark = blob[:1]
        if mark == _FROZEN_MARK_V2:
            d = zlib.decompressobj(-15, zdict=_FROZEN_ZDICT_V2)
            return orjson.loads(d.decompress(blob[1:]) + d.flush())
        if mark == _FROZEN_MARK:
            d = zlib.decompressobj(zdict=_FROZEN_ZDICT)
            return orjson.loads(d.decompress(blob[1:]) + d.flush())
        return orjson.loads(blob)

    @staticmethod
    def is_frozen(v: list[Any]) -> bool:
        return len(v) > _FROZEN and v[_FROZEN] == 1

    @staticmethod
    def frozen_last(blob: bytes) -> int:
        return int(AccountState.load_value(blob)[_LAST])

    @staticmethod
    def touch_of(v: list[Any]) -> int:
        return int(v[_TOUCH])

    @classmethod
    def from_list(cls, v: list[Any]) -> AccountState:
        st = cls()
        (st.org, st.created, st.first, st.last, st.n, st.cats, st.el, st.tools, st.hours, st.gn,
         st.gmean, st.gm2, st.tin, st.tout, ips, st.reuse, st.models, ids, prompts, fps,
         st.next_learn, st.sent, st.dirty, st.beh, st.lpay, st.lua,
         st.scored_n, st.scored_t, st.touch, st.switch_h) = v[:30]
        para = v[30] if len(v) > 30 else None  # absent in changelogs written before paraphrase keys
        if para is not None:  # earlier changelogs: the key names
            st.para = (KeySet.from_bytes(base64.b64decode(para), MAX_PARA_KEYS) if isinstance(para, str)
                       else KeySet.from_keys([_key_int(k) for k in para], MAX_PARA_KEYS))
        if len(v) > 32:
            st.para_day, st.para_left = v[31], v[32]
        st.slots = window_from_json(v[_SLOTS] if len(v) > _SLOTS else None)  # absent before timing
        st.ips = _digests(ips)
        st.models = tuple(st.models)  # earlier changelogs: {name: first use}, its keys
        if isinstance(fps, str):
            st.fps = _digests(fps)
            st.nfp = v[_NFP] if len(v) > _NFP else len(st.fps) // 8
        else:  # earlier changelogs: the fingerprints themselves
            st.fps, st.nfp = _digests([fp for fp in fps if fp.startswith(_REMEMBERED_FPS)]), len(fps)
        # earlier changelogs: event ids as strings, prompt keys as a {name: request} dict
        if isinstance(ids, list) and len(ids) == 2 and isinstance(ids[0], str) and isinstance(ids[1], int):
            st.recent_ids, st.ids_at = bytearray(base64.b64decode(ids[0])), ids[1]
        else:
            for eid in ids[-64:]:
                st.remember_event(digest8(eid), 64)
        if isinstance(prompts, dict):  # earlier changelogs: {key name: request}
            prompts = [x for k, r in prompts.items() for x in (_key_int(k), r)]
        st.prompts = PromptMemory.from_list(prompts, MAX_PROMPT_KEYS)
        return st


#: positions in the changelog list (:meth:`AccountState.to_list`)
_LAST, _IDS, _PROMPT_KEYS, _TOUCH, _PARA, _FROZEN, _SLOTS, _NFP = 3, 17, 18, 28, 30, 33, 34, 35
#: the fingerprints an account remembers by digest (the others need no membership test)
_REMEMBERED_FPS = ("pay:", "ua:")
#: a frozen value (:meth:`AccountState.freeze`) is a mark and a compressed stream (plain JSON
#: starts with "["). The stream uses a preset dictionary — the skeleton of a value and the common
#: browser client-string prefixes — which took a frozen value on ``day`` from 356 to 304 bytes
#: (median; 662 as JSON). Never change one in place: a new dictionary needs a new mark, and the
#: old ones stay readable (values of changelogs written before it).
#:
#: Mark 1 (until client prefixes and fingerprints were digests): a zlib stream with this dictionary.
_FROZEN_MARK = b"\x01"
_FROZEN_ZDICT = (
    b'"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/'
    b'"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/'
    b'"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/'
    b'"ip:/24","ua:'
    b'[null,1700000000000,1700000000000,1700000000000,0,[0,0,0,0,0,0,0,0,0],0.0,0,[0,0,0,0,0,0,0,0,'
    b'0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],0,0.0,0.0,0.0,0.0,[],0,{},["",0],[],[],0,[],false,0.0,null,'
    b'null,0,0,0,-1.0,null,-1,0,1,0]'
)
#: Mark 2: a raw deflate stream (no zlib header and checksum: 6 bytes; a Kafka record has its own
#: CRC) with the skeleton of today's value and the contract's reason codes (a behaviour summary
#: holds some): ``day`` seed 1's frozen value median 286 bytes (312 under mark 1).
_FROZEN_MARK_V2 = b"\x02"
_FROZEN_ZDICT_V2 = (
    _FROZEN_ZDICT[:_FROZEN_ZDICT.index(b'"ip:/24"')]
    + b'"MODEL_SWITCH","HIGH_VOLUME","BEHAVIOUR_ANOMALY","ROUND_THE_CLOCK","REASONING_ELICITATION",'
    b'"CAPABILITY_CONCENTRATION","FRESH_ACCOUNT"'
    b'[null,1700000000000,1700000000000,1700000000000,0,[0,0,0,0,0,0,0,0,0],0.0,0,[0,0,0,0,0,0,0,0,'
    b'0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],0,0.0,0.0,0.0,0.0,"",0,[],["",0],[],"",0,[0.0,[],0.0],false,0.0,null,'
    b'null,0,0,0,-1.0,"",-1,0,1,0,0]'
)


def _b64(b: bytes | bytearray) -> str:
    return base64.b64encode(b).decode()


def _digests(v: str | list[str]) -> bytes:
    """A set of digest8s from its changelog form: base64, or (changelogs written before they
    were digests) the strings themselves."""
    if isinstance(v, str):
        return base64.b64decode(v)
    return b"".join(dict.fromkeys(map(digest8, v)))


def digest8(text: str) -> bytes:
    """8 bytes standing for a string — an event id in an account's dedup window, a client prefix
    or a fingerprint in its sets — stable across processes (BLAKE2b).

    >>> digest8("evt-1") == digest8("evt-1") != digest8("evt-2")
    True
    """
    return hashlib.blake2b(text.encode(), digest_size=8).digest()


def _key_int(k: int | str) -> int:
    """A prompt or paraphrase key as an int, from its name (``p<i>:`` / ``q<xyz>:``) or already one."""
    if isinstance(k, int):
        return k
    if k[0] == "p":
        return int(k[1]) << 32 | int(k[3:], 16)
    return (int(k[1]) << 6 | int(k[2]) << 3 | int(k[3])) << 24 | int(k[5:], 16)
