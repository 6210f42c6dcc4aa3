"""The adversary space (scenario ``sweep``): campaigns drawn at random from ranges of every
evasion dimension instead of a list of named families.

Per seed, :func:`build_sweep` draws ``Scenario.sweep_campaigns`` campaigns (one big one of
200-800 accounts, a second with some chance, one heavy-scraper-style campaign of 1-5 accounts
at thousands a day with some chance, the rest log-uniform 10-200 accounts). Each campaign draws
a *sophistication* s uniform in [0, 1], then every dimension of :class:`Dims` from
:class:`~consumers.sim.scenarios.SweepSpace`, on its evasive side with probability s (so the
evasion counts spread over 0-8 rather than piling up around 4):

* **age**: fresh (created in waves or spread from a week before the start to mid-run) or
  bought (log-uniform 14 days to 3 years, each account around the campaign's age);
* **paraphrase**: a campaign maximum ``d``, uniform in 7..16 (evasive) or 0..6; each template use
  flips a uniform number of SimHash bits in ``max(0, d-4)..d`` (the farthest uses are ``d`` away);
* **network**: a shared proxy pool (hosting ASNs), a residential proxy network (many home /24s,
  few accounts each), a pool of cloud /24s, or one home /24 of its own per account;
* **client**: the campaign's rare tooling strings, or a popular honest SDK string per account;
* **payment**: cards shared by groups of 3-10, cards shared in pairs, one card each, none;
* **schedule**: 24/7 (with campaign-wide hourly jitter), a shared schedule (every account fires
  only in the same 3-8 hours of each day), or a human daily rhythm (each account its own zone);
* **ramp**: none, or from ~5 requests/day to the plateau over 3-14 days of use;
* **blend**: share of honest (developer-like) traffic per account: evasive uniform 30-70%, else
  0 (40%) or uniform 0-30%;
* **capability**: coding/agentic, reasoning/math or a mix, concentrated 50-97% on those
  categories, reasoning elicitation moderate, high or extreme;
* **volume**: log-uniform 5-60 requests/day/account at the plateau;
* **model hop** (some campaigns): the accounts stop at the new model's release and a fresh batch
  (30-50% of the campaign) behind new infrastructure, new cards and new clients takes over on
  the new model, reusing 30-70% of the prompt library.

:meth:`Dims.evasions` counts the dimensions on their evasive side. Every account's label carries
``dims`` (the campaign's drawn values and evasion count) and ``batch`` (1, or 2 after a hop).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consumers.contract.units import DAY_MS, HOUR_MS
from consumers.sim.accounts import Account, log_uniform, ua_tuple
from consumers.sim.campaigns import (
    Campaign,
    fresh_account,
    new_campaign,
    pool_size,
    shared_cards,
    wave_times,
)
from consumers.sim.personas import make_profile
from consumers.sim.scenarios import HYDRA, CampaignBehaviour, Scenario, SweepSpace
from consumers.sim.world import CLOUD_ASNS, DIURNAL, PROXY_ASNS, Infra, World

NETWORKS = ("proxy_pool", "residential_proxy", "cloud", "home")
CLIENTS = ("rare", "popular_sdk")
PAYMENTS = ("shared_pool", "pairs", "own", "none")
SCHEDULES = ("24/7", "shared_slots", "human")
CAPABILITIES = ("coding_agentic", "reasoning_math", "mixed")
ELICITATION = ("moderate", "high", "extreme")

_FOCUS = {
    "coding_agentic": {"coding": 0.6, "agentic": 0.4},
    "reasoning_math": {"reasoning": 0.6, "math": 0.4},
    "mixed": {"coding": 0.35, "agentic": 0.2, "reasoning": 0.3, "math": 0.15},
}
_OTHER = {"writing": 0.3, "analysis": 0.3, "chat": 0.25, "other": 0.15}
#: elicitation level -> (share of focus prompts that elicit, score range)
_ELIC = {"moderate": (0.4, (0.3, 0.6)), "high": (0.7, (0.5, 0.85)), "extreme": (0.95, (0.85, 1.0))}
_CARD_GROUPS = {"shared_pool": (3, 10), "pairs": (2, 2), "own": (1, 1)}


@dataclass(frozen=True)
class Dims:
    """One campaign's drawn point of the adversary space."""

    size: int  # accounts in the campaign (both batches)
    age_days: float  # median account age at the scenario start (fresh: < 14)
    creation: str  # "wave" | "spread" (fresh) | "bought" (aged)
    paraphrase_bits: int  # campaign max d: each use flips max(0, d-4)..d bits
    network: str
    client: str
    payment: str
    schedule: str
    ramp: str  # "none" | "slow"
    ramp_days: float
    blend: float  # share of honest traffic per account
    capability: str
    concentration: float  # share of requests in the focus categories
    elicitation: str
    rate_per_day: float
    model_hop: bool
    heavy: bool  # a heavy-scraper-style campaign (1-5 accounts at thousands a day)
    sophistication: float  # the chance each dimension was drawn on its evasive side

    def evasions(self) -> int:
        """How many dimensions are on their evasive side."""
        return sum((
            self.creation == "bought",
            self.network == "home",
            self.client == "popular_sdk",
            self.payment in ("own", "none"),
            self.schedule != "24/7",
            self.ramp == "slow",
            self.paraphrase_bits > 6,
            self.blend > 0.3,
        ))

    def label(self) -> dict[str, Any]:
        """The label's ``dims``: the drawn values (rounded) and the evasion count."""
        out = dataclasses.asdict(self)
        for k in ("age_days", "ramp_days", "blend", "concentration", "rate_per_day", "sophistication"):
            out[k] = round(out[k], 3)
        out["evasions"] = self.evasions()
        return out


