"""What counts as shared evidence, and what makes a campaign member.

Two stages apply these rules: the campaign stage to the counts of one partition (its campaign
labels: which accounts its union-find groups), and the policy to the counts of every campaign-stage
partition added up (the decisions: the same at any partition count). One home, so the two cannot
drift apart.

>>> from consumers.core.config import DetectorConfig
>>> cfg = DetectorConfig()
>>> para_counts(4, 100, cfg), para_counts(4, 1_000, cfg), para_counts(2, 10, cfg)
(True, False, False)
>>> qualifies(["prompt", "ip"], 1, cfg), qualifies(["ip", "ua"], 0, cfg), qualifies([], 5, cfg)
(True, False, True)
"""

from __future__ import annotations

from collections.abc import Collection

from consumers.core.config import DetectorConfig

#: kinds specific to a campaign (its templates, its cards): one of them is needed to make a
#: campaign member, and an account's neighbours are the accounts it shares one of them with
STRONG_KINDS = ("prompt", "para", "pay")
#: kinds that never make a campaign member nor unite campaigns: synchronised timing
#: (consumers/core/timing.py) is shared by honest cohorts too; it only supports content (policy)
SUPPORT_ONLY_KINDS = ("tim",)


def para_counts(shared: int, announced: int, cfg: DetectorConfig) -> bool:
    """Whether ``shared`` paraphrase keys in common with unrelated units count as evidence for an
    account that announced ``announced`` of them: ``para_min_links`` at least (one or two 24-bit
    keys can collide by chance) and ``para_min_share`` of its own (a heavy honest user collides
    with a few out of thousands; a campaign member shares a good part of its templates)."""
    return shared >= cfg.para_min_links and shared >= cfg.para_min_share * announced


def qualifies(counted: Collection[str], templates: int, cfg: DetectorConfig) -> bool:
    """Whether an account's evidence makes it a campaign member (before its neighbours are
    counted): ``counted`` kinds of shared evidence (those that count: see :func:`para_counts`),
    ``campaign_min_kinds`` of them, one a prompt, paraphrase or card — or ``templates`` (prompt
    keys, exact or paraphrase) at least ``campaign_min_templates`` on their own. Timing kinds
    are support only and never count."""
    kinds = [k for k in counted if k not in SUPPORT_ONLY_KINDS]
    return ((len(kinds) >= cfg.campaign_min_kinds and any(k in kinds for k in STRONG_KINDS))
            or templates >= cfg.campaign_min_templates)
