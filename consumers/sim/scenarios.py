"""Scenario definitions: every parameter of the traffic model in one place.

A :class:`Scenario` fixes the population (how many accounts of each benign persona and attack
family), the time span, the model release and the delivery quirks; each persona/family has a
:class:`Behaviour` (or subclass) with its rates, timing, prompt library, elicitation, tools,
infrastructure and model-adoption knobs. Rates are requests per weekday day at the account's
own median; the diurnal profile redistributes them over the local hours.

Named scenarios: ``smoke`` (tests), ``day`` (the demo), ``week``, ``seed-scale`` (the public
report's numbers: 25,000 attack accounts, 44 days, ~26 requests/account/day, among 250,000 benign
accounts), ``sweep`` (the adversary space: campaigns drawn from :class:`SweepSpace`, plus the
honest look-alikes ``cohort`` and ``agent_fleet``). ``Scenario.scaled(x)`` multiplies account counts, ``with_days`` / ``with_start``
override the span.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from consumers.contract.units import DAY_MS

DEFAULT_START_MS = int(datetime(2026, 4, 22, tzinfo=UTC).timestamp() * 1000)

_CODE = frozenset({"coding", "agentic", "reasoning"})
_REASON = frozenset({"reasoning", "math"})


@dataclass(frozen=True)
class Behaviour:
    """Knobs shared by every persona and attack family."""

    # volume: lognormal requests/day per account (median, sigma), clipped to [min, max]
    rate_median: float
    rate_sigma: float = 0.8
    rate_min: float = 0.2
    rate_max: float = 1e6
    # timing: diurnal profile name (world.DIURNAL) of the local hour, weekend multiplier
    diurnal: str = "flat"
    weekend: float = 1.0
    # account age at the scenario start, days (log-uniform); fresh families ignore it
    age_days: tuple[float, float] = (30.0, 1500.0)
    # account tiers (weights) and share of accounts with a card on file (when not org-paid)
    tiers: Mapping[str, float] = field(default_factory=lambda: {"free": 1.0})
    p_card: float = 1.0
    # task categories (weights); each account's mix is jittered by lognormal(0, cat_jitter)
    categories: Mapping[str, float] = field(default_factory=lambda: {"chat": 1.0})
    cat_jitter: float = 0.4
    # prompt templates: share of requests using one, library size, skew (index = n*u**skew,
    # >1 favours a few templates) and SimHash bits flipped per use (inclusive range)
    p_template: float = 0.0
    n_templates: tuple[int, int] = (0, 0)
    template_skew: float = 1.0
    noise_bits: tuple[int, int] = (0, 3)
    # reasoning elicitation: in elic_cats, a prompt elicits with probability elic_p, scoring
    # uniform in elic_range; other prompts score low (u**3 * 0.2)
    elic_cats: frozenset[str] = _REASON
    elic_p: float = 0.1
    elic_range: tuple[float, float] = (0.3, 0.8)
    # tools declared (agentic prompts: 2.5x), mean conversation length
    tool_p: float = 0.05
    turns_mean: float = 2.0
    # client strings: mix name (world.UA_MIXES), how many per account, share of the primary one
    uas: str = "consumer"
    n_uas: int = 1
    p_ua_primary: float = 0.9
    # adoption of the new model (honest accounts): share within hours, share never, else
    # lognormal delay (median days, sigma); after switching, share of requests on the new model
    adopt_early: float = 0.05
    adopt_never: float = 0.4
    adopt_median_days: float = 5.0
    adopt_sigma: float = 0.8
    new_share: float = 1.0
    # share of requests to the small model (unaffected by the release)
    p_mini: float = 0.25
    # outcome: rate-limited and server/client errors
    p429: float = 0.003
    p_err: float = 0.003


@dataclass(frozen=True)
class CasualBehaviour(Behaviour):
    p_vpn: float = 0.04  # share of users behind a consumer VPN (exits shared, hosting ASNs)
    p_home: float = 0.85  # share of requests from the home /24 (else mobile/elsewhere)
    p_household: float = 0.03  # share of accounts of a household member: same card, same /24


@dataclass(frozen=True)
class DeveloperBehaviour(Behaviour):
    p_vpn: float = 0.03
    p_cloud: float = 0.35  # share of developers who also call from a cloud dev box
    p_home: float = 0.7
    # share of accounts that are a developer's second account (side project): same card,
    # same IPs and client, the same prompt templates
    p_second_account: float = 0.03


@dataclass(frozen=True)
class EnterpriseBehaviour(Behaviour):
    org_size: tuple[int, int] = (50, 500)  # accounts per org (uniform)
    org_templates: tuple[int, int] = (20, 120)  # shared template library per org
    org_prefixes: tuple[int, int] = (1, 4)  # corporate /24s per org
    p_swg: float = 0.35  # share of orgs egressing through a secure web gateway (shared /24s)
    swg_pool: int = 24  # /24s of the gateway pool shared by all such orgs
    p_remote_office: float = 0.1  # share of members in a second office (other time zone)
    recent_member_share: float = 0.05  # members created in the last 30 days
    org_adopt_jitter_days: float = 2.0  # members follow the org's model policy within this


@dataclass(frozen=True)
class EvalBehaviour(Behaviour):
    org_size: tuple[int, int] = (3, 8)
    benchmark: tuple[int, int] = (80, 300)  # benchmark prompts (templates) shared by the org
    burst_delay_h: tuple[int, int] = (1, 4)  # first run starts this long after the release
    burst_hours: tuple[int, int] = (1, 3)  # duration of a run
    burst_rate_h: tuple[float, float] = (80.0, 250.0)  # extra requests/hour/account during a run
    rerun_days: float = 7.0  # later runs, about this often (none in short scenarios)
    switch_delay_h: tuple[float, float] = (0.2, 1.0)  # they evaluate the new model first


@dataclass(frozen=True)
class CiBehaviour(Behaviour):
    n_keys: tuple[int, int] = (1, 3)


@dataclass(frozen=True)
class ResellerBehaviour(Behaviour):
    org_size: tuple[int, int] = (1, 3)
    ip_pool: tuple[int, int] = (60, 250)  # client /24s (cloud) the platform rotates through
    pool_asns: tuple[int, int] = (3, 5)
    switch_delay_h: tuple[float, float] = (2.0, 24.0)


@dataclass(frozen=True)
class ResearcherBehaviour(Behaviour):
    p_campus: float = 0.6  # share on a university network (campus /24s shared, no org)
    n_universities: int = 15
    campus_prefixes: tuple[int, int] = (1, 3)
    p_on_campus: float = 0.75  # share of a campus user's requests from campus (else home)


@dataclass(frozen=True)
class NewSignupBehaviour(Behaviour):
    p_new_model_if_after_release: float = 0.8


@dataclass(frozen=True)
class CampaignBehaviour(Behaviour):
    """Attack families: campaign-level coordination knobs."""

    # account creation: waves (days before the start, share) and (fraction of the span, share);
    # each wave spans wave_span_h hours; accounts start sending activation_h after creation
    waves_before: tuple[tuple[float, float], ...] = ((6.0, 0.35), (2.0, 0.3), (0.0, 0.2))
    waves_during: tuple[tuple[float, float], ...] = ((0.5, 0.15),)
    wave_span_h: float = 3.0
    activation_h: tuple[float, float] = (0.1, 3.0)
    # campaign switches to the new model this long after release; each account within jitter
    switch_delay_h: tuple[float, float] = (1.0, 4.0)
    switch_jitter_h: float = 0.75
    # campaign-wide hourly intensity jitter (synchronised timing), lognormal sigma
    hour_sigma: float = 0.3
    # infrastructure: proxy pool /24s (base + per account, capped), ASNs, per-account subset
    pool_base: int = 40
    pool_per_account: float = 0.25
    pool_max: int = 3000
    pool_asns: tuple[int, int] = (3, 5)
    account_pool: tuple[int, int] = (8, 30)
    # payment: accounts per card (uniform)
    card_group: tuple[int, int] = (3, 10)
    # share of accounts with a (random, distinct) org id
    p_org: float = 0.3


@dataclass(frozen=True)
class EvasiveBehaviour(CampaignBehaviour):
    created_before_days: float = 14.0  # creation spread evenly from this long before the start
    created_until_frac: float = 0.5  # ... to this fraction of the span
    ramp_start: float = 5.0  # requests/day when new, ramping to rate_median
    ramp_days: float = 14.0
    p_shared_prefix: float = 0.1  # share of accounts reusing another member's home /24
    p_home: float = 0.9


@dataclass(frozen=True)
class BlendedBehaviour(Behaviour):
    extraction_share: tuple[float, float] = (0.3, 0.6)  # share of requests that are extraction
    ip_pool: tuple[int, int] = (40, 150)
    pool_asns: tuple[int, int] = (2, 4)
    honest_switch_delay_h: tuple[float, float] = (6.0, 36.0)


@dataclass(frozen=True)
class CohortBehaviour(Behaviour):
    """A cohort without an organisation (course, workshop, hackathon, personal accounts of a
    company's people): created together, one network, one client, shared starter prompts."""

    size: tuple[int, int] = (10, 80)  # accounts per cohort (uniform)
    created_ago_days: tuple[float, float] = (0.0, 120.0)  # cohort sign-up day before the start
    p_fresh: float = 0.5  # share of cohorts signing up just before / during the scenario
    signup_h: float = 4.0  # the accounts of a cohort are created within this many hours
    venue_prefixes: tuple[int, int] = (1, 3)  # /24s of the venue (campus, office, event)
    p_venue: float = 0.65  # share of a member's requests from the venue (else home)
    starters: tuple[int, int] = (3, 8)  # shared starter/assignment prompts (templates)
    p_starter: float = 0.45  # share of a member's early requests that are starters
    starter_h: tuple[float, float] = (6.0, 30.0)  # "early": the first hours after sign-up
    session_h: tuple[int, int] = (2, 3)  # daily session length (the same local hours for all)
    session_rate_h: tuple[float, float] = (1.5, 5.0)  # extra requests/hour during a session


@dataclass(frozen=True)
class AgentFleetBehaviour(Behaviour):
    """Coding-agent fleets: many accounts of one org, or the org-less automation of one
    developer (one card, one cloud, shared own templates); 24/7, tools."""

    org_size: tuple[int, int] = (8, 30)
    orgless_size: tuple[int, int] = (2, 6)
    p_orgless: float = 0.5
    fleet_prefixes: tuple[int, int] = (1, 3)  # cloud /24s of the fleet


@dataclass(frozen=True)
class SweepSpace:
    """The ranges every sweep campaign's evasion dimensions are drawn from (see
    :mod:`consumers.sim.sweep`)."""

    size: tuple[int, int] = (10, 200)  # log-uniform accounts per campaign ...
    big_size: tuple[int, int] = (200, 800)  # ... except 1-2 big campaigns per seed
    p_second_big: float = 0.4
    p_heavy: float = 0.5  # chance of one heavy-scraper-style campaign per seed (1-5 accounts)
    heavy_size: tuple[int, int] = (1, 5)
    heavy_rate: tuple[float, float] = (1000.0, 5000.0)  # requests/day/account
    fresh_days: float = 7.0  # fresh: created up to this long before the start (or during)
    aged_days: tuple[float, float] = (14.0, 1095.0)  # log-uniform age of bought accounts
    max_paraphrase: int = 16  # campaign max d up to this; each use flips d-4..d bits
    rate: tuple[float, float] = (5.0, 60.0)  # log-uniform requests/day/account at plateau
    p_no_blend: float = 0.4  # share of campaigns with no honest traffic blended in
    blend: tuple[float, float] = (0.0, 0.7)  # honest share otherwise (uniform)
    concentration: tuple[float, float] = (0.5, 0.97)  # share of the focus categories
    ramp_days: tuple[float, float] = (3.0, 14.0)  # slow ramp from ~5/day to the plateau
    p_model_hop: float = 0.25  # a new batch behind new infrastructure at the release
    hop_library_share: tuple[float, float] = (0.3, 0.7)  # share of the old library reused
    slots_per_day: tuple[int, int] = (3, 8)  # shared schedule: active hours per day


# ---------------------------------------------------------------------------------------------
# Default behaviours
# ---------------------------------------------------------------------------------------------

CASUAL = CasualBehaviour(
    rate_median=4.0, rate_sigma=0.9, rate_min=0.3, rate_max=60.0,
    diurnal="casual", weekend=1.15, age_days=(30.0, 1500.0),
    tiers={"free": 0.8, "build": 0.2}, p_card=0.25,
    categories={"chat": 0.35, "writing": 0.25, "translation": 0.12, "other": 0.12,
                "analysis": 0.06, "reasoning": 0.05, "math": 0.05},
    p_template=0.03, n_templates=(1, 3), elic_p=0.3, elic_range=(0.3, 0.8),
    tool_p=0.02, turns_mean=3.0, uas="consumer",
    adopt_early=0.05, adopt_never=0.45, adopt_median_days=6.0, p_mini=0.35,
)

DEVELOPER = DeveloperBehaviour(
    rate_median=25.0, rate_sigma=0.9, rate_min=2.0, rate_max=400.0,
    diurnal="developer", weekend=0.5, age_days=(10.0, 1200.0),
    tiers={"build": 0.7, "free": 0.2, "scale": 0.1}, p_card=0.9,
    categories={"coding": 0.55, "analysis": 0.15, "agentic": 0.1, "reasoning": 0.07,
                "writing": 0.05, "chat": 0.05, "other": 0.03},
    p_template=0.25, n_templates=(3, 15), template_skew=1.5,
    elic_cats=frozenset({"reasoning", "coding"}), elic_p=0.1,
    tool_p=0.2, turns_mean=3.0, uas="developer", n_uas=2, p_ua_primary=0.85,
    adopt_early=0.15, adopt_never=0.25, adopt_median_days=3.0, p_mini=0.2,
)

ENTERPRISE = EnterpriseBehaviour(
    rate_median=15.0, rate_sigma=0.8, rate_min=1.0, rate_max=300.0,
    diurnal="business", weekend=0.08, age_days=(200.0, 2500.0),
    tiers={"enterprise": 1.0},
    categories={"coding": 0.4, "analysis": 0.3, "writing": 0.2, "chat": 0.05, "agentic": 0.05},
    p_template=0.45, template_skew=1.8, noise_bits=(0, 3),
    elic_cats=frozenset({"reasoning", "analysis"}), elic_p=0.1,
    tool_p=0.15, turns_mean=2.5, uas="developer",
    adopt_early=0.1, adopt_never=0.3, adopt_median_days=8.0, p_mini=0.3,
)

EVAL_COMPANY = EvalBehaviour(
    rate_median=6.0, rate_sigma=0.5, rate_min=1.0, rate_max=40.0,
    diurnal="developer", weekend=0.4, age_days=(100.0, 900.0),
    tiers={"scale": 1.0},
    categories={"coding": 0.4, "reasoning": 0.35, "math": 0.25},
    p_template=0.9, noise_bits=(0, 2),
    elic_cats=frozenset({"coding", "reasoning", "math"}), elic_p=0.9, elic_range=(0.6, 0.95),
    tool_p=0.2, turns_mean=1.3, uas="eval",
    new_share=0.85, p_mini=0.05, p429=0.01,
)

CI_AGENT = CiBehaviour(
    rate_median=1200.0, rate_sigma=0.5, rate_min=500.0, rate_max=3000.0,
    diurnal="flat", weekend=0.9, age_days=(365.0, 1500.0),
    tiers={"build": 0.5, "scale": 0.5},
    categories={"agentic": 0.55, "coding": 0.4, "analysis": 0.05}, cat_jitter=0.2,
    p_template=0.8, n_templates=(5, 30), template_skew=2.0,
    elic_cats=frozenset({"coding"}), elic_p=0.05,
    tool_p=0.9, turns_mean=8.0, uas="ci", p_ua_primary=1.0,
    adopt_early=0.0, adopt_never=0.5, adopt_median_days=14.0, p_mini=0.15, p429=0.01,
)

RESELLER = ResellerBehaviour(
    rate_median=6000.0, rate_sigma=0.4, rate_min=2500.0, rate_max=15000.0,
    diurnal="platform", weekend=0.8, age_days=(300.0, 1500.0),
    tiers={"scale": 1.0},
    categories={"chat": 0.2, "coding": 0.2, "writing": 0.15, "analysis": 0.12,
                "translation": 0.08, "reasoning": 0.08, "agentic": 0.07, "math": 0.05,
                "other": 0.05}, cat_jitter=0.2,
    p_template=0.08, n_templates=(20, 40), elic_p=0.25,
    tool_p=0.15, turns_mean=3.0, uas="platform", n_uas=3, p_ua_primary=0.6,
    new_share=0.35, p_mini=0.3, p429=0.006,
)

RESEARCHER = ResearcherBehaviour(
    rate_median=8.0, rate_sigma=0.7, rate_min=1.0, rate_max=80.0,
    diurnal="researcher", weekend=0.6, age_days=(20.0, 1500.0),
    tiers={"free": 0.5, "build": 0.5}, p_card=0.6,
    categories={"reasoning": 0.4, "math": 0.3, "analysis": 0.1, "coding": 0.1, "writing": 0.1},
    p_template=0.05, n_templates=(1, 4), elic_p=0.75, elic_range=(0.5, 0.9),
    tool_p=0.05, turns_mean=2.5, uas="research", n_uas=2,
    adopt_early=0.25, adopt_never=0.2, adopt_median_days=2.0, p_mini=0.1,
)

NEW_SIGNUP = NewSignupBehaviour(
    rate_median=4.0, rate_sigma=1.0, rate_min=0.5, rate_max=60.0,
    diurnal="casual", weekend=1.0,
    tiers={"free": 0.85, "build": 0.15}, p_card=0.15,
    categories={"chat": 0.25, "coding": 0.2, "writing": 0.15, "analysis": 0.1,
                "reasoning": 0.1, "translation": 0.08, "math": 0.05, "other": 0.07},
    cat_jitter=0.6, p_template=0.02, n_templates=(1, 2), elic_p=0.2,
    tool_p=0.05, turns_mean=2.5, uas="consumer",
    adopt_early=0.3, adopt_never=0.2, adopt_median_days=2.0, p_mini=0.3,
)

HYDRA = CampaignBehaviour(
    rate_median=26.0, rate_sigma=0.15, rate_min=20.0, rate_max=32.0,
    diurnal="flat", weekend=1.0,
    tiers={"build": 0.85, "free": 0.15},
    categories={"coding": 0.5, "agentic": 0.35, "reasoning": 0.15}, cat_jitter=0.15,
    p_template=0.9, n_templates=(30, 200), noise_bits=(0, 3),
    elic_cats=_CODE, elic_p=0.85, elic_range=(0.3, 0.7),
    tool_p=0.55, turns_mean=2.5, uas="attack", n_uas=2, p_ua_primary=0.9,
    new_share=1.0, p_mini=0.0, p429=0.008,
)

COT_HARVEST = CampaignBehaviour(
    rate_median=70.0, rate_sigma=0.4, rate_min=30.0, rate_max=150.0,
    diurnal="flat", weekend=1.0,
    tiers={"build": 1.0},
    categories={"reasoning": 0.6, "math": 0.4}, cat_jitter=0.1,
    p_template=0.85, n_templates=(20, 60), noise_bits=(0, 3),
    elic_cats=_REASON, elic_p=1.0, elic_range=(0.85, 1.0),
    tool_p=0.0, turns_mean=1.5, uas="attack", n_uas=1,
    new_share=1.0, p_mini=0.0, p429=0.008,
    waves_before=((4.0, 0.6), (1.0, 0.4)), waves_during=(),
    switch_delay_h=(2.0, 6.0), switch_jitter_h=1.0,
    pool_base=50, pool_per_account=1.0, pool_max=150, account_pool=(10, 40),
    card_group=(2, 6), p_org=0.0,
)

HEAVY_SCRAPER = CampaignBehaviour(
    rate_median=3200.0, rate_sigma=0.25, rate_min=2000.0, rate_max=5000.0,
    diurnal="flat", weekend=1.0,
    tiers={"build": 0.6, "scale": 0.4},
    categories={"coding": 0.5, "reasoning": 0.35, "math": 0.15}, cat_jitter=0.1,
    p_template=0.0, elic_cats=frozenset({"coding", "reasoning", "math"}), elic_p=0.9,
    elic_range=(0.6, 0.95), tool_p=0.1, turns_mean=1.2, uas="attack", n_uas=1,
    p_ua_primary=1.0, new_share=1.0, p_mini=0.0, p429=0.05,
    waves_before=((3.0, 0.5), (1.0, 0.5)), waves_during=(), wave_span_h=24.0,
    switch_delay_h=(1.0, 3.0), switch_jitter_h=0.2, hour_sigma=0.1,
    card_group=(100, 100), p_org=0.0,
)

#: THREATS.md's evasive variant of hydra: the three evasions it names — paraphrased templates
#: (4-10 bits from the template), residential IPs instead of a shared proxy pool (a residential
#: proxy network: a large pool of home /24s, few accounts per /24), slowly ramping volume — on an
#: otherwise hydra-like campaign (waves, cards in small groups, its own client strings, 24/7)
HYDRA_EVASIVE = EvasiveBehaviour(**{
    **{f.name: getattr(HYDRA, f.name) for f in dataclasses.fields(HYDRA)},
    "noise_bits": (4, 10),
    "pool_base": 300, "pool_per_account": 4.0, "pool_max": 20_000, "account_pool": (5, 20),
    "ramp_start": 5.0, "ramp_days": 14.0,
})

#: beyond THREATS.md: every evasion at once — the evasive variant's paraphrases, home /24s of
#: their own (not a proxy pool), slow ramp, *plus* popular honest client strings, creation spread
#: instead of waves, a mild daily rhythm and cards shared by at most two accounts (a stress case)
HYDRA_STEALTH = EvasiveBehaviour(
    rate_median=30.0, rate_sigma=0.2, rate_min=18.0, rate_max=45.0,
    diurnal="mild", weekend=0.9,
    tiers={"build": 0.7, "free": 0.3},
    categories={"coding": 0.45, "agentic": 0.35, "reasoning": 0.2}, cat_jitter=0.3,
    p_template=0.8, n_templates=(30, 200), noise_bits=(4, 10),
    elic_cats=_CODE, elic_p=0.7, elic_range=(0.3, 0.7),
    tool_p=0.5, turns_mean=2.5, uas="mimic", n_uas=1, p_ua_primary=1.0,
    new_share=0.95, p_mini=0.05, p429=0.005,
    switch_delay_h=(3.0, 10.0), switch_jitter_h=4.0, hour_sigma=0.0,
    card_group=(1, 2), p_org=0.0,
)

BLENDED = BlendedBehaviour(
    rate_median=4000.0, rate_sigma=0.4, rate_min=1500.0, rate_max=9000.0,
    diurnal="platform", weekend=0.85, age_days=(60.0, 400.0),
    tiers={"scale": 1.0},
    categories=RESELLER.categories, cat_jitter=0.2,
    p_template=0.08, n_templates=(20, 40), elic_p=0.25,
    tool_p=0.15, turns_mean=3.0, uas="platform", n_uas=3, p_ua_primary=0.6,
    new_share=0.35, p_mini=0.3, p429=0.006,
)

COHORT = CohortBehaviour(
    rate_median=6.0, rate_sigma=0.7, rate_min=1.0, rate_max=40.0,
    diurnal="researcher", weekend=0.5,
    tiers={"free": 0.7, "build": 0.3}, p_card=0.4,
    categories={"coding": 0.35, "reasoning": 0.2, "math": 0.1, "analysis": 0.15,
                "writing": 0.1, "chat": 0.1}, cat_jitter=0.5,
    p_template=0.05, n_templates=(1, 4), noise_bits=(0, 2),
    elic_cats=frozenset({"reasoning", "math", "coding"}), elic_p=0.35, elic_range=(0.3, 0.8),
    tool_p=0.08, turns_mean=3.0, uas="research", n_uas=1, p_ua_primary=1.0,
    adopt_early=0.2, adopt_never=0.3, adopt_median_days=2.0, p_mini=0.2,
)

AGENT_FLEET = AgentFleetBehaviour(
    rate_median=250.0, rate_sigma=0.6, rate_min=60.0, rate_max=1200.0,
    diurnal="flat", weekend=0.9, age_days=(90.0, 1200.0),
    tiers={"build": 0.5, "scale": 0.5},
    categories=CI_AGENT.categories, cat_jitter=0.2,
    p_template=0.75, n_templates=(10, 40), template_skew=2.0,
    elic_cats=frozenset({"coding"}), elic_p=0.05,
    tool_p=0.9, turns_mean=6.0, uas="ci", p_ua_primary=1.0,
    adopt_early=0.1, adopt_never=0.4, adopt_median_days=5.0, p_mini=0.15, p429=0.01,
)

SWEEP_SPACE = SweepSpace()

_BENIGN_SHARES = {
    "casual": 0.50, "developer": 0.25, "enterprise": 0.12, "researcher": 0.06,
    "new_signup": 0.06, "ci_agent": 0.01,
}


@dataclass(frozen=True)
class Scenario:
    """A complete, deterministic (given a seed) traffic scenario."""

    name: str
    days: float
    n_benign: int
    eval_orgs: int  # eval/benchmark companies (orgs of EvalBehaviour.org_size accounts)
    reseller_orgs: int  # reseller platforms (orgs of ResellerBehaviour.org_size accounts)
    hydra: tuple[int, ...]  # accounts per hydra campaign
    hydra_evasive: tuple[int, ...]  # accounts per evasive hydra campaign (THREATS.md's evasions)
    hydra_stealth: tuple[int, ...]  # accounts per stealth hydra campaign (every evasion at once)
    cot_harvest: tuple[int, ...]  # accounts per CoT-harvesting campaign
    blended: int  # blended reseller accounts (attached to the hydra campaigns in turn)
    heavy_scraper: int  # accounts of the one naive scraping campaign
    start_ms: int = DEFAULT_START_MS
    release_frac: float = 0.4  # the new model is released this far into the span
    duplicate_rate: float = 0.002  # share of requests the gateway delivers twice
    # delay of the second delivery. 0 keeps the stream sorted (the copy follows the original);
    # > 0 re-emits it up to this many ms of event time later, out of ts_ms order
    duplicate_delay_ms: int = 0
    benign_shares: Mapping[str, float] = field(default_factory=lambda: dict(_BENIGN_SHARES))
    casual: CasualBehaviour = CASUAL
    developer: DeveloperBehaviour = DEVELOPER
    enterprise: EnterpriseBehaviour = ENTERPRISE
    eval_company: EvalBehaviour = EVAL_COMPANY
    ci_agent: CiBehaviour = CI_AGENT
    reseller: ResellerBehaviour = RESELLER
    researcher: ResearcherBehaviour = RESEARCHER
    new_signup: NewSignupBehaviour = NEW_SIGNUP
    hydra_behaviour: CampaignBehaviour = HYDRA
    cot_behaviour: CampaignBehaviour = COT_HARVEST
    heavy_behaviour: CampaignBehaviour = HEAVY_SCRAPER
    evasive_behaviour: EvasiveBehaviour = HYDRA_EVASIVE
    stealth_behaviour: EvasiveBehaviour = HYDRA_STEALTH
    blended_behaviour: BlendedBehaviour = BLENDED
    # the adversary space (scenario "sweep"): campaigns per seed drawn from ``sweep`` (a range,
    # inclusive; (0, 0) = none), their sizes multiplied by ``sweep_size_mult``
    sweep_campaigns: tuple[int, int] = (0, 0)
    sweep_size_mult: float = 1.0
    sweep: SweepSpace = SWEEP_SPACE
    # honest look-alikes: cohorts without an organisation, coding-agent fleets (counts)
    cohorts: int = 0
    agent_fleets: int = 0
    cohort: CohortBehaviour = COHORT
    agent_fleet: AgentFleetBehaviour = AGENT_FLEET

    @property
    def end_ms(self) -> int:
        """Exclusive end of the scenario (event time)."""
        return self.start_ms + int(self.days * DAY_MS)

    @property
    def release_ms(self) -> int:
        """When the new model is released."""
        return self.start_ms + int(self.days * self.release_frac * DAY_MS)

    def scaled(self, x: float) -> Scenario:
        """Account counts multiplied by ``x`` (every family keeps at least one account/org)."""
        if x == 1:
            return self

        def s(n: int) -> int:
            return max(1, round(n * x)) if n > 0 else 0

        return dataclasses.replace(
            self,
            n_benign=s(self.n_benign),
            eval_orgs=s(self.eval_orgs),
            reseller_orgs=s(self.reseller_orgs),
            hydra=tuple(s(n) for n in self.hydra),
            hydra_evasive=tuple(s(n) for n in self.hydra_evasive),
            hydra_stealth=tuple(s(n) for n in self.hydra_stealth),
            cot_harvest=tuple(s(n) for n in self.cot_harvest),
            blended=s(self.blended),
            heavy_scraper=s(self.heavy_scraper),
            sweep_size_mult=self.sweep_size_mult * x,
            cohorts=s(self.cohorts),
            agent_fleets=s(self.agent_fleets),
        )

    def with_days(self, days: float) -> Scenario:
        """The same scenario over ``days`` days."""
        return dataclasses.replace(self, days=days)

    def with_start(self, start_ms: int) -> Scenario:
        """The same scenario starting at ``start_ms``."""
        return dataclasses.replace(self, start_ms=start_ms)

    def n_attack(self) -> int:
        """Attack accounts in the scenario."""
        return (sum(self.hydra) + sum(self.hydra_evasive) + sum(self.hydra_stealth) + sum(self.cot_harvest)
                + self.blended + self.heavy_scraper)  # sweep campaigns are drawn: not counted


SCENARIOS: dict[str, Scenario] = {
    # ~1 day, ~400 benign across all personas, every family with small counts
    "smoke": Scenario(
        name="smoke", days=1.0, n_benign=400, eval_orgs=1, reseller_orgs=1,
        hydra=(40, 20), hydra_evasive=(20,), hydra_stealth=(20,), cot_harvest=(10,), blended=4, heavy_scraper=2,
        enterprise=dataclasses.replace(ENTERPRISE, org_size=(12, 30)),
        reseller=dataclasses.replace(RESELLER, org_size=(1, 1), rate_median=5000.0),
    ),
    # the demo: 1 day, ~3,000 benign, ~400 hydra
    "day": Scenario(
        name="day", days=1.0, n_benign=3000, eval_orgs=2, reseller_orgs=2,
        hydra=(300, 100), hydra_evasive=(100,), hydra_stealth=(100,), cot_harvest=(30,), blended=6, heavy_scraper=3,
        enterprise=dataclasses.replace(ENTERPRISE, org_size=(50, 200)),
    ),
    "week": Scenario(
        name="week", days=7.0, n_benign=10_000, eval_orgs=3, reseller_orgs=3,
        hydra=(700, 300), hydra_evasive=(200,), hydra_stealth=(200,), cot_harvest=(40, 30), blended=10,
        heavy_scraper=4,
    ),
    # the public report: 25,000 attack accounts over 44 days (Apr 22 - Jun 5), mostly hydra
    "seed-scale": Scenario(
        name="seed-scale", days=44.0, n_benign=250_000, eval_orgs=8, reseller_orgs=20,
        hydra=(12_000, 6_000, 3_000), hydra_evasive=(2_000,), hydra_stealth=(1_265,), cot_harvest=(400, 320),
        blended=10, heavy_scraper=5,
    ),
    # the adversary space: 10-20 campaigns drawn from SWEEP_SPACE per seed, ~2.5 days, ~4,000
    # benign accounts of the standard personas plus cohorts without an org and agent fleets
    "sweep": Scenario(
        name="sweep", days=2.5, n_benign=4000, eval_orgs=2, reseller_orgs=1,
        hydra=(), hydra_evasive=(), hydra_stealth=(), cot_harvest=(), blended=0, heavy_scraper=0,
        enterprise=dataclasses.replace(ENTERPRISE, org_size=(40, 150)),
        sweep_campaigns=(10, 20), cohorts=5, agent_fleets=5,
    ),
}


def get_scenario(
    name: str | Scenario,
    *,
    scale: float | None = None,
    days: float | None = None,
    start_ms: int | None = None,
) -> Scenario:
    """A named (or given) scenario with optional overrides."""
    if isinstance(name, Scenario):
        sc = name
    else:
        try:
            sc = SCENARIOS[name]
        except KeyError:
            raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
    if scale is not None:
        sc = sc.scaled(scale)
    if days is not None:
        sc = sc.with_days(days)
    if start_ms is not None:
        sc = sc.with_start(start_ms)
    return sc
