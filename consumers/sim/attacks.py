"""Attack families (THREATS.md): every account built here is labelled ``attack`` with the true
campaign id of its operator.

* ``hydra`` — many fresh accounts created in waves, each light and 24/7, sharing a template
  library, rotating through a proxy pool, cards reused by small groups, one or two client
  strings, switching to the new model within hours of its release;
* ``cot_harvest`` — tens of accounts, reasoning/math rubric templates, elicitation near 1,
  residential proxies;
* ``blended`` — reseller-like accounts (own org, high volume, many /24s) whose traffic mixes
  honest customers with extraction using the templates of a hydra campaign (and its id);
* ``heavy_scraper`` — a few accounts at thousands a day from one cloud /24 (the naive case);
* ``hydra_evasive`` — THREATS.md's evasive variant: hydra with paraphrased templates, a
  residential proxy network instead of a shared proxy pool, and a slow volume ramp;
* ``hydra_stealth`` — beyond THREATS.md, every evasion at once: paraphrases, a home /24 of its
  own per account, slow ramp, popular honest client strings, mild diurnal shaping, creation
  spread instead of waves, cards shared by at most two accounts.

:func:`build_attacks` returns the accounts (not yet started); draws come from ``world.rng``.
The campaign building blocks are in :mod:`consumers.sim.campaigns`; the adversary space
(scenario ``sweep``) is :mod:`consumers.sim.sweep`.
"""

from __future__ import annotations

from collections.abc import Callable

from consumers.contract.units import DAY_MS, HOUR_MS
from consumers.sim.accounts import Account, ua_tuple
from consumers.sim.campaigns import (
    Campaign,
    campaign_profile,
    fresh_account,
    new_campaign,
    pool_size,
    shared_cards,
    wave_times,
)
from consumers.sim.personas import base_account, make_profile
from consumers.sim.scenarios import Scenario
from consumers.sim.world import CLOUD_ASNS, PROXY_ASNS, Infra, World


def _pooled_accounts(world: World, sc: Scenario, camp: Campaign, size: int, pool: list[Infra],
                     finish: Callable[[Account], None]) -> list[Account]:
    """The accounts of a campaign behind a pool of /24s: created in waves, cards shared by small
    groups, each rotating through its own subset of the pool; ``finish`` sets the rest (its
    content profile, ramp), called for each account in turn."""
    beh = camp.beh
    rng = world.rng
    cards = shared_cards(world, size, beh.card_group)
    out = []
    for i, created in enumerate(sorted(wave_times(world, sc, beh, size))):
        a = fresh_account(world, sc, camp, created)
        a.payment_fp = cards[i]
        a.ips = rng.sample(pool, k=min(len(pool), rng.randint(*beh.account_pool)))
        a.p_ip_primary = 0.0
        finish(a)
        out.append(a)
    return out


def build_hydra(world: World, sc: Scenario, size: int, idx: int) -> tuple[Campaign, list[Account]]:
    """One hydra campaign of ``size`` accounts behind a shared proxy pool."""
    beh = sc.hydra_behaviour
    rng = world.rng
    camp = new_campaign(world, sc, "hydra", idx, beh)
    asns = rng.sample(sorted(PROXY_ASNS), k=rng.randint(*beh.pool_asns))
    pool = [world.proxy(rng.choice(asns)) for _ in range(pool_size(beh, size))]

    def finish(a: Account) -> None:
        a.profile = campaign_profile(world, camp, beh.switch_jitter_h)

    return camp, _pooled_accounts(world, sc, camp, size, pool, finish)


def build_cot_harvest(world: World, sc: Scenario, size: int, idx: int) -> list[Account]:
    """One chain-of-thought harvesting campaign behind a residential proxy pool."""
    beh = sc.cot_behaviour
    rng = world.rng
    camp = new_campaign(world, sc, "cot_harvest", idx, beh, out_mult=1.8)
    pool = [world.residential() for _ in range(pool_size(beh, size))]

    def finish(a: Account) -> None:
        a.profile = make_profile(world, beh, camp.switch_ms + rng.uniform(
            0.0, beh.switch_jitter_h) * HOUR_MS, templates=camp.templates, out_mult=1.8)

    return _pooled_accounts(world, sc, camp, size, pool, finish)


def build_heavy_scraper(world: World, sc: Scenario, size: int) -> list[Account]:
    """The naive campaign: a few accounts at thousands a day from one cloud /24."""
    beh = sc.heavy_behaviour
    camp = new_campaign(world, sc, "heavy_scraper", 1, beh)
    subnet = world.cloud(world.rng.choice(("US", "DE", "SG", "NL")))
    cards = shared_cards(world, size, beh.card_group)
    out = []
    for i, created in enumerate(sorted(wave_times(world, sc, beh, size))):
        a = fresh_account(world, sc, camp, created)
        a.payment_fp = cards[i]
        a.ips = [subnet]
        a.profile = campaign_profile(world, camp, beh.switch_jitter_h)
        out.append(a)
    return out