def draw_dims(rng: random.Random, space: SweepSpace, kind: str, size_mult: float = 1.0) -> Dims:
    """A campaign's dimensions; ``kind`` is ``normal``, ``big`` or ``heavy`` (sizes/volume)."""
    if kind == "heavy":
        size = rng.randint(*space.heavy_size)
    else:
        lo, hi = space.big_size if kind == "big" else space.size
        size = round(log_uniform(rng, lo, hi))
    size = max(1, round(size * size_mult))
    # sophistication: each dimension is on its evasive side with this probability, so
    # evasion counts spread from 0 to 8 (independent fair coins would pile up around 4)
    soph = rng.random()

    def evasive() -> bool:
        return rng.random() < soph

    fresh = not evasive()
    creation = rng.choice(("wave", "spread")) if fresh else "bought"
    age = 0.0 if fresh else log_uniform(rng, *space.aged_days)
    paraphrase = rng.randint(7, space.max_paraphrase) if evasive() else rng.randint(0, 6)
    network = "home" if evasive() else rng.choice(NETWORKS[:-1])
    client = "popular_sdk" if evasive() else "rare"
    payment = rng.choice(PAYMENTS[2:]) if evasive() else rng.choice(PAYMENTS[:2])
    schedule = rng.choice(SCHEDULES[1:]) if evasive() else "24/7"
    ramp = "slow" if evasive() else "none"
    ramp_days = rng.uniform(*space.ramp_days)
    if evasive():
        blend = rng.uniform(0.3, space.blend[1])
    else:
        blend = 0.0 if rng.random() < space.p_no_blend else rng.uniform(space.blend[0], 0.3)
    capability = rng.choice(CAPABILITIES)
    concentration = rng.uniform(*space.concentration)
    elicitation = rng.choice(ELICITATION)
    rate = log_uniform(rng, *(space.heavy_rate if kind == "heavy" else space.rate))
    hop = rng.random() < space.p_model_hop and size >= 4
    return Dims(size, age, creation, paraphrase, network, client, payment, schedule, ramp,
                ramp_days, blend, capability, concentration, elicitation, rate, hop,
                kind == "heavy", soph)


