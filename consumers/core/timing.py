"""Synchronised timing: MinHash band keys of an account's set of active time slots.

SynchroTrap / CopyCatch look for accounts whose activity falls into the same time slots far more
often than chance. Here each account keeps a *slot window*: a bitmap of the last ``window_slots``
slots of ``slot_ms`` of event time in which it sent at least one request (two ints: the newest
slot and the bitmap; a few dozen bytes). At the end of each *epoch* (``epoch_ms``) the account
stage asks :meth:`SlotSketch.keys` for the band keys of the account's active slots in the window
ending there; accounts whose active slots coincide (Jaccard ``J`` of their slot sets) share a
band key with probability ``J ** rows`` per band, so the campaign stage, keyed by fingerprint,
sees them together whichever partition they live on.

What comes in: ``(ts_ms)`` per request, through :meth:`SlotSketch.mark` (event time only; a
request older than the window is ignored). What goes out: ``tim:<epoch>.<band>.<slots>`` keys,
where ``<slots>`` are the window positions of the ``rows`` MinHash minima of the band (so two
accounts share a key only for the same epoch, band and minima). No key for an account with fewer
than ``min_slots`` active slots (a few requests coincide by chance) or active in more than
``max_density`` of the window (a 24/7 client: every such account has the same set, which carries
no information).

Chance: MinHash with random permutations of the window's positions (seeded), so
P(two sets share a band) = J ** rows exactly, and P(share any of ``bands``) =
1 - (1 - J ** rows) ** bands. The module knows nothing of who the accounts are: whether a key's
accounts are unrelated, and whether a key is busy (many unrelated units by chance), is the
campaign stage's per-key business (``link_min_units`` / ``hot_units`` of kind ``tim``).

>>> sk = SlotSketch(slot_ms=3_600_000, window_slots=24, epoch_ms=6 * 3_600_000, bands=4, rows=2,
...                 min_slots=3, max_density=0.5, seed=7)
>>> sk
SlotSketch(slot_ms=3600000, window_slots=24, epoch_ms=21600000, bands=4, rows=2, min_slots=3, max_density=0.5, seed=7)
>>> H = 3_600_000
>>> a = b = None
>>> for h in (1, 5, 9, 13):                  # two accounts active in the same four hours
...     a = sk.mark(a, h * H + 60_000)
...     b = sk.mark(b, h * H + 1_800_000)
>>> sk.active(a, 24 * H)
4
>>> ka, kb = sk.keys(a, 24 * H), sk.keys(b, 24 * H)
>>> len(ka), ka == kb
(4, True)
>>> sk.keys(a, 48 * H)                        # a day later those hours left the window
[]
>>> sk.keys(a, 24 * H, since_ms=17 * H)       # 4 active of the 7 slots it existed in: too dense
[]
"""

from __future__ import annotations

import random

#: an account's slot window: (newest active slot, bitmap; bit k = active in slot newest - k)
SlotWindow = tuple[int, int]


def window_to_json(win: SlotWindow | None) -> list[int | str] | None:
    """A slot window as JSON for the changelog (a bitmap past 63 bits as hex: JSON ints are 64-bit).

    >>> window_to_json((7, 5)), window_to_json((7, 1 << 70)), window_from_json(window_to_json((7, 1 << 70)))
    ([7, 5], [7, '400000000000000000'], (7, 1180591620717411303424))
    """
    if win is None:
        return None
    return [win[0], win[1] if win[1] < 1 << 63 else f"{win[1]:x}"]


def window_from_json(v: list[int | str] | None) -> SlotWindow | None:
    """The inverse of :func:`window_to_json`."""
    if v is None:
        return None
    top, bits = v
    return (int(top), int(bits, 16) if isinstance(bits, str) else int(bits))


