"""Shared infrastructure of the simulated world: countries and time zones, ASNs and their IP
blocks, user agents, models, task categories and their token profiles, diurnal profiles, and a
seeded factory (:class:`World`) for opaque ids, /24 prefixes and prompt-template libraries.

Everything here is static data or is drawn from the one ``random.Random`` the world is given, so
a world built twice from the same seed is identical. Numbers (ASNs, versions) are plausible, not
authoritative: the detector must never rely on a particular value.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from statistics import NormalDist

from consumers.contract.events import CATEGORIES

# ---------------------------------------------------------------------------------------------
# Models: the release the scenarios revolve around (see Scenario.release_frac)
# ---------------------------------------------------------------------------------------------

OLD_MODEL = "frontier-4"
MINI_MODEL = "frontier-4-mini"
NEW_MODEL = "frontier-5"
#: generation speed, ms per output token (latency grows with output tokens)
MS_PER_TOKEN = {OLD_MODEL: 14.0, MINI_MODEL: 5.5, NEW_MODEL: 19.0}
#: context window and output limit (token counts are capped here)
MAX_INPUT_TOKENS = 200_000
MAX_OUTPUT_TOKENS = 16_384
#: time to first token, ms
TTFT_MS = {OLD_MODEL: 320.0, MINI_MODEL: 160.0, NEW_MODEL: 450.0}

# ---------------------------------------------------------------------------------------------
# Task categories: token profiles (lognormal, natural-log parameters)
# ---------------------------------------------------------------------------------------------

#: category -> (mu_in, sigma_in, mu_out, sigma_out, turns_factor)
#: medians: exp(mu). Agentic prompts carry long tool transcripts (big inputs, many turns),
#: reasoning/math produce long outputs, chat is short.
CATEGORY_TOKENS: dict[str, tuple[float, float, float, float, float]] = {
    "coding": (math.log(1100), 1.0, math.log(550), 0.8, 1.2),
    "agentic": (math.log(3500), 0.9, math.log(380), 0.9, 2.5),
    "reasoning": (math.log(380), 0.8, math.log(1000), 0.7, 1.0),
    "math": (math.log(240), 0.7, math.log(850), 0.7, 0.9),
    "writing": (math.log(300), 0.9, math.log(650), 0.7, 1.0),
    "analysis": (math.log(2200), 1.1, math.log(520), 0.7, 1.0),
    "chat": (math.log(110), 1.0, math.log(220), 0.8, 1.3),
    "translation": (math.log(380), 0.8, math.log(400), 0.8, 0.6),
    "other": (math.log(180), 1.0, math.log(280), 0.9, 1.0),
}

#: lognormal draws are read from quantile tables (fast, deterministic): TOKEN_TABLE_SIZE values
#: exp(mu + sigma * z) at evenly spaced normal quantiles, per category
TOKEN_TABLE_SIZE = 1024  # a power of two (indexed with getrandbits)


def _lognormal_table(mu: float, sigma: float) -> tuple[float, ...]:
    nd = NormalDist()
    n = TOKEN_TABLE_SIZE
    return tuple(math.exp(mu + sigma * nd.inv_cdf((i + 0.5) / n)) for i in range(n))


#: category -> (input-token table, output-token table, turns factor)
TOKEN_TABLES: dict[str, tuple[tuple[float, ...], tuple[float, ...], float]] = {
    c: (_lognormal_table(mi, si), _lognormal_table(mo, so), tf)
    for c, (mi, si, mo, so, tf) in CATEGORY_TOKENS.items()
}

# ---------------------------------------------------------------------------------------------
# Countries: weight among honest users, UTC offsets in minutes (Apr-Jun: summer time), and
# residential ISPs (the first ones are the big fixed-line ISPs, the last usually mobile)
# ---------------------------------------------------------------------------------------------

COUNTRIES: dict[str, tuple[float, tuple[int, ...], tuple[int, ...]]] = {
    "US": (0.30, (-240, -300, -360, -420), (7922, 7018, 701, 20115, 22773, 21928, 20057)),
    "IN": (0.09, (330,), (24560, 55836, 9829, 45609)),
    "GB": (0.06, (60,), (2856, 5089, 5607, 12576)),
    "DE": (0.06, (120,), (3320, 3209, 6805, 8881)),
    "FR": (0.04, (120,), (3215, 12322, 5410, 15557)),
    "BR": (0.05, (-180,), (28573, 18881, 26599, 8167)),
    "JP": (0.04, (540,), (4713, 2516, 17676)),
    "KR": (0.03, (540,), (4766, 9318, 3786)),
    "CA": (0.04, (-240, -300, -420), (812, 577, 5769)),
    "AU": (0.02, (600,), (1221, 4804, 7545)),
    "NL": (0.02, (120,), (1136, 33915, 15435)),
    "ES": (0.02, (120,), (3352, 12479, 12430)),
    "PL": (0.02, (120,), (5617, 12741, 6830)),
    "ID": (0.03, (420,), (7713, 23693, 17974)),
    "MX": (0.02, (-360,), (8151, 28548, 13999)),
    "VN": (0.02, (420,), (7552, 45899, 18403)),
    "NG": (0.02, (60,), (29465, 36873, 37148)),
    "TR": (0.02, (180,), (9121, 16135, 34984)),
    "SG": (0.02, (480,), (9506, 4773, 55430)),
    "IL": (0.01, (180,), (1680, 8551, 12400)),
    "SE": (0.01, (120,), (3301, 2119, 8473)),
    "AR": (0.01, (-180,), (7303, 10318, 22927)),
    "PH": (0.01, (480,), (9299, 4775, 132199)),
    "UA": (0.01, (180,), (15895, 6849, 25229)),
}

#: cloud providers: asn -> countries where it has regions
CLOUD_ASNS: dict[int, tuple[str, ...]] = {
    16509: ("US", "DE", "GB", "IE", "JP", "SG", "IN", "BR", "AU", "CA"),  # AWS
    14618: ("US",),  # AWS us-east legacy
    15169: ("US", "NL", "BE", "JP", "SG", "TW"),  # Google
    396982: ("US", "DE", "GB", "IN"),  # Google Cloud
    8075: ("US", "NL", "IE", "GB", "JP", "IN"),  # Microsoft Azure
    14061: ("US", "DE", "NL", "GB", "SG", "IN", "CA"),  # DigitalOcean
    16276: ("FR", "CA", "DE", "GB", "PL"),  # OVH
    24940: ("DE", "FI", "US"),  # Hetzner
    63949: ("US", "DE", "JP", "SG", "IN"),  # Akamai/Linode
    20473: ("US", "NL", "JP", "DE", "GB", "SG"),  # Vultr/Choopa
}

#: hosting/datacenter ASNs favoured by commercial proxy resellers
PROXY_ASNS: dict[int, tuple[str, ...]] = {
    9009: ("US", "GB", "NL", "DE", "SG", "RO"),  # M247
    60068: ("US", "GB", "NL", "DE", "JP"),  # Datacamp / CDN77
    62240: ("US", "GB", "NL"),  # Clouvider
    40676: ("US",),  # Psychz
    46562: ("US",),  # Performive
    51167: ("DE", "US", "SG"),  # Contabo
    53667: ("US", "LU"),  # FranTech / BuyVM
    212238: ("GB", "NL", "US"),  # Datacamp
    136787: ("US", "SG", "JP"),  # TEFINCOM
    202425: ("NL", "SC"),  # IP Volume
}

#: consumer VPN exits (shared by many unrelated honest users; overlaps the proxy ASNs)
VPN_ASNS: dict[int, tuple[str, ...]] = {
    9009: ("US", "GB", "NL", "DE"),
    60068: ("US", "GB", "NL"),
    136787: ("US", "SG"),
    212238: ("GB", "NL"),
}

#: corporate egress: business-grade ISPs, plus secure web gateways whose /24s are shared by
#: many unrelated companies
BUSINESS_ASNS: dict[int, tuple[str, ...]] = {
    3356: ("US", "GB", "DE", "FR"),  # Lumen
    174: ("US", "DE", "GB", "ES"),  # Cogent
    6461: ("US", "GB", "FR"),  # Zayo
    2914: ("US", "JP", "DE"),  # NTT
    1299: ("SE", "DE", "US"),  # Arelion
    3257: ("US", "DE", "NL"),  # GTT
}
SWG_ASNS: dict[int, tuple[str, ...]] = {
    22616: ("US", "DE", "GB", "IN", "JP"),  # Zscaler
    55256: ("US", "GB", "DE"),  # Netskope
}

#: universities/NRENs: asn -> country (one of COUNTRIES; campus NAT: many students and researchers per /24)
EDU_ASNS: dict[int, str] = {
    3: "US", 32: "US", 25: "US", 7377: "US", 2152: "US", 11537: "US",
    786: "GB", 680: "DE", 2200: "FR", 1103: "NL", 2907: "JP", 7575: "AU",
    17579: "KR", 55824: "IN",
}

# ---------------------------------------------------------------------------------------------
# User agents
# ---------------------------------------------------------------------------------------------

UA_SDK_PY = "frontier-python/1.42.0"
UA_SDK_PY_OLD = "frontier-python/1.39.2"
UA_SDK_NODE = "frontier-node/4.8.1"
UA_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/135.0.0.0 Safari/537.36"
)
UA_MAC_SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.3 Safari/605.1.15"
)
UA_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_3 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.3 Mobile/15E148 Safari/604.1"
)
UA_HTTPX = "python-httpx/0.27.2"
BROWSER_UAS = frozenset({UA_CHROME, UA_MAC_SAFARI, UA_IPHONE})

#: user-agent mixes per kind of client (weights)
UA_MIXES: dict[str, dict[str, float]] = {
    "consumer": {UA_CHROME: 0.35, UA_MAC_SAFARI: 0.2, UA_IPHONE: 0.15, UA_SDK_PY: 0.15,
                 UA_SDK_NODE: 0.05, "python-requests/2.32.3": 0.05, UA_HTTPX: 0.05},
    "developer": {UA_SDK_PY: 0.35, UA_SDK_NODE: 0.2, UA_SDK_PY_OLD: 0.08, UA_HTTPX: 0.06,
                  "python-requests/2.32.3": 0.06, "curl/8.7.1": 0.04, "langchain-frontier/0.3.4":
                  0.07, "llama-index-llms-frontier/0.2.1": 0.03, "Go-http-client/2.0": 0.04,
                  "axios/1.7.9": 0.03, "aider/0.72.1": 0.04},
    "research": {UA_SDK_PY: 0.4, UA_HTTPX: 0.1, "python-requests/2.32.3": 0.15, UA_CHROME: 0.2,
                 UA_MAC_SAFARI: 0.1, "curl/8.7.1": 0.05},
    "ci": {"frontier-python/1.41.0": 0.35, UA_SDK_PY: 0.2, "frontier-agent-sdk/0.9.3": 0.25,
           UA_SDK_NODE: 0.1, "Go-http-client/2.0": 0.1},
    "platform": {UA_SDK_NODE: 0.4, UA_SDK_PY: 0.3, "Go-http-client/2.0": 0.2,
                 "okhttp/4.12.0": 0.1},
    "eval": {UA_HTTPX: 0.5, UA_SDK_PY: 0.3, "python-requests/2.32.3": 0.2},
    #: client strings of extraction tooling
    "attack": {"python-httpx/0.27.0": 0.35, "aiohttp/3.9.5": 0.2, "python-requests/2.31.0": 0.2,
               UA_SDK_PY_OLD: 0.1, "node-fetch/3.3.2": 0.1, "Go-http-client/1.1": 0.05},
    #: evasive campaigns copy the most popular honest clients
    "mimic": {UA_SDK_PY: 0.5, UA_CHROME: 0.2, UA_SDK_NODE: 0.2, UA_HTTPX: 0.1},
    #: the official SDKs most honest developers use (sweep campaigns that copy one)
    "popular_sdk": {UA_SDK_PY: 0.7, UA_SDK_NODE: 0.3},
}

# ---------------------------------------------------------------------------------------------
# Diurnal profiles: relative request rate by local hour 0..23 (normalised to mean 1 on use)
# ---------------------------------------------------------------------------------------------

_RAW_DIURNAL: dict[str, tuple[float, ...]] = {
    # people sleep: deep dip 1-6h, evening peak
    "casual": (0.35, 0.18, 0.08, 0.05, 0.04, 0.05, 0.12, 0.3, 0.55, 0.7, 0.8, 0.85,
               0.9, 0.85, 0.8, 0.8, 0.85, 0.95, 1.0, 1.0, 1.0, 0.95, 0.8, 0.55),
    # working hours plus an evening shoulder
    "developer": (0.25, 0.12, 0.06, 0.04, 0.03, 0.04, 0.08, 0.2, 0.5, 0.85, 1.0, 1.0,
                  0.85, 0.95, 1.0, 1.0, 0.95, 0.8, 0.6, 0.55, 0.6, 0.6, 0.5, 0.38),
    # business hours only
    "business": (0.02, 0.01, 0.01, 0.01, 0.01, 0.02, 0.05, 0.2, 0.7, 1.0, 1.0, 1.0,
                 0.75, 0.95, 1.0, 1.0, 0.95, 0.7, 0.3, 0.12, 0.08, 0.05, 0.04, 0.03),
    "researcher": (0.3, 0.18, 0.08, 0.04, 0.03, 0.04, 0.08, 0.2, 0.45, 0.75, 0.95, 1.0,
                   0.9, 0.95, 1.0, 1.0, 0.95, 0.85, 0.7, 0.65, 0.7, 0.7, 0.6, 0.45),
    # the aggregate of a platform's many customers across time zones: shallow dip
    "platform": (0.55, 0.45, 0.4, 0.38, 0.38, 0.42, 0.5, 0.65, 0.8, 0.92, 1.0, 1.0,
                 1.0, 1.0, 1.0, 1.0, 0.98, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.62),
    # evasive campaigns' slight shaping
    "mild": (0.6, 0.55, 0.5, 0.48, 0.48, 0.5, 0.6, 0.7, 0.85, 0.95, 1.0, 1.0,
             1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.68),
    # bots, CI and attackers
    "flat": (1.0,) * 24,
}


def _normalise(p: Sequence[float]) -> tuple[float, ...]:
    mean = sum(p) / len(p)
    return tuple(x / mean for x in p)


DIURNAL: dict[str, tuple[float, ...]] = {k: _normalise(v) for k, v in _RAW_DIURNAL.items()}

# first octets never used for simulated public /24s (private, loopback, CGNAT, multicast, docs)
_RESERVED_FIRST_OCTETS = frozenset({0, 10, 100, 127, 169, 172, 192, 198, 203, 224})
_FIRST_OCTETS = tuple(o for o in range(1, 224) if o not in _RESERVED_FIRST_OCTETS)

#: /16 blocks per ASN, by kind of network
_BLOCKS_PER_ASN = {"residential": 12, "cloud": 10, "proxy": 3, "business": 4, "swg": 2, "edu": 1}

CAT_TABLE_SIZE = 40

Infra = tuple[str, int, str]  # (client_ip_prefix, asn, country)
Template = tuple[int, str, float, bool, float, float]  # (simhash, category, elicitation, tool_use,
#                                                          input multiplier, output multiplier)


def weighted_choice(rng: random.Random, weights: Mapping[str, float]) -> str:
    """One key of ``weights`` drawn proportionally to its weight."""
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


class World:
    """Seeded factory of the things accounts are made of.

    ASNs own disjoint /16 blocks (allocated on first use), so a /24 always maps back to one ASN.
    Ids are unique within the world.
    """

    def __init__(self, rng: random.Random):
        self.rng = rng
        self._blocks: dict[int, list[tuple[int, int]]] = {}
        self._used_blocks: set[tuple[int, int]] = set()
        self._ids: set[str] = set()
        self._cat_tables: dict[tuple, tuple[str, ...]] = {}
        self._country_keys = list(COUNTRIES)
        self._country_w = [COUNTRIES[c][0] for c in self._country_keys]

    # --- ids ----------------------------------------------------------------------------------

    def new_id(self, prefix: str, nbits: int = 64) -> str:
        """A fresh opaque id ``<prefix>_<hex>``, unique in this world."""
        width = (nbits + 3) // 4
        while True:
            v = f"{prefix}_{self.rng.getrandbits(nbits):0{width}x}"
            if v not in self._ids:
                self._ids.add(v)
                return v

    # --- geography ----------------------------------------------------------------------------

    def country(self) -> str:
        """A country drawn with the honest-user weights."""
        return self.rng.choices(self._country_keys, weights=self._country_w)[0]

    def tz_minutes(self, country: str) -> int:
        """A UTC offset (minutes) of ``country``."""
        return self.rng.choice(COUNTRIES[country][1])

    # --- addresses ----------------------------------------------------------------------------

    def _asn_blocks(self, asn: int, kind: str) -> list[tuple[int, int]]:
        blocks = self._blocks.get(asn)
        if blocks is None:
            blocks = []
            for _ in range(_BLOCKS_PER_ASN[kind]):
                while True:
                    b = (self.rng.choice(_FIRST_OCTETS), self.rng.randrange(256))
                    if b not in self._used_blocks:
                        self._used_blocks.add(b)
                        blocks.append(b)
                        break
            self._blocks[asn] = blocks
        return blocks

    def prefix(self, asn: int, kind: str) -> str:
        """A random /24 of ``asn`` (``kind`` sizes the ASN's address space on first use)."""
        a, b = self.rng.choice(self._asn_blocks(asn, kind))
        return f"{a}.{b}.{self.rng.randrange(256)}.0/24"

    def residential(self, country: str | None = None, mobile: bool = False) -> Infra:
        """A residential /24 of ``country`` (random honest country when None)."""
        c = country or self.country()
        asns = COUNTRIES[c][2]
        asn = asns[-1] if mobile else self.rng.choice(asns[:-1] if len(asns) > 2 else asns)
        return (self.prefix(asn, "residential"), asn, c)

    def _hosted(self, table: Mapping[int, tuple[str, ...]], kind: str,
                asn: int | None = None, country: str | None = None) -> Infra:
        if asn is None:
            cands = [a for a, cs in table.items() if country in cs] if country else []
            asn = self.rng.choice(cands or list(table))
        cs = table[asn]
        c = country if country in cs else self.rng.choice(cs)
        return (self.prefix(asn, kind), asn, c)

    def cloud(self, country: str | None = None, asn: int | None = None) -> Infra:
        """A cloud /24 (near ``country`` when the provider has a region there)."""
        return self._hosted(CLOUD_ASNS, "cloud", asn, country)

    def proxy(self, asn: int | None = None) -> Infra:
        """A /24 of a hosting ASN used by proxy resellers."""
        return self._hosted(PROXY_ASNS, "proxy", asn)

    def vpn(self) -> Infra:
        """A consumer-VPN exit /24."""
        return self._hosted(VPN_ASNS, "proxy")

    def business(self, country: str | None = None) -> Infra:
        """A corporate /24 on a business ISP."""
        return self._hosted(BUSINESS_ASNS, "business", None, country)

    def swg(self, country: str | None = None) -> Infra:
        """A secure-web-gateway egress /24 (shared by many companies)."""
        return self._hosted(SWG_ASNS, "swg", None, country)

    def campus(self, asn: int) -> Infra:
        """A campus /24 of university ``asn``."""
        return (self.prefix(asn, "edu"), asn, EDU_ASNS[asn])

    # --- prompts ------------------------------------------------------------------------------

    def cat_table(self, weights: Mapping[str, float], jitter: float = 0.0) -> tuple[str, ...]:
        """A lookup table of CAT_TABLE_SIZE categories realising ``weights`` (optionally each
        weight multiplied by a lognormal(0, jitter) factor); identical tables are shared."""
        items = [(k, v) for k, v in weights.items() if v > 0]
        if jitter:
            lnv = self.rng.lognormvariate
            items = [(k, v * lnv(0.0, jitter)) for k, v in items]
        else:
            cached = self._cat_tables.get(tuple(items))
            if cached is not None:
                return cached
        total = sum(v for _, v in items)
        quotas = [(k, v / total * CAT_TABLE_SIZE) for k, v in items]
        counts = {k: int(q) for k, q in quotas}
        short = CAT_TABLE_SIZE - sum(counts.values())
        if short:
            for k, _ in sorted(quotas, key=lambda kq: int(kq[1]) - kq[1])[:short]:
                counts[k] += 1
        table: tuple[str, ...] = ()
        for k in CATEGORIES:
            c = counts.get(k)
            if c:
                table += (k,) * c
        table = self._cat_tables.setdefault(table, table)
        if not jitter:
            self._cat_tables[tuple(items)] = table  # type: ignore[index]
        return table

    def templates(
        self,
        n: int,
        categories: Mapping[str, float],
        elic_cats: frozenset[str],
        elic_p: float,
        elic_range: tuple[float, float],
        tool_p: float,
        out_mult: float = 1.0,
    ) -> list[Template]:
        """A library of ``n`` prompt templates: each a base SimHash with its own category,
        elicitation score, tool use and token multipliers (uses of a template look alike)."""
        rng = self.rng
        table = self.cat_table(categories)
        lib: list[Template] = []
        for _ in range(max(1, n)):
            cat = rng.choice(table)
            if cat in elic_cats and rng.random() < elic_p:
                elic = elic_range[0] + rng.random() * (elic_range[1] - elic_range[0])
            else:
                elic = rng.random() ** 3 * 0.2
            tool = rng.random() < (min(1.0, tool_p * 2.5) if cat == "agentic" else tool_p)
            lib.append((rng.getrandbits(64), cat, elic, tool, rng.lognormvariate(0.0, 0.4),
                        out_mult * rng.lognormvariate(0.0, 0.3)))
        return lib
