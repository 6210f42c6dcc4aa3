"""Stage 1, the account stage: per-account behaviour, keyed by ``account_id``.

Input: ``requests`` (RequestEvent v1 JSON). For each request it

1. parses and validates it (:func:`consumers.contract.events.parse_event`); a bad message goes to
   ``dlq`` unchanged with the reason in the ``dlq.error`` header, and the stream goes on; so does
   an event whose ``ts_ms`` no clock should produce (:meth:`AccountProcessor._clock_check`);
2. drops duplicate deliveries (same ``event_id`` among the account's recent ones);
3. folds it into the account's :class:`~consumers.core.features.AccountState`;
4. announces *fingerprints* the account has not announced before — client IP prefix, payment
   instrument, client string, creation wave, prompt LSH keys (exact ones, and
   paraphrase-tolerant ones up to ``para_daily_budget`` a day) — as ``observations`` keyed by the
   fingerprint, so the campaign stage sees every account that shares one, whichever partition the
   account lives on. Each carries the account's request number (for a prompt key announced on
   reuse: the request that first used the prompt) and the request's payment fingerprint.

Once per timing *epoch* (``timing_epoch_ms``) it announces, for every account active in it, the
time-slot keys of :mod:`consumers.core.timing` that are rare by chance (as fingerprints).

Once per event-time *tick* (``tick_ms``) it scores every account that was active since the last
tick with the :class:`~consumers.core.models.behaviour.BehaviourModel` and rule evidence, and
sends the account's behaviour summary downstream (``observations`` keyed by account, relayed by
the campaign stage to the policy stage) when it changed. Scoring per tick, not per event, keeps the
model off the hot path and makes results independent of how records are batched.

Changelog keys: ``a:<account>`` (account state), ``__model__`` (the model), ``__meta__``
(watermark, next tick, first sighting of each model name, last timing epoch).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import orjson

from consumers.contract.events import InvalidEvent, parse_event
from consumers.core.config import DAY_MS, HOUR_MS, DetectorConfig
from consumers.core.features import (
    FEATURE_NAMES,
    MAX_PARA_KEYS,
    AccountState,
    digest8,
)
from consumers.core.messages import (
    Behaviour,
    encode_fingerprint,
    encode_plain_fingerprint,
    fingerprint_tail,
)
from consumers.core.models.behaviour import BehaviourModel
from consumers.core.prompt_memory import KeySet
from consumers.core.stage import Record
from consumers.core.timing import SlotSketch

MODEL_KEY = b"__model__"
META_KEY = b"__meta__"
_ACCOUNT_PREFIX = b"a:"
_MAX_IPS = 64              # distinct client prefixes remembered per account
_ANNOUNCED_IPS = 16        # ... of which announced: enough to place the account in a proxy pool
_MAX_MODELS = 32
_MAX_SHARED = 16_384       # distinct strings / behaviour summaries kept once per partition (_shared)


def dlq_record(r: Record, reason: str) -> Record:
    """The original message, unchanged, with the DLQ headers of the contract."""
    return Record(
        topic="dlq",
        key=r.key,
        value=r.value,
        headers=[
            ("dlq.error", reason.encode("utf-8", "replace")[:1000]),
            ("dlq.topic", r.topic.encode()),
            ("dlq.partition", str(r.partition).encode()),
            ("dlq.offset", str(r.offset).encode()),
        ],
    )


def _c01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def behaviour_evidence(st: AccountState, quantile: float, cfg: DetectorConfig) -> tuple[float, list[list[Any]], float]:
    """Per-account evidence in [0, 1], its reasons ``[[code, value], ...]`` and the account's
    *extraction profile* in [0, 1].

    A weighted sum (``cfg.behaviour_weights``) of interpretable signals (THREATS.md), each through
    its ramp (``cfg.signal_ramps``): freshness, capability targeting, reasoning elicitation,
    round-the-clock activity, volume, the model's anomaly quantile. A move to a newly released
    model within ``model_switch_ms`` is reported as a reason but not weighted. None of them is
    damning alone; the policy enforces on behaviour alone only when a fresh account also runs at
    heavy volume.

    The extraction profile (``cfg.extraction_weights``) is what a distiller's traffic looks like
    whatever the account's age or infrastructure: capability targeting, reasoning elicitation,
    round-the-clock activity, volume. Neither freshness nor the model's anomaly quantile is part of
    it: the first is what aged, bought accounts evade, the second depends on how many accounts a
    partition has learned from.

    >>> st = AccountState.new(None, created_ms=0, ts_ms=0)
    >>> for i in range(40):                      # every half hour for 20 hours, coding, eliciting
    ...     st.update({"ts_ms": i * 1_800_000, "task_category": "coding", "reasoning_elicitation": 0.9,
    ...                "tool_use": False, "input_tokens": 10, "output_tokens": 900, "model": "m"})
    >>> score, reasons, extraction = behaviour_evidence(st, 0.0, DetectorConfig())
    >>> [r[0] for r in reasons], extraction
    (['FRESH_ACCOUNT', 'CAPABILITY_CONCENTRATION', 'REASONING_ELICITATION', 'ROUND_THE_CLOCK'], 1.0)
    """
    w, xw, ramp = cfg.behaviour_weights, cfg.extraction_weights, cfg.signal_ramps

    def up(signal: str, x: float) -> float:
        start, width = ramp[signal]
        return _c01((x - start) / width)

    rate = st.rate_per_day()
    fresh = st.freshness()
    cap = st.capability_share()
    el = st.elicitation()
    rtc_all = st.round_the_clock()
    rtc = rtc_all if st.n >= cfg.round_the_clock_min_requests else 0.0
    vol = up("volume", rate)
    anom = up("anomaly", quantile)
    cap_x = up("capability", cap)
    el_x = up("elicitation", el)
    rtc_x = up("round_the_clock", rtc)
    switch = st.switch_h >= 0  # reported for analysts, not weighted: honest new users do it too
    score = _c01(w["fresh"] * fresh + w["capability"] * cap_x + w["elicitation"] * el_x
                 + w["round_the_clock"] * rtc_x + w["volume"] * vol + w["anomaly"] * anom)
    extraction = _c01(xw["capability"] * up("extraction_capability", cap)
                      + xw["elicitation"] * up("extraction_elicitation", el)
                      + xw["round_the_clock"] * (up("round_the_clock", rtc_all)
                                                 if st.n >= cfg.extraction_round_the_clock_min_requests else 0.0)
                      + xw["volume"] * vol)
    reasons: list[list[Any]] = []
    if fresh >= 0.8:
        reasons.append(["FRESH_ACCOUNT", round(st.age_days_at_first(), 2)])
    if cap_x >= 0.5:
        reasons.append(["CAPABILITY_CONCENTRATION", round(cap, 2)])
    if el_x >= 0.5:
        reasons.append(["REASONING_ELICITATION", round(el, 2)])
    if rtc_x >= 0.5:
        reasons.append(["ROUND_THE_CLOCK", round(rtc, 2)])
    if vol >= 0.25:
        reasons.append(["HIGH_VOLUME", round(rate, 1)])
    if anom >= 0.5:
        reasons.append(["BEHAVIOUR_ANOMALY", round(quantile, 4)])
    if switch:
        reasons.append(["MODEL_SWITCH", st.switch_h])
    return score, reasons, extraction


class AccountProcessor:
    """The account stage for one input partition (see the module docstring)."""

    def __init__(self, cfg: DetectorConfig, partition: int = 0):
        self.cfg = cfg
        self.partition = partition
        # least recently active first; an account idle for freeze_after_ms is kept frozen: its
        # changelog value (bytes), without the caches (see AccountState.freeze)
        self.accounts: OrderedDict[str, AccountState | bytes] = OrderedDict()
        self._warm: OrderedDict[str, None] = OrderedDict()  # the accounts not frozen, least recently active first
        self.model = BehaviourModel(len(FEATURE_NAMES), seed=cfg.seed + partition, n_trees=cfg.hst_trees,
                                    height=cfg.hst_height, window_size=cfg.hst_window)
        self.watermark = 0
        self.next_tick = 0
        self.seq = 0                      # requests processed: orders accounts by recency
        self.started = -1                 # event time of the first request the partition saw
        self.model_first: dict[str, int] = {}
        self._changed: dict[str, None] = {}   # accounts to write at the next checkpoint
        self._active: dict[str, None] = {}    # accounts owed a scoring at the next tick (st.dirty)
        self._tombstones: list[str] = []
        self._model_dirty = False
        self._tail_of: tuple[str, int, int, int, str | None] | None = None  # (account, ts, watermark, n, card) of _tail
        self._card: str | None = None     # payment fingerprint of the request being processed
        self._tail = b""
        self._prompt_mask = cfg.prompt_sample - 1  # PromptMemory.use: a key k is in the sample when k & mask == 0
        self.timing = SlotSketch(cfg.timing_slot_ms, cfg.timing_window_slots, cfg.timing_epoch_ms,
                                 cfg.timing_bands, cfg.timing_rows, cfg.timing_min_slots,
                                 cfg.timing_max_density, cfg.seed, cfg.timing_max_chance,
                                 cfg.timing_prior_accounts)
        self.timing_epoch = 0             # end of the last epoch whose timing keys were announced
        # one copy of what many accounts hold alike: client strings, model names, org ids, and
        # behaviour summaries (see _shared); bounded: past _MAX_SHARED, values are kept as they come
        self._strings: dict[str, str] = {}
        self._summaries: dict[tuple[Any, ...], list[Any]] = {}
        self.counters = {"events": 0, "invalid": 0, "duplicates": 0, "evicted_ttl": 0,
                         "evicted_cap": 0, "fingerprint_cap": 0, "ts_out_of_range": 0,
                         "frozen": 0, "thawed": 0}

    # -- processing ------------------------------------------------------------------------------
    def process(self, records: list[Record]) -> list[Record]:
        out: list[Record] = []
        cfg = self.cfg
        accounts, warm, counters, mark = self.accounts, self._warm, self.counters, self.timing.mark
        dedup_window = cfg.dedup_window
        for r in records:
            try:
                ev = parse_event(r.value)
            except InvalidEvent as e:
                counters["invalid"] += 1
                out.append(dlq_record(r, e.reason))
                continue
            ts = ev["ts_ms"]
            bad = self._clock_check(ts, ev["account_created_ms"], r.timestamp_ms)
            if bad is not None:
                counters["ts_out_of_range"] += 1
                out.append(dlq_record(r, bad))
                continue
            if self.started < 0:
                self.started = ts
            if ts >= self.next_tick:
                if self.next_tick:
                    self._tick(out)
                    self._announce_timing(out, ts)
                self.next_tick = (ts // cfg.tick_ms + 1) * cfg.tick_ms
            acct = ev["account_id"]
            self._card = ev["payment_fingerprint"]
            got = accounts.get(acct)
            digest = digest8(ev["event_id"])
            if got is None:
                org = ev["org_id"]
                st = AccountState.new(org and self._shared(org), ev["account_created_ms"], ts)
                if st.age_days_at_first() < cfg.para_max_age_days:
                    st.para = KeySet(MAX_PARA_KEYS)
                accounts[acct] = st
                warm[acct] = None
                if len(accounts) > cfg.max_accounts_per_partition:
                    self._evict_one("evicted_cap")
                if st.freshness() > 0.0:
                    wave = ev["account_created_ms"] // cfg.wave_bucket_ms
                    self._announce(out, st, acct, f"wave:{wave}:{ev['user_agent'] or ''}", ts)
                    # what is known from the first request: how fresh the account is
                    self._send_behaviour(out, acct, st, *behaviour_evidence(st, 0.0, cfg), max(self.watermark, ts))
            elif isinstance(got, bytes):  # frozen: thaw it
                st = accounts[acct] = self._compact(AccountState.thaw(got))
                accounts.move_to_end(acct)
                warm[acct] = None
                counters["thawed"] += 1
            else:
                st = got
                if st.seen_event(digest):
                    counters["duplicates"] += 1
                    continue
                accounts.move_to_end(acct)
                warm.move_to_end(acct)
            st.remember_event(digest, dedup_window)
            if ts > self.watermark:
                self.watermark = ts
            self.seq += 1
            st.touch = self.seq
            counters["events"] += 1
            st.update(ev)
            st.slots = mark(st.slots, ts)
            self._changed[acct] = None
            self._active[acct] = None
            self._fingerprints(out, st, acct, ev, ts)
        return out

    def _clock_check(self, ts: int, created: int, broker_ts: int | None) -> str | None:
        """Why an event's ``ts_ms`` is out of range, or None when it may be processed.

        No single event may move the event-time clock beyond the configured skew: an event further
        ahead than ``max_clock_skew_ms`` of its record's broker timestamp (live, or a replayed
        topic) or — without one (file replay) — more than ``max_stream_jump_ms`` ahead of the
        partition's watermark is rejected, and so is one that predates its own account's creation
        or lies more than ``allowed_lateness_ms`` behind the watermark. The first event of a file
        (no watermark yet) is the one that cannot be checked.
        """
        cfg = self.cfg
        if ts < created:
            return "ts_out_of_range: ts_ms is before account_created_ms"
        if broker_ts is not None and broker_ts > 0:
            if ts > broker_ts + cfg.max_clock_skew_ms:
                return f"ts_out_of_range: ts_ms is {(ts - broker_ts) // 1000} s ahead of the record's broker timestamp"
        elif self.watermark and ts > self.watermark + cfg.max_stream_jump_ms:
            return f"ts_out_of_range: ts_ms is {(ts - self.watermark) // 1000} s ahead of the stream's watermark"
        if self.watermark and ts < self.watermark - cfg.allowed_lateness_ms:
            return f"ts_out_of_range: ts_ms is {(self.watermark - ts) // 1000} s behind the watermark"
        return None

    def _fingerprints(self, out: list[Record], st: AccountState, acct: str, ev: dict[str, Any], ts: int) -> None:
        ip = ev["client_ip_prefix"]
        if 0 < st.add_ip(ip, _MAX_IPS) <= _ANNOUNCED_IPS:
            self._announce(out, st, acct, "ip:" + ip, ts)
        pay = ev["payment_fingerprint"]
        if pay is not None and pay != st.lpay:
            st.lpay = pay
            if not st.has_fingerprint("pay:" + pay):
                self._announce(out, st, acct, "pay:" + pay, ts)
        ua = ev["user_agent"]
        if ua and ua != st.lua:
            st.lua = self._shared(ua)
            if not st.has_fingerprint("ua:" + ua):
                self._announce(out, st, acct, "ua:" + ua, ts)
        model = ev["model"]
        if model not in st.models and len(st.models) < _MAX_MODELS:
            st.models += (self._shared(model),)
            released = self.model_first.get(model)
            if released is None:
                if len(self.model_first) < 10_000:
                    self.model_first[model] = ts
            elif (released - self.started >= DAY_MS      # a release we watched, not a model we met at start
                  and st.first < released                  # the account predates it: it *moved*
                  and ts - released <= self.cfg.model_switch_ms and st.switch_h < 0):
                st.switch_h = round((ts - released) / HOUR_MS, 1)
        # prompts: announce the keys in the consistent sample (1/prompt_sample) at first use, and any
        # key the account itself repeats, each with its template's first use, so the campaign stage
        # counts a reused or near-duplicate prompt once (PromptMemory.use)
        simhash = ev["prompt_simhash"]
        announce, first, reused = st.prompts.use_hex(simhash, st.n, self._prompt_mask)
        if announce:
            self._announce_content(out, st, acct, announce, ts, first)
        if reused:
            st.reuse += 1
        # every account also announces paraphrase-tolerant keys (each once), up to a daily budget:
        # a light account (what campaigns are made of) announces all of them, a heavy one a sample
        # of its day (its exact prompt keys still cover all of its requests)
        para = st.para
        if para is not None:
            day = ts // DAY_MS
            if day != st.para_day:
                st.para_day, st.para_left = day, self.cfg.para_daily_budget
            if st.para_left > 0:
                new = para.add_new_hex(simhash, self.cfg.para_sample)
                if new:
                    st.para_left -= len(new)
                    self._announce_content(out, st, acct, new, ts, st.n)
                para.trim()

    def _announce(self, out: list[Record], st: AccountState, acct: str, fp: str, ts: int) -> None:
        """Announce an infrastructure fingerprint (client /24, card, client string, creation wave),
        once per account, at most ``max_fingerprints_per_account`` of them."""
        if st.n_fingerprints() >= self.cfg.max_fingerprints_per_account:
            self.counters["fingerprint_cap"] += 1
            return
        st.add_fingerprint(fp)
        out.append(Record("observations", fp.encode(), encode_fingerprint(fp, self._tail_for(st, acct, ts, st.n))))

    def _announce_content(self, out: list[Record], st: AccountState, acct: str, fps: Iterable[bytes], ts: int,
                          request: int) -> None:
        """Announce content keys (prompt, paraphrase or time-slot keys: announced once by their
        own bookkeeping, uncapped, and never in need of JSON escaping) with ``request``: the
        account's request they stand for (a prompt's template's first use)."""
        tail = self._tail_for(st, acct, ts, request)
        for kb in fps:
            out.append(Record("observations", kb, encode_plain_fingerprint(kb, tail)))

    def _tail_for(self, st: AccountState, acct: str, ts: int, n: int) -> bytes:
        """A FingerprintSeen's tail: all but the fingerprint is the same for every fingerprint of
        one request, so it is serialised once per request (and first use)."""
        w = max(self.watermark, ts)
        key = (acct, ts, w, n, self._card)
        if self._tail_of != key:
            self._tail_of = key
            self._tail = fingerprint_tail(acct, st.org, ts, w, n, self._card)
        return self._tail

    def _tick(self, out: list[Record]) -> None:
        """Score the accounts active since the last tick (sorted: order never depends on hashing)."""
        cfg = self.cfg
        wm = self.watermark
        accounts = self.accounts
        active = sorted(a for a in self._active if type(st := accounts.get(a)) is AccountState and st.dirty)
        self._active = {}
        for acct in active:
            st = accounts[acct]
            assert isinstance(st, AccountState)
            st.dirty = False
            self._changed[acct] = None  # its scoring (or the debt of one) is part of its state
            if st.n < cfg.min_events_to_score:
                continue
            # features move slowly: rescore once the account grew by a quarter, or after a while
            if st.scored_n and st.n < st.scored_n * 1.25 and wm - st.scored_t < cfg.rescore_ms:
                st.dirty = True  # still owed a scoring
                self._active[acct] = None
                continue
            st.scored_n, st.scored_t = st.n, wm
            f = st.features()
            score, q = self.model.scored_quantile(f)
            if (wm - st.created) >= cfg.learn_min_age_days * DAY_MS and wm >= st.next_learn:
                self.model.learn_one(f, score)  # the model has not changed since it scored f
                self._model_dirty = True
                st.next_learn = wm + cfg.learn_every_ms
            self._send_behaviour(out, acct, st, *behaviour_evidence(st, q, cfg), wm)
        self._expire(wm)
        self._freeze_idle(wm)

    def _announce_timing(self, out: list[Record], ts: int) -> None:
        """Once per timing epoch: the timing keys (:mod:`consumers.core.timing`) of every account
        active in the epoch that just ended, for the window ending there (sorted: order never
        depends on hashing). Announced as fingerprints, with the account's last card (its unit)."""
        epoch = self.cfg.timing_epoch_ms
        end = ts // epoch * epoch
        if end <= self.timing_epoch:
            return
        self.timing_epoch = end
        since = end - epoch
        # the warm accounts only: a frozen one has been idle for a day, not active in the epoch
        acc = self.accounts
        states = {a: st for a in self._warm if isinstance(st := acc[a], AccountState) and st.last >= since}
        active = sorted((a, st.slots, st.first) for a, st in states.items())
        for acct, keys in self.timing.epoch_keys(active, end):
            st = states[acct]
            self._card = st.lpay
            self._announce_content(out, st, acct, [k.encode() for k in keys], end, st.n)

    def _send_behaviour(self, out: list[Record], acct: str, st: AccountState, score: float,
                        reasons: list[list[Any]], extraction: float, wm: int) -> None:
        """Send the behaviour summary downstream when it changed (scores in steps of 0.05)."""
        st.beh = score
        summary = self._summary(round(score * 20) / 20, tuple(r[0] for r in reasons), round(extraction * 20) / 20)
        if summary == st.sent:
            return
        st.sent = summary
        out.append(Record(topic="observations", key=acct.encode(), value=Behaviour(
            acct, st.org, score, reasons, round(extraction, 4), wm, st.first, st.n).encode()))

    def _shared(self, s: str) -> str:
        """The partition's one copy of a string many accounts hold (client string, model name, org
        id): an account keeps a reference instead of its own copy."""
        got = self._strings.get(s)
        if got is not None:
            return got
        if len(self._strings) < _MAX_SHARED:
            self._strings[s] = s
        return s

    def _summary(self, score: float, codes: tuple[str, ...], extraction: float) -> list[Any]:
        """A behaviour summary ``[score, [reason codes], extraction]``, one list per distinct
        summary (a few hundred on a day): accounts keep a reference. Never mutated."""
        key = (score, codes, extraction)
        got = self._summaries.get(key)
        if got is None:
            got = [score, list(codes), extraction]
            if len(self._summaries) < _MAX_SHARED:
                self._summaries[key] = got
        return got

    def _compact(self, st: AccountState) -> AccountState:
        """A restored or thawed account, holding the partition's shared copies (see _shared)."""
        if st.org:
            st.org = self._shared(st.org)
        if st.lua:
            st.lua = self._shared(st.lua)
        if st.models:
            st.models = tuple(map(self._shared, st.models))
        sent = st.sent
        if len(sent) == 3 and isinstance(sent[1], list):
            st.sent = self._summary(sent[0], tuple(sent[1]), sent[2])
        return st

    def _expire(self, wm: int) -> None:
        ttl = self.cfg.account_ttl_ms
        acc = self.accounts
        while acc:
            acct, st = next(iter(acc.items()))
            last = AccountState.frozen_last(st) if isinstance(st, bytes) else st.last
            if last + ttl > wm:
                break
            self._evict_one("evicted_ttl")

    def _freeze_idle(self, wm: int) -> None:
        """Freeze the accounts idle for ``freeze_after_ms``: a few hundred bytes each instead of
        their caches (dedup window, prompt and paraphrase keys), which a returning account rebuilds."""
        after = self.cfg.freeze_after_ms
        if not after:
            return
        warm, acc = self._warm, self.accounts
        for _ in range(len(warm)):
            acct = next(iter(warm))
            st = acc[acct]
            assert isinstance(st, AccountState)  # evicted and frozen accounts leave _warm
            if st.last + after > wm:
                break
            elif st.dirty:  # owed a scoring: stays warm until it had it
                warm.move_to_end(acct)
            else:
                warm.popitem(last=False)
                acc[acct] = st.freeze()
                self._changed[acct] = None
                self.counters["frozen"] += 1

    def _evict_one(self, counter: str) -> None:
        acct, _ = self.accounts.popitem(last=False)
        self._warm.pop(acct, None)
        self._active.pop(acct, None)
        self._changed.pop(acct, None)
        self._tombstones.append(acct)
        self.counters[counter] += 1

    # -- checkpointing ---------------------------------------------------------------------------
    def take_changes(self) -> list[tuple[bytes, bytes | None]]:
        out: list[tuple[bytes, bytes | None]] = [(_ACCOUNT_PREFIX + a.encode(), None) for a in self._tombstones]
        for acct in self._changed:
            st = self.accounts.get(acct)
            if st is not None:
                out.append((_ACCOUNT_PREFIX + acct.encode(), st if isinstance(st, bytes) else st.dumps()))
        if self._model_dirty:
            out.append((MODEL_KEY, self.model.dumps()))
        out.append((META_KEY, orjson.dumps({"wm": self.watermark, "nt": self.next_tick, "seq": self.seq, "st": self.started,
                                            "mf": self.model_first, "c": self.counters,
                                            "te": self.timing_epoch})))
        self.discard_changes()
        return out

    def discard_changes(self) -> None:
        """Forget what changed since the last checkpoint (file replay has no changelog)."""
        self._tombstones = []
        self._model_dirty = False
        self._changed = {}

    def restore(self, entries: Iterable[tuple[bytes, bytes | None]]) -> None:
        latest: dict[bytes, bytes | None] = {}
        for k, v in entries:
            latest[k] = v
        states: list[tuple[int, str, AccountState | bytes]] = []
        for k, v in latest.items():
            if v is None:
                continue
            if k == MODEL_KEY:
                self.model = BehaviourModel.loads(v)
            elif k == META_KEY:
                m = orjson.loads(v)
                self.watermark, self.next_tick, self.model_first = m["wm"], m["nt"], m["mf"]
                self.seq = m["seq"]
                self.started = m["st"]
                self.timing_epoch = m.get("te", 0)
                self.counters.update(m.get("c", {}))
            elif k.startswith(_ACCOUNT_PREFIX):
                acct = k[len(_ACCOUNT_PREFIX):].decode()
                lst = AccountState.load_value(v)
                if AccountState.is_frozen(lst):
                    states.append((AccountState.touch_of(lst), acct, v))
                else:
                    st = self._compact(AccountState.from_list(lst))
                    states.append((st.touch, acct, st))
        states.sort(key=lambda t: t[0])  # recency order, exactly as live
        self.accounts = OrderedDict((a, st) for _, a, st in states)
        self._warm = OrderedDict((a, None) for _, a, st in states if type(st) is AccountState)
        self._active = {a: None for _, a, st in states if type(st) is AccountState and st.dirty}
        self._changed = {}

    def native_bytes(self) -> int:
        """Bytes of state held outside Python's allocator (the native prompt memory's and
        paraphrase keys' arrays), which ``tracemalloc`` does not see: benchmarks add them."""
        return sum(st.prompts.nbytes() + (st.para.nbytes() if st.para is not None else 0)
                   for st in self.accounts.values() if type(st) is AccountState)

    def state_size(self) -> dict[str, int]:
        return {"accounts": len(self.accounts), "frozen": len(self.accounts) - len(self._warm)}
