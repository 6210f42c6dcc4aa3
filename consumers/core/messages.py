"""The messages between the stages: one class per kind, one encoder and one decoder.

The account stage writes ``observations``; the campaign stage reads them and writes ``verdicts``;
the policy stage reads those. Each message is a JSON object whose ``k`` names its kind and whose
other keys are short (these topics carry ~2 messages per request)::

    observations  FingerprintSeen  {"k":"fp","f","a","o","t","w","n","c"}   key: the fingerprint
                  Behaviour        {"k":"beh","a","o","b","r","x","w","ws","n"}  key: the account
    verdicts      Link             {"k":"link","a","o","kinds","cid","size","w","p","sr","n","ipn","cs","pk","pa","nb"}
                  Behaviour        (relayed unchanged by the campaign stage)    key: the account

The classes name the fields; :func:`decode` turns any message back into its class, and each
class's ``encode()`` writes exactly the bytes the stages exchange (the key order is part of the
format: replays of old topics decode the same way).

>>> m = FingerprintSeen("pay:c1", "acct-1", None, ts=5, watermark=7, request=3, card="c1")
>>> m.encode()
b'{"k":"fp","f":"pay:c1","a":"acct-1","o":null,"t":5,"w":7,"n":3,"c":"c1"}'
>>> decode(m.encode()) == m
True
>>> b = Behaviour("acct-1", "org-1", 0.4, [["FRESH_ACCOUNT", 0.1]], 0.25, watermark=9, window_start=1, requests=4)
>>> decode(b.encode()) == b
True
>>> decode(b'{"k":"nope"}')
Traceback (most recent call last):
...
ValueError: unknown message kind 'nope'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(slots=True)
class FingerprintSeen:
    """An account shows a fingerprint (account stage → campaign stage, keyed by ``fingerprint``).

    ``fingerprint``: ``ip:``, ``pay:``, ``ua:``, ``wave:``, a prompt key ``p<i>:``, a paraphrase
    key ``q<xyz>:`` or a time-slot key ``tim:`` (:mod:`consumers.core.timing`; its ``ts`` is the
    end of the timing epoch and its ``card`` the account's last); ``ts``: event time of the request that showed it; ``watermark``: the account
    partition's event-time watermark then; ``request``: the account's request number (for a prompt
    key announced on reuse, the request that first used the prompt); ``card``: the request's
    payment fingerprint (it decides the account's *unit*).
    """

    fingerprint: str
    account: str
    org: str | None
    ts: int
    watermark: int
    request: int = 0
    card: str | None = None

    KIND = "fp"

    def encode(self) -> bytes:
        return encode_fingerprint(self.fingerprint, fingerprint_tail(
            self.account, self.org, self.ts, self.watermark, self.request, self.card))

    @classmethod
    def from_dict(cls, m: dict[str, Any]) -> FingerprintSeen:
        return cls(*cls.unpack(m))

    @staticmethod
    def unpack(m: dict[str, Any]) -> tuple[str, str, str | None, int, int, int, str | None]:
        """The fields of a decoded message, in declaration order, without building the object:
        the campaign stage's hot path (one per observation; the object cost ~5% of the pipeline).

        >>> FingerprintSeen.unpack({"k": "fp", "f": "pay:c1", "a": "x", "o": None, "t": 5})
        ('pay:c1', 'x', None, 5, 0, 0, None)
        """
        return m["f"], m["a"], m["o"], m["t"], m.get("w", 0), m.get("n", 0), m.get("c")


def fingerprint_tail(account: str, org: str | None, ts: int, watermark: int, request: int,
                     card: str | None) -> bytes:
    """What follows the fingerprint in a :class:`FingerprintSeen`: the same for every fingerprint
    of one request, so the account stage serialises it once per request."""
    return b"," + orjson.dumps({"a": account, "o": org, "t": ts, "w": watermark, "n": request, "c": card})[1:]


def encode_fingerprint(fingerprint: str, tail: bytes) -> bytes:
    """A :class:`FingerprintSeen` from its fingerprint and a :func:`fingerprint_tail`."""
    return b'{"k":"fp","f":' + orjson.dumps(fingerprint) + tail


def encode_plain_fingerprint(fingerprint: bytes, tail: bytes) -> bytes:
    """:func:`encode_fingerprint` of a fingerprint that needs no JSON escaping (prompt,
    paraphrase and timing keys: ``[a-z0-9:.]``), given as the bytes it is keyed by: the account
    stage's hot path, one per announced content key.

    >>> tail = fingerprint_tail("a", None, 1, 1, 1, None)
    >>> encode_plain_fingerprint(b"p0:01234567", tail) == encode_fingerprint("p0:01234567", tail)
    True
    """
    return b'{"k":"fp","f":"' + fingerprint + b'"' + tail


@dataclass(slots=True)
class Behaviour:
    """An account's behaviour summary (account stage → campaign stage → policy, keyed by account).

    ``score``: behaviour evidence in [0, 1]; ``reasons``: ``[[code, value], ...]``;
    ``extraction``: the extraction profile in [0, 1]; ``window_start``: the account's first
    request seen; ``requests``: its requests so far.
    """

    account: str
    org: str | None
    score: float
    reasons: list[list[Any]]
    extraction: float
    watermark: int
    window_start: int
    requests: int

    KIND = "beh"

    def encode(self) -> bytes:
        return orjson.dumps({"k": "beh", "a": self.account, "o": self.org, "b": self.score, "r": self.reasons,
                             "x": self.extraction, "w": self.watermark, "ws": self.window_start,
                             "n": self.requests})

    @classmethod
    def from_dict(cls, m: dict[str, Any]) -> Behaviour:
        return cls(m["a"], m.get("o"), m["b"], m["r"], m.get("x", 0.0), m["w"], m.get("ws", m["w"]),
                   m.get("n", 0))


@dataclass(slots=True)
class Link:
    """What one campaign-stage partition knows about an account (campaign stage → policy).

    ``kinds``: kind of shared evidence → units it spans (``para``, ``tim``: how many paraphrase or
    time-slot keys);
    ``campaign_id``/``campaign_size``: its campaign once established (else None);
    ``partition``: the campaign-stage partition (the policy keeps the latest of each);
    ``shared_requests``: the account's request numbers whose prompt unrelated units also send;
    ``requests``: its requests as of its latest observation; ``shared_prefixes``: client /24s it
    shares with unrelated units; ``strong_members``: members of its campaign with a broad library;
    ``prompt_keys``: exact prompt keys it shares with unrelated units; ``para_announced``:
    paraphrase keys it announced to this partition; ``neighbours``: CRC32s of the accounts it shares
    a prompt, paraphrase or card fingerprint with (in another unit), at most
    ``DetectorConfig.campaign_neighbours_cap`` of them.

    Every fingerprint lives on one partition, so the policy's sums of ``prompt_keys``,
    ``para_announced`` and ``kinds['para']``, and the union of ``neighbours``, are the same at any
    partition count; ``campaign_id``/``campaign_size``/``strong_members`` are labels (each partition
    sees its part of a campaign) and decide nothing.
    """

    account: str
    org: str | None
    kinds: dict[str, int]
    campaign_id: str | None
    campaign_size: int | None
    watermark: int
    partition: int = 0
    shared_requests: list[int] = field(default_factory=list)
    requests: int = 0
    shared_prefixes: int = 0
    strong_members: int = 0
    prompt_keys: int = 0
    para_announced: int = 0
    neighbours: list[int] = field(default_factory=list)

    KIND = "link"

    def encode(self) -> bytes:
        return orjson.dumps({"k": "link", "a": self.account, "o": self.org, "kinds": self.kinds,
                             "cid": self.campaign_id, "size": self.campaign_size, "w": self.watermark,
                             "p": self.partition, "sr": self.shared_requests, "n": self.requests,
                             "ipn": self.shared_prefixes, "cs": self.strong_members, "pk": self.prompt_keys,
                             "pa": self.para_announced, "nb": self.neighbours})

    @classmethod
    def from_dict(cls, m: dict[str, Any]) -> Link:
        return cls(m["a"], m.get("o"), m["kinds"], m["cid"], m["size"], m["w"], m.get("p", 0),
                   m.get("sr", []), m.get("n", 0), m.get("ipn", 0), m.get("cs", 0), m.get("pk", 0),
                   m.get("pa", 0), m.get("nb", []))


#: kinds whose value in :attr:`Link.kinds` is a number of shared keys, not the widest span in
#: units: one 24-bit paraphrase key or one timing band can collide by chance, their number is the
#: evidence (and the policy adds it up across campaign-stage partitions)
SUMMED_KINDS = ("para", "tim")

Message = FingerprintSeen | Behaviour | Link
_BY_KIND: dict[str, Any] = {c.KIND: c for c in (FingerprintSeen, Behaviour, Link)}


def decode(value: bytes) -> Message:
    """Any inter-stage message, as its class (``ValueError`` for an unknown kind)."""
    m = orjson.loads(value)
    cls = _BY_KIND.get(m.get("k"))
    if cls is None:
        raise ValueError(f"unknown message kind {m.get('k')!r}")
    return cls.from_dict(m)
