"""A tiny, deterministic generator of valid RequestEvent v1 dicts for the unit tests.

Independent of the real simulator (``consumers.sim``) on purpose: the tests of the core must not
change when the simulator is tuned. Four kinds of traffic, each from its own seeded
``random.Random`` so adding one population never changes another:

* :meth:`EventGen.benign` — unrelated accounts: mostly old, a few fresh sign-ups, diurnal, random
  prompts (with some reuse of their *own* prompts), their own /24, card and a common SDK string;
* :meth:`EventGen.org` — one organisation whose accounts share prompt templates, one payment
  card and a few corporate /24s (sharing *inside one org* is not evidence);
* :meth:`EventGen.hydra` — a hydra-like campaign: fresh accounts created in a wave, no org, a
  shared template library (each use within 0-2 bits of its template), a proxy /24 pool, cards
  shared by groups of ~5, one client string, 24/7 coding/agentic traffic, light per account;
* :meth:`EventGen.scraper` — one fresh account at thousands of requests a day, 24/7.

:func:`scenario` puts them together into a :class:`Dataset` (events sorted by ``ts_ms`` and
``event_id``, plus the ground-truth group of every account).

>>> ds = scenario(seed=1, n_benign=3, n_org=2, n_hydra=5, days=1)
>>> sorted(set(ds.labels.values()))
['benign', 'hydra', 'org']
>>> ds.events == scenario(seed=1, n_benign=3, n_org=2, n_hydra=5, days=1).events
True
"""

from __future__ import annotations

import gzip
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from consumers.contract.events import CATEGORIES
from consumers.contract.units import DAY_MS, HOUR_MS

#: 2026-01-01T00:00:00Z — the default start of generated traffic.
T0 = 1_767_225_600_000

MODELS = ("model-a", "model-b")
BENIGN_UAS = ("openai-python/1.40.0", "anthropic-sdk-python/0.34.0", "curl/8.5.0",
              "langchain/0.2.1", "node-fetch/3.3.2", "httpx/0.27.0")


def valid_event(**overrides: Any) -> dict[str, Any]:
    """One valid RequestEvent v1 dict (every field set); ``overrides`` replace fields."""
    ev: dict[str, Any] = {
        "schema_version": 1,
        "event_id": "evt-0001",
        "ts_ms": T0,
        "account_id": "acct-1",
        "org_id": "org-1",
        "api_key_id": "key-1",
        "account_created_ms": T0 - 90 * DAY_MS,
        "account_tier": "build",
        "model": "model-a",
        "input_tokens": 120,
        "output_tokens": 480,
        "latency_ms": 900,
        "status": 200,
        "client_ip_prefix": "203.0.113.0/24",
        "asn": 64500,
        "country": "DE",
        "user_agent": "openai-python/1.40.0",
        "payment_fingerprint": "pay-1",
        "prompt_simhash": "0123456789abcdef",
        "task_category": "coding",
        "reasoning_elicitation": 0.25,
        "tool_use": False,
        "n_turns": 3,
    }
    ev.update(overrides)
    return ev


def flip_bits(simhash: int, rng: random.Random, max_bits: int) -> int:
    """``simhash`` with between 0 and ``max_bits`` distinct random bits flipped."""
    for b in rng.sample(range(64), rng.randint(0, max_bits)):
        simhash ^= 1 << b
    return simhash


def hex64(v: int) -> str:
    return f"{v:016x}"


@dataclass
class Dataset:
    """Events sorted by ``(ts_ms, event_id)`` and the group of every account."""

    events: list[dict[str, Any]]
    labels: dict[str, str] = field(default_factory=dict)

    def accounts(self, group: str) -> set[str]:
        return {a for a, g in self.labels.items() if g == group}

    def lines(self) -> list[bytes]:
        return dumps_lines(self.events)


def dumps_lines(events: list[dict[str, Any]]) -> list[bytes]:
    """Each event as one JSON message (bytes, no newline)."""
    return [orjson.dumps(e) for e in events]


def write_jsonl(path: str | Path, lines: list[bytes]) -> Path:
    """Write messages one per line; gzip when the name ends in ``.gz``."""
    path = Path(path)
    data = b"".join(line + b"\n" for line in lines)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def sort_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(events, key=lambda e: (e["ts_ms"], e["event_id"]))


