"""Benign personas: the honest population, including the hard negatives of THREATS.md.

``casual``, ``developer``, ``enterprise`` (orgs sharing templates, one card, corporate /24s),
``eval_company`` (identical benchmark prompts on a few accounts, bursts after the release),
``ci_agent`` (24/7, thousands a day, its own templates), ``reseller`` (very high volume, many
client /24s, diverse prompts), ``researcher`` (reasoning with high elicitation, campus /24s
shared with strangers), ``new_signup`` (fresh accounts created during the scenario), and the
look-alikes of the ``sweep`` scenario: ``cohort`` (a cohort without an organisation) and
``agent_fleet`` (coding-agent fleets of one org or one developer).

:func:`build_benign` returns the accounts (not yet started); all draws come from ``world.rng``.
"""

from __future__ import annotations

import dataclasses
import math

from consumers.contract.units import DAY_MS, HOUR_MS
from consumers.sim.accounts import (
    INF,
    Account,
    Profile,
    adoption_switch,
    log_uniform,
    lognormal_clipped,
    ua_tuple,
)
from consumers.sim.scenarios import Behaviour, Scenario
from consumers.sim.world import (
    BROWSER_UAS,
    CLOUD_ASNS,
    DIURNAL,
    EDU_ASNS,
    World,
)

_CLOUD_KEYS = frozenset(CLOUD_ASNS)


def base_account(world: World, sc: Scenario, beh: Behaviour, group: str,
                 campaign: str | None = None, created_ms: int | None = None) -> Account:
    """An account with identity, volume, timing and client strings drawn from ``beh``."""
    rng = world.rng
    a = Account(world.new_id("acct"), group, campaign)
    if created_ms is None:
        age = log_uniform(rng, beh.age_days[0], beh.age_days[1])
        created_ms = sc.start_ms - int(age * DAY_MS) - rng.randrange(DAY_MS)
    a.created_ms = created_ms
    a.active_from = float(max(sc.start_ms, created_ms))
    a.active_to = float(sc.end_ms)
    tiers = list(beh.tiers)
    a.tier = rng.choices(tiers, weights=[beh.tiers[t] for t in tiers])[0]
    if a.tier != "free" or rng.random() < beh.p_card:
        a.payment_fp = world.new_id("pf")
    a.api_keys = (world.new_id("key", 48),)
    a.rate_h = lognormal_clipped(rng, beh.rate_median, beh.rate_sigma, beh.rate_min,
                                 beh.rate_max) / 24.0
    a.diurnal = DIURNAL[beh.diurnal]
    a.weekend = beh.weekend
    a.uas = ua_tuple(world, beh.uas, beh.n_uas)
    a.p_ua_primary = beh.p_ua_primary
    a.p429 = beh.p429 * rng.uniform(0.5, 1.5)
    a.p_err = a.p429 + beh.p_err * rng.uniform(0.5, 1.5)
    a.lat_mult = rng.lognormvariate(0.0, 0.1)
    return a


def make_profile(world: World, beh: Behaviour, switch_ms: float, *,
                 templates: list | None = None, new_share: float | None = None,
                 categories: dict | None = None, out_mult: float = 1.0) -> Profile:
    """A content profile from ``beh``; own templates are drawn unless ``templates`` is given."""
    rng = world.rng
    if templates is None:
        lo, hi = beh.n_templates
        n = rng.randint(lo, hi) if hi > 0 else 0
        templates = world.templates(n, categories or beh.categories, beh.elic_cats, beh.elic_p,
                                    beh.elic_range, beh.tool_p) if n else []
    return Profile(
        templates=templates,
        p_template=beh.p_template,
        template_skew=beh.template_skew,
        noise_bits=beh.noise_bits,
        cat_table=world.cat_table(categories or beh.categories, beh.cat_jitter),
        elic_cats=beh.elic_cats,
        elic_p=beh.elic_p,
        elic_range=beh.elic_range,
        tool_p=beh.tool_p,
        turns_mean=beh.turns_mean,
        tok_mult=rng.lognormvariate(0.0, 0.25),
        out_mult=out_mult,
        switch_ms=switch_ms,
        new_share=beh.new_share if new_share is None else new_share,
        p_mini=beh.p_mini,
    )


def _honest_switch(world: World, sc: Scenario, beh: Behaviour) -> float:
    return adoption_switch(world.rng, sc.release_ms, beh.adopt_early, beh.adopt_never,
                           beh.adopt_median_days, beh.adopt_sigma)


