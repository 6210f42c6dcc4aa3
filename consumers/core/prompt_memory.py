"""What an account sent recently, by prompt keys, in a few bytes per prompt.

The account stage needs, per account, the LSH keys of its recent prompts: to notice a prompt it
sends again (own reuse), to announce a key only once, and to announce a reused prompt's keys with
the number of the request that *first* used it (so the campaign stage counts a reused prompt
once). A dict of int keys costs ~100 bytes per key; these classes keep the same facts in flat
byte buffers searched with ``bytearray.find`` (C speed): ~35 bytes per prompt (six keys), 5 per
paraphrase key. Both keep exactly what the dicts kept: the same keys, forgotten at the same time.

:class:`PromptMemory` keeps, for each remembered prompt, a *slot*: its six pair keys
(:func:`~consumers.core.features.prompt_key_ints`), the request number of its first use and which
of its keys were announced. A key that an older slot already holds is stored *dead* in the new
slot, so every key lives in one slot: the oldest, whose request number is the key's first use.
Past ``capacity`` keys the older half is forgotten (:meth:`PromptMemory.trim`: the newest half
of the keys, in the order they were first used, is kept).

>>> m = PromptMemory()
>>> keys = (0x0_01234567, 0x1_012389AB, 0x2_0123CDEF, 0x3_456789AB, 0x4_4567CDEF, 0x5_89ABCDEF)
>>> m.find(keys[0])                       # not seen
-1
>>> m.add(keys, request=7, announced=0b000001)
>>> slot = m.find(keys[0]); m.request(slot), m.announced(slot, 0), m.announced(slot, 5)
(7, True, False)
>>> m.mark(slot, 5); m.announced(slot, 5)
True

:class:`KeySet` is a set of 40-bit keys in insertion order, for the paraphrase keys an account
announced; past ``capacity`` keys, :meth:`KeySet.trim` forgets the older half.

>>> s = KeySet(capacity=4)
>>> [s.add(k) for k in (1, 2, 3, 2)]
[True, True, True, False]
>>> s.add(4), s.add(5), len(s)
(True, True, 5)
>>> s.trim(); 1 in s, 4 in s, 5 in s, len(s)
(False, True, True, 2)
"""

from __future__ import annotations

import base64
from array import array
from collections.abc import Iterable, Sequence

_KEY = 5                 # bytes per key in a slot: the pair index (0xFF: dead), then the 32-bit key
_SLOT = 6 * _KEY         # bytes per slot
_DEAD = b"\xff\xff\xff\xff\xff"


def _key_bytes(k: int) -> bytes:
    """A pair key (``pair << 32 | 32 bits``) as it is stored: the pair index, then 4 bytes."""
    return k.to_bytes(_KEY, "big")


