"""Flag v1: one per decision about an account, and the stable list of reason codes.

Reason codes are part of the contract with enforcement teams: a code is never renamed or reused
for another meaning; new codes may be added. ``REASON_CODES`` maps each code to its meaning and is
rendered into the README's reason-code table.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Recommended enforcement, in escalation order.
ACTIONS: tuple[str, ...] = ("review", "throttle", "suspend")
ACTION_RANK = {a: i for i, a in enumerate(ACTIONS)}
#: The actions that restrict an account (``review`` only puts it in front of a person).
ENFORCING_ACTIONS = frozenset({"throttle", "suspend"})

REASON_CODES: dict[str, str] = {
    # per-account behaviour
    "BEHAVIOUR_ANOMALY": "the account's behaviour is an outlier against the learned population (value: anomaly quantile)",
    "CAPABILITY_CONCENTRATION": "traffic concentrated on coding/agentic/reasoning/math (value: share of requests)",
    "REASONING_ELICITATION": "prompts ask the model to expose its reasoning step by step (value: mean elicitation score)",
    "ROUND_THE_CLOCK": "activity spread over all hours of the day with no daily rest (value: active hours / 24)",
    "HIGH_VOLUME": "request volume far above the population for an account of this age (value: requests per day)",
    "FRESH_ACCOUNT": "heavy use began soon after the account was created (value: account age in days)",
    "MODEL_SWITCH": "moved to a newly released model within hours of its first appearance (value: hours)",
    "PROMPT_DIVERSITY": "many distinct prompts with no reuse, as when harvesting a question bank (value: distinct share)",
    # evidence across accounts
    "SHARED_PROMPTS": "near-duplicate prompts (SimHash) shared with accounts of other organisations (value: accounts)",
    "PARAPHRASED_PROMPTS": "paraphrases of prompts (SimHash within about 10 bits) shared with accounts of other organisations (value: prompt fingerprints in common)",
    "SHARED_NETWORK": "client IP prefixes shared with accounts of other organisations (value: accounts)",
    "SHARED_PAYMENT": "payment instrument shared with accounts of other organisations (value: accounts)",
    "SHARED_CLIENT": "rare client string shared with accounts of other organisations (value: accounts)",
    "CREATION_WAVE": "created in a wave of accounts that share other evidence (value: accounts in the wave)",
    "SYNCHRONIZED_TIMING": "active in the same time slots as accounts of other organisations, far beyond chance (value: time-slot fingerprints in common)",
    "CAMPAIGN_MEMBER": "member of a coordinated campaign of accounts with no organisation in common (value: campaign size)",
}


class Reason(BaseModel):
    """One reason for a flag: a stable ``code``, words for an analyst, and the measured value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(description="one of the documented reason codes")
    detail: str
    value: float | int | str | None = None

    @field_validator("code")
    @classmethod
    def _documented(cls, v: str) -> str:
        if v not in REASON_CODES:
            raise ValueError(f"undocumented reason code {v!r}")
        return v


class Flag(BaseModel):
    """Flag v1 (see ``shared/CONTRACT.md``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Flag v1")

    schema_version: Literal[1] = 1
    flag_id: str
    account_id: Annotated[str, Field(min_length=1, max_length=128)]
    org_id: str | None
    action: Literal["review", "throttle", "suspend"]
    score: Annotated[float, Field(ge=0.0, le=1.0)]
    reasons: list[Reason]
    campaign_id: str | None
    campaign_size: Annotated[int, Field(ge=1)] | None
    decided_at_ms: int
    window_start_ms: int
    detector_version: str


def flag_id_for(account_id: str, action: str, campaign_id: str | None, decided_at_ms: int,
                detector_version: str) -> str:
    """Deterministic flag id: the same decision on the same input gives the same id.

    >>> flag_id_for("acct-1", "suspend", None, 1000, "0.1.0") == flag_id_for("acct-1", "suspend", None, 1000, "0.1.0")
    True
    """
    h = hashlib.blake2b(digest_size=12)
    h.update(f"{account_id}\x1f{action}\x1f{campaign_id or ''}\x1f{decided_at_ms}\x1f{detector_version}".encode())
    return h.hexdigest()
