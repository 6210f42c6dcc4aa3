"""Per-account state objects of the simulator and helpers to build them.

An :class:`Account` holds who it is (ids, org, tier, card), when it sends (a piecewise-constant
hourly rate: base rate x diurnal profile of the local hour x weekend factor x ramp x campaign
hour factors + bursts), from where (/24 prefixes, ASNs, user agents) and what (one or two
:class:`Profile` objects: prompt templates, category mix, elicitation, tools, turns, tokens,
model adoption). It produces its next request time lazily; :mod:`consumers.sim.generator` merges
all accounts with a heap. Objects use ``__slots__`` and share templates, category tables, IP pools
and diurnal profiles by reference, so memory grows with accounts, never with events.
"""

from __future__ import annotations

import math
import random
from typing import Any

from consumers.contract.units import HOUR_MS
from consumers.sim.world import (
    DIURNAL,
    NEW_MODEL,
    OLD_MODEL,
    UA_MIXES,
    Infra,
    Template,
    World,
)

INF = math.inf


class Profile:
    """What an account asks: prompts, categories, elicitation, tools, turns, tokens, models."""

    __slots__ = (
        "templates", "n_templates", "p_template", "template_skew", "noise_lo", "noise_span",
        "cat_table", "elic_cats", "elic_p", "elic_lo", "elic_span",
        "tool_p", "tool_p_agentic", "turns_extra", "tok_mult", "out_mult",
        "old_model", "new_model", "switch_ms", "new_share", "p_mini",
    )

    def __init__(
        self,
        *,
        templates: list[Template],
        p_template: float,
        template_skew: float,
        noise_bits: tuple[int, int],
        cat_table: tuple[str, ...],
        elic_cats: frozenset[str],
        elic_p: float,
        elic_range: tuple[float, float],
        tool_p: float,
        turns_mean: float,
        tok_mult: float,
        out_mult: float,
        switch_ms: float,
        new_share: float,
        p_mini: float,
    ):
        self.templates = templates
        self.n_templates = len(templates)
        self.p_template = p_template if templates else 0.0
        self.template_skew = template_skew
        self.noise_lo = noise_bits[0]
        self.noise_span = noise_bits[1] - noise_bits[0] + 1
        self.cat_table = cat_table
        self.elic_cats = elic_cats
        self.elic_p = elic_p
        self.elic_lo = elic_range[0]
        self.elic_span = elic_range[1] - elic_range[0]
        self.tool_p = tool_p
        self.tool_p_agentic = min(1.0, tool_p * 2.5)
        self.turns_extra = max(0.0, turns_mean - 1.0)
        self.tok_mult = tok_mult
        self.out_mult = out_mult
        self.old_model = OLD_MODEL
        self.new_model = NEW_MODEL
        self.switch_ms = switch_ms
        self.new_share = new_share
        self.p_mini = p_mini