def _behaviour(d: Dims) -> CampaignBehaviour:
    """The campaign behaviour realising ``d`` (hydra's knobs for everything not drawn)."""
    focus = _FOCUS[d.capability]
    cats = {k: v * d.concentration for k, v in focus.items()}
    cats.update({k: v * (1.0 - d.concentration) for k, v in _OTHER.items()})
    elic_p, elic_range = _ELIC[d.elicitation]
    human = d.schedule == "human"
    return dataclasses.replace(
        HYDRA,
        rate_median=d.rate_per_day, rate_sigma=0.2, rate_min=d.rate_per_day * 0.5,
        rate_max=d.rate_per_day * 1.6,
        diurnal="flat", weekend=0.8 if human else 1.0,
        categories=cats, cat_jitter=0.15,
        p_template=0.85, n_templates=(30, 200),
        noise_bits=(max(0, d.paraphrase_bits - 4), d.paraphrase_bits),
        elic_cats=frozenset(focus), elic_p=elic_p, elic_range=elic_range,
        tool_p=0.5 if "agentic" in focus else 0.05,
        hour_sigma=0.3 if d.schedule == "24/7" else 0.0,
        p_org=0.0,
    )


def _slot_factors(rng: random.Random, sc: Scenario, space: SweepSpace) -> list[float]:
    """Hour factors of a shared schedule: the same few hours of every day, nothing between."""
    k = rng.randint(*space.slots_per_day)
    slots = set(rng.sample(range(24), k))
    first = sc.start_ms // HOUR_MS
    n = int(math.ceil(sc.days * 24)) + 2
    return [24.0 / k if (first + i) % 24 in slots else 0.0 for i in range(n)]


def _creation_times(world: World, sc: Scenario, beh: CampaignBehaviour, d: Dims, n: int
                    ) -> list[int]:
    rng = world.rng
    if d.creation == "wave":
        return sorted(wave_times(world, sc, beh, n))
    if d.creation == "spread":
        t0 = sc.start_ms - int(sc.sweep.fresh_days * DAY_MS)
        t1 = sc.start_ms + (sc.end_ms - sc.start_ms) // 2
        return sorted(t0 + rng.randrange(t1 - t0) for _ in range(n))
    return sorted(sc.start_ms - int(max(14.0, d.age_days * math.exp(rng.gauss(0.0, 0.3))) * DAY_MS)
                  for _ in range(n))