class PromptMemory:
    """The keys of an account's recent prompts (see the module docstring)."""

    __slots__ = ("keys", "requests", "sent", "live", "capacity")

    def __init__(self, capacity: int = 512):
        self.keys = bytearray()          # _SLOT bytes per slot
        self.requests = array("i")       # per slot: the request number of its first use
        self.sent = bytearray()          # per slot: bit j set once pair key j was announced
        self.live = 0                    # keys held (not dead)
        self.capacity = capacity         # keys; past it, the older half is forgotten (trim)

    def find(self, k: int) -> int:
        """The slot holding pair key ``k`` (the oldest, where it was first used), or -1."""
        kb = _key_bytes(k)
        at = (k >> 32) * _KEY  # offset of pair (k >> 32) within a slot
        keys = self.keys
        i = keys.find(kb)
        while i >= 0:
            if i % _SLOT == at:
                return i // _SLOT
            i = keys.find(kb, i + 1)
        return -1

    def request(self, slot: int) -> int:
        return self.requests[slot]

    def announced(self, slot: int, pair: int) -> bool:
        return bool(self.sent[slot] >> pair & 1)

    def mark(self, slot: int, pair: int) -> None:
        """Pair key ``pair`` of ``slot`` has been announced."""
        self.sent[slot] |= 1 << pair

    def add(self, keys: Sequence[int], request: int, announced: int, dead: int = 0) -> None:
        """A new slot: the six pair keys of a prompt first used by ``request``; ``announced``
        and ``dead`` are bit sets over the pairs (a dead key is held by an older slot)."""
        for j, k in enumerate(keys):
            if dead >> j & 1:
                self.keys += _DEAD
            else:
                self.keys += _key_bytes(k)
                self.live += 1
        self.requests.append(request)
        self.sent.append(announced)

    def trim(self) -> None:
        """Past ``capacity`` keys, keep the newest ``capacity // 2`` (whole slots go first; in
        the slot at the boundary, its keys in pair order, as they were first used)."""
        if self.live <= self.capacity:
            return
        excess = self.live - self.capacity // 2
        keys = self.keys
        drop = 0
        while True:
            slot = keys[drop * _SLOT:(drop + 1) * _SLOT]
            n = sum(1 for j in range(6) if slot[j * _KEY] != 0xFF)
            if n > excess:
                break
            excess -= n
            drop += 1
        del keys[:drop * _SLOT]
        del self.requests[:drop]
        del self.sent[:drop]
        for j in range(6):  # the boundary slot: its oldest keys die
            if not excess:
                break
            if keys[j * _KEY] != 0xFF:
                keys[j * _KEY:(j + 1) * _KEY] = _DEAD
                excess -= 1
        self.live = self.capacity // 2

    def __len__(self) -> int:
        return self.live

    # -- changelog --------------------------------------------------------------------------------
    def to_list(self) -> list[object]:
        return [base64.b64encode(self.keys).decode(), self.requests.tolist(), base64.b64encode(self.sent).decode(),
                self.live]

    @classmethod
    def from_list(cls, v: list[object], capacity: int = 512) -> PromptMemory:
        m = cls(capacity)
        keys, reqs, sent, live = v
        assert isinstance(keys, str) and isinstance(reqs, list) and isinstance(sent, str) and isinstance(live, int)
        m.keys = bytearray(base64.b64decode(keys))
        m.requests = array("i", reqs)
        m.sent = bytearray(base64.b64decode(sent))
        m.live = live
        return m

    @classmethod
    def from_keys(cls, first_use: Iterable[tuple[int, int]], capacity: int = 512) -> PromptMemory:
        """From ``(key, request)`` pairs in order of first use (request < 0: announced), one slot
        per key: how the per-key memory of earlier versions is carried over."""
        m = cls(capacity)
        for k, r in first_use:
            pair = k >> 32
            m.add([k if j == pair else 0 for j in range(6)], abs(r), (r < 0) << pair, 0b111111 ^ (1 << pair))
        return m


class KeySet:
    """A bounded set of 40-bit keys in insertion order (see the module docstring)."""

    __slots__ = ("keys", "capacity")

    def __init__(self, capacity: int = 128):
        self.keys = bytearray()          # 5 bytes per key
        self.capacity = capacity

    def __contains__(self, k: int) -> bool:
        kb = k.to_bytes(5, "big")
        keys = self.keys
        i = keys.find(kb)
        while i >= 0:
            if not i % 5:
                return True
            i = keys.find(kb, i + 1)
        return False

    def add(self, k: int) -> bool:
        """Add ``k``; False if it was already there."""
        if k in self:
            return False
        self.keys += k.to_bytes(5, "big")
        return True

    def trim(self) -> None:
        """Past ``capacity`` keys, keep the newest ``capacity // 2``."""
        if len(self.keys) > 5 * self.capacity:
            del self.keys[:len(self.keys) - 5 * (self.capacity // 2)]

    def __len__(self) -> int:
        return len(self.keys) // 5

    def to_str(self) -> str:
        return base64.b64encode(self.keys).decode()

    @classmethod
    def from_str(cls, s: str, capacity: int = 128) -> KeySet:
        ks = cls(capacity)
        ks.keys = bytearray(base64.b64decode(s))
        return ks

    @classmethod
    def from_keys(cls, keys: Iterable[int], capacity: int = 128) -> KeySet:
        ks = cls(capacity)
        for k in keys:
            ks.add(k)
        ks.trim()
        return ks