class Account:
    """One simulated account: identity, timing, infrastructure, content profile(s), state."""

    __slots__ = (
        # identity
        "account_id", "org_id", "api_keys", "created_ms", "tier", "payment_fp", "group", "campaign",
        # timing
        "active_from", "active_to", "rate_h", "diurnal", "weekend", "tz_min",
        "ramp0", "ramp_ms", "ramp_origin", "hour_factors", "hf_origin", "bursts",
        # infrastructure
        "ips", "p_ip_primary", "uas", "p_ua_primary",
        # content
        "profile", "alt_profile", "p_alt", "alt_until",
        # outcome
        "p429", "p_err", "lat_mult",
        # extra ground-truth label fields (sweep: the campaign's drawn dimensions)
        "extra",
        # state of the arrival process, and the event's constant fields (set by the generator)
        "t", "h_end", "h_rate", "h_lim", "static",
    )

    def __init__(self, account_id: str, group: str, campaign: str | None = None):
        self.account_id = account_id
        self.group = group
        self.campaign = campaign
        self.org_id: str | None = None
        self.api_keys: tuple[str | None, ...] = (None,)
        self.created_ms = 0
        self.tier = "free"
        self.payment_fp: str | None = None
        self.active_from = 0.0
        self.active_to = INF
        self.rate_h = 1.0
        self.diurnal = DIURNAL["flat"]
        self.weekend = 1.0
        self.tz_min = 0
        self.ramp0 = 1.0
        self.ramp_ms = 0.0
        self.ramp_origin: int | None = None  # the ramp starts here (default: created_ms)
        self.hour_factors: list[float] | None = None
        self.hf_origin = 0
        self.bursts: tuple[tuple[int, int, float], ...] = ()
        self.ips: list[Infra] = []
        self.p_ip_primary = 1.0
        self.uas: tuple[str | None, ...] = (None,)
        self.p_ua_primary = 1.0
        self.profile: Profile = None  # type: ignore[assignment]  # set by the builders
        self.alt_profile: Profile = None  # type: ignore[assignment]  # used when p_alt > 0
        self.p_alt = 0.0
        self.alt_until = INF  # the alternative profile is used only before this time
        self.p429 = 0.004
        self.p_err = 0.006
        self.lat_mult = 1.0
        self.extra: dict[str, Any] | None = None
        self.t = INF
        self.h_end = -INF
        self.h_rate = 0.0
        self.h_lim = -INF
        self.static: dict[str, Any] = {}

    # --- arrival process --------------------------------------------------------------------

    def hour_rate(self, hi: int) -> float:
        """Requests per millisecond during absolute UTC hour ``hi`` (hours since the epoch)."""
        lh = (hi * 60 + self.tz_min) // 60
        r = self.rate_h * self.diurnal[lh % 24]
        if (lh // 24 + 3) % 7 >= 5:  # 1970-01-01 was a Thursday: Monday=0 ... Saturday=5
            r *= self.weekend
        if self.ramp_ms:
            origin = self.created_ms if self.ramp_origin is None else self.ramp_origin
            age = hi * HOUR_MS - origin
            if age < self.ramp_ms:
                r *= self.ramp0 + (1.0 - self.ramp0) * max(age, 0.0) / self.ramp_ms
        hf = self.hour_factors
        if hf is not None:
            i = hi - self.hf_origin
            if 0 <= i < len(hf):
                r *= hf[i]
        for b0, b1, extra in self.bursts:
            if b0 <= hi < b1:
                r += extra
        return r / HOUR_MS

    def next_time(self, t: float, e: float) -> float:
        """The arrival after ``t`` of a non-homogeneous Poisson process, given an Exp(1) draw
        ``e`` (time-rescaling over the piecewise-constant hourly rate); INF past ``active_to``."""
        h_end = self.h_end
        rate = self.h_rate
        end = self.active_to
        while True:
            if t >= h_end:
                if t >= end:
                    t = INF
                    break
                hi = int(t // HOUR_MS)
                h_end = (hi + 1) * HOUR_MS
                rate = self.hour_rate(hi)
            room = (h_end - t) * rate
            if e < room:
                t += e / rate
                break
            e -= room
            t = h_end
        self.h_end = h_end
        self.h_rate = rate
        self.h_lim = h_end if h_end < end else end
        return t if t < end else INF

    def start(self, e: float) -> None:
        """Reset the arrival process and draw the first request time after ``active_from``
        from the Exp(1) draw ``e``."""
        self.h_end = -INF
        self.h_rate = 0.0
        self.h_lim = -INF
        self.t = self.next_time(self.active_from, e)

    def label(self) -> dict[str, Any]:
        """The ground-truth label line of this account (COMMON.md labels format, plus the
        builder's ``extra`` fields, e.g. a sweep campaign's ``dims``)."""
        out = {
            "account_id": self.account_id,
            "org_id": self.org_id,
            "label": "attack" if self.campaign is not None else "benign",
            "group": self.group,
            "campaign": self.campaign,
        }
        if self.extra:
            out.update(self.extra)
        return out


# ---------------------------------------------------------------------------------------------
# Helpers used by the persona and attack builders
# ---------------------------------------------------------------------------------------------


def lognormal_clipped(rng: random.Random, median: float, sigma: float, lo: float, hi: float
                      ) -> float:
    """A lognormal draw with the given median, clipped to [lo, hi]."""
    v = median * math.exp(rng.gauss(0.0, sigma)) if sigma > 0 else median
    return min(hi, max(lo, v))


def log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    """A draw spread evenly on a log scale between ``lo`` and ``hi`` (both > 0)."""
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def ua_tuple(world: World, mix: str, n: int = 1) -> tuple[str, ...]:
    """``n`` distinct user agents drawn from the named mix (the first is the primary one)."""
    weights = UA_MIXES[mix]
    keys = list(weights)
    out: list[str] = []
    for _ in range(20):
        ua = world.rng.choices(keys, weights=[weights[k] for k in keys])[0]
        if ua not in out:
            out.append(ua)
        if len(out) >= min(n, len(keys)):
            break
    return tuple(out)


def adoption_switch(rng: random.Random, release_ms: float, early: float, never: float,
                    median_days: float, sigma: float) -> float:
    """When an honest account starts using the new model: a few within hours, most after
    days (lognormal), some never (INF)."""
    u = rng.random()
    if u < never:
        return INF
    if u < never + early:
        return release_ms + rng.uniform(0.5, 12.0) * HOUR_MS
    return release_ms + median_days * 24 * HOUR_MS * math.exp(rng.gauss(0.0, sigma))


def hour_factors(rng: random.Random, n_hours: int, sigma: float) -> list[float]:
    """Campaign-wide hourly intensity factors (mean ~1): every account of the campaign is busier
    or quieter in the same hours (the operator's job scheduler)."""
    mu = -0.5 * sigma * sigma
    return [math.exp(rng.gauss(mu, sigma)) for _ in range(n_hours)]