def build_hydra_evasive(world: World, sc: Scenario, size: int, idx: int) -> list[Account]:
    """An evasive hydra campaign (THREATS.md): paraphrased templates, rotating through a
    residential proxy network, each account ramping up slowly from its creation."""
    beh = sc.evasive_behaviour
    camp = new_campaign(world, sc, "hydra_evasive", idx, beh)
    pool = [world.residential() for _ in range(pool_size(beh, size))]

    def finish(a: Account) -> None:
        a.ramp0 = min(1.0, beh.ramp_start / (a.rate_h * 24.0))
        a.ramp_ms = beh.ramp_days * DAY_MS
        a.profile = campaign_profile(world, camp, beh.switch_jitter_h)

    return _pooled_accounts(world, sc, camp, size, pool, finish)


def build_hydra_stealth(world: World, sc: Scenario, size: int, idx: int) -> list[Account]:
    """A stealth hydra campaign: paraphrases, home /24s, slow ramp, mimicked clients, no waves."""
    beh = sc.stealth_behaviour
    rng = world.rng
    camp = new_campaign(world, sc, "hydra_stealth", idx, beh)
    t0 = sc.start_ms - int(beh.created_before_days * DAY_MS)
    t1 = sc.start_ms + int(beh.created_until_frac * (sc.end_ms - sc.start_ms))
    cards = shared_cards(world, size, beh.card_group)
    homes: list = []
    out = []
    for i, created in enumerate(sorted(t0 + rng.randrange(max(1, t1 - t0))
                                       for _ in range(size))):
        a = fresh_account(world, sc, camp, created)
        a.payment_fp = cards[i] if rng.random() < 0.85 else None
        a.uas = ua_tuple(world, beh.uas, 1)  # each account copies a popular honest client
        country = world.country()
        a.tz_min = world.tz_minutes(country)
        if homes and rng.random() < beh.p_shared_prefix:
            home = rng.choice(homes)
        else:
            home = world.residential(country)
            homes.append(home)
        a.ips = [home, world.residential(home[2], mobile=True)]
        a.p_ip_primary = beh.p_home
        plateau = a.rate_h * 24.0
        a.ramp0 = min(1.0, beh.ramp_start / plateau)
        a.ramp_ms = beh.ramp_days * DAY_MS
        a.profile = campaign_profile(world, camp, beh.switch_jitter_h)
        out.append(a)
    return out


def build_blended(world: World, sc: Scenario, n: int, hydras: list[Campaign]) -> list[Account]:
    """Reseller-like accounts mixing honest customer traffic with a hydra campaign's
    extraction (its templates, its model switch, its campaign id)."""
    beh = sc.blended_behaviour
    rng = world.rng
    out = []
    if not hydras and n:
        hydras = [new_campaign(world, sc, "blended", 1, sc.hydra_behaviour)]
    for i in range(n):
        camp = hydras[i % len(hydras)]
        a = base_account(world, sc, beh, "blended", camp.campaign_id)
        a.org_id = world.new_id("org", 48)
        country = rng.choice(("US", "US", "DE", "GB", "SG", "IN", "BR"))
        a.tz_min = world.tz_minutes(country)
        asns = rng.sample(sorted(CLOUD_ASNS), k=rng.randint(*beh.pool_asns))
        a.ips = [world.cloud(None, asn=rng.choice(asns)) for _ in range(rng.randint(*beh.ip_pool))]
        a.p_ip_primary = 0.0
        a.api_keys = tuple(world.new_id("key", 48) for _ in range(rng.randint(2, 5)))
        honest_switch = sc.release_ms + rng.uniform(*beh.honest_switch_delay_h) * HOUR_MS
        a.profile = make_profile(world, beh, honest_switch)
        a.alt_profile = campaign_profile(world, camp, camp.beh.switch_jitter_h)
        a.p_alt = rng.uniform(*beh.extraction_share)
        out.append(a)
    return out


def build_attacks(world: World, sc: Scenario) -> list[Account]:
    """Every account of the scenario's named attack families, family by family (deterministic
    order); the sweep's campaigns are :func:`consumers.sim.sweep.build_sweep`'s."""
    out: list[Account] = []
    hydras: list[Campaign] = []
    for i, size in enumerate(sc.hydra, 1):
        camp, accts = build_hydra(world, sc, size, i)
        hydras.append(camp)
        out += accts
    for i, size in enumerate(sc.cot_harvest, 1):
        out += build_cot_harvest(world, sc, size, i)
    out += build_blended(world, sc, sc.blended, hydras)
    if sc.heavy_scraper:
        out += build_heavy_scraper(world, sc, sc.heavy_scraper)
    for i, size in enumerate(sc.hydra_evasive, 1):
        out += build_hydra_evasive(world, sc, size, i)
    for i, size in enumerate(sc.hydra_stealth, 1):
        out += build_hydra_stealth(world, sc, size, i)
    return out