def _home_infra(world: World, a: Account, country: str, p_home: float, p_vpn: float) -> None:
    rng = world.rng
    if rng.random() < p_vpn:
        a.ips = [world.vpn() for _ in range(rng.randint(2, 4))]
        a.p_ip_primary = 0.3
        return
    home = world.residential(country)
    a.ips = [home, world.residential(country, mobile=True)]
    a.p_ip_primary = p_home


def build_casual(world: World, sc: Scenario, n: int) -> list[Account]:
    """Light, diurnal, chat/writing/translation, unique prompts, residential /24 of home."""
    beh = sc.casual
    rng = world.rng
    out: list[Account] = []
    for _ in range(n):
        a = base_account(world, sc, beh, "casual")
        if out and rng.random() < beh.p_household:
            other = out[-1]  # a household member: same card and home connection
            a.payment_fp = other.payment_fp or world.new_id("pf")
            other.payment_fp = a.payment_fp
            a.tz_min = other.tz_min
            a.ips = other.ips
            a.p_ip_primary = other.p_ip_primary
        else:
            country = world.country()
            a.tz_min = world.tz_minutes(country)
            _home_infra(world, a, country, beh.p_home, beh.p_vpn)
        if a.uas[0] in BROWSER_UAS:
            a.api_keys = (None,)  # the web console authenticates by session, not API key
        a.profile = make_profile(world, beh, _honest_switch(world, sc, beh))
        out.append(a)
    return out


def build_developer(world: World, sc: Scenario, n: int) -> list[Account]:
    """Moderate volume, coding/analysis, own template reuse, diurnal + evenings."""
    beh = sc.developer
    rng = world.rng
    out: list[Account] = []
    for _ in range(n):
        a = base_account(world, sc, beh, "developer")
        if out and rng.random() < beh.p_second_account:
            first = out[-1]  # the same person's second account
            a.payment_fp = first.payment_fp = first.payment_fp or world.new_id("pf")
            a.tz_min = first.tz_min
            a.ips = first.ips
            a.p_ip_primary = first.p_ip_primary
            a.uas = first.uas
            a.profile = make_profile(world, beh, first.profile.switch_ms,
                                     templates=first.profile.templates)
            out.append(a)
            continue
        country = world.country()
        a.tz_min = world.tz_minutes(country)
        _home_infra(world, a, country, beh.p_home, beh.p_vpn)
        if rng.random() < beh.p_cloud:
            box = world.cloud(country)
            if rng.random() < 0.4:  # works mostly from the dev box
                a.ips = [box] + a.ips
            else:
                a.ips.append(box)
        a.profile = make_profile(world, beh, _honest_switch(world, sc, beh))
        out.append(a)
    return out


def build_enterprise(world: World, sc: Scenario, n: int) -> list[Account]:
    """Orgs of many accounts: one org_id, one card, shared templates, corporate /24s."""
    beh = sc.enterprise
    rng = world.rng
    swg_pool = None
    out: list[Account] = []
    left = n
    while left > 0:
        size = min(left, rng.randint(*beh.org_size))
        if left - size < beh.org_size[0]:  # no org below the minimum size (unless n is)
            size = left
        left -= size
        org_id = world.new_id("org", 48)
        card = world.new_id("pf")
        country = world.country()
        tz = world.tz_minutes(country)
        tz2 = world.tz_minutes(world.country())
        org_age = log_uniform(rng, beh.age_days[0], beh.age_days[1])
        org_created = sc.start_ms - int(org_age * DAY_MS)
        if rng.random() < beh.p_swg:
            if swg_pool is None:
                swg_pool = [world.swg() for _ in range(beh.swg_pool)]
            prefixes = rng.sample(swg_pool, k=min(len(swg_pool), rng.randint(2, 6)))
        else:
            prefixes = [world.business(country) for _ in range(rng.randint(*beh.org_prefixes))]
        lib = world.templates(rng.randint(*beh.org_templates), beh.categories, beh.elic_cats,
                              beh.elic_p, beh.elic_range, beh.tool_p)
        tool_ua = f"{world.new_id('app', 24)[4:]}-assistant/{rng.randint(1, 4)}.{rng.randint(0, 9)}"
        org_switch = _honest_switch(world, sc, beh)
        for _ in range(size):
            if rng.random() < beh.recent_member_share:
                created = sc.start_ms - rng.randrange(30 * DAY_MS)
            else:
                span = max(DAY_MS, sc.start_ms - 30 * DAY_MS - org_created)
                created = org_created + rng.randrange(span)
            a = base_account(world, sc, beh, "enterprise", created_ms=created)
            a.org_id = org_id
            a.payment_fp = card
            a.tz_min = tz2 if rng.random() < beh.p_remote_office else tz
            a.ips = prefixes
            a.p_ip_primary = 0.0
            a.uas = (tool_ua,) + a.uas
            a.p_ua_primary = 0.6
            switch = org_switch
            if switch < INF:
                switch += rng.random() * beh.org_adopt_jitter_days * DAY_MS
            a.profile = make_profile(world, beh, switch, templates=lib)
            out.append(a)
    return out


