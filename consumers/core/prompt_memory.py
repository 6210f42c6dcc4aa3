"""What an account sent recently: the keys of its prompts, and its paraphrase keys.

The account stage needs, per account, the LSH keys of its recent prompts: to notice a prompt it
sends again (own reuse), to announce a key only once, and to announce a reused prompt's keys with
the number of the request that *first* used it (so the campaign stage counts a reused prompt
once); past ``capacity`` keys the older half is forgotten. :data:`PromptMemory` is the native
implementation (``native/src/lib.rs``: a flat array, 8 bytes a key) when ``pip install`` could
build it, else :class:`PyPromptMemory`, which keeps them in a dict of int keys (the fastest lookup
Python has: six per request; ~90 bytes a key). Both answer the same (tests/unit/test_native.py),
and both derive a request's keys from its SimHash and spell those to announce
(:meth:`PyPromptMemory.use_hex`): natively, one call per request.

In pure Python, a flat byte buffer searched with ``bytearray.find`` would take ~35 bytes per
prompt instead of ~600, but measured on ``day`` it made the account stage 1.35x slower (a heavy
account's buffer is searched six times per request), so prompts stay in the dict and only the
paraphrase keys — a membership test, on at most ``capacity`` keys — live in a buffer. Keeping only
the newest 64 keys in the dict and packing older ones behind a Bloom filter cut an active account
from 12.2 to 8.7 KB but cost the account stage 39% more CPU (README, *State per account*).

>>> m = PromptMemory()
>>> keys = (0x0_01234567, 0x1_012389AB, 0x2_0123CDEF, 0x3_456789AB, 0x4_4567CDEF, 0x5_89ABCDEF)
>>> m.use(keys, 7)
([], 7, False)
>>> m.use(keys, 9)[2], len(m)
(True, 6)

:data:`KeySet` is a set of 40-bit keys in insertion order, in 5 bytes each, for the paraphrase
keys an account announced; past ``capacity`` keys, ``trim`` forgets the older half. It too is
native when built (else :class:`PyKeySet`, the reference).

>>> s = KeySet(capacity=4)
>>> [s.add(k) for k in (1, 2, 3, 2)]
[True, True, True, False]
>>> s.add(4), s.add(5), len(s)
(True, True, 5)
>>> s.trim(); 1 in s, 4 in s, 5 in s, len(s)
(False, True, True, 2)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import orjson

from consumers.core.prompt_keys import (
    paraphrase_key_ints,
    paraphrase_key_name,
    prompt_key_ints,
    prompt_key_name,
)
from consumers.native_choice import native_module


def holds_record(buf: bytes | bytearray, rec: bytes) -> bool:
    """Whether ``buf``, a run of records of ``len(rec)`` bytes each, holds ``rec`` as one of them
    (a match straddling two records does not count).

    >>> holds_record(bytearray(b"abcdef"), b"cde"), holds_record(bytearray(b"abcdef"), b"def")
    (False, True)
    """
    width = len(rec)
    i = buf.find(rec)
    while i >= 0:
        if not i % width:
            return True
        i = buf.find(rec, i + 1)
    return False


class PyPromptMemory:
    """The keys of an account's recent prompts, each with its first use (see the module docstring).

    The pure-Python implementation and the reference: :data:`PromptMemory` is the native one
    (``consumers._native``, ``native/src/lib.rs``) when it was built, which answers exactly the
    same in a sixth of the memory (tests/unit/test_native.py runs both on the same streams).
    """

    __slots__ = ("first", "capacity")

    def __init__(self, capacity: int = 512):
        self.first: dict[int, int] = {}  # key -> request of its first use (negative once announced)
        self.capacity = capacity         # keys; past it, the older half is forgotten

    def use(self, keys: Sequence[int], request: int, mask: int = 0xF) -> tuple[list[int], int, bool]:
        """Request ``request`` sends a prompt with these six pair keys: the keys to announce now,
        the request of the prompt's *template's* first use (which each of them carries), and
        whether the prompt reuses a remembered key.

        A new key is announced at once when it is in the consistent sample (``key & mask`` is 0:
        with the default mask, its last hex digit is 0 — the same 1/16 of all keys for every
        account, so accounts sharing a template meet on it at first use); any other is
        remembered, and announced once the account sends it again.

        A prompt that shares a key with one the account sent before (within 2 SimHash bits of
        it) is another use of the same template: every key it announces carries the earliest
        first use among the keys it shares, so the campaign stage counts the account's
        *templates*, not its uses — a cohort member resending a starter prompt with a few bits
        flipped shows one shared prompt, not one per resend.

        >>> m = PromptMemory()
        >>> keys = (0x0_01234560, 0x1_01238001, 0x2_0123CDE2, 0x3_45678003, 0x4_4567CDE4, 0x5_8000CDE5)
        >>> announce, first, reused = m.use(keys, 1)                # only key 0 is in the sample
        >>> [hex(k) for k in announce], first, reused
        (['0x1234560'], 1, False)
        >>> announce, first, reused = m.use(keys, 2)
        >>> [hex(k) for k in announce], first, reused
        (['0x101238001', '0x20123cde2', '0x345678003', '0x44567cde4', '0x58000cde5'], 1, True)
        >>> m.use(keys, 3)
        ([], 1, True)

        A near-duplicate (keys 0, 1 and 5 changed, all three in the sample) announces its new keys
        with the template's first use, 1, not with its own request, 4:

        >>> near = (0x0_01234570, 0x1_01238010, 0x2_0123CDE2, 0x3_45678003, 0x4_4567CDE4, 0x5_8000CD00)
        >>> announce, first, _ = m.use(near, 4)
        >>> [hex(k) for k in announce], first
        (['0x1234570', '0x101238010', '0x58000cd00'], 1)
        """
        pk = self.first
        got = list(map(pk.get, keys))
        reused = got.count(None) < len(got)
        # the template's first use: the earliest among the keys the account sent before
        first = min(s if s >= 0 else -s for s in got if s is not None) if reused else request
        out: list[int] = []
        for k, s in zip(keys, got):  # noqa: B905 - one per key; strict= costs ~150 ns a call
            if s is None:
                if k & mask:
                    pk[k] = first
                else:
                    pk[k] = -first
                    out.append(k)
            elif s > 0:
                pk[k] = -s
                out.append(k)
        if len(pk) > self.capacity:
            # the newer half, in order of first use (rebuilt at once: deleting a dict's oldest
            # keys one by one makes every later next(iter()) scan the dead slots)
            items = list(pk.items())
            self.first = dict(items[len(items) - self.capacity // 2:])
        return out, first, reused

    def use_hex(self, simhash: str, request: int, mask: int = 0xF) -> tuple[list[bytes], int, bool]:
        """:meth:`use` of a SimHash's keys (:func:`~consumers.core.prompt_keys.prompt_key_ints`),
        the keys to announce spelled as the fingerprints they are (bytes): the account stage's call.

        >>> m = PromptMemory()
        >>> m.use_hex("0123456789abcde0", 1)
        ([b'p2:0123cde0', b'p4:4567cde0', b'p5:89abcde0'], 1, False)
        """
        out, first, reused = self.use(prompt_key_ints(simhash), request, mask)
        return [prompt_key_name(k).encode() for k in out], first, reused

    def __len__(self) -> int:
        return len(self.first)

    # -- changelog --------------------------------------------------------------------------------
    def to_list(self) -> list[int]:
        """``[key, first use, key, first use, ...]``, interleaved by slice assignment: no tuple per
        key (for 512 keys, a third of the time of a comprehension over ``items()``; every checkpoint
        writes this for every account that changed).

        >>> m = PromptMemory.from_list([7, 1, 9, -2])
        >>> m.to_list(), PromptMemory().to_list()
        ([7, 1, 9, -2], [])
        """
        first = self.first
        out = [0] * (2 * len(first))
        out[::2] = first.keys()
        out[1::2] = first.values()
        return out

    def to_json(self) -> bytes:
        """:meth:`to_list` as JSON (the native implementation writes it without the list).

        >>> PromptMemory.from_list([7, 1, 9, -2]).to_json()
        b'[7,1,9,-2]'
        """
        return orjson.dumps(self.to_list())

    def nbytes(self) -> int:
        """Bytes held outside Python's allocator: none (the native implementation's heap is)."""
        return 0

    @classmethod
    def from_list(cls, v: list[int], capacity: int = 512) -> PyPromptMemory:
        m = cls(capacity)
        m.first = dict(zip(v[::2], v[1::2], strict=True))
        return m


class PyKeySet:
    """A bounded set of 40-bit keys in insertion order (see the module docstring).

    The pure-Python implementation and the reference: :data:`KeySet` is the native one when it
    was built (tests/unit/test_native.py runs both on the same streams).
    """

    __slots__ = ("keys", "capacity")

    def __init__(self, capacity: int = 128):
        self.keys = bytearray()          # 5 bytes per key
        self.capacity = capacity

    def __contains__(self, k: int) -> bool:
        return holds_record(self.keys, k.to_bytes(5, "big"))

    def add(self, k: int) -> bool:
        """Add ``k``; False if it was already there."""
        return bool(self.add_new((k,)))

    def add_new(self, keys: Iterable[int]) -> list[int]:
        """Add ``keys``; return those that were not there yet, in order.

        >>> s = KeySet()
        >>> s.add_new([1, 2, 1]), s.add_new([3, 2])
        ([1, 2], [3])
        """
        buf = self.keys
        new = []
        for k in keys:
            rec = k.to_bytes(5, "big")
            if not holds_record(buf, rec):
                buf += rec
                new.append(k)
        return new

    def add_new_hex(self, simhash: str, sample: int) -> list[bytes]:
        """:meth:`add_new` of a SimHash's paraphrase keys
        (:func:`~consumers.core.prompt_keys.paraphrase_key_ints`), the new ones spelled as the
        fingerprints they are (bytes): the account stage's call.

        >>> s = KeySet()
        >>> s.add_new_hex("0123456789abcdef", 16), s.add_new_hex("0123456789abcdef", 16)
        ([b'q045:0189ab', b'q046:0189cd', b'q047:0189ef'], [])
        """
        return [paraphrase_key_name(k).encode() for k in self.add_new(paraphrase_key_ints(simhash, sample))]

    def trim(self) -> None:
        """Past ``capacity`` keys, keep the newest ``capacity // 2``."""
        if len(self.keys) > 5 * self.capacity:
            del self.keys[:len(self.keys) - 5 * (self.capacity // 2)]

    def __len__(self) -> int:
        return len(self.keys) // 5

    def nbytes(self) -> int:
        """Bytes held outside Python's allocator: none (the native implementation's heap is)."""
        return 0

    def to_bytes(self) -> bytes:
        """The keys' 5-byte records, oldest first (the changelog form, base64-encoded there)."""
        return bytes(self.keys)

    @classmethod
    def from_bytes(cls, b: bytes, capacity: int = 128) -> PyKeySet:
        if len(b) % 5:
            raise ValueError("from_bytes: not a run of 5-byte keys")
        ks = cls(capacity)
        ks.keys = bytearray(b)
        return ks

    @classmethod
    def from_keys(cls, keys: Iterable[int], capacity: int = 128) -> PyKeySet:
        ks = cls(capacity)
        for k in keys:
            ks.add(k)
        ks.trim()
        return ks


def _choose() -> tuple[type[PyPromptMemory], type[PyKeySet]]:
    """The native implementations where built (:func:`consumers.native_choice.native_module`),
    the pure-Python ones otherwise."""
    native = native_module()
    if native is None:
        return PyPromptMemory, PyKeySet
    # the same interfaces, checked by tests/unit/test_native.py
    return cast("type[PyPromptMemory]", native.PromptMemory), cast("type[PyKeySet]", native.KeySet)


#: what the account stage uses (see :func:`_choose`)
PromptMemory, KeySet = _choose()
NATIVE = PromptMemory is not PyPromptMemory
