"""Detector configuration: every threshold in one place, with its meaning.

Loaded from defaults, then the environment (``DISTILLWATCH_DETECTOR__<FIELD>``, e.g.
``DISTILLWATCH_DETECTOR__TICK_MS=600000``), then an optional JSON file (``--detector-config``).
The configuration is part of a run's identity: two runs give the same flags only with the same
configuration, which is why :meth:`DetectorConfig.fingerprint` is logged at start.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from consumers.contract.units import DAY_MS, HOUR_MS  # their one home; re-exported for the stages


class DetectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(42, description="seed of every random choice in the models")

    # --- account stage: windows, state bounds ------------------------------------------------
    tick_ms: int = Field(30 * 60_000, description="event-time micro-batch: active accounts are scored once per tick")
    min_events_to_score: int = Field(3, description="an account is scored once it has this many requests")
    rescore_ms: int = Field(6 * HOUR_MS, description="an active account is rescored after this much event time, or sooner once its requests grew by 25%")
    model_switch_ms: int = Field(12 * HOUR_MS, description="moving to a model this soon after its release (first sighting) is MODEL_SWITCH evidence")
    account_ttl_ms: int = Field(7 * DAY_MS, description="state of an account idle this long (event time) is evicted")
    max_accounts_per_partition: int = Field(400_000, description="memory cap: least recently active accounts are evicted beyond it")
    max_clock_skew_ms: int = Field(15 * 60_000, description="an event whose ts_ms lies further ahead than this of its record's broker timestamp goes to the DLQ (ts_out_of_range) and never moves the clock (live consumption, replayed topics)")
    max_stream_jump_ms: int = Field(DAY_MS, description="without a broker timestamp (file replay): an event further ahead than this of the partition's watermark goes to the DLQ (a partition may be quiet for hours, so this is wider than the skew)")
    allowed_lateness_ms: int = Field(2 * DAY_MS, description="an event whose ts_ms lies further than this behind the partition's watermark goes to the DLQ (ts_out_of_range); later events within it are processed without moving the clock back")
    freeze_after_ms: int = Field(DAY_MS, ge=0, description="an account idle this long (event time) is kept frozen: its changelog value without the caches of an active account (dedup window, prompt and paraphrase keys), zlib-compressed: about 300 bytes (about 500 with its table entry); it thaws on its next request. 0 = never. A day: longer than an active account's overnight gap, so daily users keep their prompt memory")
    dedup_window: int = Field(64, description="recent event_ids remembered per account to drop duplicate deliveries")
    max_fingerprints_per_account: int = Field(256, description="fingerprints announced per account, at most")

    prompt_sample: Literal[1, 2, 4, 8, 16] = Field(4, description="near-duplicate prompt keys (six per prompt, exact within 2 SimHash bits): about 1/prompt_sample of them are announced at a prompt's first use (the same ones for every account, so accounts sending one template meet on it), every key of a prompt the account repeats later. Measured on sweep seeds 1-3 (recall / LocalPipeline speed on day seed 7, one run): 16: 23.4% / 1x, 8: 24.4% / 0.93x, 4: 25.6% / 0.82x (campaigns of 10-19 accounts 37% -> 59%); no honest account enforced at any of them (a near-duplicate counts as its template's use, PromptMemory.use)")
    para_sample: Literal[1, 4, 16, 64] = Field(16, description="paraphrase-tolerant prompt keys: about 1/para_sample of them are announced (the same ones for every account)")
    para_daily_budget: int = Field(128, description="paraphrase keys an account announces per event-time day, at most (about 36 prompts: a campaign account's whole day, a heavy account's sample)")
    para_max_age_days: float = Field(1e9, description="only accounts younger than this (days) at their first request announce paraphrase keys; by default every account does: bought and aged accounts run campaigns too")

    # --- synchronised timing (consumers/core/timing.py) --------------------------------------------
    timing_slot_ms: int = Field(HOUR_MS, description="width of an activity time slot (SYNCHRONIZED_TIMING): a campaign's shared schedule is hours; light accounts fire too rarely to meet in 10-minute slots (measured, docs/detection.md)")
    timing_window_slots: int = Field(48, description="slots of each account's activity window (bits of its bitmap): two days of hours; measured on sweep seed 1, a one-day window gave 80-100% of honest accounts of every diurnal persona shared keys (their days look alike), two days with 5 rows cut that to medians of 2-9 keys against 11 for shared-schedule campaigns")
    timing_epoch_ms: int = Field(6 * HOUR_MS, description="band keys of the window ending at each multiple of this are announced once (not per tick: the window would be re-announced every tick for little news)")
    timing_bands: int = Field(8, description="MinHash bands per account and epoch (LSH): P(share a key) = 1 - (1 - J**rows)**bands for slot sets of Jaccard J")
    timing_rows: int = Field(5, description="MinHash minima per band: with 8 bands of 5, slot sets of Jaccard 0.7 (a shared schedule) share a key with p=0.77 per epoch, of 0.3 (one time zone, a similar rhythm) with p=0.019")
    timing_min_slots: int = Field(4, description="an account active in fewer slots of the window announces no timing key (a couple of requests coincide by chance)")
    timing_max_density: float = Field(0.5, description="an account active in more than this share of the window announces no timing key: round-the-clock clients (agent fleets, CI, 24/7 campaigns) all have the same slot set")
    timing_support_extraction: float = Field(0.1, description="extraction profile that, with SYNCHRONIZED_TIMING and shared content, enforces a campaign member (infrastructure needs extraction_support): rare-by-chance timing keys are the stronger tie, and blended campaigns have a weak profile. Measured on sweep seeds 1-3 (final states): 0.0 enforced 386 shared-schedule accounts, 0.1 329, 0.4 82 (81 without timing); no honest account at any of them; 0.1 is kept as a floor of some lean (a choice). With shared infrastructure as well (a card in pairs or of many, a proxy pool: a third tie) no profile is needed")
    timing_max_chance: float = Field(1e-4, description="a timing key is announced only when an account of the epoch's population would get it by chance with at most this probability (slot occupancies of the partition's eligible accounts, slots independent): a coincidence in busy hours is no news. Measured on sweep seed 1 (offline count): without it 41-81% of casual, developer, enterprise and cohort accounts shared 4+ keys, with 1e-4 none (cohorts included: their sessions are in busy hours) against 62% of shared-schedule campaign accounts; seed 2 at 3e-4: 7% of cohort members, at 1e-4 1%. Expected chance members of a key = this x accounts announcing per epoch (~3,000 in a sweep seed): scale it down for larger populations")
    timing_prior_accounts: float = Field(20.0, description="pseudo-accounts of average occupancy added per slot when occupancy is estimated (a partition with few accounts does not make a slot look empty; a choice)")
    timing_min_links: int = Field(6, description="timing keys an account must share (each spanning link_min_units['tim'] unrelated units) before they count as SYNCHRONIZED_TIMING. Measured on sweep seeds 1-3 (final states, the other timing defaults, no extraction floor): at 2, 14 cohort members were enforced, at 3, 3, from 4 none; 6 keeps a factor of two (shared-schedule accounts enforced: 417 at 4, 386 at 6)")

    # --- behaviour model (river HalfSpaceTrees) -------------------------------------------------
    hst_trees: int = 15
    hst_height: int = 8
    hst_window: int = 250
    learn_min_age_days: float = Field(14.0, description="only accounts at least this old train the model (poisoning guard)")
    learn_every_ms: int = Field(DAY_MS, description="an account trains the model at most once per this much event time")

    # --- behaviour evidence and the extraction profile (account stage) ---------------------------
    # a signal's *ramp* (start, width) maps it to [0, 1]: 0 at start, 1 at start + width
    behaviour_weights: dict[str, float] = Field(
        default_factory=lambda: {"fresh": 0.30, "capability": 0.15, "elicitation": 0.15, "round_the_clock": 0.15,
                                 "volume": 0.35, "anomaly": 0.15},
        description="weights of the behaviour score (reported in flags, combined with campaign evidence by noisy-OR): freshness, capability targeting, reasoning elicitation, round-the-clock activity, volume, the model's anomaly quantile, each through its ramp; volume weighs most because a naive scraper shows little else",
    )
    extraction_weights: dict[str, float] = Field(
        default_factory=lambda: {"capability": 0.45, "elicitation": 0.35, "round_the_clock": 0.35, "volume": 0.3},
        description="weights of the extraction profile, which gates the content rules: what a distiller's traffic looks like whatever the account's age or infrastructure (no freshness, no anomaly quantile). A choice: targeting counts most, as THREATS.md's campaigns all target coding/agentic/reasoning; any two strong signs make a clear profile",
    )
    signal_ramps: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            "capability": (0.6, 0.35), "elicitation": (0.4, 0.45), "round_the_clock": (0.75, 0.2),
            "volume": (300.0, 1200.0), "anomaly": (0.95, 0.05),
            "extraction_capability": (0.5, 0.35), "extraction_elicitation": (0.15, 0.35),
        },
        description="(start, width) of each signal's ramp: capability share, mean elicitation, active hours vs a 24/7 client, requests per day, anomaly quantile; the extraction profile's own capability and elicitation ramps start lower (any lean towards the capabilities worth distilling; a mean elicitation above the honest population's, about 0.05 to 0.1); a reason is reported from half-way up its ramp",
    )
    round_the_clock_min_requests: int = Field(24, description="requests before round-the-clock activity counts in the behaviour score (fewer cannot cover a day)")
    extraction_round_the_clock_min_requests: int = Field(16, description="... and in the extraction profile")

    # --- campaign stage -------------------------------------------------------------------------
    link_min_units: dict[str, int] = Field(
        default_factory=lambda: {"prompt": 2, "para": 4, "ip": 4, "pay": 2, "ua": 4, "wave": 8, "tim": 4},
        description="distinct organisations (or org-less accounts) a fingerprint must span to count as shared evidence, per kind",
    )
    hot_units: dict[str, int] = Field(
        default_factory=lambda: {"prompt": 100_000, "para": 100_000, "ip": 300, "pay": 50, "ua": 300, "wave": 400, "tim": 300},
        description="a fingerprint spanning more organisations than this is common infrastructure, not evidence",
    )
    max_members_per_fingerprint: int = Field(2_000, description="members remembered per fingerprint (memory bound)")
    max_fingerprints_per_partition: int = Field(2_000_000, description="memory cap of the campaign stage (about 0.27 KB per fingerprint, measured on day: most are single-account fingerprints, packed): past it the least recently observed fingerprint that only one account has shown is forgotten; one that several accounts share (the evidence) only when none of those is left. A week of the standard scenario on one partition reaches it")
    fingerprint_ttl_ms: int = Field(14 * DAY_MS, description="a fingerprint not seen this long is forgotten")
    wave_bucket_ms: int = Field(6 * HOUR_MS, description="accounts created in the same bucket form a creation wave")

    # --- flag policy ------------------------------------------------------------------------------
    campaign_min_kinds: int = Field(2, description="kinds of shared evidence (prompt, ip, pay, ua, wave) that make a campaign member")
    para_min_links: int = Field(3, description="paraphrase keys an account must share (each with link_min_units['para'] units) before they count as one kind of evidence; a single 24-bit key can collide by chance")
    para_min_share: float = Field(0.02, description="... and at least this share of the paraphrase keys it announced (chance collisions of a heavy honest user stay far below it; measured on week seed 1: campaign members 4.9-94%, honest developers with 3+ chance collisions 0.06-0.4%)")
    campaign_min_templates: int = Field(5, description="an account sharing this many prompt keys (exact or paraphrase) with unrelated accounts is a campaign member on that evidence alone")
    campaign_min_size: int = Field(5, description="accounts a campaign needs before its members are enforced: the account and at least campaign_min_size - 1 others (of other units) that share one of its prompt, paraphrase or card fingerprints (counted across all campaign-stage partitions, so the same at any partition count)")
    campaign_neighbours_cap: int = Field(16, description="accounts sharing a fingerprint with an account that a campaign-stage partition reports (its verdicts carry their CRC32s; the policy unions them): bounds the verdict size, and the campaign scale in a flag's score")
    content_min_requests: int = Field(2, description="requests of the account whose prompt (near-duplicate or paraphrase) unrelated accounts also send: from this many, what it sends is coordinated content")
    content_min_share: float = Field(0.03, description="... and at least this share of its requests (a heavy honest user's chance collisions stay below it)")
    content_broad_requests: int = Field(12, description="distinct shared prompts (a reused prompt counts once) that make a *broad* library: more than a cohort's few shared starter or assignment prompts (10 enforced a cohort member on sweep seeds 1-3; 12 did not, at the same recall)")
    content_very_broad_requests: int = Field(20, description="distinct shared prompts that enforce a campaign member whatever its profile: far more than any cohort's starter prompts (sweep cohorts share 3-8)")
    campaign_strong_members: int = Field(3, description="members with a broad shared library (content_broad_requests) that make a campaign strong: a label in the campaign stage's verdicts (each partition sees its part of a campaign, so it decides nothing since decisions became independent of the partition count; card_pair_units and extraction_extreme took its place)")
    extraction_support: float = Field(0.4, description="extraction profile (capability targeting, reasoning elicitation, round-the-clock, volume; see extraction_weights) that, with shared content and shared infrastructure, enforces")
    extraction_extreme: float = Field(0.8, description="extraction profile that, with a little shared content (content_min_requests, as a share of the account's requests), enforces a campaign member: nearly every request targets capabilities with elicitation, around the clock")
    extraction_extreme_min_requests: int = Field(16, description="... once the account has made this many requests: a profile from a handful of requests is noise (at no minimum, sweep seeds 1-3 enforced two cohort members on their first requests, before shared content counted templates). 16 is where the profile is whole (extraction_round_the_clock_min_requests); a campaign at a dozen requests a day never reached the earlier 30 within the sweep's 2.5 days. Measured on sweep seeds 1-3: 30 26.5% recall, 16 27.0%, 10 27.0%; no honest account enforced at any")
    extraction_broad: float = Field(0.3, description="extraction profile that, with a broad shared library, enforces")
    shared_card_units: int = Field(3, description="a card counts as campaign infrastructure when this many unrelated units (organisations, org-less accounts) pay with it: a household or a developer's second account shares one with one other")
    card_pair_units: int = Field(2, description="a campaign member whose card is shared with this many units (a pair: campaigns pay in pairs too) is enforced on a little shared content with extraction_broad, as with a broad library")
    proxy_pool_prefixes: int = Field(3, description="client /24s shared with unrelated accounts that show rotation through a proxy pool (one shared home or office /24 does not)")
    campaign_evidence: dict[str, float] = Field(
        default_factory=lambda: {"member": 0.55, "per_kind": 0.1, "per_decade": 0.1, "max": 0.95,
                                 "outside_per_kind": 0.1, "outside_max": 0.3},
        description="the campaign evidence in a flag's score (noisy-OR with the behaviour score): a campaign member starts at 'member', + 'per_kind' for each kind of shared evidence beyond two, + 'per_decade' per decade of campaign size, at most 'max'; an account outside a campaign gets 'outside_per_kind' per kind, at most 'outside_max'. It orders the review queue and picks suspend over throttle (suspend_score); what enforces is the rules of judge()",
    )
    suspend_score: float = 0.8
    throttle_score: float = 0.55
    review_score: float = Field(0.45, description="combined score from which an account goes to the review queue (no enforcement)")

    @model_validator(mode="after")
    def _known_signals(self) -> DetectorConfig:
        """Weights and ramps name exactly the signals the account stage computes."""
        expected = {
            "behaviour_weights": {"fresh", "capability", "elicitation", "round_the_clock", "volume", "anomaly"},
            "extraction_weights": {"capability", "elicitation", "round_the_clock", "volume"},
            "signal_ramps": {"capability", "elicitation", "round_the_clock", "volume", "anomaly",
                             "extraction_capability", "extraction_elicitation"},
        }
        expected["campaign_evidence"] = {"member", "per_kind", "per_decade", "max", "outside_per_kind", "outside_max"}
        for name, keys in expected.items():
            got = set(getattr(self, name))
            if got != keys:
                raise ValueError(f"{name}: expected the keys {sorted(keys)}, got {sorted(got)}")
        if any(width <= 0 for _, width in self.signal_ramps.values()):
            raise ValueError("signal_ramps: every width must be > 0")
        return self

    def fingerprint(self) -> str:
        """Short hash of the configuration, logged and stamped into run metadata."""
        return hashlib.blake2b(orjson.dumps(self.model_dump(), option=orjson.OPT_SORT_KEYS), digest_size=6).hexdigest()