class SlotSketch:
    """MinHash band keys of active time slots (see the module docstring).

    Parameters
    ----------
    slot_ms
        Width of a time slot (event time).
    window_slots
        Slots remembered per account and hashed per epoch (the window ends at the epoch's end).
    epoch_ms
        Keys are computed for the window ending at each multiple of ``epoch_ms``.
    bands, rows
        LSH: ``bands`` keys per account and epoch, each of ``rows`` MinHash minima.
    min_slots
        Fewer active slots in the window: no key.
    max_density
        Active in more than this share of the window: no key (round-the-clock clients all look
        alike).
    seed
        Seeds the permutations (the same on every partition: keys must meet).
    """

    def __init__(self, slot_ms: int, window_slots: int, epoch_ms: int, bands: int, rows: int,
                 min_slots: int, max_density: float, seed: int):
        if window_slots > 4096 or window_slots < 1:
            raise ValueError("window_slots must be in 1..4096")
        self.slot_ms = slot_ms
        self.window_slots = window_slots
        self.epoch_ms = epoch_ms
        self.bands = bands
        self.rows = rows
        self.min_slots = min_slots
        self.max_density = max_density
        self.seed = seed
        rng = random.Random(seed)
        positions = list(range(window_slots))
        # one random permutation of the window's positions per MinHash function; the minimum of a
        # set under a permutation is the first position of the permutation's order in the set
        self._orders: list[list[int]] = []
        for _ in range(bands * rows):
            order = positions[:]
            rng.shuffle(order)
            self._orders.append(order)
        self._full = (1 << window_slots) - 1
        self._width = 1 if window_slots <= 16 else 2 if window_slots <= 256 else 3

    def __repr__(self) -> str:
        return (f"SlotSketch(slot_ms={self.slot_ms}, window_slots={self.window_slots}, "
                f"epoch_ms={self.epoch_ms}, bands={self.bands}, rows={self.rows}, "
                f"min_slots={self.min_slots}, max_density={self.max_density}, seed={self.seed})")

    def mark(self, win: SlotWindow | None, ts_ms: int) -> SlotWindow:
        """The window with the slot of ``ts_ms`` marked active.

        >>> sk = SlotSketch(600_000, 8, 3_600_000, 1, 1, 1, 1.0, 0)
        >>> w = sk.mark(None, 0)
        >>> w = sk.mark(w, 1_200_000)             # two slots later
        >>> w, bin(w[1])
        ((2, 5), '0b101')
        >>> sk.mark(w, 0) == w, sk.mark(w, 9_000_000)   # already marked; 13 slots on: 0 slides out
        (True, (15, 1))
        """
        slot = ts_ms // self.slot_ms
        if win is None:
            return (slot, 1)
        top, bits = win
        if slot > top:
            return (slot, ((bits << (slot - top)) | 1) & self._full)
        back = top - slot
        if back >= self.window_slots:
            return win
        return (top, bits | (1 << back))

    def _bits_until(self, win: SlotWindow | None, end_ms: int) -> int:
        """The bitmap of the window ending at ``end_ms`` (exclusive): bit p = active in slot
        ``end_slot - 1 - p``."""
        if win is None:
            return 0
        top, bits = win
        end_slot = end_ms // self.slot_ms
        shift = end_slot - 1 - top
        if shift >= 0:
            return (bits << shift) & self._full if shift < self.window_slots else 0
        # slots at or after the window's end were marked: drop them
        return bits >> (-shift)

    def active(self, win: SlotWindow | None, end_ms: int) -> int:
        """Active slots in the window ending at ``end_ms``."""
        return self._bits_until(win, end_ms).bit_count()

    def keys(self, win: SlotWindow | None, end_ms: int, since_ms: int | None = None) -> list[str]:
        """The band keys of the account's active slots in the window ending at ``end_ms``
        (empty under ``min_slots`` or over ``max_density``). ``since_ms``, the account's first
        request, makes the density relative to the part of the window the account existed in
        (a 24/7 client that started an hour ago is dense already)."""
        bits = self._bits_until(win, end_ms)
        n = bits.bit_count()
        span = self.window_slots
        if since_ms is not None:
            span = max(1, min(span, end_ms // self.slot_ms - since_ms // self.slot_ms))
        if n < self.min_slots or n > self.max_density * span:
            return []
        epoch = end_ms // self.epoch_ms
        rows = self.rows
        w = self._width
        out = []
        orders = self._orders
        for b in range(self.bands):
            mins = []
            for order in orders[b * rows:(b + 1) * rows]:
                for p in order:
                    if bits >> p & 1:
                        mins.append(f"{p:0{w}x}")
                        break
            out.append(f"tim:{epoch}.{b}." + "".join(mins))
        return out

    def chance_share(self, jaccard: float) -> float:
        """P(two accounts whose slot sets have this Jaccard similarity share a band key).

        >>> round(SlotSketch(3_600_000, 24, 1, 6, 3, 1, 1.0, 0).chance_share(0.5), 3)
        0.551
        """
        return 1.0 - (1.0 - jaccard ** self.rows) ** self.bands