def build_eval_company(world: World, sc: Scenario, n_orgs: int) -> list[Account]:
    """Small orgs running identical benchmark prompts, bursting right after the release."""
    beh = sc.eval_company
    rng = world.rng
    out = []
    start_h = sc.start_ms // HOUR_MS
    end_h = -(-sc.end_ms // HOUR_MS)
    release_h = sc.release_ms // HOUR_MS
    for _ in range(n_orgs):
        org_id = world.new_id("org", 48)
        card = world.new_id("pf")
        country = rng.choice(("US", "US", "GB", "DE", "FR", "CA", "IL"))
        tz = world.tz_minutes(country)
        infra = [world.cloud(country) for _ in range(rng.randint(1, 2))]
        bench = world.templates(rng.randint(*beh.benchmark), beh.categories, beh.elic_cats,
                                beh.elic_p, beh.elic_range, beh.tool_p, out_mult=1.4)
        # runs: one soon after the release, then about every rerun_days
        runs = []
        h0 = release_h + rng.randint(*beh.burst_delay_h)
        runs.append((h0, h0 + rng.randint(*beh.burst_hours)))
        period = int(beh.rerun_days * 24)
        h = start_h + rng.randrange(period)
        while h < end_h:
            if abs(h - h0) > 24:
                runs.append((h, h + rng.randint(*beh.burst_hours)))
            h += int(period * rng.uniform(0.7, 1.3))
        switch = sc.release_ms + rng.uniform(*beh.switch_delay_h) * HOUR_MS
        uas = ua_tuple(world, beh.uas, 1)
        org_age = log_uniform(rng, beh.age_days[0], beh.age_days[1])
        for _ in range(rng.randint(*beh.org_size)):
            created = sc.start_ms - int(org_age * DAY_MS) + rng.randrange(30 * DAY_MS)
            a = base_account(world, sc, beh, "eval_company", created_ms=created)
            a.org_id = org_id
            a.payment_fp = card
            a.tz_min = tz
            a.ips = infra
            a.p_ip_primary = 0.8
            a.uas = uas
            rate = rng.uniform(*beh.burst_rate_h)
            a.bursts = tuple((b0, b1, rate) for b0, b1 in runs)
            a.profile = make_profile(world, beh, switch, templates=bench)
            out.append(a)
    return out


def build_ci_agent(world: World, sc: Scenario, n: int) -> list[Account]:
    """24/7 coding agents / CI: thousands a day, tools, cloud, heavy reuse of own templates."""
    beh = sc.ci_agent
    rng = world.rng
    out = []
    for _ in range(n):
        a = base_account(world, sc, beh, "ci_agent")
        country = world.country()
        a.tz_min = world.tz_minutes(country)
        a.ips = [world.cloud(country) for _ in range(rng.randint(1, 2))]
        a.p_ip_primary = 0.85
        a.api_keys = tuple(world.new_id("key", 48) for _ in range(rng.randint(*beh.n_keys)))
        a.profile = make_profile(world, beh, _honest_switch(world, sc, beh))
        out.append(a)
    return out


def build_reseller(world: World, sc: Scenario, n_orgs: int) -> list[Account]:
    """Platforms: very high volume through many client /24s, diverse prompts and categories."""
    beh = sc.reseller
    rng = world.rng
    out = []
    for _ in range(n_orgs):
        org_id = world.new_id("org", 48)
        card = world.new_id("pf")
        country = rng.choice(("US", "US", "DE", "GB", "SG", "IN", "BR"))
        tz = world.tz_minutes(country)
        asns = rng.sample(sorted(_CLOUD_KEYS), k=rng.randint(*beh.pool_asns))
        pool = [world.cloud(None, asn=rng.choice(asns)) for _ in range(rng.randint(*beh.ip_pool))]
        switch = sc.release_ms + rng.uniform(*beh.switch_delay_h) * HOUR_MS
        org_age = log_uniform(rng, beh.age_days[0], beh.age_days[1])
        for _ in range(rng.randint(*beh.org_size)):
            created = sc.start_ms - int(org_age * DAY_MS) + rng.randrange(60 * DAY_MS)
            a = base_account(world, sc, beh, "reseller", created_ms=created)
            a.org_id = org_id
            a.payment_fp = card
            a.tz_min = tz
            a.ips = pool
            a.p_ip_primary = 0.0
            a.api_keys = tuple(world.new_id("key", 48) for _ in range(rng.randint(2, 6)))
            a.profile = make_profile(world, beh, switch)
            out.append(a)
    return out


def build_researcher(world: World, sc: Scenario, n: int) -> list[Account]:
    """Low volume, reasoning/math, high elicitation, diverse prompts; campus networks shared."""
    beh = sc.researcher
    rng = world.rng
    unis = rng.sample(sorted(EDU_ASNS), k=min(beh.n_universities, len(EDU_ASNS)))
    campus = {u: [world.campus(u) for _ in range(rng.randint(*beh.campus_prefixes))] for u in unis}
    out = []
    for _ in range(n):
        a = base_account(world, sc, beh, "researcher")
        if rng.random() < beh.p_campus:
            uni = rng.choice(unis)
            country = EDU_ASNS[uni]
            site = rng.choice(campus[uni])
            home = world.residential(country)
            a.ips = [site, home]
            a.p_ip_primary = beh.p_on_campus
        else:
            country = world.country()
            a.ips = [world.residential(country), world.residential(country, mobile=True)]
            a.p_ip_primary = 0.85
        a.tz_min = world.tz_minutes(country)
        a.profile = make_profile(world, beh, _honest_switch(world, sc, beh))
        out.append(a)
    return out


def build_new_signup(world: World, sc: Scenario, n: int) -> list[Account]:
    """Accounts created during the scenario (evenly spread, no waves), light and diverse."""
    beh = sc.new_signup
    rng = world.rng
    span = max(1, sc.end_ms - sc.start_ms - HOUR_MS)
    out = []
    for _ in range(n):
        created = sc.start_ms + rng.randrange(span)
        a = base_account(world, sc, beh, "new_signup", created_ms=created)
        a.active_from = created + rng.uniform(1, 180) * 60_000.0
        country = world.country()
        a.tz_min = world.tz_minutes(country)
        _home_infra(world, a, country, 0.85, 0.03)
        if a.uas[0] in BROWSER_UAS:
            a.api_keys = (None,)
        if created >= sc.release_ms and rng.random() < beh.p_new_model_if_after_release:
            switch = float(created)
        else:
            switch = _honest_switch(world, sc, beh)
        a.profile = make_profile(world, beh, switch)
        out.append(a)
    return out


def _session_bursts(sc: Scenario, local_hour: int, tz_min: int, hours: int, rate_h: float
                    ) -> tuple[tuple[int, int, float], ...]:
    """Daily sessions at the same local hours (absolute UTC hours since the epoch)."""
    first_day = sc.start_ms // DAY_MS
    out = []
    for day in range(first_day - 1, -(-sc.end_ms // DAY_MS) + 1):
        h0 = day * 24 + local_hour - tz_min // 60
        out.append((h0, h0 + hours, rate_h))
    return tuple(out)


def build_cohort(world: World, sc: Scenario, n_cohorts: int) -> list[Account]:
    """Cohorts without an organisation (a course, workshop, hackathon, a company's people on
    personal accounts): accounts created together, one venue network (a few /24s), one client
    string, a handful of shared starter prompts used early, then their own diverse prompts;
    a human daily rhythm with sessions at the same hours; own card or none, no org."""
    beh = sc.cohort
    rng = world.rng
    starter_beh = dataclasses.replace(beh, p_template=1.0)
    out: list[Account] = []
    for _ in range(n_cohorts):
        if rng.random() < beh.p_fresh:
            signup = sc.start_ms + int(rng.uniform(-2.0, 0.5) * DAY_MS)
        else:
            signup = sc.start_ms - int(rng.uniform(3.0, beh.created_ago_days[1]) * DAY_MS)
        if rng.random() < 0.5:  # a course on a campus
            uni = rng.choice(sorted(EDU_ASNS))
            country = EDU_ASNS[uni]
            venue = [world.campus(uni) for _ in range(rng.randint(*beh.venue_prefixes))]
        else:  # a workshop, hackathon or office
            country = world.country()
            venue = [world.business(country) for _ in range(rng.randint(*beh.venue_prefixes))]
        tz = world.tz_minutes(country)
        uas = ua_tuple(world, beh.uas, 1)
        starters = world.templates(rng.randint(*beh.starters), beh.categories, beh.elic_cats,
                                   beh.elic_p, beh.elic_range, beh.tool_p)
        switch = _honest_switch(world, sc, beh)
        starter_profile = make_profile(world, starter_beh, switch, templates=starters)
        bursts = _session_bursts(sc, rng.randint(9, 17), tz, rng.randint(*beh.session_h),
                                 rng.uniform(*beh.session_rate_h))
        for _ in range(rng.randint(*beh.size)):
            created = signup + rng.randrange(int(beh.signup_h * HOUR_MS))
            a = base_account(world, sc, beh, "cohort", created_ms=created)
            a.active_from = max(float(sc.start_ms), created + rng.uniform(5, 90) * 60_000.0)
            a.tz_min = tz
            a.ips = [rng.choice(venue), world.residential(country)]
            a.p_ip_primary = beh.p_venue
            a.uas = uas
            a.bursts = bursts
            a.profile = make_profile(world, beh, switch)
            a.alt_profile = starter_profile
            a.p_alt = beh.p_starter
            a.alt_until = created + rng.uniform(*beh.starter_h) * HOUR_MS
            out.append(a)
    return out


def build_agent_fleet(world: World, sc: Scenario, n_fleets: int) -> list[Account]:
    """Coding-agent fleets: many accounts of one org, or the org-less automation of one
    developer; one card, the same cloud /24s and client, a shared own template library,
    24/7 with tools. Old accounts."""
    beh = sc.agent_fleet
    rng = world.rng
    out: list[Account] = []
    for _ in range(n_fleets):
        orgless = rng.random() < beh.p_orgless
        org_id = None if orgless else world.new_id("org", 48)
        card = world.new_id("pf")
        country = world.country()
        tz = world.tz_minutes(country)
        infra = [world.cloud(country) for _ in range(rng.randint(*beh.fleet_prefixes))]
        lib = world.templates(rng.randint(*beh.n_templates), beh.categories, beh.elic_cats,
                              beh.elic_p, beh.elic_range, beh.tool_p)
        uas = ua_tuple(world, beh.uas, 1)
        switch = _honest_switch(world, sc, beh)
        age = log_uniform(rng, *beh.age_days)
        for _ in range(rng.randint(*(beh.orgless_size if orgless else beh.org_size))):
            created = sc.start_ms - int(age * DAY_MS) + rng.randrange(int(age * DAY_MS * 0.8))
            a = base_account(world, sc, beh, "agent_fleet", created_ms=created)
            a.org_id = org_id
            a.payment_fp = card
            a.tz_min = tz
            a.ips = infra
            a.p_ip_primary = 0.0 if len(infra) > 1 else 1.0
            a.uas = uas
            a.api_keys = tuple(world.new_id("key", 48) for _ in range(rng.randint(1, 3)))
            a.profile = make_profile(world, beh, switch, templates=lib)
            out.append(a)
    return out


def benign_counts(sc: Scenario) -> dict[str, int]:
    """Accounts per share-based persona (largest-remainder rounding of ``n_benign``)."""
    shares = sc.benign_shares
    total = sum(shares.values())
    quotas = {k: sc.n_benign * v / total for k, v in shares.items()}
    counts = {k: math.floor(q) for k, q in quotas.items()}
    for k in sorted(quotas, key=lambda k: counts[k] - quotas[k])[: sc.n_benign - sum(
            counts.values())]:
        counts[k] += 1
    return counts


def build_benign(world: World, sc: Scenario) -> list[Account]:
    """Every benign account of the scenario, persona by persona (deterministic order)."""
    c = benign_counts(sc)
    out: list[Account] = []
    out += build_casual(world, sc, c.get("casual", 0))
    out += build_developer(world, sc, c.get("developer", 0))
    out += build_enterprise(world, sc, c.get("enterprise", 0))
    out += build_researcher(world, sc, c.get("researcher", 0))
    out += build_new_signup(world, sc, c.get("new_signup", 0))
    out += build_ci_agent(world, sc, c.get("ci_agent", 0))
    out += build_eval_company(world, sc, sc.eval_orgs)
    out += build_reseller(world, sc, sc.reseller_orgs)
    out += build_cohort(world, sc, sc.cohorts)
    out += build_agent_fleet(world, sc, sc.agent_fleets)
    return out