def _network(world: World, d: Dims, beh: CampaignBehaviour, n: int) -> Callable[[Account], None]:
    """A function giving each account its client /24s on the campaign's kind of network."""
    rng = world.rng
    if d.network == "home":
        def home(a: Account) -> None:
            country = world.country()
            a.tz_min = world.tz_minutes(country)
            h = world.residential(country)
            a.ips = [h, world.residential(country, mobile=True)]
            a.p_ip_primary = 0.9
        return home
    per_account: tuple[int, int]
    pool: list[Infra]
    if d.network == "proxy_pool":
        asns = rng.sample(sorted(PROXY_ASNS), k=rng.randint(*beh.pool_asns))
        pool = [world.proxy(rng.choice(asns)) for _ in range(pool_size(beh, n))]
        per_account = beh.account_pool
    elif d.network == "residential_proxy":
        pool = [world.residential() for _ in range(min(20_000, 300 + 4 * n))]
        per_account = (5, 20)
    else:
        asns = rng.sample(sorted(CLOUD_ASNS), k=rng.randint(2, 4))
        pool = [world.cloud(None, asn=rng.choice(asns)) for _ in range(4 + n // 5)]
        per_account = (1, 4)

    def pooled(a: Account) -> None:
        a.ips = rng.sample(pool, k=min(len(pool), rng.randint(*per_account)))
        a.p_ip_primary = 0.0 if len(a.ips) > 1 else 1.0
    return pooled


def _batch(world: World, sc: Scenario, camp: Campaign, d: Dims, n: int, batch: int,
           created: list[int], switch_ms: float, active_to: float) -> list[Account]:
    """``n`` accounts of one batch of the campaign, on their own network, cards and clients.
    Batch 2 (after a model hop) goes to work at ``switch_ms``, on the new model only."""
    rng = world.rng
    beh = camp.beh
    net = _network(world, d, beh, n)
    cards: list[str | None] = (list(shared_cards(world, n, _CARD_GROUPS[d.payment]))
                               if d.payment in _CARD_GROUPS else [None] * n)
    diurnal = DIURNAL[rng.choice(("casual", "developer", "researcher"))]
    out = []
    for i in range(n):
        a = fresh_account(world, sc, camp, created[i])
        a.active_to = active_to
        if d.creation == "bought" and batch == 1:  # bought accounts go to work at the start
            a.active_from = sc.start_ms + rng.uniform(0.0, 6.0) * HOUR_MS
        if batch == 2:
            a.active_from = max(a.active_from, switch_ms)
        a.payment_fp = cards[i]
        if a.payment_fp is None:
            a.tier = "free"
        net(a)
        if d.client == "popular_sdk":
            a.uas = ua_tuple(world, "popular_sdk", 1)
        if d.schedule == "human":
            if d.network != "home":  # the account pretends to be a person somewhere
                a.tz_min = world.tz_minutes(world.country())
            a.diurnal = diurnal
        if d.ramp == "slow":
            a.ramp0 = min(1.0, 5.0 / (a.rate_h * 24.0))
            a.ramp_ms = d.ramp_days * DAY_MS
            a.ramp_origin = int(a.active_from)
        jitter = rng.uniform(0.0, beh.switch_jitter_h) * HOUR_MS if batch == 1 else 0.0
        extraction = make_profile(world, beh, switch_ms + jitter, templates=camp.templates)
        if d.blend > 0:
            a.profile = make_profile(world, sc.developer, switch_ms)
            a.alt_profile = extraction
            a.p_alt = 1.0 - d.blend
        else:
            a.profile = extraction
        a.extra = {"dims": d.label(), "batch": batch}
        out.append(a)
    return out


def build_sweep_campaign(world: World, sc: Scenario, d: Dims, idx: int) -> list[Account]:
    """The accounts of one drawn campaign (both batches when it hops to the new model)."""
    rng = world.rng
    beh = _behaviour(d)
    camp = new_campaign(world, sc, "sweep", idx, beh)
    if d.schedule == "shared_slots":
        camp.hour_factors = _slot_factors(rng, sc, sc.sweep)
    if not d.model_hop:
        created = _creation_times(world, sc, beh, d, d.size)
        return _batch(world, sc, camp, d, d.size, 1, created, camp.switch_ms, float(sc.end_ms))
    n2 = max(1, round(d.size * rng.uniform(0.3, 0.5)))
    n1 = d.size - n2
    created = _creation_times(world, sc, beh, d, n1)
    out = _batch(world, sc, camp, d, n1, 1, created, math.inf, camp.switch_ms)
    # the new batch: fresh accounts created in the hours before the switch, new clients,
    # part of the library plus new templates
    keep = rng.sample(camp.templates, k=max(1, round(len(camp.templates) * rng.uniform(*sc.sweep.hop_library_share))))
    lo, hi = beh.n_templates
    new = world.templates(rng.randint(lo, hi) // 2, beh.categories, beh.elic_cats, beh.elic_p,
                          beh.elic_range, beh.tool_p)
    hop = dataclasses.replace(camp, templates=keep + new, uas=ua_tuple(world, beh.uas, beh.n_uas))
    t_switch = int(camp.switch_ms)
    created2 = sorted(t_switch - rng.randrange(6 * HOUR_MS) for _ in range(n2))
    out += _batch(world, sc, hop, d, n2, 2, created2, camp.switch_ms, float(sc.end_ms))
    return out


def campaign_kinds(rng: random.Random, space: SweepSpace, n: int) -> list[str]:
    """The kinds of the ``n`` campaigns of a seed: one or two big, maybe one heavy, the rest
    normal (in a random order)."""
    kinds = ["big"] + (["big"] if rng.random() < space.p_second_big else [])
    if rng.random() < space.p_heavy:
        kinds.append("heavy")
    kinds = (kinds + ["normal"] * n)[:n]
    rng.shuffle(kinds)
    return kinds


def build_sweep(world: World, sc: Scenario) -> list[Account]:
    """Every campaign of the sweep (none unless ``sc.sweep_campaigns`` is set)."""
    lo, hi = sc.sweep_campaigns
    if hi <= 0:
        return []
    rng = world.rng
    out: list[Account] = []
    for idx, kind in enumerate(campaign_kinds(rng, sc.sweep, rng.randint(lo, hi)), 1):
        out += build_sweep_campaign(world, sc, draw_dims(rng, sc.sweep, kind, sc.sweep_size_mult), idx)
    return out