class EventGen:
    """Deterministic traffic; every population draws from its own ``Random(seed, name)``."""

    def __init__(self, seed: int = 0, start_ms: int = T0):
        self.seed = seed
        self.start_ms = start_ms

    def _rng(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}:{name}")

    @staticmethod
    def _event(rng: random.Random, acct: str, i: int, ts: int, **fields: Any) -> dict[str, Any]:
        out_tokens = rng.randint(50, 2000)
        ev = {
            "schema_version": 1,
            "event_id": f"{acct}:{i}",
            "ts_ms": ts,
            "account_id": acct,
            "api_key_id": f"key-{acct}",
            "model": MODELS[0],
            "input_tokens": rng.randint(20, 4000),
            "output_tokens": out_tokens,
            "latency_ms": 200 + out_tokens // 3,
            "status": 200,
            "n_turns": rng.randint(1, 8),
        }
        ev.update(fields)
        return ev

    def _diurnal_times(self, rng: random.Random, days: int, per_day: int, tz_h: int) -> list[int]:
        out = []
        for d in range(days):
            for _ in range(max(0, round(per_day * rng.uniform(0.6, 1.4)))):
                hour = rng.uniform(8.0, 19.0) + tz_h
                out.append(self.start_ms + d * DAY_MS + int(hour * HOUR_MS) % DAY_MS)
        return sorted(out)

    def _uniform_times(self, rng: random.Random, start: int, end: int, n: int) -> list[int]:
        return sorted(rng.randrange(start, end) for _ in range(n))

    # -- populations ---------------------------------------------------------------------------
    def benign(self, n_accounts: int = 20, days: int = 3, per_day: tuple[int, int] = (5, 40),
               fresh_share: float = 0.2, prefix: str = "ben") -> list[dict[str, Any]]:
        """Unrelated honest accounts (their own org or none, network, card and prompts)."""
        rng = self._rng(prefix)
        events: list[dict[str, Any]] = []
        for k in range(n_accounts):
            acct = f"{prefix}-{k:04d}"
            fresh = rng.random() < fresh_share
            created = (self.start_ms - rng.randint(0, 6) * HOUR_MS if fresh
                       else self.start_ms - rng.randint(40, 900) * DAY_MS)
            org = f"org-{prefix}-{k:04d}" if rng.random() < 0.5 else None
            ip = f"{rng.randint(11, 99)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.0/24"
            card = f"card-{prefix}-{k:04d}" if rng.random() < 0.8 else None
            ua = rng.choice(BENIGN_UAS)
            tier = rng.choice(("free", "build", "scale"))
            cats = rng.sample(CATEGORIES, rng.randint(2, 5))
            own: list[int] = []
            times = self._diurnal_times(rng, days, rng.randint(*per_day), rng.randint(-3, 3))
            for i, ts in enumerate(times):
                if own and rng.random() < 0.2:
                    sh = rng.choice(own)
                else:
                    sh = rng.getrandbits(64)
                    own.append(sh)
                events.append(self._event(
                    rng, acct, i, ts, org_id=org, account_created_ms=created, account_tier=tier,
                    client_ip_prefix=ip, asn=rng.choice((3320, 7922, 3215)), country="DE",
                    user_agent=ua, payment_fingerprint=card, prompt_simhash=hex64(sh),
                    task_category=rng.choice(cats), reasoning_elicitation=round(rng.random() * 0.5, 3),
                    tool_use=rng.random() < 0.2))
        return events

    def org(self, n_accounts: int = 8, days: int = 3, per_day: tuple[int, int] = (20, 60),
            org_id: str = "org-acme") -> list[dict[str, Any]]:
        """One organisation: shared templates, one card and a few corporate /24s, old accounts."""
        rng = self._rng(org_id)
        templates = [rng.getrandbits(64) for _ in range(6)]
        ips = [f"198.51.{100 + j}.0/24" for j in range(3)]
        card = f"card-{org_id}"
        events: list[dict[str, Any]] = []
        for k in range(n_accounts):
            acct = f"{org_id}-u{k:03d}"
            created = self.start_ms - rng.randint(60, 700) * DAY_MS
            times = self._diurnal_times(rng, days, rng.randint(*per_day), 0)
            for i, ts in enumerate(times):
                sh = flip_bits(rng.choice(templates), rng, 2) if rng.random() < 0.7 else rng.getrandbits(64)
                events.append(self._event(
                    rng, acct, i, ts, org_id=org_id, account_created_ms=created,
                    account_tier="enterprise", client_ip_prefix=rng.choice(ips), asn=16509,
                    country="US", user_agent="acme-internal-client/2.3", payment_fingerprint=card,
                    prompt_simhash=hex64(sh), task_category=rng.choice(("coding", "analysis", "writing")),
                    reasoning_elicitation=round(rng.uniform(0.0, 0.4), 3), tool_use=rng.random() < 0.3))
        return events

    def hydra(self, n_accounts: int = 30, days: int = 3, per_day: tuple[int, int] = (20, 40),
              name: str = "hydra", n_templates: int = 10, n_proxies: int = 12,
              card_group: int = 5, start_offset_ms: int = 0) -> list[dict[str, Any]]:
        """A hydra-like campaign (see the module docstring)."""
        rng = self._rng(name)
        start = self.start_ms + start_offset_ms
        templates = [rng.getrandbits(64) for _ in range(n_templates)]
        base = rng.randint(100, 190)
        proxies = [f"{base}.{rng.randint(0, 255)}.{j}.0/24" for j in range(n_proxies)]
        ua = f"{name}-client/0.9"
        events: list[dict[str, Any]] = []
        for k in range(n_accounts):
            acct = f"{name}-{k:04d}"
            created = start - rng.randint(5, 300) * 60_000   # one creation wave, minutes before
            first = created + rng.randint(1, 60) * 60_000
            card = f"card-{name}-{k // card_group}"
            n = sum(rng.randint(*per_day) for _ in range(days))
            for i, ts in enumerate(self._uniform_times(rng, first, start + days * DAY_MS, n)):
                sh = flip_bits(rng.choice(templates), rng, 2)
                events.append(self._event(
                    rng, acct, i, ts, org_id=None, account_created_ms=created, account_tier="free",
                    client_ip_prefix=rng.choice(proxies), asn=9009, country=rng.choice(("US", "NL")),
                    user_agent=ua, payment_fingerprint=card, prompt_simhash=hex64(sh),
                    task_category=rng.choice(("coding", "agentic")),
                    reasoning_elicitation=round(rng.uniform(0.5, 1.0), 3), tool_use=rng.random() < 0.6))
        return events

    def scraper(self, per_day: int = 3000, days: int = 1, acct: str = "scraper-0001",
                start_offset_ms: int = 0) -> list[dict[str, Any]]:
        """One fresh account at heavy volume, 24/7, no org, no shared infrastructure."""
        rng = self._rng(acct)
        start = self.start_ms + start_offset_ms
        created = start - 30 * 60_000
        events: list[dict[str, Any]] = []
        for i, ts in enumerate(self._uniform_times(rng, start, start + days * DAY_MS, per_day * days)):
            events.append(self._event(
                rng, acct, i, ts, org_id=None, account_created_ms=created, account_tier="build",
                client_ip_prefix="34.120.7.0/24", asn=15169, country="US",
                user_agent=f"{acct}-bot/1.0", payment_fingerprint=f"card-{acct}",
                prompt_simhash=hex64(rng.getrandbits(64)),
                task_category=rng.choice(("coding", "reasoning", "math")),
                reasoning_elicitation=round(rng.uniform(0.6, 1.0), 3), tool_use=False))
        return events


def scenario(seed: int = 0, *, n_benign: int = 30, n_org: int = 8, n_hydra: int = 30,
             scraper: bool = False, days: int = 3) -> Dataset:
    """Benign accounts + one org + one hydra campaign (+ a heavy scraper), sorted by time."""
    g = EventGen(seed)
    events: list[dict[str, Any]] = []
    labels: dict[str, str] = {}
    for group, evs in (("benign", g.benign(n_benign, days)), ("org", g.org(n_org, days)),
                       ("hydra", g.hydra(n_hydra, days)),
                       ("scraper", g.scraper(days=1) if scraper else [])):
        events += evs
        for e in evs:
            labels[e["account_id"]] = group
    return Dataset(sort_events(events), labels)
