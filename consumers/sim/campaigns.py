"""What every attack campaign is built from: the :class:`Campaign` its accounts share (id, prompt
library, model switch, clients, hourly rhythm) and the draws of fresh campaign accounts —
creation waves, cards shared by groups, proxy-pool sizes, the campaign's content profile.

The named families (:mod:`consumers.sim.attacks`) and the adversary space
(:mod:`consumers.sim.sweep`) both build on these; neither imports the other. Every draw comes
from ``world.rng``, in the order the builders call these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from consumers.contract.units import DAY_MS, HOUR_MS
from consumers.sim.accounts import Account, Profile, hour_factors, ua_tuple
from consumers.sim.personas import base_account, make_profile
from consumers.sim.scenarios import CampaignBehaviour, Scenario
from consumers.sim.world import Template, World

__all__ = [
    "Campaign",
    "campaign_profile",
    "fresh_account",
    "new_campaign",
    "pool_size",
    "shared_cards",
    "wave_times",
]


@dataclass
class Campaign:
    """What the accounts of one campaign share."""

    campaign_id: str
    family: str
    beh: CampaignBehaviour
    templates: list[Template]
    switch_ms: float
    uas: tuple[str, ...]
    hour_factors: list[float] | None
    hf_origin: int


def new_campaign(world: World, sc: Scenario, family: str, idx: int, beh: CampaignBehaviour,
                 out_mult: float = 1.0) -> Campaign:
    """Campaign ``idx`` of ``family``: its id, prompt library, model switch, clients, rhythm."""
    rng = world.rng
    cid = f"{family}-{idx}-{rng.getrandbits(24):06x}"
    lo, hi = beh.n_templates
    lib = world.templates(rng.randint(lo, hi), beh.categories, beh.elic_cats, beh.elic_p,
                          beh.elic_range, beh.tool_p, out_mult) if hi > 0 else []
    switch = sc.release_ms + rng.uniform(*beh.switch_delay_h) * HOUR_MS
    uas = ua_tuple(world, beh.uas, beh.n_uas)
    hf = None
    origin = sc.start_ms // HOUR_MS
    if beh.hour_sigma > 0:
        hf = hour_factors(rng, int(math.ceil(sc.days * 24)) + 2, beh.hour_sigma)
    return Campaign(cid, family, beh, lib, switch, uas, hf, origin)


def wave_times(world: World, sc: Scenario, beh: CampaignBehaviour, n: int) -> list[int]:
    """Creation times of ``n`` accounts, allocated to the waves by largest remainder."""
    rng = world.rng
    waves = [(sc.start_ms - int(d * DAY_MS), s) for d, s in beh.waves_before]
    span = sc.end_ms - sc.start_ms
    waves += [(sc.start_ms + int(f * span), s) for f, s in beh.waves_during]
    total = sum(s for _, s in waves)
    quotas = [n * s / total for _, s in waves]
    counts = [int(q) for q in quotas]
    for i in sorted(range(len(waves)), key=lambda i: counts[i] - quotas[i])[: n - sum(counts)]:
        counts[i] += 1
    out = []
    for (t0, _), c in zip(waves, counts, strict=True):
        for _ in range(c):
            out.append(t0 + int(rng.uniform(0.0, beh.wave_span_h) * HOUR_MS))
    return out


def campaign_profile(world: World, camp: Campaign, jitter_h: float) -> Profile:
    """A member's content profile: the campaign's library; its model switch up to ``jitter_h``
    hours after the campaign's."""
    switch = camp.switch_ms + world.rng.uniform(0.0, jitter_h) * HOUR_MS
    return make_profile(world, camp.beh, switch, templates=camp.templates)


def shared_cards(world: World, n: int, group: tuple[int, int]) -> list[str]:
    """Payment fingerprints for ``n`` accounts, each card shared by a group of accounts."""
    out: list[str] = []
    while len(out) < n:
        card = world.new_id("pf")
        out += [card] * world.rng.randint(*group)
    return out[:n]


def fresh_account(world: World, sc: Scenario, camp: Campaign, created: int) -> Account:
    """A member account created at ``created``: the campaign's clients and rhythm, no card yet."""
    rng = world.rng
    beh = camp.beh
    a = base_account(world, sc, beh, camp.family, camp.campaign_id, created_ms=created)
    a.active_from = max(float(sc.start_ms),
                        created + rng.uniform(*beh.activation_h) * HOUR_MS)
    a.hour_factors = camp.hour_factors
    a.hf_origin = camp.hf_origin
    a.uas = camp.uas if rng.random() < 0.5 else camp.uas[::-1]
    a.payment_fp = None
    if rng.random() < beh.p_org:
        a.org_id = world.new_id("org", 48)
    return a


def pool_size(beh: CampaignBehaviour, size: int) -> int:
    """/24s in the pool of a campaign of ``size`` accounts."""
    return min(beh.pool_max, int(beh.pool_base + beh.pool_per_account * size))
