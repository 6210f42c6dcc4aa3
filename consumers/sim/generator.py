"""The event stream: a heap merge of every account's lazy arrival process.

:class:`Simulation` builds the accounts of a scenario (benign personas, then the named attack
families, then the sweep's campaigns) from the seed, knows the labels up front, and
:meth:`Simulation.events` yields RequestEvent v1 dicts in non-decreasing ``ts_ms`` order. Only the heap (one entry per live account) and the
pending duplicate deliveries are held, so memory is independent of the number of events.

Determinism: accounts are drawn from ``Random("world:<seed>")`` and the stream from
``Random("events:<seed>")``; ties on ``ts_ms`` are broken by a push counter. The same scenario
and seed give the same events, byte for byte, every time :meth:`Simulation.events` is called.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections.abc import Iterator
from typing import Any

from consumers.sim.accounts import INF, Account
from consumers.sim.attacks import build_attacks
from consumers.sim.personas import build_benign
from consumers.sim.scenarios import Scenario, get_scenario
from consumers.sim.sweep import build_sweep
from consumers.sim.world import (
    CAT_TABLE_SIZE,
    MAX_INPUT_TOKENS,
    MAX_OUTPUT_TOKENS,
    MINI_MODEL,
    MS_PER_TOKEN,
    TOKEN_TABLE_SIZE,
    TOKEN_TABLES,
    TTFT_MS,
    World,
)

_IDX_BITS = 24  # heap keys carry the account index in their low bits


class Simulation:
    """A scenario instantiated with a seed: its accounts, labels and event stream."""

    def __init__(self, scenario: Scenario | str, seed: int):
        self.scenario = get_scenario(scenario)
        self.seed = seed
        world = World(random.Random(f"world:{seed}:{self.scenario.name}"))
        self.accounts: list[Account] = build_benign(world, self.scenario)
        self.accounts += build_attacks(world, self.scenario)
        self.accounts += build_sweep(world, self.scenario)
        digest = hashlib.blake2b(f"{seed}:{self.scenario.name}".encode(), digest_size=4)
        self.event_id_prefix = f"ev{digest.hexdigest()}-"
        self._run = 0

    @property
    def labels(self) -> list[dict[str, Any]]:
        """One label dict per account (COMMON.md labels format), in account order."""
        return [a.label() for a in self.accounts]

    def events(self, max_events: int | None = None) -> Iterator[dict[str, Any]]:
        """Yield the scenario's events (including duplicate deliveries) sorted by ``ts_ms``
        (unless ``duplicate_delay_ms`` > 0 re-emits duplicates later); stop after
        ``max_events`` when given. Each call replays the same stream from the start; the
        accounts hold the stream's state, so starting a new stream ends the previous one
        (its next step raises RuntimeError)."""
        self._run += 1
        run = self._run
        sc = self.scenario
        accounts = self.accounts
        if len(accounts) >= 1 << _IDX_BITS:
            raise ValueError(f"at most {1 << _IDX_BITS} accounts")
        rng = random.Random(f"events:{self.seed}:{sc.name}")
        random_ = rng.random
        getrandbits = rng.getrandbits
        log = math.log
        heappush = heapq.heappush
        heappop = heapq.heappop
        heapreplace = heapq.heapreplace
        tok_tables = TOKEN_TABLES
        ms_tok = MS_PER_TOKEN
        ttft = TTFT_MS
        mini = MINI_MODEL
        max_in = MAX_INPUT_TOKENS
        max_out = MAX_OUTPUT_TOKENS
        ncat = float(CAT_TABLE_SIZE)
        tok_bits = TOKEN_TABLE_SIZE.bit_length() - 1  # the tables have 2**tok_bits entries
        idx_mask = (1 << _IDX_BITS) - 1
        idx_bits = _IDX_BITS
        base = sc.start_ms
        prefix = self.event_id_prefix
        dup_rate = sc.duplicate_rate
        dup_delay = sc.duplicate_delay_ms
        limit = max_events if max_events is not None else -1

        # heap of ints: (ts_ms - start) << idx_bits | account index (ties: account order)
        heap: list[int] = []
        for i, a in enumerate(accounts):
            a.start(-log(1.0 - random_()))
            a.static = _static_fields(a)
            if a.t < INF:
                heap.append(((int(a.t) - base) << idx_bits) | i)
        heapq.heapify(heap)
        pending: list[tuple[int, int, dict[str, Any]]] = []  # delayed duplicate deliveries
        n = 0

        while heap:
            key = heap[0]
            a = accounts[key & idx_mask]
            ts = (key >> idx_bits) + base
            while pending and pending[0][0] <= ts:
                if n == limit:
                    return
                yield heappop(pending)[2]
                n += 1
            if n == limit:
                return
            if self._run != run:  # checked after every resumption, before touching accounts
                raise RuntimeError("another events() stream of this Simulation was started")

            prof = a.profile
            if a.p_alt and ts < a.alt_until and random_() < a.p_alt:
                prof = a.alt_profile
            # --- prompt: a (noisy) use of a template, or a fresh prompt ---
            if prof.p_template and random_() < prof.p_template:
                sh, cat, elic, tool, tin, tout = prof.templates[
                    int(prof.n_templates * random_() ** prof.template_skew)]
                k = prof.noise_lo + int(random_() * prof.noise_span)
                if k:
                    m = 1 << getrandbits(6)
                    while m.bit_count() < k:
                        m |= 1 << getrandbits(6)
                    sh ^= m
                elic += (random_() - 0.5) * 0.06
                elic = 0.0 if elic < 0.0 else (1.0 if elic > 1.0 else elic)
                tin *= prof.tok_mult
                tout *= prof.out_mult
            else:
                sh = getrandbits(64)
                cat = prof.cat_table[int(random_() * ncat)]
                if cat in prof.elic_cats and random_() < prof.elic_p:
                    elic = prof.elic_lo + random_() * prof.elic_span
                else:
                    elic = random_() ** 3 * 0.2
                tool = random_() < (prof.tool_p_agentic if cat == "agentic" else prof.tool_p)
                tin = prof.tok_mult
                tout = prof.out_mult
            in_tab, out_tab, tf = tok_tables[cat]
            turns = 1 + int(-log(1.0 - random_()) * prof.turns_extra * tf)
            inp = 1 + int(in_tab[getrandbits(tok_bits)] * tin * (0.65 + 0.35 * turns))
            if inp > max_in:
                inp = max_in
            out = 1 + int(out_tab[getrandbits(tok_bits)] * tout * (1.0 + elic))
            if out > max_out:
                out = max_out
            # --- model ---
            if prof.p_mini and random_() < prof.p_mini:
                model = mini
            elif ts >= prof.switch_ms and (prof.new_share >= 1.0 or random_() < prof.new_share):
                model = prof.new_model
            else:
                model = prof.old_model
            # --- outcome ---
            r = random_()
            if r < a.p429:
                status = 429
                out = 0
                lat = 2 + int(random_() * 60)
            elif r < a.p_err:
                status = 500 if random_() < 0.6 else 400
                out = 0
                lat = 40 + int(random_() * 3000)
            else:
                status = 200
                lat = int((ttft[model] + out * ms_tok[model] + inp * 0.02)
                          * a.lat_mult * (0.8 + 0.4 * random_()))
            # --- infrastructure ---
            ips = a.ips
            if len(ips) == 1 or random_() < a.p_ip_primary:
                ip = ips[0]
            else:
                ip = ips[int(random_() * len(ips))]

            ev = a.static.copy()
            ev["event_id"] = f"{prefix}{n:09x}"
            ev["ts_ms"] = ts
            keys = a.api_keys
            if len(keys) > 1:
                ev["api_key_id"] = keys[int(random_() * len(keys))]
            ev["model"] = model
            ev["input_tokens"] = inp
            ev["output_tokens"] = out
            ev["latency_ms"] = lat
            ev["status"] = status
            ev["client_ip_prefix"] = ip[0]
            ev["asn"] = ip[1]
            ev["country"] = ip[2]
            uas = a.uas
            if len(uas) > 1 and random_() >= a.p_ua_primary:
                ev["user_agent"] = uas[int(random_() * len(uas))]
            ev["prompt_simhash"] = f"{sh:016x}"
            ev["task_category"] = cat
            ev["reasoning_elicitation"] = int(elic * 1000.0 + 0.5) / 1000.0
            ev["tool_use"] = tool
            ev["n_turns"] = turns
            # duplicate delivery: copied before the consumer sees (and may mutate) the event
            copy = ev.copy() if dup_rate and random_() < dup_rate else None
            yield ev
            n += 1
            if copy is not None:
                if dup_delay:
                    heappush(pending, (ts + 1 + int(random_() * dup_delay), n, copy))
                else:
                    if n == limit:
                        return
                    yield copy
                    n += 1
            if self._run != run:
                raise RuntimeError("another events() stream of this Simulation was started")

            # --- next arrival: inline fast path within the current hour ---
            e = -log(1.0 - random_())
            rate = a.h_rate
            t = a.t + e / rate if rate > 0.0 else INF
            if t >= a.h_lim:
                t = a.next_time(a.t, e)
            if t < INF:
                a.t = t
                heapreplace(heap, ((int(t) - base) << idx_bits) | (key & idx_mask))
            else:
                heappop(heap)
                a.static = {}

        while pending:
            if n == limit:
                return
            yield heappop(pending)[2]
            n += 1


def _static_fields(a: Account) -> dict[str, Any]:
    """The event fields that never change for ``a``, in contract order (the others are
    placeholders overwritten per event)."""
    return {
        "schema_version": 1,
        "event_id": None,
        "ts_ms": None,
        "account_id": a.account_id,
        "org_id": a.org_id,
        "api_key_id": a.api_keys[0],
        "account_created_ms": a.created_ms,
        "account_tier": a.tier,
        "model": None,
        "input_tokens": None,
        "output_tokens": None,
        "latency_ms": None,
        "status": None,
        "client_ip_prefix": None,
        "asn": None,
        "country": None,
        "user_agent": a.uas[0],
        "payment_fingerprint": a.payment_fp,
        "prompt_simhash": None,
        "task_category": None,
        "reasoning_elicitation": None,
        "tool_use": None,
        "n_turns": None,
    }


def generate(scenario: Scenario | str, seed: int, max_events: int | None = None
             ) -> tuple[Iterator[dict[str, Any]], list[dict[str, Any]]]:
    """``(events, labels)`` of ``scenario`` with ``seed``: a lazy iterator of RequestEvent v1
    dicts in non-decreasing ``ts_ms`` order, and one label dict per account."""
    sim = Simulation(scenario, seed)
    return sim.events(max_events), sim.labels
